//! 2-D convolutions and transposed convolutions (NCHW, square kernels) with their bias, as
//! im2col and one matrix product per pass, with hand-written backward passes.
//!
//! candle's CPU convolutions loop over examples and its transposed convolution is a direct
//! loop; here every pass is one `gemm` over the whole batch:
//! - conv2d: `Y[n, o] = cols(x)[n, :] . W[o, :]` with `cols` the im2col matrix
//!   `[B * Ho * Wo, C * k * k]`; backward `dW = dY^T cols`, `dcols = dY W` scattered back by col2im.
//! - conv_transpose2d is conv2d's backward pass for the input: `cols = X W`, `y = col2im(cols)`;
//!   its own backward is a conv2d of the output gradient.
//!
//! Values and gradients are checked against candle's `conv2d` / `conv_transpose2d` in the tests.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::bernoulli::slice;
use super::gemm::{matmul, MatRef};
use super::use_fused;

/// The geometry of a convolution from an image `[b, c, h, w]` with a `k x k` kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Rows of the im2col matrix.
    fn rows(&self) -> usize {
        self.b * self.ho() * self.wo()
    }
    /// Columns of the im2col matrix.
    fn cols(&self) -> usize {
        self.c * self.k * self.k
    }
}

/// `x` `[b, c, h, w]` to `[b * ho * wo, c * k * k]` (zero padding).
fn im2col(x: &[f32], g: Geom) -> Vec<f32> {
    let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
    let cols = g.cols();
    let mut out = vec![0f32; g.rows() * cols];
    for b in 0..g.b {
        for oy in 0..ho {
            for ox in 0..wo {
                let row = &mut out[((b * ho + oy) * wo + ox) * cols..][..cols];
                for c in 0..g.c {
                    let plane = &x[(b * g.c + c) * g.h * g.w..][..g.h * g.w];
                    for ky in 0..g.k {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let src = &plane[iy as usize * g.w..][..g.w];
                        let dst = &mut row[c * kk + ky * g.k..][..g.k];
                        for (kx, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if ix >= 0 && ix < g.w as isize {
                                *d = src[ix as usize];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The adjoint of [`im2col`]: sums the rows of `cols` back into an image `[b, c, h, w]`.
fn col2im(cols: &[f32], g: Geom) -> Vec<f32> {
    let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
    let ncol = g.cols();
    let mut x = vec![0f32; g.b * g.c * g.h * g.w];
    for b in 0..g.b {
        for oy in 0..ho {
            for ox in 0..wo {
                let row = &cols[((b * ho + oy) * wo + ox) * ncol..][..ncol];
                for c in 0..g.c {
                    let plane = &mut x[(b * g.c + c) * g.h * g.w..][..g.h * g.w];
                    for ky in 0..g.k {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let dst = &mut plane[iy as usize * g.w..][..g.w];
                        let src = &row[c * kk + ky * g.k..][..g.k];
                        for (kx, s) in src.iter().enumerate() {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if ix >= 0 && ix < g.w as isize {
                                dst[ix as usize] += s;
                            }
                        }
                    }
                }
            }
        }
    }
    x
}

/// `[b, c, s]` (channel-major) to `[b * s, c]` (channel-minor), plus `bias[c]`.
fn to_rows(x: &[f32], b: usize, c: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; b * s * c];
    for bi in 0..b {
        for ci in 0..c {
            let src = &x[(bi * c + ci) * s..][..s];
            for (si, v) in src.iter().enumerate() {
                out[(bi * s + si) * c + ci] = *v;
            }
        }
    }
    out
}

/// `[b * s, c]` to `[b, c, s]`, adding `bias[c]` when given.
fn from_rows(y: &[f32], b: usize, c: usize, s: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; b * c * s];
    for bi in 0..b {
        for ci in 0..c {
            let add = bias.map_or(0.0, |v| v[ci]);
            let dst = &mut out[(bi * c + ci) * s..][..s];
            for (si, d) in dst.iter_mut().enumerate() {
                *d = y[(bi * s + si) * c + ci] + add;
            }
        }
    }
    out
}

fn dims4(l: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
    match l.shape().dims() {
        [a, b, c, d] => Ok((*a, *b, *c, *d)),
        d => candle_core::bail!("conv: expected a 4-d tensor, got {d:?}"),
    }
}

/// `conv2d(x, w) + b` for `x` `[B, C, H, W]`, `w` `[O, C, k, k]`, `b` `[O]`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    if super::exact() {
        return super::exact::conv2d(x, w, b, stride, pad);
    }
    if use_fused(&[x, w, b]) {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, Conv2d { stride, pad })
    } else {
        let y = x.conv2d(w, pad, stride, 1, 1)?;
        y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)
    }
}

/// `conv_transpose2d(x, w) + b` for `x` `[B, Cin, H, W]`, `w` `[Cin, Cout, k, k]`, `b` `[Cout]`:
/// the output is `[B, Cout, (H - 1) * stride - 2 * pad + k, ...]`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    if super::exact() {
        return super::exact::conv_transpose2d(x, w, b, stride, pad);
    }
    if use_fused(&[x, w, b]) {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, ConvT2d { stride, pad })
    } else {
        let y = x.conv_transpose2d(w, pad, 0, stride, 1)?;
        y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)
    }
}

