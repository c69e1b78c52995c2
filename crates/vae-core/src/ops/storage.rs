//! The fused operations' access to candle's storage: the contiguous slice of a tensor, its
//! `[batch, dim]` shape, and for the packed backward passes (conv, linear) the forward output
//! and the split of their `[dx | dw | db]` result, which they allocate without zeroing.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout, Storage, Tensor};

/// `(batch, dim)` of a 2-d tensor.
pub(super) fn rows_of(l: &Layout) -> candle_core::Result<(usize, usize)> {
    match l.shape().dims() {
        [b, d] => Ok((*b, *d)),
        dims => candle_core::bail!("expected a [batch, dim] tensor, got shape {dims:?}"),
    }
}

/// The values of a contiguous f32 tensor.
pub(super) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("fused op needs a contiguous tensor"),
    }
}

/// The output `y` of a fused forward pass, read by its backward pass (conv, linear).
pub(super) fn output_slice<'a>(y: &'a Storage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match y {
        Storage::Cpu(s) => slice(s, l),
        _ => candle_core::bail!("fused backward: the output is not on the CPU"),
    }
}

/// Splits the packed gradients `[dx | dw | db]` of a fused backward operation (conv, linear):
/// `dx` when the input `x` is given (tracked), then the weight and bias gradients.
pub(super) fn unpack(
    packed: &Tensor,
    x: Option<&Tensor>,
    w: &Tensor,
    b: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let nx = x.map_or(0, |x| x.elem_count());
    let nw = w.elem_count();
    let dx = x
        .map(|x| packed.narrow(0, 0, nx)?.reshape(x.shape()))
        .transpose()?;
    let dw = packed.narrow(0, nx, nw)?.reshape(w.shape())?;
    let db = packed.narrow(0, nx + nw, b.elem_count())?;
    Ok((dx, Some(dw), Some(db)))
}

/// Zeros in `part`, a part of a packed result allocated without zeroing, returned as floats:
/// for the writers that add into what they are given or take `&mut [f32]`. (Parts written
/// whole by a product take [`crate::ops::gemm::matmul_uninit`] and are never zeroed.)
pub(super) fn zeroed(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    part.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was written just above.
    unsafe { assume_init(part) }
}

/// `part` as a destination of [`crate::ops::gemm::matmul_uninit`], for a product written into
/// scratch on one path and into a packed result on another.
///
/// # Safety
/// Only initialised values may be written through the result (the products write only values).
pub(super) unsafe fn as_uninit(part: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the caller writes only values, so the floats stay initialised.
    unsafe { &mut *(part as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `part` as floats once every element has been written (by
/// [`crate::ops::gemm::matmul_uninit`], say).
///
/// # Safety
/// Every element of `part` must have been initialised.
pub(super) unsafe fn assume_init(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout, and the caller guarantees every element is initialised.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}
