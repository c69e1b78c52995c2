//! The exact convolutions, on feature maps of either memory order, channels-last inside.
//!
//! conv2d: `y[pixel, o] = (Σ_t cols[pixel, t] w[o, t]) + b[o]` with `cols` the channels-last
//! im2col matrix, its columns in `(ky, kx, c)` order (zeros where the window leaves the
//! image), each sum in the order of [`super::product`]; then the activation.
//! conv_transpose2d: the rows of `X W` (`X` the input's pixels `[pixels, cin]`, a sum over
//! `cin` in that order), each row's `k · k · cout` values added into the output's pixels in
//! row order (col2im: each output value is 0, plus the contributions of the input pixels
//! that reach it, in the order of those pixels), then `+ b` and the activation.
//!
//! The memory orders only move values: a map given as NCHW is transposed to channels-last
//! before the sums, and an NCHW output transposed after them, so both orders give the same
//! bits. The im2col matrix is built a block of rows at a time into a per-thread scratch
//! buffer (the block's product follows while it is in the cache), and the kernel is packed
//! into the panels of [`super::product`] once per call.

use candle_core::Tensor;

use super::product::{pack, packed_len, product};
use super::{activate, back, Values};
use crate::ops::conv::layout::{col2im, im2col, to_first, to_last, with_scratch};
use crate::ops::conv::Geom;
use crate::ops::{Act, ConvOpts, MapLayout};

/// Floats of one block of the im2col matrix (256 KiB, within a core's L2 cache).
const BLOCK_FLOATS: usize = 1 << 16;

/// Rows of the im2col matrix per block, for `cols` columns.
fn block_rows(cols: usize) -> usize {
    (BLOCK_FLOATS / cols.max(1)).max(4)
}

/// `(batch, channels, height, width)` of a map in the order `m`.
fn dims(x: &Tensor, m: MapLayout) -> candle_core::Result<(usize, usize, usize, usize)> {
    Ok(match m {
        MapLayout::Nchw => x.dims4()?,
        MapLayout::Nhwc => {
            let (n, h, w, c) = x.dims4()?;
            (n, c, h, w)
        }
    })
}

/// Runs `f` on the values of `x` (`[b, c, s]` or `[b, s, c]` as `m` says) channels-last:
/// borrowed, or transposed into a scratch buffer.
fn channels_last<R>(
    x: &[f32],
    m: MapLayout,
    (b, c, s): (usize, usize, usize),
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    match m {
        MapLayout::Nhwc => f(x),
        MapLayout::Nchw => with_scratch(x.len(), |buf| {
            to_last(x, b, c, s, buf);
            f(buf)
        }),
    }
}

/// `act(y + b)` for the channels-last sums `y` `[b, s, c]`, as a tensor of the order `m`.
fn finish(
    mut y: Vec<f32>,
    bias: &[f32],
    act: Act,
    (n, c, h, w): (usize, usize, usize, usize),
    m: MapLayout,
    like: &Tensor,
) -> candle_core::Result<Tensor> {
    for px in y.chunks_exact_mut(c.max(1)) {
        for (v, b) in px.iter_mut().zip(bias) {
            *v += b;
        }
    }
    activate(&mut y, act);
    match m {
        MapLayout::Nhwc => back(y, &[n, h, w, c], like),
        MapLayout::Nchw => {
            let mut out = vec![0f32; y.len()];
            to_first(&y, n, c, h * w, None, Act::Identity, &mut out);
            back(out, &[n, c, h, w], like)
        }
    }
}

