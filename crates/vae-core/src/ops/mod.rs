//! Fused tensor operations for the hot spots of training, each with its own backward.
//!
//! On the CPU each runs as one pass over memory (a candle custom op with kernels from
//! [`crate::fastmath`] and direct `gemm` calls); on other devices, and as the reference in
//! tests, the same value comes from a composition of candle operations ([`composite`]).
//! Gradients of the fused versions are checked against finite differences and against the
//! composite versions in the tests. [`adam`] holds the optimizer's kernels.

pub mod adam;
mod bernoulli;
mod betabinom;
mod cb;
mod conv;
mod discrete;
mod dlogistic;
mod exact;
mod gauss;
mod gemm;
mod linear;
mod pool;

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

pub use bernoulli::{bernoulli_log_prob, sigmoid};
pub use betabinom::{
    beta_binomial_log_prob, beta_binomial_mean, beta_binomial_pixel_log_pmf,
    beta_binomial_pixel_pmf, beta_binomial_sample, BETA_BINOMIAL_LOG_MAX, BETA_BINOMIAL_LOG_MIN,
};
pub use cb::{cb_log_norm, cb_mean};
pub use conv::{
    bottleneck_block, conv2d, conv2d_with, conv_transpose2d, conv_transpose2d_with, BlockSpec,
    ConvOpts, MapLayout,
};
pub use discrete::{cdf, inverse_cdf, LEVELS};
pub use dlogistic::{
    discretized_logistic_log_prob, discretized_logistic_mean, discretized_logistic_params_per_dim,
    discretized_logistic_pixel_log_pmf, discretized_logistic_pixel_pmf,
    discretized_logistic_sample, DLOGISTIC_LOG_SCALE_MAX, DLOGISTIC_LOG_SCALE_MIN,
};
pub use gauss::gaussian_sample_kl;
pub use linear::{linear, Act};
pub use pool::avg_pool2_last;

static FUSED: AtomicBool = AtomicBool::new(true);
static EXACT: AtomicBool = AtomicBool::new(false);

/// Turns the exact forward passes on or off for the whole process (off by default). On,
/// [`linear`], [`conv2d_with`] and [`conv_transpose2d_with`] (and so [`conv2d`] and
/// [`conv_transpose2d`]) compute their forward pass with fixed-order kernels whose bits do not
/// depend on the SIMD level, the thread count or the batch (see `ops/exact.rs`); they then
/// have no backward pass. Lossless compression needs this.
pub fn set_exact(on: bool) {
    EXACT.store(on, Ordering::SeqCst);
}

/// Whether the exact forward passes are in use.
pub fn exact() -> bool {
    EXACT.load(Ordering::SeqCst)
}

/// Turns the exact passes on until dropped, then restores the previous setting.
#[must_use = "exact mode ends when the guard is dropped"]
pub struct ExactGuard {
    previous: bool,
}

impl ExactGuard {
    pub fn new() -> Self {
        ExactGuard {
            previous: EXACT.swap(true, Ordering::SeqCst),
        }
    }
}

impl Default for ExactGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ExactGuard {
    fn drop(&mut self) {
        EXACT.store(self.previous, Ordering::SeqCst);
    }
}

/// Turns the fused CPU kernels on or off for the whole process (on by default). Off, every
/// operation takes its composite path: the unoptimised reference the tests compare against.
pub fn set_fused(on: bool) {
    FUSED.store(on, Ordering::SeqCst);
}

/// Whether the fused CPU kernels are in use.
pub fn fused() -> bool {
    FUSED.load(Ordering::SeqCst)
}

