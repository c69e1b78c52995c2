//! Data parallelism on the CPU: split a range over scoped threads.
//!
//! Candle's CPU backend is kept on one thread in the binaries
//! ([`crate::device::single_threaded_candle`]); the parallelism of vae is across examples: each
//! thread runs whole forward (and backward) passes over its own rows, which scales far better on
//! the small matrices of a VAE than splitting every operation.

use std::ops::Range;

/// The number of cores this process may use.
pub fn available_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Splits `0..n` into `parts` contiguous ranges of near-equal length (the first ones longer).
pub fn split(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| (p * n / parts)..((p + 1) * n / parts))
        .collect()
}

/// Runs `f` on each range of `split(n, threads)`, one scoped thread each (the calling thread
/// takes the first), and returns the results in range order. A panic in a worker is resumed on
/// the calling thread.
pub fn map_ranges<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    let ranges = split(n, threads);
    if ranges.len() == 1 {
        return ranges.into_iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let mut iter = ranges.into_iter();
        let first = iter.next().expect("at least one range");
        let handles: Vec<_> = iter.map(|r| s.spawn(move || f(r))).collect();
        let mut out = vec![f(first)];
        for h in handles {
            match h.join() {
                Ok(v) => out.push(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_in_order() {
        for (n, t) in [(0, 3), (1, 4), (10, 3), (128, 2), (7, 7)] {
            let r = split(n, t);
            assert_eq!(r.first().map(|r| r.start), Some(0));
            assert_eq!(r.last().map(|r| r.end), Some(n));
            assert!(r.windows(2).all(|w| w[0].end == w[1].start));
            let sums = map_ranges(n, t, |r| r.sum::<usize>());
            assert_eq!(sums.iter().sum::<usize>(), (0..n).sum::<usize>());
        }
    }
}
