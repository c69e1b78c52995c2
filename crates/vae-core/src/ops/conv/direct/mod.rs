//! Direct convolution products for AVX-512: the products of a convolution that read or write
//! an im2col matrix, computed from the (zero-padded) map where it lies instead.
//!
//! Row `q` of the im2col matrix of a channels-last image is, kernel row by kernel row, `k`
//! runs of `k * c` contiguous values of the padded image (one run per kernel row, at the
//! window's top-left pixel plus `ky` padded lines). So a product with the matrix needs only a
//! pointer per (pixel, kernel row):
//! - [`conv_rows`]: `Y = cols(x) W` for `W` `[k·k·c, o]` (a convolution's output, and a
//!   transposed convolution's input gradient): a tile of `NR` output pixels by `MR` vectors of
//!   output channels, the pixels' values broadcast one at a time from their runs (runs
//!   shorter than a vector: the whole kernel in each tile);
//! - [`weight_grad`]: `D (+)= Aᵀ cols(x)` for `A` `[pixels, a]` (a convolution's kernel
//!   gradient with `A` its output gradient, a transposed one's with `A` its input): a tile of
//!   `NR` rows of `D` by `MR` vectors of one kernel row's run, summed over the pixels, the runs
//!   loaded as vectors; for runs shorter than a vector, tiles of `Dᵀ`, taps of the windows
//!   broadcast against vectors of `A`'s rows;
//! - [`transposed`]: `col2im(X W)`, a transposed convolution's output and a strided
//!   convolution's input gradient, for a kernel twice the stride: output pixels of one phase
//!   (`y mod s`, `x mod s`) take the same four kernel taps of a 2x2 block of input pixels, so
//!   each phase is the product of `conv_rows` over the padded input with a `[4·cin, c]` block
//!   of the kernel, written straight to its pixels;
//! - [`flipped`]: a stride-1 convolution's input gradient, the correlation of the padded
//!   output gradient with the kernel turned by half a turn (`conv_rows` again).
//!
//! The register tiles are in `x86.rs`; the padded copies and the windows in `../padded.rs`.
//!
//! The padded copy is a quarter of the im2col matrix of a 4x4 stride-2 convolution (each pixel
//! once rather than in four windows), and the products read it in place; the tiles are those
//! of `gemm`'s AVX-512 kernel (up to 24 accumulators of 16 floats). Each element is one sum in
//! a fixed order (over the kernel's columns, or over the pixels in order), whatever the
//! blocking. Only where the level is `v4`; elsewhere, and for shapes they do not take, the
//! convolutions run as im2col, `gemm` and col2im.

use std::mem::MaybeUninit;

use super::layout::{with_aligned_scratch, AlignedBuf};
use super::padded::{pad, padded_dims, padded_len, windows};
use super::Geom;
use crate::fastmath::{simd_level, SimdLevel};

/// Whether the direct products run on this thread (AVX-512 on x86-64).
pub(super) fn enabled() -> bool {
    cfg!(target_arch = "x86_64") && simd_level() == SimdLevel::V4
}

/// Whether [`conv_rows`] takes a product of geometry `g` with `o` output channels: whole
/// vectors of channels, and kernel rows of at least 16 values, or kernels of at most 64 (a
/// map of few channels: then each tile takes the whole kernel, its rows of `W` few).
pub(super) fn rows_fit(g: Geom, o: usize) -> bool {
    enabled() && o > 0 && o.is_multiple_of(16) && (g.k * g.c >= 16 || g.cols() <= SHORT)
}

/// Whether [`weight_grad`] takes the geometry `g` with `na` rows of the result: its runs
/// whole vectors, or (a map of few channels) a kernel of at most 64 values and `na` a
/// multiple of 16.
pub(super) fn grad_fits(g: Geom, na: usize) -> bool {
    enabled()
        && g.c > 0
        && ((g.k * g.c).is_multiple_of(16)
            || (g.cols() <= SHORT && na > 0 && na.is_multiple_of(16)))
}

/// The largest kernel (values of a window) the products take with runs shorter than a
/// vector.
const SHORT: usize = 64;

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
    let wins: Vec<usize> = windows(g, first, n).collect();
    let outs: Vec<usize> = (0..n).map(|q| q * o).collect();
    let (_, wp) = padded_dims(g);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 is enabled (rows_fit). The k runs of k·c values of each window lie in
    // the padded image (the windows of the batch's output pixels), the k·k·c rows of o
    // values in `w`, each output row of o values in `out`.
    unsafe {
        x86::rows(
            xp.as_ptr(),
            &wins,
            wp * g.c,
            g.k,
            g.k * g.c,
            w.as_ptr(),
            o,
            out.as_mut_ptr().cast(),
            &outs,
            false,
        )
    }
}

