//! `vae-infer evaluate`: the negative ELBO of a split and the importance-sampled negative
//! log-likelihood, in nats per example, and in bits per dimension where they bound a
//! probability of the data.
//!
//! What the figures are depends on the likelihood and the data ([`Scoring`]): for a discrete
//! likelihood on 8-bit data, −log P of the data; for a density on [0, 1], the bound through
//! uniform dequantization (the model scored on (v + u)/256, plus D ln 256 nats); for a
//! Bernoulli on binarised data, −log P of the bits (a run with dynamic binarisation is scored
//! on one fixed binarisation of the split); for a Bernoulli on grey levels, a cross-entropy
//! with no bits/dim.

use std::io::IsTerminal;

use serde::Serialize;
use vae_data::{Binarize, Dataset};
use vae_run::eval::{self, Bound, ElboStats, Scoring};

use super::Command;
use crate::args::{load_split, ModelArgs, Split};
use crate::model::Loaded;
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which split of the run's dataset.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Importance samples per example for the log-likelihood estimate (0 skips it). The
    /// default answers in about a minute for 10,000 images on 2 cores; more samples give a
    /// tighter estimate (5000 is the figure published work reports).
    #[arg(long, default_value_t = DEFAULT_IW_SAMPLES)]
    pub iw_samples: usize,
}

/// `--iw-samples` by default.
pub const DEFAULT_IW_SAMPLES: usize = 500;
/// The sample count that published results use, suggested for a tighter estimate.
const TIGHT_IW_SAMPLES: usize = 5000;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub split: Split,
    #[serde(flatten)]
    pub scores: Scores,
}

/// The figures of an evaluation of any examples (the report less the split's name).
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// What the figures bound: `discrete`, `dequantized`, `binary`, or `none`.
    pub density: Bound,
    #[serde(flatten)]
    pub elbo: ElboStats,
    /// -log p(x) estimated with `iw_samples` importance samples (null when skipped).
    pub nll: Option<f64>,
    /// The NLL (or, without it, the negative ELBO) in bits per dimension: a bound on
    /// -log2 P(x) / D; null when the figures bound no probability of the data.
    pub bits_per_dim: Option<f64>,
    /// The negative ELBO in bits per dimension (null as above).
    pub neg_elbo_bits_per_dim: Option<f64>,
    /// For a Bernoulli on grey levels: the NLL (or negative ELBO) as a cross-entropy, in bits
    /// per value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_entropy_bits_per_dim: Option<f64>,
    /// Why there is no bits/dim, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub iw_samples: usize,
}

impl super::Report for Report {
    fn text(&self) -> String {
        let (split, r) = (self.split, &self.scores);
        let what = match r.density {
            Bound::Discrete => "bounds on -log P of the 8-bit data",
            Bound::Dequantized => "bounds on -log P of the 8-bit data, by uniform dequantization",
            Bound::Binary => "bounds on -log P of the binary data",
            Bound::None => "a cross-entropy, not a probability of the data",
        };
        let mut s = format!(
            "{} split, {} examples ({what})\n  negative ELBO  {:.3} nats\n  reconstruction {:.3} nats\n  KL             {:.3} nats",
            split.name(),
            r.elbo.examples,
            r.elbo.neg_elbo,
            r.elbo.recon,
            r.elbo.kl
        );
        if let Some(nll) = r.nll {
            s.push_str(&format!(
                "\n  NLL ({} samples) {nll:.3} nats",
                r.iw_samples
            ));
            if r.iw_samples < TIGHT_IW_SAMPLES {
                s.push_str(&format!(
                    " (an upper bound; --iw-samples {TIGHT_IW_SAMPLES} gives a tighter one)"
                ));
            }
        }
        match (r.bits_per_dim, r.cross_entropy_bits_per_dim) {
            (Some(b), _) => s.push_str(&format!("\n  {b:.4} bits/dim")),
            (None, Some(c)) => s.push_str(&format!("\n  cross-entropy {c:.4} bits per value")),
            _ => {}
        }
        if let Some(n) = &r.note {
            s.push_str(&format!("\n  ({n})"));
        }
        s
    }
}

