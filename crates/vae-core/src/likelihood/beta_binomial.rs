//! `beta-binomial`: a distribution over the 256 values of an 8-bit pixel, a beta-binomial with
//! n = 255 and two positive parameters per pixel (the likelihood BB-ANS used for 8-bit
//! MNIST). The maths and the fused kernel are in `ops/betabinom.rs`; decoder outputs per
//! value: 2 ([raw α, raw β] blocks, each bounded on a log scale).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Density, Observation, PixelCoding};
use crate::ops::{self, Kernels};

/// The beta-binomial likelihood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BetaBinomial {}

impl Observation for BetaBinomial {
    fn name(&self) -> &'static str {
        "beta-binomial"
    }

    fn params_per_dim(&self) -> usize {
        2
    }

    fn log_prob(&self, params: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::beta_binomial_log_prob(params, x, k)
    }

    fn mean(&self, params: &Tensor, _k: Kernels) -> candle_core::Result<Tensor> {
        ops::beta_binomial_mean(params)
    }

    fn density(&self) -> Density {
        Density::Discrete
    }

    fn pixel_coding(&self) -> std::result::Result<PixelCoding, String> {
        Ok(PixelCoding::BetaBinomial {
            log_param: (ops::BETA_BINOMIAL_LOG_MIN, ops::BETA_BINOMIAL_LOG_MAX),
        })
    }
}
