//! The run directory: what vae-train writes and vae-infer reads.
//!
//! ```text
//! DIR/config.json                  the whole resolved configuration (model, data, training)
//! DIR/model.safetensors            weights at the end of the last finished epoch
//! DIR/best.safetensors             weights with the best validation loss so far
//! DIR/checkpoints/step-NNNNNNNN/   model.safetensors, optimizer.safetensors, state.json
//! DIR/metrics.jsonl                one JSON object a line, one per epoch
//! DIR/samples/epoch-NNN.png        an 8x8 grid of samples after each epoch (images only)
//! DIR/data/                        the training data as IDX files, for runs trained on arrays
//! ```

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{Result, RunError};

/// The files of a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub const CONFIG: &'static str = "config.json";
    pub const MODEL: &'static str = "model.safetensors";
    pub const BEST: &'static str = "best.safetensors";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const SAMPLES: &'static str = "samples";
    pub const CHECKPOINTS: &'static str = "checkpoints";
    pub const DATA: &'static str = "data";

    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(Self::CONFIG)
    }
    pub fn model(&self) -> PathBuf {
        self.root.join(Self::MODEL)
    }
    pub fn best(&self) -> PathBuf {
        self.root.join(Self::BEST)
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join(Self::METRICS)
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join(Self::SAMPLES)
    }
    /// The grid of samples drawn after `epoch`.
    pub fn sample_grid(&self, epoch: usize) -> PathBuf {
        self.samples().join(format!("epoch-{epoch:03}.png"))
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(Self::CHECKPOINTS)
    }
    /// The training data of a run trained on arrays (the Python package's `train`), as the
    /// IDX files of `vae_data::idx_set`; its config.json points there.
    pub fn data(&self) -> PathBuf {
        self.root.join(Self::DATA)
    }

    /// The weights (`model.safetensors`, or `best.safetensors` when `best`) and the config of a
    /// finished run, checked to exist.
    pub fn finished(&self, best: bool) -> Result<(PathBuf, PathBuf)> {
        if !self.root.is_dir() {
            return Err(RunError::File {
                path: self.root.clone(),
                msg: "not a run directory (no such directory)".into(),
            });
        }
        let w = if best { self.best() } else { self.model() };
        let c = self.config();
        for p in [&w, &c] {
            if !p.is_file() {
                return Err(RunError::File {
                    path: p.clone(),
                    msg: "missing: is this a finished run directory of vae-train?".into(),
                });
            }
        }
        Ok((w, c))
    }
}

/// Reads a JSON file into `T`; errors name the file and say what it should have been.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::File {
        path: path.into(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| RunError::File {
        path: path.into(),
        msg: format!("not a valid {what}: {e}"),
    })
}
