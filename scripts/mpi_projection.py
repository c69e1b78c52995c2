#!/usr/bin/env python3
"""Projected speed-up of `mpirun -np N vae-train` over one rank, from two measured figures.

A projection, not a measurement (docs/DISTRIBUTED.md states its assumptions):

- weak scaling: every rank keeps the per-rank batch and the compute time per step `c` that
  were measured (the global batch grows with N), one rank per node and its own link;
- the reduction is vae-train's chain (crates/vae-train/src/reduce.rs): the buffer of S bytes in
  k segments of s bytes (`segment_for`: about S / (N - 1), between 16 KiB and 1 MiB), passed
  from rank to rank, (k + N - 1) * (s / B + a) seconds, then broadcast from the last rank as a
  scatter and an all-gather, 2 S / B + ceil(log2 N) * a;
- bandwidth B at the link's full rate, latency a per message; no overlap of compute and
  reduction.

Usage: scripts/mpi_projection.py NAME STEP_SECONDS BYTES [NAME STEP_SECONDS BYTES ...]
prints one markdown row per model and network: the speed-up at 8, 64 and 512 ranks, with the
time of one all-reduce.
"""

import math
import sys

NETWORKS = [
    ("10 Gbit/s Ethernet, 25 µs", 10e9 / 8, 25e-6),
    ("100 Gbit/s, 3 µs", 100e9 / 8, 3e-6),
]
RANKS = [8, 64, 512]


def segment_words(words, ranks):
    """vae_train::reduce::segment_for."""
    return max(1 << 12, min(1 << 18, words // max(1, ranks - 1)))


def allreduce_seconds(size, ranks, bandwidth, latency):
    seg = 4 * segment_words(size // 4, ranks)
    k = math.ceil(size / seg)
    chain = (k + ranks - 1) * (seg / bandwidth + latency)
    broadcast = 2 * size / bandwidth + math.ceil(math.log2(ranks)) * latency
    return chain + broadcast


def main(argv):
    if len(argv) == 0 or len(argv) % 3 != 0:
        sys.exit(__doc__)
    print("| model | network | " + " | ".join(f"{n} ranks" for n in RANKS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in RANKS) + " |")
    for i in range(0, len(argv), 3):
        name, step, size = argv[i], float(argv[i + 1]), int(argv[i + 2])
        for net, bandwidth, latency in NETWORKS:
            cells = []
            for n in RANKS:
                t = allreduce_seconds(size, n, bandwidth, latency)
                cells.append(f"{n * step / (step + t):.0f}x ({t * 1e3:.1f} ms)")
            print(f"| `{name}` | {net} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
