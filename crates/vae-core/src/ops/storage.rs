//! The fused operations' access to candle's storage: the contiguous slice of a tensor, its
//! `[batch, dim]` shape, and for the packed backward passes (conv, linear) the forward output
//! and the split of their `[dx | dw | db]` result.

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
