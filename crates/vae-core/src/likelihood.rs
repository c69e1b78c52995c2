//! Observation models p(x|z): log-densities summed over dimensions, and the decoder's mean.
//!
//! Each takes the decoder's raw output ("params", `[batch, params_per_dim * dim]`) and data
//! `x` (`[batch, dim]`), and returns `[batch]`. All are finite for any finite decoder output.

use candle_core::{Tensor, D};

use crate::config::Likelihood;
use crate::dist::LN_2PI;
use crate::ops;

impl Likelihood {
    /// log p(x | decoder output) per example, summed over dimensions: `[batch]`.
    pub fn log_prob(&self, params: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Likelihood::Bernoulli => ops::bernoulli_log_prob(params, x),
            Likelihood::Gaussian { alpha } => {
                // N(x; sqrt(1 - alpha) mu(z), alpha I), with its normalising constant.
                let d = x.dim(D::Minus1)? as f64;
                let mean = (params * (1.0 - alpha).sqrt())?;
                let sq = (x - mean)?.sqr()?.sum(D::Minus1)?;
                (sq * (-0.5 / alpha))? - 0.5 * d * (LN_2PI + alpha.ln())
            }
            Likelihood::GaussianLearned { .. } => {
                let (mean, logvar) = self.split_gaussian(params, x.dim(D::Minus1)?)?;
                // -0.5 * sum((x - m)^2 e^-logvar + logvar + ln 2 pi)
                let d = x.dim(D::Minus1)? as f64;
                let q = ((x - mean)?.sqr()? * logvar.neg()?.exp()?)?;
                ((q + &logvar)?.sum(D::Minus1)? + d * LN_2PI)? * -0.5
            }
            Likelihood::ContinuousBernoulli => {
                ops::bernoulli_log_prob(params, x)? + ops::cb_log_norm(params)?.sum(D::Minus1)?
            }
        }
    }

    /// The mean of p(x|z) for each example, `[batch, dim]` (what pictures show).
    pub fn mean(&self, params: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Likelihood::Bernoulli => ops::sigmoid(params),
            Likelihood::Gaussian { alpha } => params * (1.0 - alpha).sqrt(),
            Likelihood::GaussianLearned { .. } => {
                let d = params.dim(D::Minus1)? / 2;
                params.narrow(D::Minus1, 0, d)
            }
            Likelihood::ContinuousBernoulli => ops::cb_mean(params),
        }
    }

    /// Mean and clamped log-variance of `gaussian-learned`. The clamp is smooth:
    /// `mid + half * tanh((raw - mid) / half)` maps any raw output into
    /// `(min_logvar, max_logvar)` and keeps a gradient everywhere.
    pub fn split_gaussian(
        &self,
        params: &Tensor,
        d: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let Likelihood::GaussianLearned {
            min_logvar,
            max_logvar,
        } = *self
        else {
            candle_core::bail!("split_gaussian on likelihood `{}`", self.name());
        };
        let mean = params.narrow(D::Minus1, 0, d)?;
        let raw = params.narrow(D::Minus1, d, d)?;
        let mid = 0.5 * (min_logvar + max_logvar);
        let half = 0.5 * (max_logvar - min_logvar);
        let logvar = (((raw - mid)? / half)?.tanh()? * half)? + mid;
        Ok((mean, logvar?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], n: usize) -> Tensor {
        Tensor::from_slice(v, (n, v.len() / n), &Device::Cpu).unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn gaussian_matches_direct_formula() -> candle_core::Result<()> {
        let alpha = 0.1f64;
        let lik = Likelihood::Gaussian { alpha };
        let mu = [0.2f32, -1.0, 3.0, 0.0];
        let x = [0.1f32, 0.0, 2.5, 1.0];
        let got = lik.log_prob(&t(&mu, 1), &t(&x, 1))?.to_vec1::<f32>()?[0] as f64;
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
            .log_prob(&t(&[1e6f32, -1e6], 1), &t(&[0.0f32, 1.0], 1))?
            .to_vec1::<f32>()?[0];
        assert!(far.is_finite() && far < -1e12);
        Ok(())
    }

    #[test]
    fn gaussian_learned_matches_direct_formula_and_clamps() -> candle_core::Result<()> {
        let lik = Likelihood::GaussianLearned {
            min_logvar: -9.0,
            max_logvar: 2.0,
        };
        let params = [0.5f32, -0.25, 0.3, -1.2]; // means 0.5, -0.25; raw log-variances 0.3, -1.2
        let x = [0.4f32, 0.1];
        let got = lik.log_prob(&t(&params, 1), &t(&x, 1))?.to_vec1::<f32>()?[0] as f64;
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
            .log_prob(&t(&[0.0f32, 0.0, 1e4, -1e4], 1), &t(&[1.0f32, 1.0], 1))?
            .to_vec1::<f32>()?[0];
        assert!(v.is_finite());
        let (_, lv) = lik.split_gaussian(&t(&[0.0f32, 0.0, 1e4, -1e4], 1), 2)?;
        let lv = lv.to_vec2::<f32>()?;
        assert!(lv[0][0] <= 2.0 && lv[0][1] >= -9.0);
        Ok(())
    }

    /// log p(x) of the continuous Bernoulli against x ln(l) + (1-x) ln(1-l) + ln C(l) with
    /// C(l) = 2 artanh(1 - 2l) / (1 - 2l) (Loaiza-Ganem & Cunningham 2019, eq. 7), in f64.
    #[test]
    fn continuous_bernoulli_matches_direct_formula() -> candle_core::Result<()> {
        let lik = Likelihood::ContinuousBernoulli;
        let logits = [-3.0f32, -0.4, 0.05, 1.7, 6.0];
        let x = [0.1f32, 0.9, 0.5, 0.0, 1.0];
        let got = lik.log_prob(&t(&logits, 1), &t(&x, 1))?.to_vec1::<f32>()?[0] as f64;
        let want: f64 = (0..5)
            .map(|i| {
                let l = 1.0 / (1.0 + (-(logits[i] as f64)).exp());
                let c = 2.0 * (1.0 - 2.0 * l).atanh() / (1.0 - 2.0 * l);
                x[i] as f64 * l.ln() + (1.0 - x[i] as f64) * (1.0 - l).ln() + c.ln()
            })
            .sum();
        close(got, want, 1e-5);
        let v = lik
            .log_prob(
                &t(&[1000.0f32, -1000.0, 0.0], 1),
                &t(&[1.0f32, 0.0, 0.3], 1),
            )?
            .to_vec1::<f32>()?[0];
        assert!(v.is_finite(), "{v}");
        Ok(())
    }
}
