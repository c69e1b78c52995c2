//! Evaluation: the negative ELBO of a dataset, split into reconstruction and KL.

use serde::Serialize;
use vae_core::candle_core::{Device, Tensor};
use vae_core::{Rng, Vae};
use vae_data::Dataset;

use crate::model::batch;
use crate::Result;

/// Per-example averages over a dataset, in nats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ElboStats {
    /// -ELBO = recon + kl.
    pub neg_elbo: f64,
    /// -E_q[log p(x|z)] (one sample of z per example).
    pub recon: f64,
    /// KL(q(z|x) || p(z)).
    pub kl: f64,
    pub examples: usize,
}

/// The one-sample negative ELBO of every example of `data`, with noise from `seed` (so the same
/// model and seed always give the same figure).
pub fn elbo_stats(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    batch_size: usize,
    seed: u64,
) -> Result<ElboStats> {
    let mut rng = Rng::stream(seed, 0xe7a1);
    let (mut recon, mut kl) = (0f64, 0f64);
    let mut buf = Vec::new();
    let n = data.len();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, labels) = batch(data, chunk, model, device, &mut buf)?;
        let eps = Tensor::from_vec(
            rng.normal_vec(chunk.len() * model.latent_dim()),
            (chunk.len(), model.latent_dim()),
            device,
        )?;
        let t = model.elbo_terms(&x, labels.as_ref(), &eps)?;
        recon += t.recon.sum_all()?.to_scalar::<f32>()? as f64;
        kl += t.kl.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let n = n.max(1) as f64;
    Ok(ElboStats {
        neg_elbo: (recon + kl) / n,
        recon: recon / n,
        kl: kl / n,
        examples: data.len(),
    })
}
