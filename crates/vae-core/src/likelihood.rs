//! Observation models p(x|z): log-densities summed over dimensions, and the decoder's mean.

use candle_core::{Tensor, D};

use crate::config::Likelihood;
use crate::dist::LN_2PI;
use crate::ops;

impl Likelihood {
    /// log p(x | decoder output) per example, summed over dimensions: `[batch]`.
    /// `params` is the decoder's raw output `[batch, params_per_dim * dim]`, `x` is `[batch, dim]`.
    pub fn log_prob(&self, params: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Likelihood::Bernoulli => ops::bernoulli_log_prob(params, x),
            Likelihood::Gaussian { alpha } => {
                // N(x; sqrt(1 - alpha) mu, alpha I).
                let d = x.dim(D::Minus1)? as f64;
                let mean = (params * (1.0 - alpha).sqrt())?;
                let sq = (x - mean)?.sqr()?.sum(D::Minus1)?;
                (sq * (-0.5 / alpha))? - 0.5 * d * (LN_2PI + alpha.ln())
            }
            _ => candle_core::bail!("likelihood `{}` is not available yet", self.name()),
        }
    }

    /// The mean of p(x|z) for each example, `[batch, dim]` (what pictures show).
    pub fn mean(&self, params: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Likelihood::Bernoulli => candle_nn::ops::sigmoid(params),
            Likelihood::Gaussian { alpha } => params * (1.0 - alpha).sqrt(),
            _ => candle_core::bail!("likelihood `{}` is not available yet", self.name()),
        }
    }
}
