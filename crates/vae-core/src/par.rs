//! Data parallelism on the CPU: split a range of examples over a pool of threads.
//!
//! Candle's CPU backend is kept on one thread in the binaries
//! ([`crate::device::single_threaded_candle`]); the parallelism of vae is across examples: each
//! thread runs whole forward (and backward) passes over its own rows, which scales far better on
//! the small matrices of a VAE than splitting every operation. The calling thread works too;
//! the others are a persistent pool per thread count (rayon), so a training step spawns nothing
//! and each thread keeps its allocator cache from one step to the next.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// The number of cores this process may use.
pub fn available_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The threads of a data-parallel computation on `device`: `threads` (at least one) on the
/// CPU, one elsewhere (other devices parallelise each operation themselves).
pub fn threads_for(device: &candle_core::Device, threads: usize) -> usize {
    if device.is_cpu() {
        threads.max(1)
    } else {
        1
    }
}

/// Splits `0..n` into `parts` contiguous ranges of near-equal length (the first ones shorter).
pub fn split(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|p| (p * n / parts)..((p + 1) * n / parts))
        .collect()
}

/// The pool of `threads` threads (built on first use, kept for the process).
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().ok()?;
    if let Some(p) = pools.get(&threads) {
        return Some(Arc::clone(p));
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vae-worker-{i}"))
            .build()
            .ok()?,
    );
    pools.insert(threads, Arc::clone(&p));
    Some(p)
}

/// Runs `f` on each range of `split(n, threads)` in parallel: the calling thread takes the
/// first range, a pool of `threads - 1` threads the others. Returns the results in range order;
/// panics in `f` propagate to the caller.
pub fn map_ranges<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(Range<usize>) -> T + Sync + Send,
) -> Vec<T> {
    let ranges = split(n, threads);
    if ranges.len() == 1 {
        return ranges.into_iter().map(&f).collect();
    }
    let Some(p) = pool(ranges.len() - 1) else {
        // No pool could be built (thread creation refused): run on the calling thread.
        return ranges.into_iter().map(&f).collect();
    };
    let mut out: Vec<Option<T>> = (0..ranges.len()).map(|_| None).collect();
    let (first, rest) = out.split_first_mut().expect("at least two ranges");
    let f = &f;
    p.in_place_scope(|s| {
        for (slot, r) in rest.iter_mut().zip(ranges[1..].iter().cloned()) {
            s.spawn(move |_| *slot = Some(f(r)));
        }
        *first = Some(f(ranges[0].clone()));
    });
    out.into_iter()
        .map(|v| v.expect("every range ran"))
        .collect()
}

/// Runs `f(i, part)` on each part of `data` that `parts` cut (contiguous ranges, in order,
/// from 0 to `data.len()`), in parallel as [`map_ranges`] runs its ranges, part `i` on the
/// thread of range `i`.
pub fn for_parts_mut<T: Send>(
    data: &mut [T],
    parts: &[Range<usize>],
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let mut rest = data;
    let mut cut = Vec::with_capacity(parts.len());
    for p in parts {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(p.len());
        cut.push(Mutex::new(head));
        rest = tail;
    }
    map_ranges(cut.len(), cut.len(), |r| {
        for i in r {
            if let Ok(mut part) = cut[i].lock() {
                f(i, &mut part);
            }
        }
    });
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
            let starts = map_ranges(n, t, |r| r.start);
            assert!(
                starts.windows(2).all(|w| w[0] <= w[1]),
                "results out of order: {starts:?}"
            );
        }
    }
}
