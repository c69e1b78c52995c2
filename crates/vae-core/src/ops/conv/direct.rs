//! Direct convolution products for AVX-512: the two products of a strided convolution that
//! read its im2col matrix, computed from the (zero-padded) image where it lies instead.
//!
//! Row `q` of the im2col matrix of a channels-last image is, kernel row by kernel row, `k`
//! runs of `k * c` contiguous values of the padded image (one run per kernel row, at the
//! window's top-left pixel plus `ky` padded lines). So a product with the matrix needs only a
//! pointer per (pixel, kernel row):
//! - [`conv_rows`]: `Y = cols(x) W` for `W` `[k·k·c, o]` (a convolution's output, and a
//!   transposed convolution's input gradient): a tile of `NR` output pixels by `MR` vectors of
//!   output channels, the pixels' values broadcast one at a time from their runs;
//! - [`weight_grad`]: `D (+)= Aᵀ cols(x)` for `A` `[pixels, a]` (a convolution's kernel
//!   gradient with `A` its output gradient, a transposed one's with `A` its input): a tile of
//!   `NR` rows of `D` by `MR` vectors of one kernel row's run, summed over the pixels, the runs
//!   loaded as vectors.
//!
//! The padded copy is a quarter of the im2col matrix of a 4x4 stride-2 convolution (each pixel
//! once rather than in four windows), and the products read it in place; the tiles are those
//! of `gemm`'s AVX-512 kernel (24 accumulators of 16 floats). Each element is one sum in a
//! fixed order (over the kernel's columns, or over the pixels in order), whatever the blocking.
//! Only where the level is `v4`; elsewhere, and for shapes they do not take, the convolutions
//! run as im2col and `gemm`.

use std::mem::MaybeUninit;

use super::Geom;
use crate::fastmath::{simd_level, SimdLevel};

/// Whether the direct products run on this thread (AVX-512 on x86-64).
pub(super) fn enabled() -> bool {
    cfg!(target_arch = "x86_64") && simd_level() == SimdLevel::V4
}

/// Whether [`conv_rows`] takes a product of geometry `g` with `o` output channels: whole
/// vectors of channels, and kernel rows of at least 16 values (a shorter run, as of a map of one
/// channel, would reload the tile's sums more often than it multiplies; im2col serves it).
pub(super) fn rows_fit(g: Geom, o: usize) -> bool {
    enabled() && o > 0 && o.is_multiple_of(16) && g.k * g.c >= 16
}

/// Whether [`weight_grad`] takes the geometry `g` (its runs whole vectors).
pub(super) fn grad_fits(g: Geom) -> bool {
    enabled() && g.c > 0 && (g.k * g.c).is_multiple_of(16)
}

/// Height and width of the padded image.
fn padded_dims(g: Geom) -> (usize, usize) {
    (g.h + 2 * g.pad, g.w + 2 * g.pad)
}

/// Floats of the padded copy of the batch.
pub(super) fn padded_len(g: Geom) -> usize {
    let (hp, wp) = padded_dims(g);
    g.b * hp * wp * g.c
}

/// The channels-last image `x` `[b, h, w, c]` with `pad` zeros on each side, into `out`
/// (`padded_len` floats, every one written).
pub(super) fn pad(x: &[f32], g: Geom, out: &mut [f32]) {
    let (hp, wp) = padded_dims(g);
    let (line, pline) = (g.w * g.c, wp * g.c);
    let left = g.pad * g.c;
    assert_eq!(x.len(), g.image());
    assert_eq!(out.len(), padded_len(g));
    for (img, dst) in x
        .chunks_exact(g.h * line)
        .zip(out.chunks_exact_mut(hp * pline))
    {
        let (top, rest) = dst.split_at_mut(g.pad * pline);
        top.fill(0.0);
        let (mid, bottom) = rest.split_at_mut(g.h * pline);
        bottom.fill(0.0);
        for (src, d) in img.chunks_exact(line).zip(mid.chunks_exact_mut(pline)) {
            d[..left].fill(0.0);
            d[left..left + line].copy_from_slice(src);
            d[left + line..].fill(0.0);
        }
    }
}