/// `d (+)= Aᵀ cols(x)` over every pixel of the batch: `d` `[na, k·k·c]`, `a` `[pixels, na]`,
/// `xp` the padded image; added to what `d` holds when `accumulate`. Needs [`grad_fits`].
/// Runs of whole vectors take tiles of `d`'s rows; shorter ones tiles of its transpose (taps
/// by vectors of `A`'s columns), added into `d` at the end.
pub(super) fn weight_grad(
    xp: &[f32],
    g: Geom,
    a: &[f32],
    na: usize,
    d: &mut [f32],
    accumulate: bool,
) {
    assert!(grad_fits(g, na));
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
    let ncol = g.cols();
    if !(g.k * g.c).is_multiple_of(16) {
        let mut dt = vec![0f32; ncol * na];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 is enabled (grad_fits), na is a multiple of 16, and the pointers
        // stay within the slices checked above (`dt` is `[ncol, na]`).
        unsafe {
            x86::taps_grad(xp, g, a, na, &mut dt)
        }
        for (t, row) in dt.chunks_exact(na).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let e = &mut d[j * ncol + t];
                *e = if accumulate { *e + v } else { v };
            }
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

/// Whether [`transposed`] takes the convolution geometry `g` (whose image is the transposed
/// convolution's output) with `cin` input channels: a kernel twice the stride with half the
/// stride of padding (each output pixel then takes a 2x2 block of input pixels, through the
/// kernel taps of its phase), output channels in whole vectors, and runs of at least 16 values.
pub(super) fn transposed_fits(g: Geom, cin: usize) -> bool {
    let s = g.stride;
    enabled()
        && s > 0
        && g.k == 2 * s
        && 2 * g.pad == s
        && g.h.is_multiple_of(s)
        && g.w.is_multiple_of(s)
        && g.c > 0
        && g.c.is_multiple_of(16)
        && 2 * cin >= 16
}

/// How a kernel is stored, for [`transposed`]: `[cin, cout, k, k]` (a transposed convolution's
/// kernel) or `[cin, k, k, cout]` (a convolution's kernel `[o, c, k, k]` made channels-last,
/// `kernel_to_last`, whose input gradient is the transposed convolution of `o` channels to `c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KernelOrder {
    First,
    Last,
}

/// The geometry of the transposed convolution's input as an image padded by one pixel.
fn small(g: Geom, cin: usize) -> Geom {
    Geom {
        b: g.b,
        c: cin,
        h: g.ho(),
        w: g.wo(),
        k: 1,
        stride: 1,
        pad: 1,
    }
}

/// `y (+)= conv_transpose(x, w)` for the channels-last map `x` `[b, ho, wo, cin]` and `y`
/// `[b, h, w, c]` of the geometry `g`, phase by phase: output pixel `(s·a + py, s·b + px)`
/// takes the 2x2 input pixels around `(a, b)` through the four taps of phase `(py, px)`, two
/// runs of `2·cin` values of the padded input, one `[4·cin, c]` block of the kernel. The
/// phases cover every pixel of `y` once: written over it, or added to the values it holds when
/// `add` (then it must hold values). Needs [`transposed_fits`].
pub(super) fn transposed(
    x: &[f32],
    g: Geom,
    w: &[f32],
    order: KernelOrder,
    cin: usize,
    y: &mut [MaybeUninit<f32>],
    add: bool,
) {
    assert!(transposed_fits(g, cin));
    let (c, k) = (g.c, g.k);
    assert_eq!(x.len(), g.rows() * cin);
    assert_eq!(w.len(), cin * c * k * k);
    assert_eq!(y.len(), g.image());
    let gs = small(g, cin);
    with_aligned_scratch(padded_len(gs), |xp| {
        pad(x, gs, xp);
        phases(xp, g, w, order, cin, y, add);
    });
}

