//! The AVX-512 micro-kernels of the direct products: tiles of up to 24 accumulators of 16
//! floats, as in `gemm`'s AVX-512 kernel.

use std::arch::x86_64::*;

use super::{padded_dims, windows, Geom};

/// Pixels of `A` a block of [`weight_grad`] sums before moving to the next tile: its rows
/// of `A` and its windows of the image stay in the core's cache while every tile of `d`
/// passes over them.
const GRAD_BLOCK: usize = 64;

/// Pixels of a [`rows`] block: one kernel row's weights stay in the first-level cache
/// while the block's tiles pass over them.
const ROWS_BLOCK: usize = 256;

/// `NR` rows of `MR` vectors at `dst[p]`: loaded (rows `n..` zero), or zeros.
#[inline(always)]
unsafe fn load_tile<const MR: usize, const NR: usize>(
    dst: &[*mut f32; NR],
    n: usize,
    accumulate: bool,
) -> [[__m512; MR]; NR] {
    // SAFETY: the caller's rows hold MR vectors each.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); MR]; NR];
        if accumulate {
            for (row, d) in acc.iter_mut().zip(dst).take(n) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(d.add(16 * j));
                }
            }
        }
        acc
    }
}

/// Stores the first `n` rows of `acc` at `dst[p]`.
#[inline(always)]
unsafe fn store_tile<const MR: usize, const NR: usize>(
    dst: &[*mut f32; NR],
    n: usize,
    acc: &[[__m512; MR]; NR],
) {
    // SAFETY: the caller's rows hold MR vectors each.
    unsafe {
        for (row, d) in acc.iter().zip(dst).take(n) {
            for (j, v) in row.iter().enumerate() {
                _mm512_storeu_ps(d.add(16 * j), *v);
            }
        }
    }
}

/// One tile of `cols(x) W`: `NR` pixels (their runs at `r[p] + t·line`, `runs` runs of
/// `run` floats each) by `MR` vectors of the output channels of `w` (row stride `ldw`), into
/// the rows `dst[p]` of the first `n` pixels, added to them when `accumulate`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tile<const MR: usize, const NR: usize>(
    r: &[*const f32; NR],
    runs: usize,
    line: usize,
    run: usize,
    w: *const f32,
    ldw: usize,
    dst: &[*mut f32; NR],
    n: usize,
    accumulate: bool,
) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let mut acc = load_tile::<MR, NR>(dst, n, accumulate);
        let mut wp = w;
        for u in 0..runs {
            let off = u * line;
            for t in off..off + run {
                let mut wv = [_mm512_setzero_ps(); MR];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(wp.add(16 * j));
                }
                for p in 0..NR {
                    let s = _mm512_set1_ps(*r[p].add(t));
                    for j in 0..MR {
                        acc[p][j] = _mm512_fmadd_ps(s, wv[j], acc[p][j]);
                    }
                }
                wp = wp.add(ldw);
            }
        }
        store_tile::<MR, NR>(dst, n, &acc);
    }
}

/// The output channels `oc..oc + 16·MR` of [`rows`], for the pixels of `wins` / `outs`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_chunk<const MR: usize, const NR: usize>(
    xp: *const f32,
    wins: &[usize],
    line: usize,
    runs: usize,
    run: usize,
    w: *const f32,
    ldw: usize,
    out: *mut f32,
    outs: &[usize],
    accumulate: bool,
) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let n = wins.len();
        // One run at a time over every tile: its rows of `w` (a few tens of KiB) stay in
        // the first-level cache while the tiles pass over them. Runs shorter than a vector
        // (a map of few channels) all go into each tile: a tile's sums are loaded and stored
        // once for the whole kernel, whose rows of `w` are few.
        let group = if run < 16 { runs } else { 1 };
        for t0 in (0..runs).step_by(group.max(1)) {
            let mut q = 0;
            while q < n {
                let m = NR.min(n - q);
                // Pixels past the end repeat the last one (computed, not stored).
                let at = |p: usize| q + p.min(m - 1);
                let r: [*const f32; NR] = std::array::from_fn(|p| xp.add(wins[at(p)] + t0 * line));
                let d: [*mut f32; NR] = std::array::from_fn(|p| out.add(outs[at(p)]));
                let wt = w.add(t0 * run * ldw);
                let acc = accumulate || t0 > 0;
                rows_tile::<MR, NR>(&r, group, line, run, wt, ldw, &d, m, acc);
                q += m;
            }
        }
    }
}

