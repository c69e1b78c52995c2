//! `gaussian-learned`: a Gaussian whose mean m and raw log-variance r per dimension come from
//! the decoder (blocks [means, raw log-variances]); the log-variance
//! v = c + h tanh((r − c)/h) stays in (min_logvar, max_logvar) smoothly (c, h the centre and
//! half-width): log p = −½ Σ_d [(x_d − m_d)² e^(−v_d) + v_d + ln 2π]. A density on the reals.

use crate::ops::Kernels;
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::{Density, Observation};
use crate::dist::LN_2PI;
use crate::{Error, Result};

/// The Gaussian with a learned, bounded log-variance per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianLearned {
    pub min_logvar: f64,
    pub max_logvar: f64,
}

impl Default for GaussianLearned {
    fn default() -> Self {
        Self {
            min_logvar: -9.0,
            max_logvar: 2.0,
        }
    }
}

impl GaussianLearned {
    /// Mean and bounded log-variance from the decoder output. The bound is smooth:
    /// `mid + half * tanh((raw - mid) / half)` maps any raw output into
    /// `(min_logvar, max_logvar)` and keeps a gradient everywhere.
    pub fn split(&self, params: &Tensor, d: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let mean = params.narrow(D::Minus1, 0, d)?;
        let raw = params.narrow(D::Minus1, d, d)?;
        let mid = 0.5 * (self.min_logvar + self.max_logvar);
        let half = 0.5 * (self.max_logvar - self.min_logvar);
        let logvar = (((raw - mid)? / half)?.tanh()? * half)? + mid;
        Ok((mean, logvar?))
    }
}

impl Observation for GaussianLearned {
    fn name(&self) -> &'static str {
        "gaussian-learned"
    }

    fn params_per_dim(&self) -> usize {
        2
    }

    fn log_prob(&self, params: &Tensor, x: &Tensor, _k: Kernels) -> candle_core::Result<Tensor> {
        let (mean, logvar) = self.split(params, x.dim(D::Minus1)?)?;
        // -0.5 * sum((x - m)^2 e^-logvar + logvar + ln 2 pi)
        let d = x.dim(D::Minus1)? as f64;
        let q = ((x - mean)?.sqr()? * logvar.neg()?.exp()?)?;
        ((q + &logvar)?.sum(D::Minus1)? + d * LN_2PI)? * -0.5
    }

    fn mean(&self, params: &Tensor, _k: Kernels) -> candle_core::Result<Tensor> {
        let d = params.dim(D::Minus1)? / 2;
        params.narrow(D::Minus1, 0, d)
    }

    fn density(&self) -> Density {
        Density::Continuous
    }

    fn validate(&self) -> Result<()> {
        let (lo, hi) = (self.min_logvar, self.max_logvar);
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::Config(
                "gaussian-learned needs finite min_logvar < max_logvar".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, t};
    use super::*;

    #[test]
    fn gaussian_learned_matches_direct_formula_and_clamps() -> candle_core::Result<()> {
        let lik = GaussianLearned::default();
        let params = [0.5f32, -0.25, 0.3, -1.2]; // means 0.5, -0.25; raw log-variances 0.3, -1.2
        let x = [0.4f32, 0.1];
        let got = lik
            .log_prob(&t(&params, 1), &t(&x, 1), Kernels::Native)?
            .to_vec1::<f32>()?[0] as f64;
        let clamp = |r: f64| -3.5 + 5.5 * ((r + 3.5) / 5.5).tanh();
        let want: f64 = (0..2)
            .map(|i| {
                let lv = clamp(params[2 + i] as f64);
                let r = x[i] as f64 - params[i] as f64;
                -0.5 * (r * r * (-lv).exp() + lv + LN_2PI)
            })
            .sum();
        close(got, want, 1e-6);
        // Raw log-variances of +-1e4 are clamped inside (-9, 2): finite densities.
        let v = lik
            .log_prob(
                &t(&[0.0f32, 0.0, 1e4, -1e4], 1),
                &t(&[1.0f32, 1.0], 1),
                Kernels::Native,
            )?
            .to_vec1::<f32>()?[0];
        assert!(v.is_finite());
        let (_, lv) = lik.split(&t(&[0.0f32, 0.0, 1e4, -1e4], 1), 2)?;
        let lv = lv.to_vec2::<f32>()?;
        assert!(lv[0][0] <= 2.0 && lv[0][1] >= -9.0);
        Ok(())
    }
}
