//! `continuous-bernoulli` (Loaiza-Ganem & Cunningham 2019): the normalised density on [0, 1]
//! for grey levels, on logits l: log p(x|z) = x l − softplus(l) + log C(l) with
//! C = 2 artanh(1 − 2λ)/(1 − 2λ), λ = sigmoid(l), i.e. C(l) = l / tanh(l/2) (see ops/cb.rs).

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::{Density, Observation};
use crate::ops::{self, Kernels};

/// The continuous Bernoulli likelihood (one logit per dimension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousBernoulli {}

impl Observation for ContinuousBernoulli {
    fn name(&self) -> &'static str {
        "continuous-bernoulli"
    }

    fn params_per_dim(&self) -> usize {
        1
    }

    fn log_prob(&self, params: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::bernoulli_log_prob(params, x, k)? + ops::cb_log_norm(params, k)?.sum(D::Minus1)?
    }

    fn mean(&self, params: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        ops::cb_mean(params, k)
    }

    fn density(&self) -> Density {
        Density::Continuous
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, t};
    use super::*;

    /// log p(x) against x ln(l) + (1-x) ln(1-l) + ln C(l) with C(l) = 2 artanh(1 - 2l) / (1 - 2l)
    /// (Loaiza-Ganem & Cunningham 2019, eq. 7), in f64.
    #[test]
    fn continuous_bernoulli_matches_direct_formula() -> candle_core::Result<()> {
        let lik = ContinuousBernoulli {};
        let logits = [-3.0f32, -0.4, 0.05, 1.7, 6.0];
        let x = [0.1f32, 0.9, 0.5, 0.0, 1.0];
        let got = lik
            .log_prob(&t(&logits, 1), &t(&x, 1), Kernels::Native)?
            .to_vec1::<f32>()?[0] as f64;
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
                Kernels::Native,
            )?
            .to_vec1::<f32>()?[0];
        assert!(v.is_finite(), "{v}");
        Ok(())
    }
}
