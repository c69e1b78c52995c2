//! The bounds: the ELBO, its beta / free-bits / warm-up variants, the importance-weighted bound
//! (Burda et al. 2015) and the importance-sampled log-likelihood estimate.
//!
//! Per example, with K samples z_k = mu + sigma * eps_k from q(z|x):
//! - log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x))
//! - IWAE_K = logsumexp_k(log w_k) - ln K; with K = 1 and beta = 1 its expectation is the ELBO.
//! - ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), with the KL in closed form.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::dist::std_normal_log_prob;
use crate::model::Vae;
use crate::{Error, Result, Rng};

/// What the training loop minimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Weight of the KL term (beta-VAE; 1 is the ELBO).
    pub beta: f64,
    /// Epochs over which beta ramps linearly from 0 (0: no warm-up).
    #[serde(default)]
    pub kl_warmup: f64,
    /// Free bits: each latent dimension's KL, averaged over the batch, is floored at this many
    /// nats (Kingma et al. 2016); 0 turns it off.
    #[serde(default)]
    pub free_bits: f64,
    /// Importance samples of the IWAE bound; 1 is the ELBO.
    #[serde(default = "one")]
    pub iwae_k: usize,
}

fn one() -> usize {
    1
}

impl Default for Objective {
    fn default() -> Self {
        Self {
            beta: 1.0,
            kl_warmup: 0.0,
            free_bits: 0.0,
            iwae_k: 1,
        }
    }
}

impl Objective {
    /// Checks the settings; messages name the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return bad(format!(
                "--beta must be a non-negative number, got {}",
                self.beta
            ));
        }
        if !(self.kl_warmup >= 0.0 && self.kl_warmup.is_finite()) {
            return bad(format!(
                "--kl-warmup must be a non-negative number of epochs, got {}",
                self.kl_warmup
            ));
        }
        if !(self.free_bits >= 0.0 && self.free_bits.is_finite()) {
            return bad(format!(
                "--free-bits must be a non-negative number of nats, got {}",
                self.free_bits
            ));
        }
        if self.iwae_k == 0 {
            return bad("--iwae-k must be at least 1".into());
        }
        if self.iwae_k > 1 && self.free_bits > 0.0 {
            return bad(
                "--free-bits applies to the ELBO, not to the IWAE bound (--iwae-k > 1)".into(),
            );
        }
        Ok(())
    }

    /// The KL weight after `epochs` epochs of training (fractional: steps / steps per epoch).
    pub fn beta_at(&self, epochs: f64) -> f64 {
        if self.kl_warmup > 0.0 {
            self.beta * (epochs / self.kl_warmup).clamp(0.0, 1.0)
        } else {
            self.beta
        }
    }

    /// The per-dimension mask of free bits: 1 where the batch-mean KL of a dimension exceeds the
    /// floor (its gradient flows), 0 where the floor holds it. `kl_dim_sum` is `[latent]`, the sum
    /// over the `n` examples of the batch.
    pub fn free_bits_mask(&self, kl_dim_sum: &Tensor, n: usize) -> candle_core::Result<Tensor> {
        (kl_dim_sum / n as f64)?
            .gt(self.free_bits)?
            .to_dtype(kl_dim_sum.dtype())
    }

    /// The value of the objective for the KL part of a whole batch: `beta * sum_j max(F, m_j)`
    /// per example, with m_j the batch mean of dimension j's KL (plain `beta * mean KL` without
    /// free bits).
    pub fn kl_term_value(&self, kl_dim_sum: &[f64], n: usize, beta: f64) -> f64 {
        let n = n.max(1) as f64;
        beta * kl_dim_sum
            .iter()
            .map(|&s| (s / n).max(self.free_bits))
            .sum::<f64>()
    }

    /// The loss of one shard of a batch of `n` examples, scaled so that the shards' losses (and
    /// gradients) add up to the batch's: the mean over the batch of `recon + beta * kl`, or of
    /// the negative IWAE bound when K > 1. `mask` is the free-bits mask of the whole batch.
    pub fn shard_loss(
        &self,
        t: &Terms,
        n: usize,
        beta: f64,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let sum = match &t.log_w {
            Some(log_w) => iwae_bound(log_w)?.sum_all()?.neg()?,
            None => {
                let kl = match mask {
                    Some(m) => t.kl_per_dim.broadcast_mul(&m.unsqueeze(0)?)?.sum_all()?,
                    None => t.kl_per_dim.sum_all()?,
                };
                (t.recon.sum_all()? + (kl * beta)?)?
            }
        };
        sum / n as f64
    }
}

/// The terms of a batch.
#[derive(Debug, Clone)]
pub struct Terms {
    /// -log p(x|z), averaged over the K samples, `[batch]`.
    pub recon: Tensor,
    /// KL(q(z|x) || p(z)) per latent dimension, `[batch, latent]`.
    pub kl_per_dim: Tensor,
    /// Importance log-weights `[K, batch]` (with beta inside), computed when K > 1.
    pub log_w: Option<Tensor>,
}

