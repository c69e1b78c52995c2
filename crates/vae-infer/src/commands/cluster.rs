//! `vae-infer cluster`: k-means on the latent means, fitted on train and scored on test.

use std::time::Instant;

use serde::Serialize;

use super::Command;
use crate::analysis::kmeans::{self, KMeansConfig};
use crate::analysis::metrics::cluster_scores;
use crate::args::{encode_splits, positive, LatentArgs, ModelArgs, SplitLatents};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub latents: LatentArgs,
    /// Number of clusters (default: the number of classes).
    #[arg(long)]
    pub k: Option<usize>,
    /// k-means++ seedings; the fit with the lowest inertia is kept.
    #[arg(long, default_value_t = 10)]
    pub restarts: usize,
    /// Lloyd iterations per restart at most.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub k: usize,
    /// Test accuracy after the best one-to-one matching of clusters to labels.
    pub accuracy: f64,
    pub nmi: f64,
    pub ari: f64,
    /// Within-cluster sum of squares on the training latents.
    pub inertia: f64,
    pub restarts: usize,
    pub iterations: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub encode_seconds: f64,
    /// Fitting and scoring, encoding excluded.
    pub seconds: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "k-means with k = {} on latent means (fit on {} train, scored on {} test examples)\n  accuracy {:.4}  NMI {:.4}  ARI {:.4}\n  best of {} restarts: inertia {:.1} after {} iterations; {:.2}s (encoding {:.2}s)",
            self.k,
            self.train_examples,
            self.test_examples,
            self.accuracy,
            self.nmi,
            self.ari,
            self.restarts,
            self.inertia,
            self.iterations,
            self.seconds,
            self.encode_seconds
        )
    }
}

/// k-means fitted on the training latents, scored on the test latents.
pub fn cluster_latents(
    lat: &SplitLatents,
    k: Option<usize>,
    restarts: usize,
    max_iter: usize,
    seed: u64,
) -> Result<Report> {
    let truth = lat.test.require_labels("cluster")?;
    let classes = lat
        .train
        .labels
        .iter()
        .chain(&lat.test.labels)
        .flatten()
        .max()
        .map_or(1, |&c| c as usize + 1);
    let cfg = KMeansConfig {
        k: k.unwrap_or(classes),
        restarts,
        max_iter,
        seed,
        ..KMeansConfig::default()
    };
    let start = Instant::now();
    let km = kmeans::fit(&lat.train.mu, lat.train.dim, &cfg)?;
    let pred = km.predict(&lat.test.mu);
    let s = cluster_scores(&pred, truth)?;
    Ok(Report {
        k: cfg.k,
        accuracy: s.accuracy,
        nmi: s.nmi,
        ari: s.ari,
        inertia: km.inertia,
        restarts,
        iterations: km.iterations,
        train_examples: lat.train.len(),
        test_examples: lat.test.len(),
        encode_seconds: lat.encode_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        positive("--restarts", self.restarts)?;
        positive("--max-iter", self.max_iter)?;
        if self.k == Some(0) {
            return Err(InferError::Flag("--k must be at least 1".into()));
        }
        self.latents.check()?;
        let m = self.model.load()?;
        let splits = self.latents.splits(&m)?;
        let lat = encode_splits(&m, &splits, self.latents.batch_size)?;
        cluster_latents(&lat, self.k, self.restarts, self.max_iter, self.model.seed())
    }
}