/// `out[outs[q] + j] (+)= sum over runs t, values v of xp[wins[q] + t·line + v] ·
/// w[(t·run + v)·o + j]` for every pixel `q`, `j < o` (a multiple of 16): the products of
/// [`super::conv_rows`] and, phase by phase, of [`super::transposed`]. Added to `out`
/// when `accumulate`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows(
    xp: *const f32,
    wins: &[usize],
    line: usize,
    runs: usize,
    run: usize,
    w: *const f32,
    o: usize,
    out: *mut f32,
    outs: &[usize],
    accumulate: bool,
) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        for (wb, ob) in wins.chunks(ROWS_BLOCK).zip(outs.chunks(ROWS_BLOCK)) {
            let mut oc = 0;
            while oc < o {
                let (wc, dc) = (w.add(oc), out.add(oc));
                macro_rules! chunk {
                    ($mr:literal, $nr:literal) => {
                        rows_chunk::<$mr, $nr>(xp, wb, line, runs, run, wc, o, dc, ob, accumulate)
                    };
                }
                match (o - oc) / 16 {
                    1 => chunk!(1, 8),
                    2 => chunk!(2, 6),
                    3 => chunk!(3, 8),
                    _ => chunk!(4, 6),
                }
                oc += 64.min(o - oc);
            }
        }
    }
}

/// One tile of `Aᵀ cols(x)`: the rows `dst[p]` of `d` (`n` of them) by `MR` vectors of
/// the runs at offset `koff` of each pixel's window (`wins`), summed over those pixels
/// (rows of `a`, `a` advancing by `lda` a pixel, element `aoff[p]` for row `p`), added to
/// `dst` or written over it.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_tile<const MR: usize, const NR: usize>(
    xp: *const f32,
    wins: &[usize],
    koff: usize,
    a: *const f32,
    lda: usize,
    aoff: [usize; NR],
    dst: &[*mut f32; NR],
    n: usize,
    accumulate: bool,
) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let mut acc = load_tile::<MR, NR>(dst, n, accumulate);
        let mut ap = a;
        for &win in wins {
            let rp = xp.add(win + koff);
            let mut xv = [_mm512_setzero_ps(); MR];
            for (j, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(rp.add(16 * j));
            }
            for p in 0..NR {
                let s = _mm512_set1_ps(*ap.add(aoff[p]));
                for j in 0..MR {
                    acc[p][j] = _mm512_fmadd_ps(s, xv[j], acc[p][j]);
                }
            }
            ap = ap.add(lda);
        }
        store_tile::<MR, NR>(dst, n, &acc);
    }
}

/// The tiles of one pixel block (`wins`, from pixel `q0`) over the columns
/// `ky·run + t0 ..` of `d`, all its rows.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_block<const MR: usize>(
    xp: &[f32],
    g: Geom,
    wins: &[usize],
    a: &[f32],
    na: usize,
    q0: usize,
    d: &mut [f32],
    accumulate: bool,
    ky: usize,
    t0: usize,
) {
    const NR: usize = 6;
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let (ncol, run) = (g.cols(), g.k * g.c);
        let (_, wp) = padded_dims(g);
        let koff = ky * wp * g.c + t0;
        let col = ky * run + t0;
        let mut r0 = 0;
        while r0 < na {
            let n = NR.min(na - r0);
            // Rows past the end repeat the last one (computed, not stored).
            let aoff: [usize; NR] = std::array::from_fn(|p| r0 + p.min(n - 1));
            let dst: [*mut f32; NR] =
                std::array::from_fn(|p| d.as_mut_ptr().add(aoff[p] * ncol + col));
            let ap = a.as_ptr().add(q0 * na);
            grad_tile::<MR, NR>(xp.as_ptr(), wins, koff, ap, na, aoff, &dst, n, accumulate);
            r0 += n;
        }
    }
}

#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weight_grad(
    xp: &[f32],
    g: Geom,
    a: &[f32],
    na: usize,
    d: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let rows = g.rows();
        let run = g.k * g.c;
        let mut wins = Vec::with_capacity(GRAD_BLOCK.min(rows));
        let mut q0 = 0;
        while q0 < rows {
            let q1 = (q0 + GRAD_BLOCK).min(rows);
            wins.clear();
            wins.extend(windows(g, q0, q1 - q0));
            let acc = accumulate || q0 > 0;
            for ky in 0..g.k {
                let mut t0 = 0;
                while t0 < run {
                    match (run - t0) / 16 {
                        1 => grad_block::<1>(xp, g, &wins, a, na, q0, d, acc, ky, t0),
                        2 => grad_block::<2>(xp, g, &wins, a, na, q0, d, acc, ky, t0),
                        3 => grad_block::<3>(xp, g, &wins, a, na, q0, d, acc, ky, t0),
                        _ => grad_block::<4>(xp, g, &wins, a, na, q0, d, acc, ky, t0),
                    }
                    t0 += 64.min(run - t0);
                }
            }
            q0 = q1;
        }
    }
}