/// The offset in the padded image of the window of output pixel `q` (its top-left value).
#[inline(always)]
fn window(g: Geom, q: usize) -> usize {
    let (ho, wo) = (g.ho(), g.wo());
    let (hp, wp) = padded_dims(g);
    let (b, oy, ox) = (q / (ho * wo), q / wo % ho, q % wo);
    ((b * hp + oy * g.stride) * wp + ox * g.stride) * g.c
}

/// Rows `first..` of `cols(x) W` into `out` (`[n, o]`, every element written), `xp` the padded
/// image ([`pad`]) and `w` the `[k·k·c, o]` matrix. Needs [`rows_fit`].
pub(super) fn conv_rows(
    xp: &[f32],
    g: Geom,
    w: &[f32],
    o: usize,
    first: usize,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(rows_fit(g, o));
    let ncol = g.cols();
    let n = out.len() / o;
    assert_eq!(xp.len(), padded_len(g));
    assert_eq!(w.len(), ncol * o);
    assert!(out.len() == n * o && first + n <= g.rows());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 is enabled (rows_fit); every pointer formed below is within the slices
    // checked above (the windows of pixels of the batch lie in the padded image, the tiles in
    // `w` and `out`).
    unsafe {
        x86::conv_rows(xp, g, w, o, first, out)
    }
}

