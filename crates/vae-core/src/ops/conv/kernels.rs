//! The custom operations: conv2d and conv_transpose2d forward passes, each with one backward
//! operation that returns all three gradients packed in one buffer.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::layout::{
    grad_first_to_last, grad_last, im2col, kernel_to_first, kernel_to_last, to_first, to_last,
    with_aligned_scratch, with_scratch, AlignedBuf,
};
use super::padded::{col2im_padded, pad, padded_len, unpad_add};
use super::products::{
    block_rows, conv_last_backward_of, conv_last_of, is_pointwise, row_blocks, Dx,
};
use super::{direct, ConvOpts, Geom, MapLayout};
use crate::ops::gemm::{matmul, matmul_uninit, MatRef};
use crate::ops::linear::{activate, bias_activate};
use crate::ops::storage::{as_uninit, output_slice, slice, unpack, zeroed};
use crate::ops::Act;

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
        // dw and db are zeroed, then written; dx is written whole by the backward products
        // (channels-last: zeroed first where they add) or by the transpose of their result.
        let mut out: Vec<f32> = Vec::with_capacity(n);
        let (dx_out, rest) = out.spare_capacity_mut()[..n].split_at_mut(nx);
        let (dw_out, db_out) = rest.split_at_mut(o * ncol);
        let (dw_out, db_out) = (zeroed(dw_out), zeroed(db_out));
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
                let dx = if dx_last {
                    Dx::Write(&mut *dx_out)
                } else {
                    t.fill(0.0);
                    Dx::Add(&mut *t)
                };
                with_last(x, self.o.input, (g.b, g.c, s_in), |xc| {
                    let dxw = wt.as_deref().map(|wt| (wt, dx));
                    conv_last_backward_of(xc, self.o.pre, g, gr, o, &mut dwt, dxw, None);
                });
                if self.need_dx && !dx_last {
                    to_first(t, g.b, g.c, s_in, None, Act::Identity, zeroed(dx_out));
                }
            });
            kernel_to_first(&dwt, o, g.c, kk, dw_out);
        });
        // SAFETY: dw and db were zeroed above; dx (when it has a part) was written whole by the
        // backward products (`Dx::Write`) or zeroed and then overwritten by the transpose.
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
        // Phase by phase from the input in place where the direct products take it, each
        // pixel written once (the bias added with the activation); else the bias in every
        // pixel, written once, to which the blocks add their columns.
        let phases = direct::transposed_fits(g, cin);
        let mut y = if phases {
            Vec::with_capacity(g.image())
        } else {
            bias.repeat(g.image() / g.c.max(1))
        };
        let wm = MatRef::row_major(&wt, cin, ncol);
        with_last(x, self.0.input, (g.b, cin, rows / g.b.max(1)), |xc| {
            if phases {
                let out = &mut y.spare_capacity_mut()[..g.image()];
                direct::transposed(xc, g, w, direct::KernelOrder::First, cin, out, false);
                // SAFETY: the phases wrote every pixel of the image.
                unsafe { y.set_len(g.image()) };
                return;
            }
            // The columns added into a padded image (no test at the edges), its inside then
            // added to the bias.
            with_aligned_scratch(padded_len(g), |yp| {
                yp.fill(0.0);
                with_scratch(block_rows(ncol).min(rows) * ncol, |cols| {
                    for r in row_blocks(rows, ncol) {
                        let n = r.len();
                        let c = &mut cols[..n * ncol];
                        let xb = MatRef::row_major(&xc[r.start * cin..r.end * cin], n, cin);
                        matmul(c, xb, wm, false);
                        col2im_padded(c, g, r.start, yp);
                    }
                });
                unpad_add(yp, g, &mut y);
            })
        });
        let bias = phases.then_some(bias);
        let y = finish(y, (g.b, g.c, g.h * g.w), bias, self.0.act, self.0.output);
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
                    if direct::grad_fits(g, cin) && (wk.is_none() || direct::rows_fit(g, cin)) {
                        with_aligned_scratch(padded_len(g), |gp| {
                            pad(gm, g, gp);
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