impl Terms {
    /// KL per example, `[batch]`.
    pub fn kl(&self) -> candle_core::Result<Tensor> {
        self.kl_per_dim.sum(D::Minus1)
    }
}

/// logsumexp over the samples minus ln K: `[K, batch]` to `[batch]`.
pub fn iwae_bound(log_w: &Tensor) -> candle_core::Result<Tensor> {
    let k = log_w.dim(0)? as f64;
    log_w.log_sum_exp(0)? - k.ln()
}

impl Vae {
    /// The terms of a batch for `eps` of shape `[K, batch, latent]` (or `[batch, latent]` for
    /// K = 1). Log-weights are computed when K > 1, with `beta` weighting the prior and posterior
    /// densities.
    pub fn terms(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        eps: &Tensor,
        beta: f64,
    ) -> Result<Terms> {
        let eps = if eps.rank() == 2 {
            eps.unsqueeze(0)?
        } else {
            eps.clone()
        };
        let k = eps.dim(0)?;
        let q = self.encode(x, labels)?;
        let kl_per_dim = q.kl_std_normal_per_dim()?;
        if k == 1 {
            let z = q.rsample(&eps.squeeze(0)?)?;
            let params = self.decode(&z, labels)?;
            let recon = self.likelihood().log_prob(&params, x)?.neg()?;
            return Ok(Terms {
                recon,
                kl_per_dim,
                log_w: None,
            });
        }
        let (log_px, log_pz, log_qz) = self.log_densities(x, labels, &q, &eps)?;
        let recon = log_px.mean(0)?.neg()?;
        let log_w = (log_px + ((log_pz - log_qz)? * beta)?)?;
        Ok(Terms {
            recon,
            kl_per_dim,
            log_w: Some(log_w),
        })
    }

    /// One-sample ELBO terms for `eps` `[batch, latent]`.
    pub fn elbo_terms(&self, x: &Tensor, labels: Option<&Tensor>, eps: &Tensor) -> Result<Terms> {
        self.terms(x, labels, eps, 1.0)
    }

    /// log p(x|z_k), log p(z_k) and log q(z_k|x), each `[K, batch]`, for z_k = mu + sigma eps_k.
    fn log_densities(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        q: &crate::DiagonalGaussian,
        eps: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (k, b, l) = eps.dims3()?;
        let z =
            q.mu.unsqueeze(0)?
                .broadcast_add(&q.std()?.unsqueeze(0)?.broadcast_mul(eps)?)?;
        let zf = z.reshape((k * b, l))?;
        let rep = |t: &Tensor| -> candle_core::Result<Tensor> {
            let d = t.dim(1)?;
            t.unsqueeze(0)?.broadcast_as((k, b, d))?.reshape((k * b, d))
        };
        let labels_k = labels.map(rep).transpose()?;
        let params = self.decode(&zf, labels_k.as_ref())?;
        let log_px = self
            .likelihood()
            .log_prob(&params, &rep(x)?)?
            .reshape((k, b))?;
        let log_pz = std_normal_log_prob(&z)?;
        let log_qz = q.log_prob_from_eps(eps)?;
        Ok((log_px, log_pz, log_qz))
    }

    /// Importance-sampled estimate of log p(x) per example (nats):
    /// `logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x)) - ln K`, z_k ~ q(z|x), with the K
    /// samples drawn `chunk` at a time and combined by a running logsumexp, so memory does not
    /// grow with K. No gradient is kept.
    pub fn log_likelihood(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        k: usize,
        chunk: usize,
        rng: &mut Rng,
    ) -> Result<Vec<f64>> {
        if k == 0 || chunk == 0 {
            return Err(Error::Config("--iw-samples must be at least 1".into()));
        }
        let x = x.detach();
        let q = self.encode(&x, labels)?;
        let q = crate::DiagonalGaussian::new(q.mu.detach(), q.logvar.detach());
        let (b, l) = q.mu.dims2()?;
        let mut max = vec![f64::NEG_INFINITY; b];
        let mut sum = vec![0f64; b];
        let mut done = 0;
        while done < k {
            let kc = chunk.min(k - done);
            let eps = Tensor::from_vec(rng.normal_vec(kc * b * l), (kc, b, l), x.device())?
                .to_dtype(q.mu.dtype())?;
            let (log_px, log_pz, log_qz) = self.log_densities(&x, labels, &q, &eps)?;
            let log_w = ((log_px + log_pz)? - log_qz)?
                .to_dtype(candle_core::DType::F64)?
                .to_vec2::<f64>()?;
            for row in &log_w {
                for (i, &w) in row.iter().enumerate() {
                    if w > max[i] {
                        sum[i] = sum[i] * (max[i] - w).exp() + 1.0;
                        max[i] = w;
                    } else {
                        sum[i] += (w - max[i]).exp();
                    }
                }
            }
            done += kc;
        }
        let ln_k = (k as f64).ln();
        Ok(max
            .iter()
            .zip(&sum)
            .map(|(m, s)| m + s.ln() - ln_k)
            .collect())
    }
}
