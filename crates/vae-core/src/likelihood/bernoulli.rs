//! `bernoulli`: independent Bernoulli variables on logits l,
//! log p(x|z) = Σ_d x_d l_d − softplus(l_d), never log(sigmoid). A distribution over {0, 1}^D;
//! for grey levels in [0, 1] the same expression is a cross-entropy, not a normalised density.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Density, Observation, PixelCoding};
use crate::ops::{self, Kernels};

/// The Bernoulli likelihood (one logit per dimension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bernoulli {}

impl Observation for Bernoulli {
    fn name(&self) -> &'static str {
        "bernoulli"
    }

    fn params_per_dim(&self) -> usize {
        1
    }

    fn log_prob(&self, params: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::bernoulli_log_prob(params, x, k)
    }

    fn mean(&self, params: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::sigmoid(params, k)
    }

    fn density(&self) -> Density {
        Density::Binary
    }

    fn pixel_coding(&self) -> std::result::Result<PixelCoding, String> {
        Ok(PixelCoding::Bernoulli)
    }
}