/// `act(conv2d(x, w) + b)` for `w` `[O, C, k, k]`, `b` `[O]`, `x` and the result in the
/// orders `o` names.
pub(in crate::ops) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    o: ConvOpts,
) -> candle_core::Result<Tensor> {
    let (bn, c, h, wd) = dims(x, o.input)?;
    let (out, wc, k, k2) = w.dims4()?;
    let (stride, pad) = (o.stride, o.pad);
    if wc != c || k != k2 || h + 2 * pad < k || wd + 2 * pad < k || stride == 0 || b.dims() != [out]
    {
        candle_core::bail!(
            "conv2d: input {:?} ({:?}) and kernel {:?} do not fit",
            x.shape(),
            o.input,
            w.shape()
        );
    }
    let g = Geom {
        b: bn,
        c,
        h,
        w: wd,
        k,
        stride,
        pad,
    };
    let (xv, wv, bv) = (Values::of(x)?, Values::of(w)?, Values::of(b)?);
    let (xv, wv, bv) = (xv.slice(), wv.slice(), bv.slice());
    let (rows, cols, kk) = (bn * g.ho() * g.wo(), c * k * k, k * k);
    let mut y = vec![0f32; rows * out];
    with_scratch(packed_len(cols, out), |packed| {
        // Column t = (ky k + kx) c + ci of the im2col matrix meets w[o, ci, ky, kx].
        pack(
            cols,
            out,
            wv,
            packed,
            |t| t % c * kk + t / c,
            |j| j * c * kk,
        );
        channels_last(xv, o.input, (bn, c, h * wd), |xl| {
            if k == 1 && stride == 1 && pad == 0 {
                // The image's pixels are the im2col rows.
                product(xl, cols, packed, out, &mut y);
                return;
            }
            let block = block_rows(cols);
            with_scratch(block.min(rows) * cols, |buf| {
                for (i, yb) in y.chunks_mut(block * out.max(1)).enumerate() {
                    let r = yb.len() / out.max(1);
                    let a = &mut buf[..r * cols];
                    im2col(xl, g, i * block, a);
                    product(a, cols, packed, out, yb);
                }
            });
        });
    });
    finish(y, bv, o.act, (bn, out, g.ho(), g.wo()), o.output, x)
}

/// `act(conv_transpose2d(x, w) + b)` for `w` `[Cin, Cout, k, k]`, `b` `[Cout]`, `x` and the
/// result in the orders `o` names.
pub(in crate::ops) fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    o: ConvOpts,
) -> candle_core::Result<Tensor> {
    let (bn, cin, h, wd) = dims(x, o.input)?;
    let (wcin, cout, k, k2) = w.dims4()?;
    let (stride, pad) = (o.stride, o.pad);
    let (ho, wo) = ((h.max(1) - 1) * stride + k, (wd.max(1) - 1) * stride + k);
    if wcin != cin
        || k != k2
        || h == 0
        || wd == 0
        || stride == 0
        || ho <= 2 * pad
        || wo <= 2 * pad
        || b.dims() != [cout]
    {
        candle_core::bail!(
            "conv-transpose2d: input {:?} ({:?}) and kernel {:?} do not fit",
            x.shape(),
            o.input,
            w.shape()
        );
    }
    // The conv2d whose input-gradient this is: its image is the output.
    let g = Geom {
        b: bn,
        c: cout,
        h: ho - 2 * pad,
        w: wo - 2 * pad,
        k,
        stride,
        pad,
    };
    let (xv, wv, bv) = (Values::of(x)?, Values::of(w)?, Values::of(b)?);
    let (xv, wv, bv) = (xv.slice(), wv.slice(), bv.slice());
    let (rows, kk) = (bn * h * wd, k * k);
    let ncol = kk * cout;
    let mut y = vec![0f32; bn * g.h * g.w * cout];
    with_scratch(packed_len(cin, ncol), |packed| {
        // Column j = (ky k + kx) cout + co of a row meets w[ci, co, ky, kx].
        pack(
            cin,
            ncol,
            wv,
            packed,
            |ci| ci * cout * kk,
            |j| j % cout * kk + j / cout,
        );
        channels_last(xv, o.input, (bn, cin, h * wd), |xl| {
            let block = block_rows(ncol);
            with_scratch(block.min(rows) * ncol, |buf| {
                for (i, xb) in xl.chunks(block * cin.max(1)).enumerate() {
                    let r = xb.len() / cin.max(1);
                    let cols = &mut buf[..r * ncol];
                    product(xb, cin, packed, ncol, cols);
                    col2im(cols, g, i * block, &mut y);
                }
            });
        });
    });
    finish(y, bv, o.act, (bn, cout, g.h, g.w), o.output, x)
}
