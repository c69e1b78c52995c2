//! The diagonal Gaussian posterior q(z|x) and the standard normal prior.

use candle_core::{Tensor, D};

/// ln(2 pi).
pub const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// N(mu, diag exp(logvar)), batched: `mu` and `logvar` are `[batch, latent]`.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    pub mu: Tensor,
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    pub fn new(mu: Tensor, logvar: Tensor) -> Self {
        Self { mu, logvar }
    }

    /// Standard deviations exp(logvar / 2).
    pub fn std(&self) -> candle_core::Result<Tensor> {
        (&self.logvar * 0.5)?.exp()
    }

    /// The reparameterised sample z = mu + sigma * eps, differentiable in mu and logvar;
    /// `eps` is standard normal noise of the same shape (drawn from the host RNG).
    pub fn rsample(&self, eps: &Tensor) -> candle_core::Result<Tensor> {
        &self.mu + (self.std()? * eps)?
    }

    /// KL(q || N(0, I)) per latent dimension: 0.5 (mu^2 + sigma^2 - log sigma^2 - 1), `[batch, latent]`.
    pub fn kl_std_normal_per_dim(&self) -> candle_core::Result<Tensor> {
        let t = ((self.mu.sqr()? + self.logvar.exp()?)? - &self.logvar)?;
        (t - 1.0)? * 0.5
    }

    /// KL(q || N(0, I)) per example, `[batch]`.
    pub fn kl_std_normal(&self) -> candle_core::Result<Tensor> {
        self.kl_std_normal_per_dim()?.sum(D::Minus1)
    }

    /// log q(z) for samples written as z = mu + sigma * eps: `-0.5 sum(eps^2 + logvar + ln 2pi)`.
    /// `eps` may carry extra leading sample dimensions (`[k, batch, latent]`).
    pub fn log_prob_from_eps(&self, eps: &Tensor) -> candle_core::Result<Tensor> {
        let latent = self.mu.dim(D::Minus1)? as f64;
        let quad = eps.sqr()?.sum(D::Minus1)?;
        let logdet = self.logvar.sum(D::Minus1)?;
        (quad.broadcast_add(&logdet)? + latent * LN_2PI)? * -0.5
    }
}

/// log N(z; 0, I) summed over the last dimension.
pub fn std_normal_log_prob(z: &Tensor) -> candle_core::Result<Tensor> {
    let latent = z.dim(D::Minus1)? as f64;
    (z.sqr()?.sum(D::Minus1)? + latent * LN_2PI)? * -0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    #[test]
    fn analytic_kl_matches_monte_carlo() -> candle_core::Result<()> {
        // KL(q||p) = E_q[log q(z) - log p(z)], estimated with 400k samples per row.
        let dev = Device::Cpu;
        let mu = Tensor::new(&[[0.5f32, -1.0, 0.0], [2.0, 0.1, -0.3]], &dev)?;
        let logvar = Tensor::new(&[[0.0f32, -1.0, 1.0], [-2.0, 0.5, 0.0]], &dev)?;
        let q = DiagonalGaussian::new(mu, logvar);
        let kl = q.kl_std_normal()?.to_vec1::<f32>()?;
        let n = 400_000;
        let mut rng = Rng::new(1);
        let eps = Tensor::from_vec(rng.normal_vec(n * 2 * 3), (n, 2, 3), &dev)?;
        let z =
            q.mu.unsqueeze(0)?
                .broadcast_add(&q.std()?.unsqueeze(0)?.broadcast_mul(&eps)?)?;
        let log_q = q.log_prob_from_eps(&eps)?;
        let log_p = std_normal_log_prob(&z)?;
        let mc = (log_q - log_p)?.mean(0)?.to_vec1::<f32>()?;
        for b in 0..2 {
            // Monte-Carlo standard error here is below 0.01 nats.
            assert!(
                (kl[b] - mc[b]).abs() < 0.03,
                "row {b}: analytic {} vs MC {}",
                kl[b],
                mc[b]
            );
        }
        // Known value: KL(N(0,1)||N(0,1)) = 0.
        let zero = DiagonalGaussian::new(
            Tensor::zeros((1, 4), candle_core::DType::F32, &dev)?,
            Tensor::zeros((1, 4), candle_core::DType::F32, &dev)?,
        );
        assert_eq!(zero.kl_std_normal()?.to_vec1::<f32>()?, vec![0.0]);
        Ok(())
    }
}
