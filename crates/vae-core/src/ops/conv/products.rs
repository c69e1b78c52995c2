//! The products of a convolution on channels-last maps, forward and backward, in row blocks
//! that stay in the core's cache: im2col (or the map itself, for a 1x1 convolution) and
//! `gemm`, or on AVX-512 the direct products of `direct/`; col2im for the image gradient
//! where those do not take it. The custom operations of `kernels.rs` and the bottleneck block
//! of `block.rs` are built on them.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::layout::{
    activated, grad_from_activated, im2col, to_last, with_aligned_scratch, with_scratch,
};
use super::padded::{col2im_padded, pad, padded_len, unpad, unpad_add};
use super::{direct, Geom};
use crate::ops::gemm::{matmul, matmul_uninit, MatRef};
use crate::ops::storage::as_uninit;
use crate::ops::Act;

/// Floats of the im2col block that a pass fills and consumes at a time. The matrix of a whole
/// batch is tens of megabytes; in blocks of rows this size (256 KiB) each block is still in
/// the core's cache when the product (or col2im) reads it back.
const BLOCK_FLOATS: usize = 1 << 16;

/// Rows per block of an im2col matrix with `ncol` columns (at least 16, the product kernel's
/// tile height).
pub(super) fn block_rows(ncol: usize) -> usize {
    (BLOCK_FLOATS / ncol.max(1)).max(16)
}

/// The row blocks of an im2col matrix of `rows` rows and `ncol` columns, in order.
pub(super) fn row_blocks(rows: usize, ncol: usize) -> impl Iterator<Item = Range<usize>> {
    let step = block_rows(ncol);
    (0..rows)
        .step_by(step)
        .map(move |r| r..(r + step).min(rows))
}

