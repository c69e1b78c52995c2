//! The command line of `vae-train`, and how it resolves into a [`RunConfig`].

use std::path::PathBuf;

use clap::Parser;
use vae_core::config::Upsampling;
use vae_core::{Activation, Arch, DataShape, Likelihood, Preset};
use vae_data::DataConfig;

use crate::config::{RunConfig, TrainConfig};
use crate::data_args::DataArgs;
use crate::{Result, TrainError};

/// Train a variational autoencoder.
///
/// With no arguments: preset `pytorch-example` on Fashion-MNIST (the embedded 6,000-image sample
/// when the full set is not installed) for 10 epochs, written to runs/<dataset>-<preset>.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "vae-train", version)]
pub struct Args {
    /// Starting point: pytorch-example, seed, iwae or conv.
    #[arg(long)]
    pub preset: Option<Preset>,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate of Adam.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Decoupled weight decay (AdamW).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Dimension of the latent code z.
    #[arg(long)]
    pub latent_dim: Option<usize>,
    /// Hidden layer sizes of the MLP, comma-separated (e.g. 400 or 200,200).
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// relu, tanh or gelu.
    #[arg(long)]
    pub activation: Option<Activation>,
    /// bernoulli, gaussian, gaussian-learned or continuous-bernoulli.
    #[arg(long)]
    pub likelihood: Option<String>,
    /// Noise level of the `gaussian` likelihood, in (0, 1).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Weight of the KL term (beta-VAE).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Epochs over which the KL weight ramps linearly from 0 to --beta.
    #[arg(long)]
    pub kl_warmup: Option<f64>,
    /// Floor, in nats, of each latent dimension's batch-mean KL (free bits).
    #[arg(long)]
    pub free_bits: Option<f64>,
    /// Importance samples of the training bound (IWAE); 1 is the ELBO.
    #[arg(long)]
    pub iwae_k: Option<usize>,
    /// Condition encoder and decoder on the (one-hot) label.
    #[arg(long)]
    pub conditional: bool,
    /// Decoder upsampling of the conv architecture: transposed or nearest.
    #[arg(long)]
    pub upsampling: Option<Upsampling>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads for training (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run directory (default runs/<dataset>-<preset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar and no per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// The run directory.
    pub fn out_dir(&self, cfg: &RunConfig) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(format!("{}-{}", cfg.data.dataset, cfg.train.preset))
        })
    }

    /// The data part of the configuration.
    pub fn data_config(&self) -> DataConfig {
        self.data.to_config(self.preset.unwrap_or_default())
    }

    /// The whole configuration for data of `shape` with `num_classes` classes (None: no labels):
    /// the preset, overridden by each flag given.
    pub fn resolve(&self, shape: DataShape, num_classes: Option<usize>) -> Result<RunConfig> {
        let preset = self.preset.unwrap_or_default();
        let mut model = preset.model(shape);
        if self.conditional {
            model.num_classes = Some(num_classes.ok_or_else(|| {
                TrainError::Usage(
                    "--conditional needs labelled data, and this dataset has no labels".into(),
                )
            })?);
        }
        if let Some(l) = self.latent_dim {
            model.latent_dim = l;
        }
        if let Arch::Mlp { hidden, activation } = &mut model.arch {
            if let Some(h) = &self.hidden {
                *hidden = h.clone();
            }
            if let Some(a) = self.activation {
                *activation = a;
            }
        } else if self.hidden.is_some() {
            return Err(TrainError::Usage(
                "--hidden applies to the mlp architecture only".into(),
            ));
        }
        let alpha = self.alpha.unwrap_or(match model.likelihood {
            Likelihood::Gaussian { alpha } => alpha,
            _ => 0.1,
        });
        if let Some(name) = &self.likelihood {
            model.likelihood = Likelihood::from_name(name, alpha)
                .map_err(|e| TrainError::Usage(format!("--likelihood: {e}")))?;
        } else if let Likelihood::Gaussian { alpha: a } = &mut model.likelihood {
            *a = alpha;
        }
        if self.alpha.is_some() && !matches!(model.likelihood, Likelihood::Gaussian { .. }) {
            return Err(TrainError::Usage(
                "--alpha applies to the gaussian likelihood only".into(),
            ));
        }
        let mut train = TrainConfig::preset(preset);
        if let Some(v) = self.epochs {
            train.epochs = v;
        }
        if let Some(v) = self.batch_size {
            train.batch_size = v;
        }
        if let Some(v) = self.lr {
            train.optimizer.lr = v;
        }
        if let Some(v) = self.weight_decay {
            train.optimizer.weight_decay = v;
        }
        if let Some(v) = self.beta {
            train.objective.beta = v;
        }
        if let Some(v) = self.kl_warmup {
            train.objective.kl_warmup = v;
        }
        if let Some(v) = self.free_bits {
            train.objective.free_bits = v;
        }
        if let Some(v) = self.iwae_k {
            train.objective.iwae_k = v;
        }
        if let Some(v) = self.seed {
            train.seed = v;
        }
        if let Some(v) = &self.device {
            train.device = v.clone();
        }
        if let Some(v) = self.threads {
            train.threads = v;
        }
        train.validate().map_err(TrainError::Usage)?;
        model.validate()?;
        Ok(RunConfig {
            model,
            data: self.data_config(),
            train,
        })
    }
}
