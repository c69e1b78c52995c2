//! Evaluation: the negative ELBO of a dataset (reconstruction + KL) and the importance-sampled
//! negative log-likelihood, computed in parallel over examples with noise that does not depend
//! on the thread count.

use serde::Serialize;
use vae_core::candle_core::Device;
use vae_core::{par, Noise, Rng, Vae};
use vae_data::Dataset;

use crate::batch::batch;
use crate::{Result, RunError};

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

/// The importance-sampled estimate of -log p(x), averaged over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LikelihoodStats {
    /// -log p(x) in nats per example.
    pub nll: f64,
    /// nll / (dim * ln 2).
    pub bits_per_dim: f64,
    pub iw_samples: usize,
    pub examples: usize,
}

/// Runs `f(batch index, rows)` over the batches of `0..n` on `threads` threads (one on devices
/// other than the CPU) and sums the results.
fn over_batches<const N: usize>(
    n: usize,
    batch_size: usize,
    threads: usize,
    device: &Device,
    f: impl Fn(usize, &[usize]) -> Result<[f64; N]> + Sync,
) -> Result<[f64; N]> {
    let bs = batch_size.max(1);
    let batches = n.div_ceil(bs);
    let threads = par::threads_for(device, threads);
    let parts = par::map_ranges(batches, threads, |range| -> Result<[f64; N]> {
        let mut acc = [0f64; N];
        for b in range {
            let rows: Vec<usize> = (b * bs..((b + 1) * bs).min(n)).collect();
            let v = f(b, &rows)?;
            for (a, x) in acc.iter_mut().zip(v) {
                *a += x;
            }
        }
        Ok(acc)
    });
    let mut total = [0f64; N];
    for p in parts {
        for (t, x) in total.iter_mut().zip(p?) {
            *t += x;
        }
    }
    Ok(total)
}

/// The one-sample negative ELBO of every example of `data`, with noise from `seed` (the same
/// model, data and seed always give the same figure, whatever the batch size and thread count).
pub fn elbo_stats(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    batch_size: usize,
    seed: u64,
    threads: usize,
) -> Result<ElboStats> {
    let [recon, kl] = over_batches(data.len(), batch_size, threads, device, |_, rows| {
        let mut buf = Vec::new();
        let (x, labels) = batch(data, rows, model, device, &mut buf)?;
        // One generator per example: the noise does not depend on the batch size or threads.
        let eps = Noise::per_example(model, rows, seed ^ 0xe7a1_0000).single(device)?;
        let t = model.elbo_terms(&x, labels.as_ref(), &eps)?;
        Ok([
            t.recon.sum_all()?.to_scalar::<f32>()? as f64,
            t.kl()?.sum_all()?.to_scalar::<f32>()? as f64,
        ])
    })?;
    let n = data.len().max(1) as f64;
    Ok(ElboStats {
        neg_elbo: (recon + kl) / n,
        recon: recon / n,
        kl: kl / n,
        examples: data.len(),
    })
}

/// Rows of decoder input per chunk of importance samples: bounds the memory of the estimate.
const ROWS_PER_CHUNK: usize = 16_384;
/// Examples encoded together by the log-likelihood estimate.
const NLL_BATCH: usize = 64;

/// The importance-sampled negative log-likelihood with `k` samples per example
/// ([`Vae::log_likelihood`]), in chunks so that memory stays flat whatever `k`.
pub fn nll(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    k: usize,
    seed: u64,
    threads: usize,
) -> Result<LikelihoodStats> {
    if k == 0 {
        return Err(RunError::Flag("--iw-samples must be at least 1".into()));
    }
    let chunk = (ROWS_PER_CHUNK / NLL_BATCH).max(1);
    let [total] = over_batches(data.len(), NLL_BATCH, threads, device, |b, rows| {
        let mut buf = Vec::new();
        let (x, labels) = batch(data, rows, model, device, &mut buf)?;
        let mut rng = Rng::stream(seed, 0x111_0000 + b as u64);
        let ll = model.log_likelihood(&x, labels.as_ref(), k, chunk, &mut rng)?;
        Ok([ll.iter().sum::<f64>()])
    })?;
    let n = data.len().max(1) as f64;
    let nll = -total / n;
    Ok(LikelihoodStats {
        nll,
        bits_per_dim: nll / (data.shape.dim() as f64 * std::f64::consts::LN_2),
        iw_samples: k,
        examples: data.len(),
    })
}
