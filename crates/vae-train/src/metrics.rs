//! The per-epoch metrics of a run (`metrics.jsonl`, one JSON object a line, appended).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// f64 fields that stay in the JSON when they are not finite: written as the strings "NaN",
/// "inf", "-inf" (JSON has no such numbers), read back from either form.
mod finite_or_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(v) => Ok(v),
            Num::S(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!("not a number: {s}"))),
            },
        }
    }
}

/// One line of `metrics.jsonl`. Losses are per-example negative ELBO in nats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    /// Mean negative ELBO of the epoch's training batches (nats per example).
    #[serde(with = "finite_or_string")]
    pub train_loss: f64,
    /// Mean of the objective minimised (differs from train_loss with beta, free bits or IWAE).
    #[serde(with = "finite_or_string")]
    pub train_objective: f64,
    #[serde(with = "finite_or_string")]
    pub val_loss: f64,
    #[serde(with = "finite_or_string")]
    pub val_recon: f64,
    #[serde(with = "finite_or_string")]
    pub val_kl: f64,
    #[serde(with = "finite_or_string")]
    pub beta: f64,
    #[serde(with = "finite_or_string")]
    pub lr: f64,
    /// Training time of the epoch (validation excluded), summed over resumes.
    #[serde(with = "finite_or_string")]
    pub seconds: f64,
    #[serde(with = "finite_or_string")]
    pub examples_per_second: f64,
    /// Updates of the epoch skipped because their gradient norm exceeded `--skip-threshold`
    /// (present only when it is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_updates: Option<u64>,
    /// Mean and largest gradient norm of the epoch's updates, before clipping (what
    /// `--grad-clip` and `--skip-threshold` compare against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_max: Option<f64>,
    /// Of `seconds`, the time spent in the steps' reductions across ranks, waiting for the
    /// other ranks included (present only in a run on several ranks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_seconds: Option<f64>,
}

impl EpochMetrics {
    /// The epoch in one line, as `vae-train` prints it.
    pub fn line(&self) -> String {
        let skipped = match self.skipped_updates {
            Some(n) => format!("  {n} updates skipped"),
            None => String::new(),
        };
        format!(
            "epoch {:>3}  train {:.2}  val {:.2} (recon {:.2} + kl {:.2})  {:.1}s  {:.0} ex/s{skipped}",
            self.epoch,
            self.train_loss,
            self.val_loss,
            self.val_recon,
            self.val_kl,
            self.seconds,
            self.examples_per_second
        )
    }
}

pub(crate) fn write_json_line(path: &Path, value: &impl Serialize) -> Result<()> {
    let line = serde_json::to_string(value)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))?;
    f.sync_data().map_err(|e| TrainError::io(path, e))
}

/// The epoch numbers already in metrics.jsonl.
pub(crate) fn logged_epochs(path: &Path) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("epoch").and_then(|e| e.as_u64()).map(|e| e as usize))
        .collect()
}
