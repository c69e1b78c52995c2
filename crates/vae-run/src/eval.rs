//! Evaluation: the negative ELBO of a dataset (reconstruction + KL) and the importance-sampled
//! negative log-likelihood, computed in parallel over examples with noise that does not depend
//! on the thread count; and [`Scoring`], what those figures are a bound on.

use serde::Serialize;
use vae_core::candle_core::{Device, Tensor};
use vae_core::{par, Density, Noise, Rng, Vae};
use vae_data::Dataset;

use crate::batch::rows_to_tensors;
use crate::{Result, RunError};

/// How examples are prepared before they are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prep {
    /// As the dataset gives them.
    AsIs,
    /// Uniformly dequantized 8-bit values ((v + u)/256), the noise of each example from its
    /// own generator (the evaluation seed and its index).
    Dequantize,
}

/// What the figures of an evaluation are a bound on (`"density"` in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// -log P of the 8-bit data under a distribution over its 256 values.
    Discrete,
    /// -log P of the 8-bit data through uniform dequantization of a density on [0, 1]:
    /// -log p((v + u)/256) + D ln 256 in expectation over u.
    Dequantized,
    /// -log P of binary data under a Bernoulli.
    Binary,
    /// No bound on a probability of the data (a Bernoulli on grey levels is a cross-entropy;
    /// data that are not 8-bit values).
    None,
}

/// How a model is scored on a dataset: what the figures are a bound on, how the examples are
/// prepared, and the nats per example to add (the change of variables of dequantization).
#[derive(Debug, Clone, PartialEq)]
pub struct Scoring {
    pub bound: Bound,
    pub prep: Prep,
    /// Nats added to the negative ELBO and the NLL of each example.
    pub offset: f64,
    /// Why there is no bound, when there is none.
    pub reason: Option<String>,
}

impl Scoring {
    /// The scoring of `model` on `data`; `binary` says the data were binarised (and so are
    /// 0/1 values). A discrete likelihood on data that are not 8-bit is an error.
    pub fn of(model: &Vae, data: &Dataset, binary: bool) -> Result<Self> {
        let d = data.shape.dim() as f64;
        let plain = |bound| Scoring {
            bound,
            prep: Prep::AsIs,
            offset: 0.0,
            reason: None,
        };
        let none = |why: &str| Scoring {
            reason: Some(why.into()),
            ..plain(Bound::None)
        };
        Ok(match model.likelihood().density() {
            Density::Discrete if data.is_8bit() => plain(Bound::Discrete),
            Density::Discrete => {
                return Err(RunError::Mismatch(format!(
                    "the {} likelihood is a distribution over 8-bit values, and these data are not 8-bit",
                    model.likelihood().name()
                )))
            }
            Density::Continuous if data.is_8bit() && !binary => Scoring {
                bound: Bound::Dequantized,
                prep: Prep::Dequantize,
                offset: d * 256f64.ln(),
                reason: None,
            },
            Density::Continuous => none("the data are not 8-bit values: no bits/dim"),
            Density::Binary if binary => plain(Bound::Binary),
            Density::Binary => none(
                "a Bernoulli likelihood on grey levels is a cross-entropy, not a distribution over 8-bit images: no bits/dim",
            ),
        })
    }

    /// Bits per dimension of `nats` per example of data of `dim` values, when they bound a
    /// probability of the data.
    pub fn bits_per_dim(&self, nats: f64, dim: usize) -> Option<f64> {
        (self.bound != Bound::None).then(|| nats / (dim as f64 * std::f64::consts::LN_2))
    }
}

/// Seed mixed into the evaluation seed for the dequantization noise.
const DEQUANTIZE_STREAM: u64 = 0xde9a_0000;

