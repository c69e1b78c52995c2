"""vae's random generator rebuilt in NumPy (crates/vae-core/src/rng.rs), so that a PyTorch twin
can draw the very noise and data order a vae run drew: xoshiro256++ seeded through SplitMix64,
Box-Muller normals, Fisher-Yates shuffles with Lemire's bounded integers. A generator holds
several independent streams side by side (one per row of every array), vectorised; NumPy's
uint64 arithmetic wraps as Rust's wrapping operations do."""
import numpy as np

U64 = np.uint64


def _splitmix64(x):
    x = x + U64(0x9E3779B97F4A7C15)
    z = (x ^ (x >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return x, z ^ (z >> U64(31))


def _rotl(x, k):
    return (x << U64(k)) | (x >> U64(64 - k))


class Rng:
    """`Rng` of rng.rs for each of `len(state[0])` streams."""

    def __init__(self, state):
        self.s = [np.array(v, dtype=U64, copy=True) for v in state]

    @classmethod
    def new(cls, seeds):
        """`Rng::new(seed)` for each seed."""
        x = np.atleast_1d(np.asarray(seeds, dtype=U64))
        s = []
        with np.errstate(over="ignore"):
            for _ in range(4):
                x, z = _splitmix64(x)
                s.append(z)
        return cls(s)

    @classmethod
    def stream(cls, seed, streams):
        """`Rng::stream(seed, i)` for each i of `streams`: seed ^ i·0xD1B54A32D192ED03."""
        with np.errstate(over="ignore"):
            return cls.new(U64(seed) ^ (np.atleast_1d(np.asarray(streams, dtype=U64)) * U64(0xD1B54A32D192ED03)))

    @classmethod
    def from_state(cls, state):
        """`Rng::from_state` of one saved state (four u64, as a checkpoint's state.json holds)."""
        return cls([[v] for v in state])

    def next_u64(self):
        s = self.s
        result = _rotl(s[0] + s[3], 23) + s[0]
        t = s[1] << U64(17)
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def draws(self, count):
        """`count` successive `next_u64` of every stream, `[streams, count]`; one stream runs on
        Python integers (far faster than NumPy's per-call cost for long runs)."""
        if len(self.s[0]) == 1:
            m = 2**64 - 1
            s0, s1, s2, s3 = (int(v[0]) for v in self.s)
            out = []
            for _ in range(count):
                x = (s0 + s3) & m
                out.append((((x << 23) | (x >> 41)) + s0) & m)
                t = (s1 << 17) & m
                s2 ^= s0
                s3 ^= s1
                s1 ^= s2
                s0 ^= s3
                s2 ^= t
                s3 = ((s3 << 45) | (s3 >> 19)) & m
            self.s = [np.array([v], dtype=U64) for v in (s0, s1, s2, s3)]
            return np.array([out], dtype=U64)
        bits = np.empty((len(self.s[0]), count), dtype=U64)
        with np.errstate(over="ignore"):
            for k in range(count):
                bits[:, k] = self.next_u64()
        return bits

    def normal(self, n):
        """`fill_normal` of `n` values per stream, `[streams, n]` f32: one draw per Box-Muller pair,
        u1 in (0, 1] from its high 32 bits and u2 in [0, 1) from its low 24, r·cos(2πu2) then
        r·sin(2πu2) (vae computes them with its vectorised functions, within 3e-7 of these)."""
        bits = self.draws((n + 1) // 2)
        u1 = ((bits >> U64(32)).astype(np.float32) + np.float32(1.0)) * np.float32(1.0 / 4294967296.0)
        u2 = (bits & U64(0xFFFFFF)).astype(np.float32) * np.float32(1.0 / 16777216.0)
        r = np.sqrt(np.maximum(-2.0 * np.log(u1.astype(np.float64)), 0.0))
        angle = 2 * np.pi * u2.astype(np.float64)
        out = np.stack([r * np.cos(angle), r * np.sin(angle)], 2).reshape(len(bits), -1)
        return out[:, :n].astype(np.float32)

    def below(self, n):
        """`below(n)` of the first stream: uniform in [0, n) by Lemire's method."""
        with np.errstate(over="ignore"):
            m = int(self.next_u64()[0]) * n
            if m % 2**64 < n:
                threshold = (2**64 - n) % n
                while m % 2**64 < threshold:
                    m = int(self.next_u64()[0]) * n
        return m >> 64

    def shuffle(self, xs):
        """Fisher-Yates in place, as `shuffle` (first stream)."""
        for i in range(len(xs) - 1, 0, -1):
            j = self.below(i + 1)
            xs[i], xs[j] = xs[j], xs[i]


def epoch_order(n, seed, epoch):
    """crates/vae-data/src/dataset.rs, `epoch_order`: the examples of epoch `epoch` (from 1)."""
    order = list(range(n))
    Rng.stream(seed, 0x5EED_0000 + epoch).shuffle(order)
    return order
