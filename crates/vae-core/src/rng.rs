//! A small seeded random number generator whose whole state can be saved and restored.
//!
//! candle cannot seed its CPU generator, and exact resume needs the generator's state in the
//! checkpoint, so every random draw of the project (initial weights, shuffling, the noise of the
//! reparameterisation trick, dynamic binarisation) comes from this generator on the host.
//! The algorithm is xoshiro256++ (Blackman & Vigna), seeded through SplitMix64.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{fastmath, multiversion, par};

multiversion! {
    fn box_muller(u1: &[f32], u2: &[f32], a: &mut [f32], b: &mut [f32]) {
        for (((a, b), &u1), &u2) in a.iter_mut().zip(b.iter_mut()).zip(u1).zip(u2) {
            let r = (-2.0 * fastmath::ln(u1)).max(0.0).sqrt();
            let (c, s) = fastmath::sincos_turn(u2);
            *a = r * c;
            *b = r * s;
        }
    }
}

/// Pairs of normal draws per block of [`normals_from_bits`].
const PAIRS: usize = 64;

/// Normal draws into `out` from one generator word per pair (`bits`, `out.len()` halved and
/// rounded up), in blocks of [`PAIRS`] pairs: u1 in (0, 1] from the high 32 bits, u2 in
/// [0, 1) from 24 of the low bits, then [`box_muller`]; an odd last draw keeps the cosine.
fn normals_from_bits(bits: &[u64], out: &mut [f32]) {
    let (mut u1, mut u2) = ([0f32; PAIRS], [0f32; PAIRS]);
    let (mut a, mut b) = ([0f32; PAIRS], [0f32; PAIRS]);
    for (chunk, words) in out.chunks_mut(2 * PAIRS).zip(bits.chunks(PAIRS)) {
        let pairs = chunk.len().div_ceil(2);
        for (k, &w) in words[..pairs].iter().enumerate() {
            u1[k] = ((w >> 32) as f32 + 1.0) * (1.0 / 4_294_967_296.0);
            u2[k] = ((w & 0xff_ffff) as f32) * (1.0 / 16_777_216.0);
        }
        box_muller(&u1[..pairs], &u2[..pairs], &mut a[..pairs], &mut b[..pairs]);
        for (k, v) in chunk.iter_mut().enumerate() {
            *v = if k % 2 == 0 { a[k / 2] } else { b[k / 2] };
        }
    }
}

/// xoshiro256++ with a serialisable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from one number; equal seeds give equal streams.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Self { s }
    }

    /// An independent stream derived from this seed and a stream number (for example one stream
    /// for shuffling and one for the model's noise), so that one consumer cannot shift another.
    pub fn stream(seed: u64, stream: u64) -> Self {
        Self::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// The raw state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator continuing from a saved state. An all-zero state is invalid for xoshiro and is
    /// replaced by the stream of seed 0.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            Self::new(0)
        } else {
            Self { s }
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) as f32 (24 random bits).
    #[inline]
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform integer in [0, n) without modulo bias (Lemire's method). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Fills `out` with standard normal draws: Box-Muller, both outputs of each pair used,
    /// computed in blocks with the vectorised functions of [`crate::fastmath`]. The radius draws
    /// its uniform from 32 bits, so the tails reach 6.6 standard deviations.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let mut bits = [0u64; PAIRS];
        for chunk in out.chunks_mut(2 * PAIRS) {
            let bits = &mut bits[..chunk.len().div_ceil(2)];
            bits.iter_mut().for_each(|b| *b = self.next_u64());
            normals_from_bits(bits, chunk);
        }
    }

    /// [`Rng::fill_normal`] with the transform spread over `threads`: the generator's words are
    /// drawn in order on the calling thread, the Box-Muller transform of each part of `out`
    /// (most of the cost) where it falls. The same values to the bit, and the generator left
    /// where [`Rng::fill_normal`] leaves it.
    pub fn fill_normal_threads(&mut self, out: &mut [f32], threads: usize) {
        const BLOCK: usize = 2 * PAIRS;
        // Shorter outputs take tens of microseconds: not worth handing parts to other threads.
        const PARALLEL_FROM: usize = 1 << 14;
        if threads <= 1 || out.len() < PARALLEL_FROM {
            return self.fill_normal(out);
        }
        let bits: Vec<u64> = (0..out.len().div_ceil(2))
            .map(|_| self.next_u64())
            .collect();
        let parts: Vec<Range<usize>> = par::split(out.len().div_ceil(BLOCK), threads)
            .into_iter()
            .map(|r| r.start * BLOCK..(r.end * BLOCK).min(out.len()))
            .collect();
        par::for_parts_mut(out, &parts, |i, part| {
            let words = parts[i].start / 2..parts[i].end.div_ceil(2);
            normals_from_bits(&bits[words], part);
        });
    }

    /// A vector of `n` standard normal draws.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        let mut v = vec![0f32; n];
        self.fill_normal(&mut v);
        v
    }

    /// Shuffles a slice in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trip() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved = a.state();
        let x: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let mut c = Rng::from_state(saved);
        let y: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(x, y);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    /// The transform spread over threads gives the serial draws to the bit and leaves the
    /// generator where the serial one does: lengths under the parallel threshold, odd ones,
    /// parts that end inside a block.
    #[test]
    fn threaded_normal_draws_are_the_serial_ones() {
        for n in [0, 1, 129, 16_384, 16_385, 70_001] {
            for threads in [1, 2, 3, 8] {
                let (mut a, mut b) = (Rng::new(9), Rng::new(9));
                let (mut x, mut y) = (vec![0f32; n], vec![1f32; n]);
                a.fill_normal(&mut x);
                b.fill_normal_threads(&mut y, threads);
                let same = x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "n {n}, {threads} threads");
                assert_eq!(a.next_u64(), b.next_u64(), "n {n}, {threads} threads");
            }
        }
    }

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut r = Rng::new(3);
        let v = r.normal_vec(200_001);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard error of the mean is 1/sqrt(n) ~ 0.0022; of the variance ~ sqrt(2/n) ~ 0.0032.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        // The shape, not only two moments: kurtosis 3, and the mass beyond 1, 2 and 3 standard
        // deviations (2 (1 - Phi(k)): 0.3173, 0.0455, 0.0027), each within about 4 standard errors.
        let kurt = v.iter().map(|&x| (x as f64).powi(4)).sum::<f64>() / n;
        assert!((kurt - 3.0).abs() < 0.06, "kurtosis {kurt}");
        for (k, p) in [(1.0f32, 0.3173), (2.0, 0.0455), (3.0, 0.0027)] {
            let frac = v.iter().filter(|x| x.abs() > k).count() as f64 / n;
            assert!(
                (frac - p).abs() < 4.0 * (p * (1.0 - p) / n).sqrt() + 1e-4,
                "P(|z| > {k}) = {frac}"
            );
        }
    }

    #[test]
    fn below_is_in_range_and_uniform() {
        let mut r = Rng::new(11);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(5);
        let mut xs: Vec<usize> = (0..1000).collect();
        r.shuffle(&mut xs);
        assert_ne!(xs, (0..1000).collect::<Vec<_>>());
        xs.sort_unstable();
        assert_eq!(xs, (0..1000).collect::<Vec<_>>());
    }
}