/// The examples `rows` of `data` as tensors for `model`, prepared by `prep`.
fn prepared(
    data: &Dataset,
    rows: &[usize],
    model: &Vae,
    device: &Device,
    prep: Prep,
    seed: u64,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut buf = Vec::new();
    data.gather(rows, &mut buf);
    let d = data.shape.dim();
    if prep == Prep::Dequantize {
        for (x, &i) in buf.chunks_exact_mut(d.max(1)).zip(rows) {
            vae_data::dequantize_example(x, seed ^ DEQUANTIZE_STREAM, i);
        }
    }
    let labels = match model.config().num_classes {
        Some(_) => data.gather_labels(rows),
        None => None,
    };
    rows_to_tensors(&buf, labels.as_deref(), 0..rows.len(), d, model, device)
}

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

impl ElboStats {
    /// These figures with `nats` added to each example's reconstruction term.
    pub fn shifted(self, nats: f64) -> Self {
        Self {
            neg_elbo: self.neg_elbo + nats,
            recon: self.recon + nats,
            ..self
        }
    }
}

/// The importance-sampled estimate of -log p(x), averaged over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LikelihoodStats {
    /// -log p(x) in nats per example.
    pub nll: f64,
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

/// The one-sample negative ELBO of every example of `data` prepared by `prep`, with noise from
/// `seed` (the same model, data and seed always give the same figure, whatever the batch size
/// and thread count).
#[allow(clippy::too_many_arguments)]
pub fn elbo_stats(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    batch_size: usize,
    seed: u64,
    threads: usize,
    prep: Prep,
) -> Result<ElboStats> {
    let batch_size = batch_size.min(model.rows_per_pass().unwrap_or(usize::MAX));
    let [recon, kl] = over_batches(data.len(), batch_size, threads, device, |_, rows| {
        let (x, labels) = prepared(data, rows, model, device, prep, seed)?;
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

/// Floats in the largest tensor of one pass of the importance-sampled estimate (the decoder's
/// output: every likelihood parameter of every pixel of every row), 8 MiB. Each pass allocates
/// a few tensors of about this size and frees them; kept this small, the buffers of one pass
/// stay in the allocator's heap, under its trim threshold, and the next pass reuses them
/// instead of faulting fresh pages in (at 8192 rows of a 784-pixel Bernoulli model, 25.7 MB
/// tensors, the faults cost a quarter of the estimate's wall time in system time). The chunk
/// size does not change the estimate beyond f32 rounding: the samples are drawn in the same
/// order.
const FLOATS_PER_PASS: usize = 2 << 20;
/// Examples encoded together by the log-likelihood estimate.
const NLL_BATCH: usize = 64;

/// The importance-sampled negative log-likelihood with `k` samples per example
/// ([`Vae::log_likelihood`]) of `data` prepared by `prep`, in chunks so that memory stays flat
/// whatever `k`.
pub fn nll(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    k: usize,
    seed: u64,
    threads: usize,
    prep: Prep,
) -> Result<LikelihoodStats> {
    nll_with_progress(model, data, device, k, seed, threads, prep, &|_| {})
}

/// [`nll`], calling `progress(examples)` after each batch of examples is done (from the
/// threads doing the work).
#[allow(clippy::too_many_arguments)]
pub fn nll_with_progress(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    k: usize,
    seed: u64,
    threads: usize,
    prep: Prep,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<LikelihoodStats> {
    if k == 0 {
        return Err(RunError::Flag("--iw-samples must be at least 1".into()));
    }
    let cfg = model.config();
    let per_row = cfg.shape.dim() * cfg.likelihood.params_per_dim();
    let rows = (FLOATS_PER_PASS / per_row.max(1)).max(NLL_BATCH);
    let rows = rows.min(model.rows_per_pass().unwrap_or(rows));
    let chunk = (rows / NLL_BATCH).max(1);
    let [total] = over_batches(data.len(), NLL_BATCH, threads, device, |b, rows| {
        let (x, labels) = prepared(data, rows, model, device, prep, seed)?;
        let mut rng = Rng::stream(seed, 0x111_0000 + b as u64);
        let ll = model.log_likelihood(&x, labels.as_ref(), k, chunk, &mut rng)?;
        progress(rows.len());
        Ok([ll.iter().sum::<f64>()])
    })?;
    let n = data.len().max(1) as f64;
    let nll = -total / n;
    Ok(LikelihoodStats {
        nll,
        iw_samples: k,
        examples: data.len(),
    })
}
