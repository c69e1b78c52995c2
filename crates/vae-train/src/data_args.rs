//! The data flags of `vae-train`, resolved into a [`DataConfig`].

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use vae_core::Preset;
use vae_data::{Binarize, DataConfig};

/// Which data to train on and how to prepare it.
#[derive(Debug, Clone, Args, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DataArgs {
    /// Dataset name: fashion-mnist, mnist, kmnist, cifar10 or sample.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory holding the dataset's files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Binarisation of pixel values: none, static or dynamic.
    #[arg(long)]
    pub binarize: Option<Binarize>,
}

impl DataArgs {
    /// The data part of the configuration for `preset`.
    pub fn to_config(&self, preset: Preset) -> DataConfig {
        DataConfig {
            dataset: self
                .dataset
                .clone()
                .unwrap_or_else(|| "fashion-mnist".into()),
            data_dir: self.data_dir.clone(),
            binarize: self.binarize.unwrap_or(match preset {
                Preset::Iwae => Binarize::Dynamic,
                _ => Binarize::None,
            }),
        }
    }

    /// Takes every setting not given from `saved` (to compare a resumed run's flags with the
    /// configuration it was started with).
    pub fn fill_from(&mut self, saved: &DataConfig) {
        self.dataset.get_or_insert_with(|| saved.dataset.clone());
        if self.data_dir.is_none() {
            self.data_dir = saved.data_dir.clone();
        }
        self.binarize.get_or_insert(saved.binarize);
    }
}
