//! What data a run uses, as saved in the run's `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vae_core::Rng;

use crate::error::{DataError, Result};
use crate::resolve::{resolve, Resolved};

/// Whether pixel intensities are turned into 0/1 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Binarize {
    /// Grey levels in [0, 1] are used as they are.
    #[default]
    None,
    /// Each value is drawn once as Bernoulli(x) with a fixed seed (the same 0/1 data every epoch).
    Static,
    /// Each value is drawn as Bernoulli(x) anew every time it is used (Burda et al.).
    Dynamic,
}

impl std::str::FromStr for Binarize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "static" => Ok(Self::Static),
            "dynamic" => Ok(Self::Dynamic),
            _ => Err(format!(
                "unknown binarisation `{s}` (expected none, static or dynamic)"
            )),
        }
    }
}

impl Binarize {
    /// Replaces each value v of `batch` by 1 with probability v, else 0.
    pub fn sample(batch: &mut [f32], rng: &mut Rng) {
        for v in batch {
            *v = if rng.uniform_f32() < *v { 1.0 } else { 0.0 };
        }
    }

    /// The static binarisation of example `index`: a generator derived from the index alone, so
    /// every example always gets the same bits.
    pub fn sample_static(batch_row: &mut [f32], index: usize) {
        Self::sample(batch_row, &mut Rng::stream(0x0057_471c, index as u64));
    }
}

/// The data of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// A dataset name (`fashion-mnist`, `mnist`, `kmnist`, `cifar10`, `sample`).
    pub dataset: String,
    /// Where the dataset's files are, if given explicitly.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub binarize: Binarize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "fashion-mnist".into(),
            data_dir: None,
            binarize: Binarize::None,
        }
    }
}

impl DataConfig {
    /// Finds and loads the data.
    pub fn load(&self) -> Result<Resolved> {
        let r = resolve(&self.dataset, self.data_dir.as_deref())?;
        if r.splits.train.is_empty() {
            return Err(DataError::Config(format!(
                "{}: the training split is empty",
                r.source
            )));
        }
        Ok(r)
    }
}