/// A bar on standard error for the importance-sampled estimate, drawn only on a terminal.
fn progress_bar(examples: usize, k: usize) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(examples as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} examples, {elapsed} (about {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("NLL, {k} samples"));
    bar
}

/// The split as it is scored: a run trained with dynamic binarisation is scored on one fixed
/// binarisation (static binarisation was applied when the data was loaded); returns whether
/// the values are binary.
pub fn scored_split(m: &Loaded, mut data: Dataset) -> (Dataset, bool) {
    let binarize = m.data.as_ref().map_or(Binarize::None, |d| d.binarize);
    if binarize == Binarize::Dynamic {
        data.binarize_static();
    }
    (data, binarize != Binarize::None)
}

/// The negative ELBO of `data` under the scoring of the model, with the scoring.
pub fn scored_elbo(
    m: &Loaded,
    data: Dataset,
    batch_size: usize,
    a: &ModelArgs,
) -> Result<(ElboStats, Scoring, Dataset)> {
    let (data, binary) = scored_split(m, data);
    let scoring = Scoring::of(&m.model, &data, binary)?;
    let elbo = eval::elbo_stats(
        &m.model,
        &data,
        &m.device,
        batch_size,
        a.seed(),
        a.threads(),
        scoring.prep,
    )?
    .shifted(scoring.offset);
    Ok((elbo, scoring, data))
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        if self.batch_size == 0 {
            return Err(InferError::Flag("--batch-size must be at least 1".into()));
        }
        let a = &self.model;
        let m = a.load()?;
        let data = load_split(&m, self.split, self.limit)?;
        let bar = |n: usize| progress_bar(n, self.iw_samples);
        let scores = evaluate(&m, data, self.batch_size, self.iw_samples, a, &bar)?;
        Ok(Report {
            split: self.split,
            scores,
        })
    }
}

/// Evaluates the model of `m` on `data` (as it is scored, see [`scored_split`]), `batch_size`
/// examples per pass, with `iw_samples` importance samples for the NLL (0: none); the seed and
/// threads of `a`. `bar(n)` makes the progress bar of the NLL of `n` examples.
pub fn evaluate(
    m: &Loaded,
    data: Dataset,
    batch_size: usize,
    iw_samples: usize,
    a: &ModelArgs,
    bar: &dyn Fn(usize) -> indicatif::ProgressBar,
) -> Result<Scores> {
    if batch_size == 0 {
        return Err(InferError::Flag("--batch-size must be at least 1".into()));
    }
    if data.is_empty() {
        return Err(InferError::Flag("no examples to evaluate".into()));
    }
    let (elbo, scoring, data) = scored_elbo(m, data, batch_size, a)?;
    let nll = if iw_samples > 0 {
        let bar = bar(data.len());
        let l = eval::nll_with_progress(
            &m.model,
            &data,
            &m.device,
            iw_samples,
            a.seed(),
            a.threads(),
            scoring.prep,
            &|n| bar.inc(n as u64),
        );
        bar.finish_and_clear();
        Some(l?.nll + scoring.offset)
    } else {
        None
    };
    let dim = data.shape.dim();
    let best = nll.unwrap_or(elbo.neg_elbo);
    let cross_entropy = (scoring.bound == Bound::None && m.model.likelihood().is_bernoulli())
        .then(|| best / (dim as f64 * std::f64::consts::LN_2));
    Ok(Scores {
        density: scoring.bound,
        elbo,
        nll,
        bits_per_dim: scoring.bits_per_dim(best, dim),
        neg_elbo_bits_per_dim: scoring.bits_per_dim(elbo.neg_elbo, dim),
        cross_entropy_bits_per_dim: cross_entropy,
        note: scoring.reason,
        iw_samples,
    })
}
