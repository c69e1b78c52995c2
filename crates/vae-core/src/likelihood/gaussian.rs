//! `gaussian`: the seed article's decoder p(x|z) = N(x; sqrt(1−α) μ(z), α I), with α ∈ (0, 1)
//! fixed (`--alpha`) and its normalising constant: a density on the reals.

use crate::ops::Kernels;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::{Density, Observation};
use crate::dist::LN_2PI;
use crate::{Error, Result};

/// The Gaussian with fixed variance `alpha` around `sqrt(1 - alpha)` times the decoder output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gaussian {
    pub alpha: f64,
}

impl Observation for Gaussian {
    fn name(&self) -> &'static str {
        "gaussian"
    }

    fn params_per_dim(&self) -> usize {
        1
    }

    fn log_prob(&self, params: &Tensor, x: &Tensor, _k: Kernels) -> candle_core::Result<Tensor> {
        let alpha = self.alpha;
        let d = x.dim(D::Minus1)? as f64;
        let mean = (params * (1.0 - alpha).sqrt())?;
        let sq = (x - mean)?.sqr()?.sum(D::Minus1)?;
        (sq * (-0.5 / alpha))? - 0.5 * d * (LN_2PI + alpha.ln())
    }

    fn mean(&self, params: &Tensor, _k: Kernels) -> candle_core::Result<Tensor> {
        params * (1.0 - self.alpha).sqrt()
    }

    fn density(&self) -> Density {
        Density::Continuous
    }

    fn validate(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(Error::Config(format!(
                "--alpha must lie in (0, 1), got {}",
                self.alpha
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, t};
    use super::*;

    #[test]
    fn gaussian_matches_direct_formula() -> candle_core::Result<()> {
        let alpha = 0.1f64;
        let lik = Gaussian { alpha };
        let mu = [0.2f32, -1.0, 3.0, 0.0];
        let x = [0.1f32, 0.0, 2.5, 1.0];
        let got = lik
            .log_prob(&t(&mu, 1), &t(&x, 1), Kernels::Native)?
            .to_vec1::<f32>()?[0] as f64;
        let want: f64 = (0..4)
            .map(|i| {
                let m = (1.0 - alpha).sqrt() * mu[i] as f64;
                let r = x[i] as f64 - m;
                -0.5 * (2.0 * std::f64::consts::PI * alpha).ln() - r * r / (2.0 * alpha)
            })
            .sum();
        close(got, want, 1e-6);
        // Extreme means stay finite.
        let far = lik
            .log_prob(
                &t(&[1e6f32, -1e6], 1),
                &t(&[0.0f32, 1.0], 1),
                Kernels::Native,
            )?
            .to_vec1::<f32>()?[0];
        assert!(far.is_finite() && far < -1e12);
        Ok(())
    }
}
