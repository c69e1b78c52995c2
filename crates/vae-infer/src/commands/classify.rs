//! `vae-infer classify`: k-NN or logistic regression on the latent means, fitted on train and
//! scored on test.

use std::time::Instant;

use serde::Serialize;

use super::Command;
use crate::analysis::classify::{fit_logistic, knn_predict, LogisticConfig};
use crate::analysis::metrics::accuracy;
use crate::args::{encode_splits, positive, LatentArgs, ModelArgs, SplitLatents};
use crate::{InferError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// k nearest neighbours (Euclidean, majority vote).
    Knn,
    /// Multinomial logistic regression on standardised latents.
    Linear,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub latents: LatentArgs,
    /// The classifier.
    #[arg(long, value_enum, default_value_t = Method::Knn)]
    pub method: Method,
    /// Neighbours of k-NN.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Inverse L2 strength of the linear probe (scikit-learn's C).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub c: f64,
    /// Iterations of the linear probe's optimiser at most.
    #[arg(long, default_value_t = 2000)]
    pub max_iter: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub method: Method,
    /// Test accuracy of the classifier fitted on the training latents.
    pub accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged: Option<bool>,
    pub train_examples: usize,
    pub test_examples: usize,
    pub encode_seconds: f64,
    /// Fitting and scoring, encoding excluded.
    pub seconds: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        let what = match (self.method, self.k) {
            (Method::Knn, Some(k)) => format!("{k}-nearest neighbours"),
            _ => format!(
                "logistic regression ({} L-BFGS iterations{})",
                self.iterations.unwrap_or(0),
                if self.converged == Some(false) {
                    ", not converged"
                } else {
                    ""
                }
            ),
        };
        format!(
            "{what} on latent means (fit on {} train, scored on {} test examples)\n  accuracy {:.4}; {:.2}s (encoding {:.2}s)",
            self.train_examples,
            self.test_examples,
            self.accuracy,
            self.seconds,
            self.encode_seconds
        )
    }
}

/// A classifier fitted on the training latents, scored on the test latents.
pub fn classify_latents(
    lat: &SplitLatents,
    method: Method,
    k: usize,
    logistic: &LogisticConfig,
) -> Result<Report> {
    let ytr = lat.train.require_labels("classify")?;
    let yte = lat.test.require_labels("classify")?;
    let start = Instant::now();
    let dim = lat.train.dim;
    let (pred, iterations, converged) = match method {
        Method::Knn => (
            knn_predict(&lat.train.mu, ytr, &lat.test.mu, dim, k)?,
            None,
            None,
        ),
        Method::Linear => {
            let model = fit_logistic(&lat.train.mu, ytr, dim, logistic)?;
            (
                model.predict(&lat.test.mu)?,
                Some(model.iterations),
                Some(model.converged),
            )
        }
    };
    Ok(Report {
        method,
        accuracy: accuracy(&pred, yte)?,
        k: (method == Method::Knn).then_some(k),
        iterations,
        converged,
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
        positive("--k", self.k)?;
        positive("--max-iter", self.max_iter)?;
        if !(self.c > 0.0 && self.c.is_finite()) {
            return Err(InferError::Flag(format!(
                "--c must be positive, got {}",
                self.c
            )));
        }
        self.latents.check()?;
        let m = self.model.load()?;
        let splits = self.latents.splits(&m)?;
        let lat = encode_splits(&m, &splits, self.latents.batch_size)?;
        let cfg = LogisticConfig {
            c: self.c,
            max_iter: self.max_iter,
            ..LogisticConfig::default()
        };
        classify_latents(&lat, self.method, self.k, &cfg)
    }
}
