//! Forward passes whose bits do not depend on the CPU's SIMD level, the thread count or the
//! batch: the route of [`super::Kernels::Exact`] (lossless compression needs the encoder and the
//! decoder of a file to compute the same model outputs, possibly on different machines).
//!
//! Every output element is a dot product of two contiguous rows, summed in one fixed order:
//! 16 interleaved partial sums over the contraction index, the tail added in order, then a
//! fixed pairwise reduction of the 16 lanes ([`dot`]). The order is spelled out in the
//! source, and Rust never contracts `a * b + c` into a fused multiply-add, so every SIMD level
//! of [`multiversion!`] gives the same bits; each row of the batch is computed on its own, so
//! a batch of one and a batch of many agree too. Convolutions are im2col / col2im around the
//! same dot products. Activations come from [`crate::fastmath`], which has no FMA either.
//! These passes have no backward: the result is a plain tensor.

use candle_core::{CpuStorage, DType, Device, Tensor};

use super::conv::Geom;
use super::Act;
use crate::fastmath;
use crate::multiversion;

multiversion! {
    /// `y[i * n + j] = dot(a[i, :], b[j, :])` for `a` `[m, k]` and `b` `[n, k]`, row-major.
    /// Four rows of `a` share each pass over a row of `b` (each element still has its own
    /// accumulators, in the order of [`dot`]).
    fn dots(a: &[f32], b: &[f32], k: usize, y: &mut [f32]) {
        let n = b.len().checked_div(k).unwrap_or(0);
        if n == 0 {
            y.fill(0.0);
            return;
        }
        let mut ya = y.chunks_exact_mut(4 * n);
        let mut aa = a.chunks_exact(4 * k);
        for (yb, ab) in (&mut ya).zip(&mut aa) {
            let (a0, rest) = ab.split_at(k);
            let (a1, rest) = rest.split_at(k);
            let (a2, a3) = rest.split_at(k);
            for (j, br) in b.chunks_exact(k).enumerate() {
                let d = dot4([a0, a1, a2, a3], br);
                for (r, v) in d.into_iter().enumerate() {
                    yb[r * n + j] = v;
                }
            }
        }
        for (yr, ar) in ya.into_remainder().chunks_exact_mut(n).zip(aa.remainder().chunks_exact(k)) {
            for (yv, br) in yr.iter_mut().zip(b.chunks_exact(k)) {
                *yv = dot(ar, br);
            }
        }
    }
}

/// [`dot`] of four rows with one row, each in exactly [`dot`]'s order.
#[inline(always)]
fn dot4(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let (mut s0, mut s1, mut s2, mut s3) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
    let bc = b.chunks_exact(16);
    let tail_b = bc.remainder();
    let rows = bc
        .zip(a[0].chunks_exact(16))
        .zip(a[1].chunks_exact(16))
        .zip(a[2].chunks_exact(16))
        .zip(a[3].chunks_exact(16));
    for ((((y, x0), x1), x2), x3) in rows {
        for l in 0..16 {
            s0[l] += x0[l] * y[l];
            s1[l] += x1[l] * y[l];
            s2[l] += x2[l] * y[l];
            s3[l] += x3[l] * y[l];
        }
    }
    let full = b.len() - tail_b.len();
    let mut out = [0f32; 4];
    for ((o, acc), a) in out
        .iter_mut()
        .zip([&mut s0, &mut s1, &mut s2, &mut s3])
        .zip(a)
    {
        *o = finish(acc, &a[full..], tail_b);
    }
    out
}

/// Σ a_i b_i in the fixed order described in the module documentation.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    finish(&mut acc, at, bt)
}

/// The tail and the pairwise reduction of [`dot`].
#[inline(always)]
fn finish(acc: &mut [f32; 16], at: &[f32], bt: &[f32]) -> f32 {
    let mut tail = 0f32;
    for (x, y) in at.iter().zip(bt) {
        tail += x * y;
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0] + tail
}

fn activate(y: &mut [f32], act: Act) {
    match act {
        Act::Identity => {}
        Act::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Act::Tanh => y.iter_mut().for_each(|v| *v = fastmath::tanh(*v)),
        Act::Sigmoid => y.iter_mut().for_each(|v| *v = fastmath::sigmoid(*v)),
    }
}

/// `act` of every element of `y` (any shape), computed as [`linear`]'s activations are: the
/// same bits whatever the SIMD level or the batch.
pub(super) fn activate_tensor(y: &Tensor, act: Act) -> candle_core::Result<Tensor> {
    if act == Act::Identity {
        return Ok(y.clone());
    }
    let mut v = host(y)?;
    activate(&mut v, act);
    back(v, y.dims(), y)
}

/// The values of a tensor as a row-major f32 slice: borrowed from a contiguous f32 CPU
/// tensor, else converted.
enum Values<'a> {
    Borrowed(candle_core::StorageRef<'a>, usize, usize),
    Owned(Vec<f32>),
}