struct Conv2d {
    stride: usize,
    pad: usize,
}

impl Conv2d {
    fn geom(&self, xl: &Layout, wl: &Layout) -> candle_core::Result<(Geom, usize)> {
        let (b, c, h, w) = dims4(xl)?;
        let (o, wc, k, k2) = dims4(wl)?;
        if wc != c || k != k2 || h + 2 * self.pad < k || w + 2 * self.pad < k {
            candle_core::bail!(
                "conv2d: input {:?} and kernel {:?} do not fit",
                xl.shape(),
                wl.shape()
            );
        }
        Ok((
            Geom {
                b,
                c,
                h,
                w,
                k,
                stride: self.stride,
                pad: self.pad,
            },
            o,
        ))
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-bias"
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
        let (x, w, bias) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let cols = im2col(x, g);
        let mut y = vec![0f32; g.rows() * o];
        matmul(
            &mut y,
            MatRef::row_major(&cols, g.rows(), g.cols()),
            MatRef::row_major(w, o, g.cols()).t(),
            false,
        );
        let s = g.ho() * g.wo();
        Ok((
            CpuStorage::F32(from_rows(&y, g.b, o, s, Some(bias))),
            Shape::from((g.b, o, g.ho(), g.wo())),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(
                w,
                &Conv2dGradInput {
                    stride: self.stride,
                    pad: self.pad,
                    x: x.dims().to_vec(),
                },
            )?)
        } else {
            None
        };
        let dw = x.apply_op2_no_bwd(
            &dy,
            &Conv2dGradWeight {
                stride: self.stride,
                pad: self.pad,
                k: w.dim(2)?,
            },
        )?;
        let db = dy.transpose(0, 1)?.flatten_from(1)?.sum(1)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// dL/dx of conv2d from (dy, w): `col2im(dY w)`.
struct Conv2dGradInput {
    stride: usize,
    pad: usize,
    x: Vec<usize>,
}

impl CustomOp2 for Conv2dGradInput {
    fn name(&self) -> &'static str {
        "conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let [b, c, h, w_] = self.x[..] else {
            candle_core::bail!("conv2d-grad-input: bad input shape")
        };
        let (o, _, k, _) = dims4(wl)?;
        let g = Geom {
            b,
            c,
            h,
            w: w_,
            k,
            stride: self.stride,
            pad: self.pad,
        };
        let (dy, w) = (slice(dys, dyl)?, slice(ws, wl)?);
        let rows = to_rows(dy, b, o, g.ho() * g.wo());
        let mut dcols = vec![0f32; g.rows() * g.cols()];
        matmul(
            &mut dcols,
            MatRef::row_major(&rows, g.rows(), o),
            MatRef::row_major(w, o, g.cols()),
            false,
        );
        Ok((
            CpuStorage::F32(col2im(&dcols, g)),
            Shape::from(self.x.clone()),
        ))
    }
}

/// dL/dw of conv2d from (x, dy): `dY^T cols(x)`.
struct Conv2dGradWeight {
    stride: usize,
    pad: usize,
    k: usize,
}

