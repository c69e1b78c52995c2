//! The custom operations: conv2d and conv_transpose2d forward passes, each with one backward
//! operation that returns all three gradients packed in one buffer.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::layout::{
    activated, col2im, grad_first_to_last, grad_from_activated, grad_last, im2col, kernel_to_first,
    kernel_to_last, to_first, to_last, with_aligned_scratch, with_scratch, AlignedBuf,
};
use super::{direct, ConvOpts, Geom, MapLayout};
use crate::ops::gemm::{matmul, matmul_uninit, MatRef};
use crate::ops::linear::{activate, bias_activate};
use crate::ops::storage::{as_uninit, output_slice, slice, unpack, zeroed};
use crate::ops::Act;

/// Floats of the im2col block that a pass fills and consumes at a time. The matrix of a whole
/// batch is tens of megabytes; in blocks of rows this size (256 KiB) each block is still in
/// the core's cache when the product (or col2im) reads it back.
const BLOCK_FLOATS: usize = 1 << 16;

/// Rows per block of an im2col matrix with `ncol` columns (at least 16, the product kernel's
/// tile height).
fn block_rows(ncol: usize) -> usize {
    (BLOCK_FLOATS / ncol.max(1)).max(16)
}

/// The row blocks of an im2col matrix of `rows` rows and `ncol` columns, in order.
fn row_blocks(rows: usize, ncol: usize) -> impl Iterator<Item = Range<usize>> {
    let step = block_rows(ncol);
    (0..rows)
        .step_by(step)
        .map(move |r| r..(r + step).min(rows))
}

fn dims4(l: &Layout) -> candle_core::Result<[usize; 4]> {
    match l.shape().dims() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        d => candle_core::bail!("conv: expected a 4-d tensor, got {d:?}"),
    }
}

/// `(batch, channels, height, width)` of a map stored in `m` order.
fn map_dims(l: &Layout, m: MapLayout) -> candle_core::Result<(usize, usize, usize, usize)> {
    let [a, b, c, d] = dims4(l)?;
    Ok(match m {
        MapLayout::Nchw => (a, b, c, d),
        MapLayout::Nhwc => (a, d, b, c),
    })
}

fn map_shape(b: usize, c: usize, h: usize, w: usize, m: MapLayout) -> Shape {
    match m {
        MapLayout::Nchw => Shape::from((b, c, h, w)),
        MapLayout::Nhwc => Shape::from((b, h, w, c)),
    }
}

/// Whether a map of `c` channels in `m` order is already channels-last.
fn is_last(m: MapLayout, c: usize) -> bool {
    m == MapLayout::Nhwc || c == 1
}

/// Runs `f` on the channels-last form of the map `x` (`b` examples, `c` channels, `s` pixels):
/// `x` itself, or a transposed copy.
fn with_last<R>(
    x: &[f32],
    m: MapLayout,
    (b, c, s): (usize, usize, usize),
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    if is_last(m, c) {
        f(x)
    } else {
        with_scratch(x.len(), |t| {
            to_last(x, b, c, s, t);
            f(t)
        })
    }
}

/// A channels-last result `[b, s, c]` in the memory order `m`, with the bias added (if given) and
/// the activation applied.
fn finish(
    mut y: Vec<f32>,
    (b, c, s): (usize, usize, usize),
    bias: Option<&[f32]>,
    act: Act,
    m: MapLayout,
) -> Vec<f32> {
    if is_last(m, c) {
        match bias {
            Some(bias) => bias_activate(&mut y, bias, act),
            None => activate(&mut y, act),
        }
        y
    } else {
        let mut out = vec![0f32; y.len()];
        to_first(&y, b, c, s, bias, act, &mut out);
        out
    }
}