/// Whether the convolution is a 1x1 one over every pixel: its im2col matrix is the image.
pub(super) fn is_pointwise(g: Geom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// The product of a convolution on a channels-last image `x` with the kernel `wt`
/// `[o, k * k * c]` (channels-last columns): `[rows, o]`, channels-last, without bias. In row
/// blocks whose operands stay in the core's cache: a 1x1 convolution multiplies the image's
/// rows themselves, others their im2col rows. `epilogue(rows, block)` runs on each block of
/// the result just after its product, while it is still in cache (the bias and activation of
/// the layer, say); `|_, _| {}` leaves the bare product.
pub(super) fn conv_last(
    x: &[f32],
    g: Geom,
    wt: &[f32],
    o: usize,
    mut epilogue: impl FnMut(Range<usize>, &mut [f32]),
) -> Vec<f32> {
    conv_last_of(x, Act::Identity, g, wt, o, &mut epilogue)
}

/// [`conv_last`] of `act(x)` for a 1x1 convolution (the activation applied to each block of
/// rows as the product takes it, never to the whole map).
pub(super) fn conv_last_of(
    x: &[f32],
    act: Act,
    g: Geom,
    wt: &[f32],
    o: usize,
    mut epilogue: impl FnMut(Range<usize>, &mut [f32]),
) -> Vec<f32> {
    let (rows, ncol) = (g.rows(), g.cols());
    let mut y: Vec<f32> = Vec::with_capacity(rows * o);
    let spare = &mut y.spare_capacity_mut()[..rows * o];
    if act == Act::Identity && !is_pointwise(g) && direct::rows_fit(g, o) {
        // The product read from the padded image in place (no im2col matrix).
        with_columns(wt, o, ncol, |wm| {
            with_aligned_scratch(padded_len(g), |xp| {
                pad(x, g, xp);
                for r in row_blocks(rows, ncol) {
                    let block = &mut spare[r.start * o..r.end * o];
                    direct::conv_rows(xp, g, wm.data, o, r.start, block);
                    // SAFETY: conv_rows wrote every element of the block.
                    let block = unsafe { &mut *(block as *mut [_] as *mut [f32]) };
                    epilogue(r, block);
                }
            })
        });
        // SAFETY: the blocks cover rows 0..rows, each written whole.
        unsafe { y.set_len(rows * o) };
        return y;
    }
    with_columns(wt, o, ncol, |wm| {
        with_scratch(scratch_rows(g, act) * ncol, |cols| {
            for r in row_blocks(rows, ncol) {
                let c = rows_of(x, act, g, r.clone(), cols);
                let cm = MatRef::row_major(c, r.len(), ncol);
                let block = &mut spare[r.start * o..r.end * o];
                matmul_uninit(block, cm, wm);
                // SAFETY: the product wrote every element of the block (matmul_uninit).
                let block = unsafe { &mut *(block as *mut [_] as *mut [f32]) };
                epilogue(r, block);
            }
        })
    });
    // SAFETY: the blocks cover rows 0..rows, and each product wrote all of its block.
    unsafe { y.set_len(rows * o) };
    y
}

/// Rows of scratch a product's input blocks need: none for a 1x1 convolution of the map
/// itself, else a block of im2col (or activated) rows.
fn scratch_rows(g: Geom, act: Act) -> usize {
    if is_pointwise(g) && act == Act::Identity {
        0
    } else {
        block_rows(g.cols()).min(g.rows())
    }
}

/// Block `r` of the rows a product multiplies: the im2col rows of `x`, or for a 1x1
/// convolution the rows of `x` itself, or of `act(x)` written into `cols`.
fn rows_of<'a>(x: &'a [f32], act: Act, g: Geom, r: Range<usize>, cols: &'a mut [f32]) -> &'a [f32] {
    let ncol = g.cols();
    if is_pointwise(g) && act == Act::Identity {
        return &x[r.start * ncol..r.end * ncol];
    }
    let c = &mut cols[..r.len() * ncol];
    if is_pointwise(g) {
        activated(&x[r.start * ncol..r.end * ncol], act, c);
    } else {
        assert_eq!(
            act,
            Act::Identity,
            "conv: an input activation needs a 1x1 convolution"
        );
        im2col(x, g, r.start, c);
    }
    c
}

/// Runs `f` on the kernel `wt` `[o, ncol]` as the `[ncol, o]` matrix the product multiplies
/// by, held in a transposed copy: in that layout the product kernel reads the kernel in place
/// (its tiles run down the output channels), where the transposed view of `wt` would be
/// repacked by `gemm` for every row block of every call.
fn with_columns<R>(wt: &[f32], o: usize, ncol: usize, f: impl FnOnce(MatRef) -> R) -> R {
    with_aligned_scratch(o * ncol, |wk| {
        // (An empty kernel, of no channels, has nothing to move.)
        if !wk.is_empty() {
            to_last(wt, 1, o, ncol, wk);
        }
        f(MatRef::row_major(wk, ncol, o))
    })
}

/// The backward products of [`conv_last`] from the output gradient `gr` `[rows, o]` (through
/// the activation): the kernel gradient `dwt` `[o, k * k * c]` (overwritten) and, with
/// `dx = Some((wt, dx))`, the image gradient in `dx` (channels-last): written over it for a 1x1
/// convolution, added into it (so `dx` must hold zeros) for others. Row block by
/// row block: dW^T += cols(x)^T G (the orientation the product kernel runs fastest: a tall
/// result of few columns), and dcols = G W added back into the image (for a 1x1 convolution,
/// written as the image's gradient rows).
pub(super) fn conv_last_backward(
    x: &[f32],
    g: Geom,
    gr: &[f32],
    o: usize,
    dwt: &mut [f32],
    dx: Option<(&[f32], &mut [f32])>,
) {
    let dx = dx.map(|(wt, dx)| (wt, Dx::Add(dx)));
    conv_last_backward_of(x, Act::Identity, g, gr, o, dwt, dx, None)
}

/// Where a backward pass puts the image gradient.
pub(super) enum Dx<'a> {
    /// Added into these values (zeros, for the gradient alone); a 1x1 convolution writes over
    /// them.
    Add(&'a mut [f32]),
    /// Written whole into memory not yet initialised (never zeroed first: the products write
    /// it, or col2im adds into a padded image whose inside is then written over it).
    Write(&'a mut [MaybeUninit<f32>]),
}

/// [`conv_last_backward`] of [`conv_last_of`]: the products of a 1x1 convolution of `act(x)`;
/// `dx` receives the gradient of `x`, in either form of [`Dx`], plus `skip` (the gradient that
/// reaches `x` past the convolution, a residual block's; 1x1 only). Each block of the image
/// gradient's rows is taken through `act` as soon as its product is written, its derivative
/// read from the block of `act(x)` the product has just recomputed, both still in cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_last_backward_of(
    x: &[f32],
    act: Act,
    g: Geom,
    gr: &[f32],
    o: usize,
    dwt: &mut [f32],
    dx: Option<(&[f32], Dx<'_>)>,
    skip: Option<&[f32]>,
) {
    let (rows, ncol) = (g.rows(), g.cols());
    let pointwise = is_pointwise(g);
    assert!(
        pointwise || skip.is_none(),
        "conv backward: a skip gradient needs a 1x1 convolution"
    );
    let bn = scratch_rows(g, act);
    // A 1x1 convolution writes the product's rows straight into dx, unless they have to go
    // through act or take skip, from a block of scratch while it is in cache.
    let direct = pointwise && act == Act::Identity && skip.is_none();
    let dbn = if direct {
        0
    } else {
        block_rows(ncol).min(rows)
    };
    // The kernel gradient straight from the padded image where the direct products take the
    // geometry: then the blocks below only take the image gradient, with no im2col.
    let direct_dw = act == Act::Identity && !pointwise && direct::grad_fits(g, o);
    if direct_dw {
        with_aligned_scratch(padded_len(g), |xp| {
            pad(x, g, xp);
            direct::weight_grad(xp, g, gr, o, dwt, false);
        });
    }
    // The image gradient as the transposed convolution of the output gradient, phase by
    // phase, where the direct products take it: then the blocks below have nothing to add.
    // (A stride-1 convolution's, as the correlation with the kernel turned by half a turn.)
    // Both cover every pixel: written over memory not yet initialised, with no zeros first.
    let mut dx = dx;
    let mut dx_done = false;
    if !pointwise && act == Act::Identity {
        if let Some((wt, d)) = dx.as_mut() {
            let phases = direct::transposed_fits(g, o);
            if phases || direct::flipped_fits(g, o) {
                let (out, add) = match d {
                    // SAFETY: the products only write values, and read only what they add to.
                    Dx::Add(d) => (unsafe { as_uninit(d) }, true),
                    Dx::Write(u) => (&mut **u, false),
                };
                if phases {
                    direct::transposed(gr, g, wt, direct::KernelOrder::Last, o, out, add);
                } else {
                    direct::flipped(gr, g, wt, o, out, add);
                }
                dx_done = true;
            }
        }
    }
    if dx_done {
        dx = None;
    }
    let bn = if direct_dw { 0 } else { bn };
    let mut dw_t = vec![0f32; if direct_dw { 0 } else { ncol * o }];
    // The columns' gradients of a convolution with a window are added into a padded image
    // (no test at the edges), whose inside is added to dx at the end.
    let dxp = if dx.is_some() && !pointwise {
        padded_len(g)
    } else {
        0
    };
    with_aligned_scratch(dxp, |dp| {
        dp.fill(0.0);
        with_scratch(bn * ncol, |cols| {
            with_scratch(if dx.is_some() { dbn * ncol } else { 0 }, |dcols| {
                for r in row_blocks(rows, ncol) {
                    let n = r.len();
                    let gb = MatRef::row_major(&gr[r.start * o..r.end * o], n, o);
                    let c: &[f32] = if direct_dw {
                        &[]
                    } else {
                        let c = rows_of(x, act, g, r.clone(), cols);
                        let cm = MatRef::row_major(c, n, ncol);
                        matmul(&mut dw_t, cm.t(), gb, r.start > 0);
                        c
                    };
                    if let Some((wt, dx)) = dx.as_mut() {
                        let wm = MatRef::row_major(wt, o, ncol);
                        let rr = r.start * ncol..r.end * ncol;
                        // A 1x1 convolution's rows of dx are this block's whole gradient.
                        let out = match dx {
                            Dx::Add(dx) if direct => {
                                matmul(&mut dx[rr], gb, wm, false);
                                continue;
                            }
                            Dx::Write(dx) if direct => {
                                matmul_uninit(&mut dx[rr], gb, wm);
                                continue;
                            }
                            // SAFETY: only values are written into it.
                            Dx::Add(dx) if pointwise => unsafe { as_uninit(&mut dx[rr.clone()]) },
                            Dx::Write(dx) if pointwise => &mut dx[rr.clone()],
                            // Added into the padded image, then into dx below.
                            Dx::Add(_) | Dx::Write(_) => {
                                let d = &mut dcols[..n * ncol];
                                matmul(d, gb, wm, false);
                                col2im_padded(d, g, r.start, dp);
                                continue;
                            }
                        };
                        let d = &mut dcols[..n * ncol];
                        matmul(d, gb, wm, false);
                        grad_from_activated(c, act, d, skip.map(|s| &s[rr]), out);
                    }
                }
            })
        });
        // Its inside added to dx, or written over it (every pixel, so no zeros first).
        match dx.as_mut().filter(|_| dxp > 0) {
            Some((_, Dx::Add(dx))) => unpad_add(dp, g, dx),
            Some((_, Dx::Write(dx))) => unpad(dp, g, dx),
            None => {}
        }
    });
    if !direct_dw {
        for (i, row) in dw_t.chunks_exact(o).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                dwt[j * ncol + i] = v;
            }
        }
    }
}