/// [`transposed`] from the padded input `xp`.
fn phases(
    xp: &[f32],
    g: Geom,
    w: &[f32],
    order: KernelOrder,
    cin: usize,
    y: &mut [MaybeUninit<f32>],
    add: bool,
) {
    let (c, k, s) = (g.c, g.k, g.stride);
    let gs = small(g, cin);
    // Phase (py, px) takes kernel rows ry + s·(1 - t) for its runs t = 0, 1 (input rows
    // a + qy - 1 + t of the unpadded map, rows a + qy + t of the padded one), and columns
    // likewise, with ry = (py + pad) mod s and qy = (py + pad) / s.
    let tap = |p: usize, t: usize| ((p + g.pad) % s + s * (1 - t), (p + g.pad) / s);
    let (hs, ws) = (gs.h, gs.w);
    let (_, wps) = padded_dims(gs);
    let mut panel = AlignedBuf::zeros(4 * cin * c);
    let n = g.b * hs * ws;
    let mut wins = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    for py in 0..s {
        for px in 0..s {
            // The phase's [4·cin, c] block: rows (t, u, ci) for run t, pixel u of the run.
            for t in 0..2 {
                for u in 0..2 {
                    let ((ky, _), (kx, _)) = (tap(py, t), tap(px, u));
                    for ci in 0..cin {
                        let row = &mut panel[((t * 2 + u) * cin + ci) * c..][..c];
                        for (co, v) in row.iter_mut().enumerate() {
                            *v = match order {
                                KernelOrder::First => w[((ci * c + co) * k + ky) * k + kx],
                                KernelOrder::Last => w[((ci * k + ky) * k + kx) * c + co],
                            };
                        }
                    }
                }
            }
            let ((_, qy), (_, qx)) = (tap(py, 0), tap(px, 0));
            wins.clear();
            outs.clear();
            for bi in 0..g.b {
                for a in 0..hs {
                    for bx in 0..ws {
                        wins.push(((bi * (hs + 2) + a + qy) * wps + bx + qx) * cin);
                        outs.push(((bi * g.h + s * a + py) * g.w + s * bx + px) * c);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 is enabled (transposed_fits). The runs of each window (two
            // lines of 2·cin values from its top-left, qy, qx <= 1) lie in the padded input of
            // (hs + 2) x (ws + 2) pixels, and each output row (c values at an output pixel)
            // in `y`; the panel has 4·cin rows of c. Each pixel is in one phase, so without
            // `add` every element of `y` is written before any is read.
            unsafe {
                x86::rows(
                    xp.as_ptr(),
                    &wins,
                    wps * cin,
                    2,
                    2 * cin,
                    panel.as_ptr(),
                    c,
                    y.as_mut_ptr().cast(),
                    &outs,
                    add,
                )
            }
        }
    }
}

/// Whether [`flipped`] takes the stride-1 convolution geometry `g` with `o` output channels:
/// image channels in whole vectors, padding under the kernel's side, runs of at least 16
/// values.
pub(super) fn flipped_fits(g: Geom, o: usize) -> bool {
    enabled() && g.stride == 1 && g.pad < g.k && g.c > 0 && g.c.is_multiple_of(16) && g.k * o >= 16
}

/// `dx (+)=` the input gradient of a stride-1 convolution of geometry `g` with the kernel
/// `wt` `[o, k·k·c]` (channels-last, `kernel_to_last`), from its output gradient `gr`
/// `[b, ho, wo, o]`: the correlation of `gr`, padded by `k - 1 - pad`, with the kernel turned
/// by half a turn, `[k·k·o, c]`: the product of [`conv_rows`] with no columns to add back.
/// Every pixel of `dx` is written, or added to when `add` (then `dx` must hold values).
/// Needs [`flipped_fits`].
pub(super) fn flipped(
    gr: &[f32],
    g: Geom,
    wt: &[f32],
    o: usize,
    dx: &mut [MaybeUninit<f32>],
    add: bool,
) {
    assert!(flipped_fits(g, o));
    let (k, c) = (g.k, g.c);
    let gg = Geom {
        b: g.b,
        c: o,
        h: g.ho(),
        w: g.wo(),
        k,
        stride: 1,
        pad: k - 1 - g.pad,
    };
    assert_eq!((gg.ho(), gg.wo()), (g.h, g.w));
    assert_eq!(gr.len(), gg.image());
    assert_eq!(wt.len(), o * k * k * c);
    assert_eq!(dx.len(), g.image());
    // Row (ky, kx, oi) of the turned kernel is tap (k-1-ky, k-1-kx) of output channel oi.
    let mut panel = AlignedBuf::zeros(k * k * o * c);
    for ky in 0..k {
        for kx in 0..k {
            for oi in 0..o {
                let tap = ((k - 1 - ky) * k + (k - 1 - kx)) * c;
                panel[((ky * k + kx) * o + oi) * c..][..c]
                    .copy_from_slice(&wt[oi * k * k * c + tap..][..c]);
            }
        }
    }
    let (_, wp) = padded_dims(gg);
    with_aligned_scratch(padded_len(gg), |gp| {
        pad(gr, gg, gp);
        let n = gg.rows();
        let (mut wins, mut outs) = (Vec::with_capacity(256), Vec::with_capacity(256));
        for first in (0..n).step_by(256) {
            wins.clear();
            outs.clear();
            let m = 256.min(n - first);
            wins.extend(windows(gg, first, m));
            outs.extend((first..first + m).map(|q| q * c));
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 is enabled (flipped_fits). The k runs of k·o values of each
            // window lie in the padded gradient (windows of the pixels of dx, which are the
            // output pixels of `gg`), the k·k·o rows of c values in the panel, and each row of
            // c values at an output pixel in `dx`; the blocks cover every pixel of `dx`, so
            // without `add` each element is written before any is read.
            unsafe {
                x86::rows(
                    gp.as_ptr(),
                    &wins,
                    wp * o,
                    k,
                    k * o,
                    panel.as_ptr(),
                    c,
                    dx.as_mut_ptr().cast(),
                    &outs,
                    add,
                )
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86;
