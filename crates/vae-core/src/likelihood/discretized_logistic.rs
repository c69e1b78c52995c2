//! `discretized-logistic`: a distribution over the 256 values of an 8-bit pixel (Salimans et al.
//! 2017, PixelCNN++): per pixel a mixture of `mixtures` logistics, each integrated over the
//! bin of a value (half-width 0.5/255 around v/255, the end bins open-ended). The maths and
//! the fused kernel are in `ops/dlogistic.rs`; decoder outputs per value: 2 for one
//! component ([means, log-scales]), 3K for K ([K logit blocks, K mean blocks, K log-scale
//! blocks]).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Density, Observation, PixelCoding};
use crate::ops::{self, Kernels};
use crate::{Error, Result};

/// The largest number of mixture components accepted.
pub const MAX_MIXTURES: usize = 64;

/// The discretized logistic mixture with `mixtures` components per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscretizedLogistic {
    pub mixtures: usize,
}

impl Observation for DiscretizedLogistic {
    fn name(&self) -> &'static str {
        "discretized-logistic"
    }

    fn params_per_dim(&self) -> usize {
        ops::discretized_logistic_params_per_dim(self.mixtures)
    }

    fn log_prob(&self, params: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::discretized_logistic_log_prob(params, x, self.mixtures, k)
    }

    fn mean(&self, params: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::discretized_logistic_mean(params, self.mixtures, k)
    }

    fn density(&self) -> Density {
        Density::Discrete
    }

    fn pixel_coding(&self) -> std::result::Result<PixelCoding, String> {
        Ok(PixelCoding::LogisticMixture {
            components: self.mixtures,
            log_scale: (ops::DLOGISTIC_LOG_SCALE_MIN, ops::DLOGISTIC_LOG_SCALE_MAX),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.mixtures == 0 || self.mixtures > MAX_MIXTURES {
            return Err(Error::Config(format!(
                "--mixtures must be between 1 and {MAX_MIXTURES}, got {}",
                self.mixtures
            )));
        }
        Ok(())
    }
}