impl CustomOp2 for Conv2dGradWeight {
    fn name(&self) -> &'static str {
        "conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = dims4(xl)?;
        let (_, o, _, _) = dims4(dyl)?;
        let g = Geom {
            b,
            c,
            h,
            w,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        let cols = im2col(slice(xs, xl)?, g);
        let rows = to_rows(slice(dys, dyl)?, b, o, g.ho() * g.wo());
        let mut dw = vec![0f32; o * g.cols()];
        matmul(
            &mut dw,
            MatRef::row_major(&rows, g.rows(), o).t(),
            MatRef::row_major(&cols, g.rows(), g.cols()),
            false,
        );
        Ok((CpuStorage::F32(dw), Shape::from((o, c, self.k, self.k))))
    }
}

struct ConvT2d {
    stride: usize,
    pad: usize,
}

impl ConvT2d {
    /// The geometry of the conv2d whose input-gradient this is: its "image" is the output.
    fn geom(&self, xl: &Layout, wl: &Layout) -> candle_core::Result<(Geom, usize)> {
        let (b, cin, h, w) = dims4(xl)?;
        let (wcin, cout, k, k2) = dims4(wl)?;
        let ho = (h - 1) * self.stride + k;
        let wo = (w - 1) * self.stride + k;
        if wcin != cin
            || k != k2
            || ho < 2 * self.pad + 1
            || wo < 2 * self.pad + 1
            || h == 0
            || w == 0
        {
            candle_core::bail!(
                "conv-transpose2d: input {:?} and kernel {:?} do not fit",
                xl.shape(),
                wl.shape()
            );
        }
        let g = Geom {
            b,
            c: cout,
            h: ho - 2 * self.pad,
            w: wo - 2 * self.pad,
            k,
            stride: self.stride,
            pad: self.pad,
        };
        debug_assert_eq!((g.ho(), g.wo()), (h, w));
        Ok((g, cin))
    }
}

impl CustomOp3 for ConvT2d {
    fn name(&self) -> &'static str {
        "conv-transpose2d-bias"
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
        let (x, w, bias) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let rows = to_rows(x, g.b, cin, g.ho() * g.wo());
        let mut cols = vec![0f32; g.rows() * g.cols()];
        matmul(
            &mut cols,
            MatRef::row_major(&rows, g.rows(), cin),
            MatRef::row_major(w, cin, g.cols()),
            false,
        );
        let mut y = col2im(&cols, g);
        let s = g.h * g.w;
        for (i, plane) in y.chunks_exact_mut(s).enumerate() {
            let add = bias[i % g.c];
            plane.iter_mut().for_each(|v| *v += add);
        }
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.c, g.h, g.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // dx is the conv2d of dy with the kernel read as [Cin, Cout, k, k] = [O, C, k, k].
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(
                w,
                &ConvT2dGradInput {
                    stride: self.stride,
                    pad: self.pad,
                },
            )?)
        } else {
            None
        };
        // dW[cin, :] = X^T cols(dy): Conv2dGradWeight with the roles of input and gradient swapped.
        let dw = dy.apply_op2_no_bwd(
            x,
            &ConvT2dGradWeight {
                stride: self.stride,
                pad: self.pad,
                k: w.dim(2)?,
            },
        )?;
        let db = dy.transpose(0, 1)?.flatten_from(1)?.sum(1)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

struct ConvT2dGradInput {
    stride: usize,
    pad: usize,
}

impl CustomOp2 for ConvT2dGradInput {
    fn name(&self) -> &'static str {
        "conv-transpose2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cout, h, w) = dims4(dyl)?;
        let (cin, _, k, _) = dims4(wl)?;
        let g = Geom {
            b,
            c: cout,
            h,
            w,
            k,
            stride: self.stride,
            pad: self.pad,
        };
        let cols = im2col(slice(dys, dyl)?, g);
        let mut rows = vec![0f32; g.rows() * cin];
        matmul(
            &mut rows,
            MatRef::row_major(&cols, g.rows(), g.cols()),
            MatRef::row_major(slice(ws, wl)?, cin, g.cols()).t(),
            false,
        );
        Ok((
            CpuStorage::F32(from_rows(&rows, b, cin, g.ho() * g.wo(), None)),
            Shape::from((b, cin, g.ho(), g.wo())),
        ))
    }
}

