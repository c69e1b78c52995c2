//! The bounds: the ELBO, its beta / free-bits / warm-up variants, the importance-weighted bound
//! (Burda et al. 2015) and the importance-sampled log-likelihood estimate.
//!
//! Per example, with K samples z_k = mu + sigma * eps_k from q(z|x):
//! - log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x))
//! - IWAE_K = logsumexp_k(log w_k) - ln K; with K = 1 and beta = 1 its expectation is the ELBO.
//! - ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), with the KL in closed form.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::arch::Pass;
use crate::model::Vae;
use crate::noise::Noise;
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
                    Some(m) => t.kl_units.broadcast_mul(&m.unsqueeze(0)?)?.sum_all()?,
                    None => t.kl_units.sum_all()?,
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
    /// KL(q(z|x) || p(z)) per latent unit, `[batch, units]`: the dimensions of a single-layer
    /// model, or the units of each group (see [`crate::arch::LatentLayout`]).
    pub kl_units: Tensor,
    /// Importance log-weights `[K, batch]` (with beta inside), computed when K > 1.
    pub log_w: Option<Tensor>,
}

impl Terms {
    /// KL per example, `[batch]`.
    pub fn kl(&self) -> candle_core::Result<Tensor> {
        self.kl_units.sum(D::Minus1)
    }
}

/// logsumexp over the samples minus ln K: `[K, batch]` to `[batch]`.
pub fn iwae_bound(log_w: &Tensor) -> candle_core::Result<Tensor> {
    let k = log_w.dim(0)? as f64;
    log_w.log_sum_exp(0)? - k.ln()
}

impl Vae {
    /// The terms of a batch for `eps` of shape `[K, batch, noise_dim]` (or `[batch, noise_dim]`
    /// for K = 1). Log-weights are computed when K > 1, with `beta` weighting the prior and
    /// posterior densities.
    pub fn terms(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        eps: &Tensor,
        beta: f64,
    ) -> Result<Terms> {
        let k = if eps.rank() == 2 { 1 } else { eps.dim(0)? };
        if k == 1 {
            let pass = self.pass(x, labels, eps, false)?;
            let recon = self
                .likelihood()
                .log_prob(&pass.params, x, self.kernels())?
                .neg()?;
            return Ok(Terms {
                recon,
                kl_units: pass.kl,
                log_w: None,
            });
        }
        let (pass, log_px) = self.densities(x, eps)?.run(self, labels)?;
        let (log_pz, log_qz) = pass.prior_and_posterior()?;
        let recon = log_px.mean(0)?.neg()?;
        let log_w = (log_px + ((log_pz - log_qz)? * beta)?)?;
        Ok(Terms {
            recon,
            kl_units: pass.kl,
            log_w: Some(log_w),
        })
    }

    /// One-sample ELBO terms for `eps` `[batch, noise_dim]`.
    pub fn elbo_terms(&self, x: &Tensor, labels: Option<&Tensor>, eps: &Tensor) -> Result<Terms> {
        self.terms(x, labels, eps, 1.0)
    }

    fn densities<'a>(&self, x: &'a Tensor, eps: &'a Tensor) -> Result<DensityPass<'a>> {
        let eps = if eps.rank() == 2 {
            eps.unsqueeze(0)?
        } else {
            eps.clone()
        };
        Ok(DensityPass { x, eps })
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
        let b = x.dim(0)?;
        let mut max = vec![f64::NEG_INFINITY; b];
        let mut sum = vec![0f64; b];
        let mut done = 0;
        while done < k {
            let kc = chunk.min(k - done);
            let eps = Noise::draw(self, kc, b, 1, rng)
                .tensor(x.device())?
                .to_dtype(x.dtype())?;
            let (pass, log_px) = self.densities(&x, &eps)?.run(self, labels)?;
            let (log_pz, log_qz) = pass.prior_and_posterior()?;
            let log_w = ((log_px.detach() + log_pz.detach())? - log_qz.detach())?
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

/// A pass with K samples and the densities, and log p(x|z_k) `[K, b]`.
struct DensityPass<'a> {
    x: &'a Tensor,
    /// `[K, b, noise_dim]`.
    eps: Tensor,
}

impl DensityPass<'_> {
    fn run(self, vae: &Vae, labels: Option<&Tensor>) -> Result<(Pass, Tensor)> {
        let (k, b, _) = self.eps.dims3()?;
        let pass = vae.pass(self.x, labels, &self.eps, true)?;
        let xk = crate::arch::single::repeat_rows(self.x, k)?;
        let log_px = vae
            .likelihood()
            .log_prob(&pass.params, &xk, vae.kernels())?
            .reshape((k, b))?;
        Ok((pass, log_px))
    }
}

impl Pass {
    /// log p(z) and log q(z|x), `[K, b]` each.
    fn prior_and_posterior(&self) -> Result<(Tensor, Tensor)> {
        match (&self.log_p, &self.log_q) {
            (Some(p), Some(q)) => Ok((p.clone(), q.clone())),
            _ => Err(Error::Config(
                "the architecture returned no latent densities".into(),
            )),
        }
    }
}