/// `d (+)= Aᵀ cols(x)` over every pixel of the batch: `d` `[na, k·k·c]`, `a` `[pixels, na]`,
/// `xp` the padded image; added to what `d` holds when `accumulate`. Needs [`grad_fits`].
pub(super) fn weight_grad(
    xp: &[f32],
    g: Geom,
    a: &[f32],
    na: usize,
    d: &mut [f32],
    accumulate: bool,
) {
    assert!(grad_fits(g));
    assert_eq!(xp.len(), padded_len(g));
    assert_eq!(a.len(), g.rows() * na);
    assert_eq!(d.len(), na * g.cols());
    if na == 0 {
        return;
    }
    if g.rows() == 0 {
        if !accumulate {
            d.fill(0.0);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 is enabled (grad_fits); the pointers stay within the slices checked
    // above.
    unsafe {
        x86::weight_grad(xp, g, a, na, d, accumulate)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{padded_dims, window, Geom};

    /// Pixels of `A` a block of [`weight_grad`] sums before moving to the next tile: its rows
    /// of `A` and its windows of the image stay in the core's cache while every tile of `d`
    /// passes over them.
    const GRAD_BLOCK: usize = 64;

    /// One tile of `cols(x) W`: `NR` pixels (their runs `runs[ky][p]`, `run` floats each) by
    /// `MR` vectors of output channels of `w` (row stride `ldw`), written to `dst` (row stride
    /// `ldd`) for the first `n` pixels.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_tile<const MR: usize, const NR: usize>(
        r: &[*const f32; NR],
        run: usize,
        w: *const f32,
        ldw: usize,
        dst: *mut f32,
        ldd: usize,
        n: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller keeps the pointers within their slices (see the callers).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); MR]; NR];
            if accumulate {
                for (p, row) in acc.iter_mut().enumerate().take(n) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(dst.add(p * ldd + 16 * j));
                    }
                }
            }
            let mut wp = w;
            for t in 0..run {
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
            for (p, row) in acc.iter().enumerate().take(n) {
                for (j, v) in row.iter().enumerate() {
                    _mm512_storeu_ps(dst.add(p * ldd + 16 * j), *v);
                }
            }
        }
    }

    /// The tiles of output channels `oc..oc + 16·MR` for the pixels whose windows start at
    /// `wins`.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_chunk<const MR: usize, const NR: usize>(
        xp: &[f32],
        g: Geom,
        wins: &[usize],
        w: &[f32],
        o: usize,
        oc: usize,
        out: *mut f32,
    ) {
        // SAFETY: the caller keeps the pointers within their slices (see the callers).
        unsafe {
            let (run, n) = (g.k * g.c, wins.len());
            let (_, wp) = padded_dims(g);
            let line = wp * g.c;
            // One kernel row at a time over every tile: its rows of `w` (a few tens of KiB)
            // stay in the first-level cache while the tiles pass over them.
            for ky in 0..g.k {
                let mut q = 0;
                while q < n {
                    let m = NR.min(n - q);
                    // Pixels past the end repeat the last one (computed, not stored).
                    let r: [*const f32; NR] = std::array::from_fn(|p| {
                        xp.as_ptr().add(wins[q + p.min(m - 1)] + ky * line)
                    });
                    rows_tile::<MR, NR>(
                        &r,
                        run,
                        w.as_ptr().add(ky * run * o + oc),
                        o,
                        out.add(q * o + oc),
                        o,
                        m,
                        ky > 0,
                    );
                    q += m;
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv_rows(
        xp: &[f32],
        g: Geom,
        w: &[f32],
        o: usize,
        first: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        // SAFETY: the caller keeps the pointers within their slices (see the callers).
        unsafe {
            let n = out.len() / o;
            let wins: Vec<usize> = (first..first + n).map(|q| window(g, q)).collect();
            let dst = out.as_mut_ptr().cast::<f32>();
            let mut oc = 0;
            while oc < o {
                match (o - oc) / 16 {
                    1 => rows_chunk::<1, 12>(xp, g, &wins, w, o, oc, dst),
                    2 => rows_chunk::<2, 12>(xp, g, &wins, w, o, oc, dst),
                    3 => rows_chunk::<3, 8>(xp, g, &wins, w, o, oc, dst),
                    _ => rows_chunk::<4, 6>(xp, g, &wins, w, o, oc, dst),
                }
                oc += 64.min(o - oc);
            }
        }
    }

    /// One tile of `Aᵀ cols(x)`: rows `aoff[p]` of `d` (row stride `ldd`, from `dst`) by `MR`
    /// vectors of the runs at offset `koff` of each pixel's window (`wins`), summed over the
    /// pixels `q` of `wins` (rows of `a`, `a` advancing by `lda` a pixel), added to `dst` or
    /// written over it; stored for the first `n` rows.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn grad_tile<const MR: usize, const NR: usize>(
        xp: *const f32,
        wins: &[usize],
        koff: usize,
        a: *const f32,
        lda: usize,
        aoff: [usize; NR],
        dst: *mut f32,
        ldd: usize,
        n: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller keeps the pointers within their slices (see the callers).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); MR]; NR];
            if accumulate {
                for (p, row) in acc.iter_mut().enumerate().take(n) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(dst.add(p * ldd + 16 * j));
                    }
                }
            }
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
            for (p, row) in acc.iter().enumerate().take(n) {
                for (j, v) in row.iter().enumerate() {
                    _mm512_storeu_ps(dst.add(p * ldd + 16 * j), *v);
                }
            }
        }
    }

    /// The tiles of one pixel block (`wins`, from pixel `q0`) over all of `d`.
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
        // SAFETY: the caller keeps the pointers within their slices (see the callers).
        unsafe {
            const NR: usize = 6;
            let (ncol, run) = (g.cols(), g.k * g.c);
            let (_, wp) = padded_dims(g);
            let koff = ky * wp * g.c + t0;
            let col = ky * run + t0;
            let mut r0 = 0;
            while r0 < na {
                let n = NR.min(na - r0);
                // Rows past the end repeat the last one (computed, not stored).
                let aoff: [usize; NR] = std::array::from_fn(|p| r0 + p.min(n - 1));
                grad_tile::<MR, NR>(
                    xp.as_ptr(),
                    wins,
                    koff,
                    a.as_ptr().add(q0 * na),
                    na,
                    aoff,
                    d.as_mut_ptr().add(r0 * ncol + col),
                    ncol,
                    n,
                    accumulate,
                );
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
                wins.extend((q0..q1).map(|q| window(g, q)));
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
}