impl Values<'_> {
    fn of(t: &Tensor) -> candle_core::Result<Values<'_>> {
        if t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() {
            let (s, l) = t.storage_and_layout();
            let start = l.start_offset();
            if matches!(&*s, candle_core::Storage::Cpu(CpuStorage::F32(_))) {
                return Ok(Values::Borrowed(s, start, t.elem_count()));
            }
        }
        Ok(Values::Owned(host(t)?))
    }

    fn slice(&self) -> &[f32] {
        match self {
            Values::Borrowed(s, start, n) => match &**s {
                candle_core::Storage::Cpu(CpuStorage::F32(v)) => &v[*start..][..*n],
                _ => &[],
            },
            Values::Owned(v) => v,
        }
    }
}

/// The values of `t` as f32 on the CPU, row-major.
fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// A CPU f32 result back on `like`'s device and dtype.
fn back(v: Vec<f32>, dims: &[usize], like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, dims, &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// `act(x W^T + b)` for `x` `[batch, in]`, `w` `[out, in]`, `b` `[out]`.
pub(super) fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> candle_core::Result<Tensor> {
    let (batch, input) = x.dims2()?;
    let (out, w_in) = w.dims2()?;
    if w_in != input || b.dims() != [out] {
        candle_core::bail!(
            "linear: input {:?}, weight {:?}, bias {:?} do not fit",
            x.shape(),
            w.shape(),
            b.shape()
        );
    }
    let (xv, wv, bv) = (Values::of(x)?, Values::of(w)?, Values::of(b)?);
    let (xv, wv, bv) = (xv.slice(), wv.slice(), bv.slice());
    let mut y = vec![0f32; batch * out];
    dots(xv, wv, input, &mut y);
    for row in y.chunks_exact_mut(out.max(1)) {
        for (v, b) in row.iter_mut().zip(bv) {
            *v += b;
        }
    }
    activate(&mut y, act);
    back(y, &[batch, out], x)
}

/// `[b, c, h, w]` to rows `[b * ho * wo, c * k * k]` (zero padding).
fn im2col(x: &[f32], g: Geom) -> Vec<f32> {
    let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
    let cols = g.c * kk;
    let mut out = vec![0f32; g.b * ho * wo * cols];
    for b in 0..g.b {
        for oy in 0..ho {
            for ox in 0..wo {
                let row = &mut out[((b * ho + oy) * wo + ox) * cols..][..cols];
                for c in 0..g.c {
                    let plane = &x[(b * g.c + c) * g.h * g.w..][..g.h * g.w];
                    for ky in 0..g.k {
                        let Some(iy) = g.at(oy, ky, g.h) else {
                            continue;
                        };
                        for kx in 0..g.k {
                            if let Some(ix) = g.at(ox, kx, g.w) {
                                row[c * kk + ky * g.k + kx] = plane[iy * g.w + ix];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The adjoint of [`im2col`]: adds the rows back into `[b, c, h, w]`, in row order.
fn col2im(cols: &[f32], g: Geom) -> Vec<f32> {
    let (ho, wo, kk) = (g.ho(), g.wo(), g.k * g.k);
    let ncol = g.c * kk;
    let mut x = vec![0f32; g.b * g.c * g.h * g.w];
    for b in 0..g.b {
        for oy in 0..ho {
            for ox in 0..wo {
                let row = &cols[((b * ho + oy) * wo + ox) * ncol..][..ncol];
                for c in 0..g.c {
                    let plane = &mut x[(b * g.c + c) * g.h * g.w..][..g.h * g.w];
                    for ky in 0..g.k {
                        let Some(iy) = g.at(oy, ky, g.h) else {
                            continue;
                        };
                        for kx in 0..g.k {
                            if let Some(ix) = g.at(ox, kx, g.w) {
                                plane[iy * g.w + ix] += row[c * kk + ky * g.k + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    x
}

/// `conv2d(x, w) + b` for `x` `[B, C, H, W]`, `w` `[O, C, k, k]`, `b` `[O]`.
pub(super) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    let (bn, c, h, wd) = x.dims4()?;
    let (o, wc, k, k2) = w.dims4()?;
    if wc != c || k != k2 || h + 2 * pad < k || wd + 2 * pad < k || stride == 0 || b.dims() != [o] {
        candle_core::bail!(
            "conv2d: input {:?} and kernel {:?} do not fit",
            x.shape(),
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
    let cols = im2col(xv, g);
    let s = g.ho() * g.wo();
    let mut rows = vec![0f32; bn * s * o];
    dots(&cols, wv, c * k * k, &mut rows);
    // [b * s, o] to [b, o, s], plus the bias.
    let mut y = vec![0f32; bn * o * s];
    for bi in 0..bn {
        for oi in 0..o {
            for si in 0..s {
                y[(bi * o + oi) * s + si] = rows[(bi * s + si) * o + oi] + bv[oi];
            }
        }
    }
    back(y, &[bn, o, g.ho(), g.wo()], x)
}

/// `conv_transpose2d(x, w) + b` for `x` `[B, Cin, H, W]`, `w` `[Cin, Cout, k, k]`, `b` `[Cout]`.
pub(super) fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    let (bn, cin, h, wd) = x.dims4()?;
    let (wcin, cout, k, k2) = w.dims4()?;
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
            "conv-transpose2d: input {:?} and kernel {:?} do not fit",
            x.shape(),
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
    let s = h * wd;
    // X as rows [b * s, cin]; W^T as rows [cout * k * k, cin].
    let mut xr = vec![0f32; bn * s * cin];
    for bi in 0..bn {
        for ci in 0..cin {
            for si in 0..s {
                xr[(bi * s + si) * cin + ci] = xv[(bi * cin + ci) * s + si];
            }
        }
    }
    let ncol = cout * k * k;
    let mut wt = vec![0f32; ncol * cin];
    for ci in 0..cin {
        for j in 0..ncol {
            wt[j * cin + ci] = wv[ci * ncol + j];
        }
    }
    let mut cols = vec![0f32; bn * s * ncol];
    dots(&xr, &wt, cin, &mut cols);
    let mut y = col2im(&cols, g);
    for (i, plane) in y.chunks_exact_mut(g.h * g.w).enumerate() {
        let add = bv[i % cout];
        plane.iter_mut().for_each(|v| *v += add);
    }
    back(y, &[bn, cout, g.h, g.w], x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastmath::{with_simd_cap, SimdLevel};
    use crate::Rng;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        host(t).unwrap().iter().map(|v| v.to_bits()).collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (host(a).unwrap(), host(b).unwrap());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The exact kernels agree with candle's to f32 tolerance, give the same bits at every
    /// SIMD level, and the same bits for a row alone as inside a batch.
    #[test]
    fn exact_kernels_match_candle_and_do_not_depend_on_simd_or_batch() {
        let (x, w, b) = (rand(&[5, 37], 1), rand(&[19, 37], 2), rand(&[19], 3));
        let xc = rand(&[3, 2, 9, 9], 4);
        let wc = rand(&[4, 2, 4, 4], 5);
        let bc = rand(&[4], 6);
        let xt = rand(&[3, 4, 5, 5], 7);
        let bt = rand(&[2], 8);
        let run = || {
            (
                linear(&x, &w, &b, Act::Tanh).unwrap(),
                conv2d(&xc, &wc, &bc, 2, 1).unwrap(),
                conv_transpose2d(&xt, &wc, &bt, 2, 1).unwrap(),
            )
        };
        let (l, c, t) = run();
        let want_l = (x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap())
        .tanh()
        .unwrap();
        assert!(max_diff(&l, &want_l) < 1e-5);
        let want_c = xc
            .conv2d(&wc, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&bc.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(c.dims(), want_c.dims());
        assert!(max_diff(&c, &want_c) < 1e-4);
        let want_t = xt
            .conv_transpose2d(&wc, 1, 0, 2, 1)
            .unwrap()
            .broadcast_add(&bt.reshape((1, 2, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(t.dims(), want_t.dims());
        assert!(max_diff(&t, &want_t) < 1e-4);
        for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
            let (l2, c2, t2) = with_simd_cap(Some(level), run);
            assert_eq!(bits(&l), bits(&l2), "{level:?}");
            assert_eq!(bits(&c), bits(&c2), "{level:?}");
            assert_eq!(bits(&t), bits(&t2), "{level:?}");
        }
        // Activations on their own: fastmath's, not candle's (libm) tanh and sigmoid.
        let y = rand(&[3, 2, 7, 5], 9);
        for act in [Act::Tanh, Act::Sigmoid, Act::Relu, Act::Identity] {
            let got = activate_tensor(&y, act).unwrap();
            assert_eq!(got.dims(), y.dims());
            let want: Vec<u32> = host(&y)
                .unwrap()
                .iter()
                .map(|&v| match act {
                    Act::Tanh => fastmath::tanh(v),
                    Act::Sigmoid => fastmath::sigmoid(v),
                    Act::Relu => v.max(0.0),
                    Act::Identity => v,
                })
                .map(f32::to_bits)
                .collect();
            assert_eq!(bits(&got), want, "{act:?}");
            assert!(max_diff(&got, &super::super::composite_activate(&y, act).unwrap()) < 1e-6);
        }
        let row = linear(&x.narrow(0, 2, 1).unwrap(), &w, &b, Act::Tanh).unwrap();
        assert_eq!(bits(&row), bits(&l.narrow(0, 2, 1).unwrap()));
        let one = conv2d(&xc.narrow(0, 1, 1).unwrap(), &wc, &bc, 2, 1).unwrap();
        assert_eq!(bits(&one), bits(&c.narrow(0, 1, 1).unwrap()));
    }
}
