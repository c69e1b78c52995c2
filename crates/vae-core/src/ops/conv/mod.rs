//! 2-D convolutions and transposed convolutions (square kernels) with their bias and activation,
//! as im2col and matrix products over blocks of output pixels, with hand-written backward
//! passes.
//!
//! candle's CPU convolutions loop over examples and its transposed convolution is a direct loop;
//! here, with `cols` the im2col matrix `[B * Ho * Wo, k * k * C]`:
//! - conv2d: `Y = cols(x) W^T`; backward `dW = G^T cols(x)`, `dcols = G W` summed back into the
//!   image (col2im), with `G` the output gradient through the activation;
//! - conv_transpose2d is conv2d's input gradient: `cols = X W`, `y = col2im(cols)`; backward
//!   `dW = X^T cols(G)`, `dX = cols(G) W^T`.
//!
//! Inside, feature maps are channels-last (`[B, H, W, C]`): a kernel row of an im2col row is then
//! one contiguous run of `k * C` values of the image, and a product's rows are already the
//! output's pixels. Each operation reads and writes either memory order ([`MapLayout`]); a stack
//! of convolutions passes channels-last maps between its layers and so transposes only at its
//! ends. The bias is added and the activation applied in the pass that writes the output; the
//! backward pass takes the activation's derivative from the output and sums the bias gradient in
//! the same pass, and skips the input gradient when the input is data.
//!
//! Values and gradients are checked against candle's `conv2d` / `conv_transpose2d` (the
//! composite twins in [`super::composite`]) and against finite differences in the tests.

mod block;
mod direct;
mod kernels;
pub(super) mod layout;
mod padded;
mod products;
#[cfg(test)]
mod tests;

use candle_core::Tensor;

use super::{composite, exact_conv, Act, Kernels, Route};

pub use block::BlockSpec;

/// The memory order of a batch of feature maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapLayout {
    /// `[batch, channels, height, width]` (PyTorch's and candle's order).
    Nchw,
    /// `[batch, height, width, channels]`.
    Nhwc,
}

/// A convolution's settings: stride, zero padding, the activation applied to its output (and,
/// for a conv2d, to its input), the memory orders of its input and output, and the kernels it
/// runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOpts {
    pub stride: usize,
    pub pad: usize,
    pub act: Act,
    /// conv2d only: the convolution is of `pre(x)`. Fused into a 1x1 convolution on the CPU (the
    /// activation applied to each block of rows as the product takes it, its derivative taken
    /// from that block in the backward pass, no activated map stored); elsewhere a pass of its
    /// own.
    pub pre: Act,
    pub input: MapLayout,
    pub output: MapLayout,
    pub kernels: Kernels,
}

impl ConvOpts {
    /// NCHW in and out, no activation, native kernels.
    pub fn new(stride: usize, pad: usize) -> Self {
        Self {
            stride,
            pad,
            act: Act::Identity,
            pre: Act::Identity,
            input: MapLayout::Nchw,
            output: MapLayout::Nchw,
            kernels: Kernels::Native,
        }
    }

    pub fn kernels(self, kernels: Kernels) -> Self {
        Self { kernels, ..self }
    }

    pub fn act(self, act: Act) -> Self {
        Self { act, ..self }
    }

    /// The activation of the input (conv2d only).
    pub fn pre(self, pre: Act) -> Self {
        Self { pre, ..self }
    }

    pub fn layouts(self, input: MapLayout, output: MapLayout) -> Self {
        Self {
            input,
            output,
            ..self
        }
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
    conv2d_with(x, w, b, ConvOpts::new(stride, pad))
}

/// `act(conv2d(pre(x), w) + b)` for `w` `[O, C, k, k]`, `b` `[O]`, with `x` and the result in
/// the memory orders `o` names (`[B, C, H, W]` or `[B, H, W, C]`).
pub fn conv2d_with(x: &Tensor, w: &Tensor, b: &Tensor, o: ConvOpts) -> candle_core::Result<Tensor> {
    let route = o.kernels.route(&[x, w, b]);
    if o.pre != Act::Identity {
        let pointwise = matches!(w.dims(), [_, _, 1, 1]) && o.stride == 1 && o.pad == 0;
        if !(pointwise && route == Route::Cpu) {
            let x = super::activate(x, o.pre, o.kernels)?;
            return conv2d_with(&x, w, b, o.pre(Act::Identity));
        }
    }
    match route {
        Route::Exact(simd) => exact_conv(x, w, b, o, false, simd),
        Route::Cpu => {
            x.contiguous()?
                .apply_op3(&w.contiguous()?, &b.contiguous()?, kernels::Conv2d(o))
        }
        Route::Composite => composite::conv2d(x, w, b, o),
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
    conv_transpose2d_with(x, w, b, ConvOpts::new(stride, pad))
}

/// `act(conv_transpose2d(x, w) + b)` for `w` `[Cin, Cout, k, k]`, `b` `[Cout]`, with `x` and the
/// result in the memory orders `o` names.
pub fn conv_transpose2d_with(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    o: ConvOpts,
) -> candle_core::Result<Tensor> {
    if o.pre != Act::Identity {
        candle_core::bail!("conv-transpose2d: no input activation ({:?})", o.pre);
    }
    match o.kernels.route(&[x, w, b]) {
        Route::Exact(simd) => exact_conv(x, w, b, o, true, simd),
        Route::Cpu => {
            x.contiguous()?
                .apply_op3(&w.contiguous()?, &b.contiguous()?, kernels::ConvT2d(o))
        }
        Route::Composite => composite::conv_transpose2d(x, w, b, o),
    }
}

/// VDVAE's bottleneck block as one operation (see `block.rs`) on a channels-last map `x`
/// `[n, h, w, cin]`: kernels `ws` `[mid, cin, 1, 1]`, `[mid, mid, 3, 3]` twice and
/// `[out, mid, 1, 1]`, biases `bs`; the output is `[n, h, w, out]`. Only where
/// `Kernels::fused` holds: elsewhere the block is its four convolutions ([`conv2d_with`]).
pub fn bottleneck_block(
    x: &Tensor,
    ws: [&Tensor; 4],
    bs: [&Tensor; 4],
    spec: BlockSpec,
) -> candle_core::Result<Tensor> {
    let flat = ws
        .iter()
        .map(|w| w.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let w = Tensor::cat(&flat, 0)?;
    let b = Tensor::cat(&bs, 0)?;
    let keep = x.track_op() || w.track_op() || b.track_op();
    x.contiguous()?
        .apply_op3(&w, &b, block::BlockOp::new(spec, keep))
}

/// The geometry of a convolution from an image of `c` channels, `h x w`, with a `k x k` kernel
/// (also the exact kernels' geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geom {
    pub(super) b: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
}

impl Geom {
    pub(super) fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub(super) fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Rows of the im2col matrix (output pixels of the batch).
    fn rows(&self) -> usize {
        self.b * self.ho() * self.wo()
    }
    /// Columns of the im2col matrix.
    fn cols(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Values of the image.
    fn image(&self) -> usize {
        self.b * self.c * self.h * self.w
    }
}