struct ConvT2dGradWeight {
    stride: usize,
    pad: usize,
    k: usize,
}

impl CustomOp2 for ConvT2dGradWeight {
    fn name(&self) -> &'static str {
        "conv-transpose2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cout, h, w) = dims4(dyl)?;
        let (_, cin, _, _) = dims4(xl)?;
        let g = Geom {
            b,
            c: cout,
            h,
            w,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        let cols = im2col(slice(dys, dyl)?, g);
        let rows = to_rows(slice(xs, xl)?, b, cin, g.ho() * g.wo());
        let mut dw = vec![0f32; cin * g.cols()];
        matmul(
            &mut dw,
            MatRef::row_major(&rows, g.rows(), cin).t(),
            MatRef::row_major(&cols, g.rows(), g.cols()),
            false,
        );
        Ok((
            CpuStorage::F32(dw),
            Shape::from((cin, cout, self.k, self.k)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Var {
        let n = shape.iter().product();
        Var::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Values and all three gradients against candle's own convolutions, for the shapes the
    /// conv preset uses and odd ones.
    #[test]
    fn convolutions_match_candle() -> candle_core::Result<()> {
        for (b, c, h, o, k, s, p) in [
            (2, 1, 28, 3, 4, 2, 1),
            (3, 4, 7, 5, 4, 2, 1),
            (2, 3, 9, 2, 3, 1, 1),
            (1, 2, 6, 3, 3, 2, 0),
        ] {
            let x = rand(&[b, c, h, h], 1);
            let w = rand(&[o, c, k, k], 2);
            let bias = rand(&[o], 3);
            let ours = conv2d(x.as_tensor(), w.as_tensor(), bias.as_tensor(), s, p)?;
            let theirs = x
                .as_tensor()
                .conv2d(w.as_tensor(), p, s, 1, 1)?
                .broadcast_add(&bias.as_tensor().reshape((1, o, 1, 1))?)?;
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_diff(&ours, &theirs) < 1e-4);
            let up = Tensor::from_vec(
                Rng::new(4).normal_vec(ours.elem_count()),
                ours.shape(),
                &Device::Cpu,
            )?;
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for v in [&x, &w, &bias] {
                let d = max_diff(
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
                assert!(d < 1e-3, "conv2d gradient differs by {d}");
            }

            // The transposed convolution with a kernel [o, c, k, k] maps o channels back to c.
            let xt = rand(&[b, o, h, h], 5);
            let bt = rand(&[c], 6);
            let ours = conv_transpose2d(xt.as_tensor(), w.as_tensor(), bt.as_tensor(), s, p)?;
            let theirs = xt
                .as_tensor()
                .conv_transpose2d(w.as_tensor(), p, 0, s, 1)?
                .broadcast_add(&bt.as_tensor().reshape((1, c, 1, 1))?)?;
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_diff(&ours, &theirs) < 1e-4);
            let up = Tensor::from_vec(
                Rng::new(7).normal_vec(ours.elem_count()),
                ours.shape(),
                &Device::Cpu,
            )?;
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            // candle's conv-transpose backward for the kernel is what the issue warns about:
            // compare the input and bias gradients with candle, the kernel's by finite differences.
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for v in [&xt, &bt] {
                let d = max_diff(
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
                assert!(d < 1e-3, "conv-transpose2d gradient differs by {d}");
            }
            let gw = g1
                .get(w.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let base = w.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let f = |wv: &[f32]| -> f64 {
                let wt = Tensor::from_slice(wv, (o, c, k, k), &Device::Cpu).unwrap();
                let y = conv_transpose2d(xt.as_tensor(), &wt, bt.as_tensor(), s, p).unwrap();
                let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let u = up.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                y.iter().zip(&u).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            for i in (0..base.len()).step_by(7) {
                let (mut pp, mut mm) = (base.clone(), base.clone());
                pp[i] += 1e-2;
                mm[i] -= 1e-2;
                // The output is linear in w: central differences are exact up to rounding.
                let fd = (f(&pp) - f(&mm)) / 2e-2;
                assert!(
                    (gw[i] as f64 - fd).abs() < 2e-2 * fd.abs().max(1.0),
                    "dW[{i}]: {} vs {fd}",
                    gw[i]
                );
            }
        }
        Ok(())
    }
}
