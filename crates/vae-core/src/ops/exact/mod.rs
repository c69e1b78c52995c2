//! Forward passes whose bits do not depend on the CPU's SIMD level, the thread count or the
//! batch: the route of [`super::Kernels::Exact`] (lossless compression needs the encoder and the
//! decoder of a file to compute the same model outputs, possibly on different machines).
//!
//! Every output element is a sum of products taken in one fixed order, spelled out in the
//! source, and Rust never contracts `a * b + c` into a fused multiply-add, so every SIMD level
//! of [`multiversion!`] gives the same bits; each output element is computed on its own (the
//! SIMD lanes are different elements, never parts of one sum), so a batch of one and a batch
//! of many agree too.
//! - Dense layers: a dot product of two contiguous rows, 16 interleaved partial sums over the
//!   contraction index, the tail added in order, then a fixed pairwise reduction of the 16
//!   lanes ([`dot`]), then the bias.
//! - Convolutions ([`conv`]): im2col / col2im on channels-last maps around the product of
//!   [`product`], one accumulator per output summed in the order of the contraction index,
//!   then the bias.
//!
//! Activations come from [`crate::fastmath`], which has no FMA either. These passes have no
//! backward: the result is a plain tensor.

use candle_core::{CpuStorage, DType, Device, Tensor};

use super::Act;
use crate::fastmath;
use crate::multiversion;

mod conv;
mod product;

pub(super) use conv::{conv2d, conv_transpose2d};

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

multiversion! {
    /// `act` of every element, in place (the same bits at every SIMD level: `fastmath`'s
    /// functions have no fused multiply-add and no table).
    fn activate(y: &mut [f32], act: Act) {
        match act {
            Act::Identity => {}
            Act::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Tanh => y.iter_mut().for_each(|v| *v = fastmath::tanh(*v)),
            Act::Sigmoid => y.iter_mut().for_each(|v| *v = fastmath::sigmoid(*v)),
        }
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

#[cfg(test)]
mod tests;
