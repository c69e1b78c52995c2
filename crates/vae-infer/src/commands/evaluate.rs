//! `vae-infer evaluate`: the negative ELBO of a split and the importance-sampled negative
//! log-likelihood, in nats per example.

use serde::Serialize;
use vae_run::eval::{self, ElboStats};

use super::Command;
use crate::args::{load_split, ModelArgs, Split};
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
    /// Importance samples per example for the log-likelihood estimate (0 skips it).
    #[arg(long, default_value_t = 5000)]
    pub iw_samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub split: Split,
    #[serde(flatten)]
    pub elbo: ElboStats,
    /// -log p(x) estimated with `iw_samples` importance samples (null when skipped).
    pub nll: Option<f64>,
    pub bits_per_dim: Option<f64>,
    pub iw_samples: usize,
}

impl super::Report for Report {
    fn text(&self) -> String {
        let mut s = format!(
            "{} split, {} examples\n  negative ELBO  {:.3} nats\n  reconstruction {:.3} nats\n  KL             {:.3} nats",
            self.split.name(),
            self.elbo.examples,
            self.elbo.neg_elbo,
            self.elbo.recon,
            self.elbo.kl
        );
        if let (Some(nll), Some(bpd)) = (self.nll, self.bits_per_dim) {
            s.push_str(&format!(
                "\n  NLL ({} samples) {nll:.3} nats ({bpd:.4} bits/dim)",
                self.iw_samples
            ));
        }
        s
    }
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
        if data.is_empty() {
            return Err(InferError::Flag("no examples to evaluate".into()));
        }
        let elbo = eval::elbo_stats(
            &m.model,
            &data,
            &m.device,
            self.batch_size,
            a.seed(),
            a.threads(),
        )?;
        let ll = if self.iw_samples > 0 {
            Some(eval::nll(
                &m.model,
                &data,
                &m.device,
                self.iw_samples,
                a.seed(),
                a.threads(),
            )?)
        } else {
            None
        };
        Ok(Report {
            split: self.split,
            elbo,
            nll: ll.map(|l| l.nll),
            bits_per_dim: ll.map(|l| l.bits_per_dim),
            iw_samples: self.iw_samples,
        })
    }
}
