//! The whole resolved configuration of a run, written to `DIR/config.json`.

use serde::{Deserialize, Serialize};
use vae_core::{ModelConfig, Objective, Preset};
use vae_data::DataConfig;

use crate::optim::AdamConfig;

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: Preset,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: AdamConfig,
    /// What is minimised: beta, KL warm-up, free bits, importance samples.
    pub objective: Objective,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda[:N]` or `metal`.
    pub device: String,
    /// CPU threads used by a training step.
    pub threads: usize,
}

impl TrainConfig {
    /// The training settings of a preset.
    pub fn preset(preset: Preset) -> Self {
        Self {
            preset,
            epochs: 10,
            batch_size: 128,
            optimizer: AdamConfig::default(),
            objective: Objective::default(),
            seed: 0,
            device: "auto".into(),
            threads: default_threads(),
        }
    }

    /// Checks the settings a user can get wrong; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        if self.epochs == 0 {
            return Err("--epochs must be at least 1".into());
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return Err(format!(
                "--lr must be a positive number, got {}",
                self.optimizer.lr
            ));
        }
        self.objective.validate().map_err(|e| match e {
            vae_core::Error::Config(m) => m,
            e => e.to_string(),
        })?;
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        Ok(())
    }
}

/// The number of cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Model, data and training settings together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}