/// Whether the fused kernel applies to these tensors: all f32 on the CPU, fused kernels on.
pub(crate) fn use_fused(ts: &[&Tensor]) -> bool {
    fused()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// Whether the fused kernels that have no exact form ([`bottleneck_block`],
/// [`gaussian_sample_kl`]) apply to these tensors: f32 on the CPU, fused kernels on, not in
/// exact mode.
pub fn fused_path(ts: &[&Tensor]) -> bool {
    !exact() && use_fused(ts)
}

/// The same quantities written as plain candle operations (any device, any float type).
pub mod composite {
    use candle_core::{Tensor, D};

    use super::{Act, ConvOpts, MapLayout};

    pub use super::betabinom::composite_log_prob as beta_binomial_log_prob;
    pub use super::dlogistic::composite_log_prob as discretized_logistic_log_prob;

    /// softplus(l) = max(l, 0) + ln(1 + e^-|l|).
    pub fn softplus(l: &Tensor) -> candle_core::Result<Tensor> {
        l.relu()? + (l.abs()?.neg()?.exp()? + 1.0)?.log()?
    }

    /// See [`super::bernoulli_log_prob`].
    pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        ((x * logits)? - softplus(logits)?)?.sum(D::Minus1)
    }

    /// `act(y)`; in exact mode ([`super::set_exact`]) tanh and sigmoid come from
    /// [`crate::fastmath`], whose bits do not depend on the CPU (candle's call libm).
    pub fn activate(y: &Tensor, act: Act) -> candle_core::Result<Tensor> {
        if super::exact() {
            return super::exact::activate_tensor(y, act);
        }
        super::composite_activate(y, act)
    }

    /// See [`super::linear`].
    pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> candle_core::Result<Tensor> {
        activate(&x.matmul(&w.t()?)?.broadcast_add(b)?, act)
    }

    fn to_nchw(x: &Tensor, m: MapLayout) -> candle_core::Result<Tensor> {
        match m {
            MapLayout::Nchw => Ok(x.clone()),
            MapLayout::Nhwc => x.permute((0, 3, 1, 2))?.contiguous(),
        }
    }

    /// `act(y + b)` for `y` `[B, C, H, W]`, in the memory order `m`.
    fn finish(y: Tensor, b: &Tensor, act: Act, m: MapLayout) -> candle_core::Result<Tensor> {
        let y = activate(&y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?, act)?;
        match m {
            MapLayout::Nchw => Ok(y),
            MapLayout::Nhwc => y.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// See [`super::conv2d_with`].
    pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, o: ConvOpts) -> candle_core::Result<Tensor> {
        let y = to_nchw(x, o.input)?.conv2d(w, o.pad, o.stride, 1, 1)?;
        finish(y, b, o.act, o.output)
    }

    /// See [`super::conv_transpose2d_with`].
    pub fn conv_transpose2d(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        o: ConvOpts,
    ) -> candle_core::Result<Tensor> {
        let y = to_nchw(x, o.input)?.conv_transpose2d(w, o.pad, 0, o.stride, 1)?;
        finish(y, b, o.act, o.output)
    }

    /// Exact mode's convolutions ([`super::set_exact`]): the fixed-order kernels of
    /// `ops/exact.rs` on `[B, C, H, W]` maps, the activation from [`crate::fastmath`]; the memory
    /// orders change by transposes, which move values without changing them.
    pub(super) fn exact_conv(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        o: ConvOpts,
        transposed: bool,
    ) -> candle_core::Result<Tensor> {
        let x = to_nchw(x, o.input)?;
        let y = if transposed {
            super::exact::conv_transpose2d(&x, w, b, o.stride, o.pad)?
        } else {
            super::exact::conv2d(&x, w, b, o.stride, o.pad)?
        };
        let y = super::exact::activate_tensor(&y, o.act)?;
        match o.output {
            MapLayout::Nchw => Ok(y),
            MapLayout::Nhwc => y.permute((0, 2, 3, 1))?.contiguous(),
        }
    }
}

/// `act(y)` with candle's operations.
fn composite_activate(y: &Tensor, act: Act) -> candle_core::Result<Tensor> {
    match act {
        Act::Identity => Ok(y.clone()),
        Act::Relu => y.relu(),
        Act::Tanh => y.tanh(),
        Act::Sigmoid => candle_nn::ops::sigmoid(y),
    }
}