/// Whether the convolution is a 1x1 one over every pixel: its im2col matrix is the image.
fn is_pointwise(g: Geom) -> bool {
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
            with_aligned_scratch(direct::padded_len(g), |xp| {
                direct::pad(x, g, xp);
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
    /// Written whole into memory not yet initialised (zeroed first where the products add).
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
    // col2im adds into the image: an uninitialised one starts from zeros.
    let mut dx = dx.map(|(wt, dx)| match dx {
        Dx::Write(u) if !pointwise => (wt, Dx::Add(zeroed(u))),
        dx => (wt, dx),
    });
    // The kernel gradient straight from the padded image where the direct products take the
    // geometry: then the blocks below only take the image gradient, with no im2col.
    let direct_dw = act == Act::Identity && !pointwise && direct::grad_fits(g);
    let mut dx_done = false;
    if direct_dw {
        with_aligned_scratch(direct::padded_len(g), |xp| {
            direct::pad(x, g, xp);
            direct::weight_grad(xp, g, gr, o, dwt, false);
        });
    }
    // The image gradient as the transposed convolution of the output gradient, phase by
    // phase, where the direct products take it: then the blocks below have nothing to add.
    // (A stride-1 convolution's, as the correlation with the kernel turned by half a turn.)
    if !pointwise && act == Act::Identity {
        if let Some((wt, Dx::Add(dx))) = dx.as_mut() {
            if direct::transposed_fits(g, o) {
                direct::transposed(gr, g, wt, direct::KernelOrder::Last, o, dx);
                dx_done = true;
            } else if direct::flipped_fits(g, o) {
                direct::flipped(gr, g, wt, o, dx);
                dx_done = true;
            }
        }
    }
    if dx_done {
        dx = None;
    }
    let bn = if direct_dw { 0 } else { bn };
    let mut dw_t = vec![0f32; if direct_dw { 0 } else { ncol * o }];
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
                        Dx::Write(dx) => &mut dx[rr.clone()],
                        Dx::Add(dx) => {
                            let d = &mut dcols[..n * ncol];
                            matmul(d, gb, wm, false);
                            col2im(d, g, r.start, dx);
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
    if !direct_dw {
        for (i, row) in dw_t.chunks_exact(o).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                dwt[j * ncol + i] = v;
            }
        }
    }
}

/// `act(conv2d(x, w) + b)`.
pub(super) struct Conv2d(pub ConvOpts);

impl Conv2d {
    fn geom(&self, xl: &Layout, wl: &Layout) -> candle_core::Result<(Geom, usize)> {
        let (b, c, h, w) = map_dims(xl, self.0.input)?;
        let [o, wc, k, k2] = dims4(wl)?;
        let p = self.0.pad;
        if wc != c || k != k2 || k == 0 || h + 2 * p < k || w + 2 * p < k || self.0.stride == 0 {
            candle_core::bail!(
                "conv2d: input {:?} ({:?}) and kernel {:?} do not fit",
                xl.shape(),
                self.0.input,
                wl.shape()
            );
        }
        let g = Geom {
            b,
            c,
            h,
            w,
            k,
            stride: self.0.stride,
            pad: p,
        };
        if self.0.pre != Act::Identity && !is_pointwise(g) {
            candle_core::bail!("conv2d: an input activation needs a 1x1 convolution");
        }
        Ok((g, o))
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-bias-act"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, o) = self.geom(xl, wl)?;
        if bl.shape().dims() != [o] {
            candle_core::bail!("conv2d: bias {:?} for {o} channels", bl.shape());
        }
        let (x, w, bias) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let wt = kernel_to_last(w, o, g.c, g.k * g.k);
        let s = g.ho() * g.wo();
        let pre = self.0.pre;
        let y = if is_last(self.0.output, o) {
            // Bias and activation on each block as the product leaves it.
            let act = self.0.act;
            with_last(x, self.0.input, (g.b, g.c, g.h * g.w), |xc| {
                conv_last_of(xc, pre, g, &wt, o, |_, y| bias_activate(y, bias, act))
            })
        } else {
            let y = with_last(x, self.0.input, (g.b, g.c, g.h * g.w), |xc| {
                conv_last_of(xc, pre, g, &wt, o, |_, _| {})
            });
            finish(y, (g.b, o, s), Some(bias), self.0.act, self.0.output)
        };
        Ok((
            CpuStorage::F32(y),
            map_shape(g.b, o, g.ho(), g.wo(), self.0.output),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let op = Conv2dBackward {
            o: self.0,
            y: y.clone(),
            need_dx,
        };
        let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &op)?;
        unpack(&packed, need_dx.then_some(x), w, b)
    }
}

/// All gradients of [`Conv2d`] from `(x, w, dy)` and the forward output: `[dx | dw | db]`
/// (`dx` only when `need_dx`).
struct Conv2dBackward {
    o: ConvOpts,
    y: Tensor,
    need_dx: bool,
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d-bias-act-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, o) = Conv2d(self.o).geom(xl, wl)?;
        let (x, w, dy) = (slice(xs, xl)?, slice(ws, wl)?, slice(dys, dyl)?);
        let (ys, yl) = self.y.storage_and_layout();
        let y = output_slice(&ys, yl)?;
        let (rows, ncol, kk) = (g.rows(), g.cols(), g.k * g.k);
        if y.len() != rows * o || dy.len() != y.len() {
            candle_core::bail!("conv2d backward: gradient {:?} does not fit", dyl.shape());
        }
        let nx = if self.need_dx { g.image() } else { 0 };
        let n = nx + o * ncol + o;
        // Each part is zeroed once, then written (dx: the columns' gradients added in).
        let mut out: Vec<f32> = Vec::with_capacity(n);
        let (dx_out, rest) = out.spare_capacity_mut()[..n].split_at_mut(nx);
        let (dw_out, db_out) = rest.split_at_mut(o * ncol);
        let (dx_out, dw_out, db_out) = (zeroed(dx_out), zeroed(dw_out), zeroed(db_out));
        let (s_in, s_out) = (g.h * g.w, g.ho() * g.wo());
        with_scratch(rows * o, |gr| {
            // The output gradient through the activation, channels-last: one row per pixel.
            if is_last(self.o.output, o) {
                grad_last(y, dy, self.o.act, gr, db_out);
            } else {
                grad_first_to_last(y, dy, self.o.act, g.b, s_out, gr, db_out);
            }
            let gr: &[f32] = gr;
            // dx into dx_out, or into a channels-last copy transposed at the end.
            let wt = self.need_dx.then(|| kernel_to_last(w, o, g.c, kk));
            let mut dwt = vec![0f32; o * ncol];
            let dx_last = is_last(self.o.input, g.c);
            let tmp = if self.need_dx && !dx_last {
                g.image()
            } else {
                0
            };
            with_scratch(tmp, |t| {
                let dx: &mut [f32] = if dx_last {
                    &mut *dx_out
                } else {
                    t.fill(0.0);
                    &mut *t
                };
                with_last(x, self.o.input, (g.b, g.c, s_in), |xc| {
                    let dxw = wt.as_deref().map(|wt| (wt, Dx::Add(&mut *dx)));
                    conv_last_backward_of(xc, self.o.pre, g, gr, o, &mut dwt, dxw, None);
                });
                if self.need_dx && !dx_last {
                    to_first(t, g.b, g.c, s_in, None, Act::Identity, dx_out);
                }
            });
            kernel_to_first(&dwt, o, g.c, kk, dw_out);
        });
        // SAFETY: the three parts, together the first n elements, were zeroed above.
        unsafe { out.set_len(n) };
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

/// `act(conv_transpose2d(x, w) + b)`.
pub(super) struct ConvT2d(pub ConvOpts);

impl ConvT2d {
    /// The geometry of the conv2d whose input gradient this is (its image is the output), and
    /// the number of input channels.
    fn geom(&self, xl: &Layout, wl: &Layout) -> candle_core::Result<(Geom, usize)> {
        let (b, cin, h, w) = map_dims(xl, self.0.input)?;
        let [wcin, cout, k, k2] = dims4(wl)?;
        let (s, p) = (self.0.stride, self.0.pad);
        let fits = wcin == cin && k == k2 && k > 0 && s > 0 && h > 0 && w > 0;
        let (ho, wo) = ((h.max(1) - 1) * s + k, (w.max(1) - 1) * s + k);
        if !fits || ho < 2 * p + 1 || wo < 2 * p + 1 {
            candle_core::bail!(
                "conv-transpose2d: input {:?} ({:?}) and kernel {:?} do not fit",
                xl.shape(),
                self.0.input,
                wl.shape()
            );
        }
        let g = Geom {
            b,
            c: cout,
            h: ho - 2 * p,
            w: wo - 2 * p,
            k,
            stride: s,
            pad: p,
        };
        if (g.ho(), g.wo()) != (h, w) {
            candle_core::bail!(
                "conv-transpose2d: input {:?} has no exact output",
                xl.shape()
            );
        }
        Ok((g, cin))
    }
}

impl CustomOp3 for ConvT2d {
    fn name(&self) -> &'static str {
        "conv-transpose2d-bias-act"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, cin) = self.geom(xl, wl)?;
        if bl.shape().dims() != [g.c] {
            candle_core::bail!(
                "conv-transpose2d: bias {:?} for {} channels",
                bl.shape(),
                g.c
            );
        }
        let (x, w, bias) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let (rows, ncol, kk) = (g.rows(), g.cols(), g.k * g.k);
        let wt = kernel_to_last(w, cin, g.c, kk);
        // The bias in every pixel, written once, to which the blocks add their columns.
        let mut y = bias.repeat(g.image() / g.c.max(1));
        let wm = MatRef::row_major(&wt, cin, ncol);
        with_last(x, self.0.input, (g.b, cin, rows / g.b.max(1)), |xc| {
            if direct::transposed_fits(g, cin) {
                // Phase by phase from the input in place, with no columns to add back.
                direct::transposed(xc, g, w, direct::KernelOrder::First, cin, &mut y);
                return;
            }
            with_scratch(block_rows(ncol).min(rows) * ncol, |cols| {
                for r in row_blocks(rows, ncol) {
                    let n = r.len();
                    let c = &mut cols[..n * ncol];
                    let xb = MatRef::row_major(&xc[r.start * cin..r.end * cin], n, cin);
                    matmul(c, xb, wm, false);
                    col2im(c, g, r.start, &mut y);
                }
            })
        });
        let y = finish(y, (g.b, g.c, g.h * g.w), None, self.0.act, self.0.output);
        Ok((
            CpuStorage::F32(y),
            map_shape(g.b, g.c, g.h, g.w, self.0.output),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let op = ConvT2dBackward {
            o: self.0,
            y: y.clone(),
            need_dx,
        };
        let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &op)?;
        unpack(&packed, need_dx.then_some(x), w, b)
    }
}

/// All gradients of [`ConvT2d`] from `(x, w, dy)` and the forward output: `[dx | dw | db]`.
struct ConvT2dBackward {
    o: ConvOpts,
    y: Tensor,
    need_dx: bool,
}

impl CustomOp3 for ConvT2dBackward {
    fn name(&self) -> &'static str {
        "conv-transpose2d-bias-act-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, cin) = ConvT2d(self.o).geom(xl, wl)?;
        let (x, w, dy) = (slice(xs, xl)?, slice(ws, wl)?, slice(dys, dyl)?);
        let (ys, yl) = self.y.storage_and_layout();
        let y = output_slice(&ys, yl)?;
        let (rows, ncol, kk) = (g.rows(), g.cols(), g.k * g.k);
        if y.len() != g.image() || dy.len() != y.len() {
            candle_core::bail!(
                "conv-transpose2d backward: gradient {:?} does not fit",
                dyl.shape()
            );
        }
        let nx = if self.need_dx { rows * cin } else { 0 };
        let n = nx + cin * ncol + g.c;
        // dx is written whole by its products (channels-last) or by the transpose of them;
        // only the parts written by writers of floats are zeroed first.
        let mut out: Vec<f32> = Vec::with_capacity(n);
        let (dx_out, rest) = out.spare_capacity_mut()[..n].split_at_mut(nx);
        let (dw_out, db_out) = rest.split_at_mut(cin * ncol);
        let (dw_out, db_out) = (zeroed(dw_out), zeroed(db_out));
        let s_out = g.h * g.w;
        let s_in = rows / g.b.max(1);
        with_scratch(g.image(), |gm| {
            if is_last(self.o.output, g.c) {
                grad_last(y, dy, self.o.act, gm, db_out);
            } else {
                grad_first_to_last(y, dy, self.o.act, g.b, s_out, gm, db_out);
            }
            let gm: &[f32] = gm;
            // Block by block of cols(G): dW^T += X^T cols(G), and dX = cols(G) W^T (into dx_out,
            // or a channels-last copy transposed at the end).
            // dX reads the kernel as `[ncol, cin]`, the layout `gemm` takes in place (see
            // `with_columns`).
            let wk = self.need_dx.then(|| {
                let mut wk = AlignedBuf::zeros(ncol * cin);
                to_last(&kernel_to_last(w, cin, g.c, kk), 1, cin, ncol, &mut wk);
                wk
            });
            let wm = wk.as_deref().map(|wk| MatRef::row_major(wk, ncol, cin));
            let mut dwt = vec![0f32; cin * ncol];
            let dx_last = is_last(self.o.input, cin);
            let tmp = if self.need_dx && !dx_last {
                rows * cin
            } else {
                0
            };
            with_scratch(tmp, |t| {
                // The products' destination: dx itself, or the channels-last scratch.
                let dx = if dx_last {
                    &mut *dx_out
                } else {
                    // SAFETY: only the products below write through it.
                    unsafe { as_uninit(t) }
                };
                with_last(x, self.o.input, (g.b, cin, s_in), |xc| {
                    // The direct products read cols(G) from the padded G in place.
                    if direct::grad_fits(g) && (wk.is_none() || direct::rows_fit(g, cin)) {
                        with_aligned_scratch(direct::padded_len(g), |gp| {
                            direct::pad(gm, g, gp);
                            direct::weight_grad(gp, g, xc, cin, &mut dwt, false);
                            if let Some(wk) = wk.as_deref() {
                                for r in row_blocks(rows, cin) {
                                    let d = &mut dx[r.start * cin..r.end * cin];
                                    direct::conv_rows(gp, g, wk, cin, r.start, d);
                                }
                            }
                        });
                        return;
                    }
                    with_scratch(block_rows(ncol).min(rows) * ncol, |cols| {
                        for r in row_blocks(rows, ncol) {
                            let n = r.len();
                            let c = &mut cols[..n * ncol];
                            im2col(gm, g, r.start, c);
                            let cm = MatRef::row_major(c, n, ncol);
                            let xb = MatRef::row_major(&xc[r.start * cin..r.end * cin], n, cin);
                            matmul(&mut dwt, xb.t(), cm, r.start > 0);
                            if let Some(wm) = wm {
                                matmul_uninit(&mut dx[r.start * cin..r.end * cin], cm, wm);
                            }
                        }
                    })
                });
                if self.need_dx && !dx_last {
                    to_first(t, g.b, cin, s_in, None, Act::Identity, zeroed(dx_out));
                }
            });
            kernel_to_first(&dwt, cin, g.c, kk, dw_out);
        });
        // SAFETY: dw and db were zeroed above; dx (when it has a part) was written whole by
        // the row blocks' products (which cover rows 0..rows) or zeroed and then overwritten
        // by the transpose.
        unsafe { out.set_len(n) };
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}