/// Taps (columns of `cols(x)`) in a tile of [`taps_grad`].
const TAPS: usize = 8;

/// Pixels of a block of [`taps_grad`]: its rows of `A` stay in the core's cache while the
/// tiles of every tap pass over them.
const TAPS_BLOCK: usize = 512;

/// One tile of `cols(x)ᵀ A`: the rows `dst[i]` of `dᵀ` (`n` of them), taps at `offs[i]` from
/// each pixel's window (`wins`), by `MR` vectors of the columns of `a` (`lda` apart a pixel),
/// summed over the pixels, added to `dst` or written over it.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn taps_tile<const MR: usize>(
    xp: *const f32,
    wins: &[usize],
    offs: &[usize; TAPS],
    a: *const f32,
    lda: usize,
    dst: &[*mut f32; TAPS],
    n: usize,
    accumulate: bool,
) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let mut acc = load_tile::<MR, TAPS>(dst, n, accumulate);
        let mut ap = a;
        for &win in wins {
            let mut av = [_mm512_setzero_ps(); MR];
            for (j, v) in av.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(ap.add(16 * j));
            }
            let base = xp.add(win);
            for i in 0..TAPS {
                let s = _mm512_set1_ps(*base.add(offs[i]));
                for j in 0..MR {
                    acc[i][j] = _mm512_fmadd_ps(s, av[j], acc[i][j]);
                }
            }
            ap = ap.add(lda);
        }
        store_tile::<MR, TAPS>(dst, n, &acc);
    }
}

/// `dt = cols(x)ᵀ A` over every pixel of the batch (`dt` `[k·k·c, na]`, `na` a multiple of
/// 16): the kernel gradient of [`super::weight_grad`] transposed, for windows of short runs.
/// Each tile broadcasts its taps of a window and multiplies one row of `A`, so the runs need
/// not be whole vectors.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn taps_grad(xp: &[f32], g: Geom, a: &[f32], na: usize, dt: &mut [f32]) {
    // SAFETY: the caller keeps the pointers within their slices (see the callers).
    unsafe {
        let (rows, ncol, run) = (g.rows(), g.cols(), g.k * g.c);
        let (_, wp) = padded_dims(g);
        // Tap (ky, kx, ci) lies ky padded lines and kx·c + ci values from the window.
        let offs: Vec<usize> = (0..ncol).map(|t| t / run * wp * g.c + t % run).collect();
        let mut wins = Vec::with_capacity(TAPS_BLOCK.min(rows));
        let mut q0 = 0;
        while q0 < rows {
            let q1 = (q0 + TAPS_BLOCK).min(rows);
            wins.clear();
            wins.extend(windows(g, q0, q1 - q0));
            let ap = a.as_ptr().add(q0 * na);
            let mut t0 = 0;
            while t0 < ncol {
                let n = TAPS.min(ncol - t0);
                // Taps past the end repeat the last one (computed, not stored).
                let tap = |i: usize| t0 + i.min(n - 1);
                let o: [usize; TAPS] = std::array::from_fn(|i| offs[tap(i)]);
                let mut j0 = 0;
                while j0 < na {
                    let dst: [*mut f32; TAPS] =
                        std::array::from_fn(|i| dt.as_mut_ptr().add(tap(i) * na + j0));
                    let (x, ac) = (xp.as_ptr(), q0 > 0);
                    let mr = ((na - j0) / 16).min(3);
                    match mr {
                        1 => taps_tile::<1>(x, &wins, &o, ap.add(j0), na, &dst, n, ac),
                        2 => taps_tile::<2>(x, &wins, &o, ap.add(j0), na, &dst, n, ac),
                        _ => taps_tile::<3>(x, &wins, &o, ap.add(j0), na, &dst, n, ac),
                    }
                    j0 += 16 * mr;
                }
                t0 += n;
            }
            q0 = q1;
        }
    }
}
