//! Fused tensor operations for the hot spots of training, each with its own backward.
//!
//! On the CPU each runs as one pass over memory (a candle custom op with kernels from
//! [`crate::fastmath`] and direct `gemm` calls); on other devices, and as the reference in
//! tests, the same value comes from a composition of candle operations ([`composite`]). Each
//! operation takes the model's [`Kernels`] setting and picks its implementation from it and
//! its tensors' device ([`Kernels::route`]).
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
mod select;
mod storage;
mod update;

use candle_core::Tensor;

use crate::fastmath;

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
pub use pool::{avg_pool2_last, up2_last};
pub use select::{Kernels, Route};
pub use update::add_state_last;

/// `act(y)`: in exact mode from [`crate::fastmath`] (the same bits on every CPU; candle's call
/// libm), else candle's.
pub fn activate(y: &Tensor, act: Act, k: Kernels) -> candle_core::Result<Tensor> {
    match k.route(&[y]) {
        Route::Exact(simd) => fastmath::with_simd_cap(simd, || exact::activate_tensor(y, act)),
        _ => composite_activate(y, act),
    }
}

/// Exact mode's convolutions: the fixed-order kernels of `ops/exact/` on maps of either
/// memory order (channels-last inside; the orders move values without changing them), the
/// activation from [`crate::fastmath`].
fn exact_conv(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    o: ConvOpts,
    transposed: bool,
    simd: Option<fastmath::SimdLevel>,
) -> candle_core::Result<Tensor> {
    fastmath::with_simd_cap(simd, || {
        if transposed {
            exact::conv_transpose2d(x, w, b, o)
        } else {
            exact::conv2d(x, w, b, o)
        }
    })
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

    /// `act(y)` with candle's operations.
    pub fn activate(y: &Tensor, act: Act) -> candle_core::Result<Tensor> {
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
        let x = super::composite_activate(x, o.pre)?;
        let y = to_nchw(&x, o.input)?.conv2d(w, o.pad, o.stride, 1, 1)?;
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
