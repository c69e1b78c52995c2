//! The command line of `vae-train`, the `--config` TOML file, and how they resolve into a
//! [`RunConfig`].
//!
//! Every flag can also be set in the TOML file under its own name (`batch-size = 64`,
//! `hidden = [200, 200]`); the command line wins.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};
use vae_core::likelihood::{DiscretizedLogistic, Gaussian, LikelihoodSettings};
use vae_core::{Activation, Arch, DataShape, Likelihood, LikelihoodKind, Preset, Upsampling};
use vae_data::DataConfig;
use vae_run::flags::RuntimeFlags;

use crate::arch_args::ArchArgs;
use crate::config::{LrSchedule, RunConfig, TrainConfig};
use crate::data_args::DataArgs;
use crate::{Result, TrainError};

/// Train a variational autoencoder.
///
/// With no arguments: preset `pytorch-example` on Fashion-MNIST (the embedded 6,000-image sample
/// when the full set is not installed) for 10 epochs, written to runs/<dataset>-<preset>.
#[derive(Debug, Clone, Parser, Default, Serialize, Deserialize)]
#[command(name = "vae-train", version)]
#[serde(rename_all = "kebab-case")]
pub struct Args {
    /// A TOML file setting any of these flags by name (the command line wins).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Continue the run in DIR from its latest checkpoint (exactly where it stopped).
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Starting point.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub arch: ArchArgs,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate of Adam.
    #[arg(long)]
    pub lr: Option<f64>,
    /// constant, or cosine (decay to 0 over the run).
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// Decoupled weight decay (AdamW).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the gradient to this Euclidean norm.
    #[arg(long, value_name = "NORM")]
    pub grad_clip: Option<f64>,
    /// Ramp the learning rate linearly from lr/STEPS up to --lr over the first STEPS steps.
    #[arg(long, value_name = "STEPS")]
    pub lr_warmup: Option<u64>,
    /// Skip the update of a step whose gradient norm (before clipping) exceeds NORM; the
    /// skips are counted in metrics.jsonl (`skipped_updates`).
    #[arg(long, value_name = "NORM")]
    pub skip_threshold: Option<f64>,
    /// Stop after this many epochs without a better validation loss.
    #[arg(long, value_name = "PATIENCE")]
    pub early_stop: Option<usize>,
    /// Dimension of the latent code z.
    #[arg(long)]
    pub latent_dim: Option<usize>,
    /// Hidden layer sizes of the MLP, comma-separated (e.g. 400 or 200,200).
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// The non-linearity between hidden layers (mlp, hierarchical).
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// The observation model p(x|z).
    #[arg(long, value_enum)]
    pub likelihood: Option<LikelihoodKind>,
    /// Noise level of the `gaussian` likelihood, in (0, 1).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Mixture components per pixel of the `discretized-logistic` likelihood (default 1).
    #[arg(long, value_name = "K")]
    pub mixtures: Option<usize>,
    /// Weight of the KL term (beta-VAE).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Epochs over which the KL weight ramps linearly from 0 to --beta.
    #[arg(long, value_name = "EPOCHS")]
    pub kl_warmup: Option<f64>,
    /// Floor, in nats, of each KL unit's batch-mean KL (free bits): a latent dimension of a
    /// single-latent model, a whole latent group of a hierarchical one.
    #[arg(long, value_name = "NATS")]
    pub free_bits: Option<f64>,
    /// Importance samples of the training bound (IWAE); 1 is the ELBO.
    #[arg(long, value_name = "K")]
    pub iwae_k: Option<usize>,
    /// Condition encoder and decoder on the (one-hot) label.
    #[arg(long)]
    #[serde(default)]
    pub conditional: bool,
    /// Decoder upsampling of the conv architecture.
    #[arg(long, value_enum)]
    pub upsampling: Option<Upsampling>,
    #[command(flatten)]
    #[serde(flatten)]
    pub runtime: RuntimeFlags,
    /// Write a checkpoint every this many steps (besides each epoch's end).
    #[arg(long, value_name = "STEPS")]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints to keep (default 3).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Run directory (default runs/<dataset>-<preset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar and no per-epoch lines.
    #[arg(long)]
    #[serde(default)]
    pub quiet: bool,
}

impl Args {
    /// These arguments over the settings of `--config` (when given): every flag given on the
    /// command line wins. Unknown keys and wrong types are errors naming the file.
    pub fn with_config_file(self) -> Result<Args> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_toml(&path)?;
        let mut merged = serde_json::to_value(&file)?;
        let cli = serde_json::to_value(&self)?;
        if let (Some(m), Some(c)) = (merged.as_object_mut(), cli.as_object()) {
            for (k, v) in c {
                // Unset flags are null; boolean flags can only be switched on.
                if !v.is_null() && *v != serde_json::Value::Bool(false) {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        let mut args: Args =
            serde_json::from_value(merged).map_err(|e| TrainError::file(&path, e.to_string()))?;
        args.config = self.config;
        args.resume = self.resume;
        Ok(args)
    }

    /// The run directory.
    pub fn out_dir(&self, cfg: &RunConfig) -> PathBuf {
        self.out_for(cfg.data.dataset(), cfg.train.preset)
    }

    /// The run directory of a run on `dataset` with `preset`: `--out`, else
    /// runs/<dataset>-<preset>.
    pub fn out_for(&self, dataset: &str, preset: Preset) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(format!("{dataset}-{preset}")))
    }

    /// The data part of the configuration.
    pub fn data_config(&self) -> Result<DataConfig> {
        Ok(self.data.to_config(self.preset.unwrap_or_default())?)
    }

    /// The whole configuration for data of `shape` with `num_classes` classes (None: no labels):
    /// the preset, overridden by each flag given.
    pub fn resolve(&self, shape: DataShape, num_classes: Option<usize>) -> Result<RunConfig> {
        let preset = self.preset.unwrap_or_default();
        let mut model = preset.model(shape);
        if self.conditional {
            model.num_classes = Some(num_classes.ok_or_else(|| {
                TrainError::Flag(
                    "--conditional needs labelled data, and this dataset has no labels".into(),
                )
            })?);
        }
        let base = RunConfig {
            model,
            data: self.data_config()?,
            train: TrainConfig::preset(preset),
        };
        let cfg = self.apply(base)?;
        cfg.train.validate().map_err(TrainError::Flag)?;
        cfg.model.validate()?;
        Ok(cfg)
    }

    /// The configuration of the run in `dir` with the flags given now applied: only those that
    /// may change on resume may differ (see [`crate::config::RESUMABLE`]); any other difference
    /// is an error that lists them.
    pub fn resolve_resume(&self, saved: &RunConfig) -> Result<RunConfig> {
        let given = self.clone();
        let mut cfg = given.apply(saved.clone())?;
        // Data flags describe the saved data unless given.
        cfg.data = given.data.over(&saved.data)?;
        if self.preset.is_some_and(|p| p != saved.train.preset) {
            cfg.train.preset = self.preset.unwrap_or_default();
        }
        if self.conditional && saved.model.num_classes.is_none() {
            cfg.model.num_classes = Some(0);
        }
        let diffs = saved.differences(&cfg);
        if !diffs.is_empty() {
            return Err(TrainError::Flag(format!(
                "--resume: these settings differ from the run's configuration, which a resumed run keeps: {}",
                diffs.join("; ")
            )));
        }
        cfg.train.validate().map_err(TrainError::Flag)?;
        Ok(cfg)
    }

    /// Applies every flag given to `cfg`.
    fn apply(&self, mut cfg: RunConfig) -> Result<RunConfig> {
        let model = &mut cfg.model;
        if let Some(l) = self.latent_dim {
            model.latent_dim = l;
        }
        self.arch.apply(model)?;
        match &mut model.arch {
            Arch::Mlp(m) => {
                if let Some(h) = &self.hidden {
                    m.hidden = h.clone();
                }
                if let Some(a) = self.activation {
                    m.activation = a;
                }
            }
            Arch::Hierarchical(h) if self.hidden.is_none() => {
                if let Some(a) = self.activation {
                    h.activation = a;
                }
            }
            _ if self.hidden.is_some() => {
                return Err(TrainError::Flag(
                    "--hidden applies to the mlp architecture only".into(),
                ))
            }
            _ => {}
        }
        match (&mut model.arch, self.upsampling) {
            (Arch::Conv(c), Some(u)) => c.upsampling = u,
            (_, Some(_)) => {
                return Err(TrainError::Flag(
                    "--upsampling applies to the conv architecture only".into(),
                ))
            }
            _ => {}
        }
        if let Some(kind) = self.likelihood {
            let d = LikelihoodSettings::default();
            let settings = LikelihoodSettings {
                alpha: self.alpha.unwrap_or(d.alpha),
                mixtures: self.mixtures.unwrap_or(d.mixtures),
            };
            let l = kind.build(settings);
            if l.name() != model.likelihood.name()
                || self.alpha.is_some()
                || self.mixtures.is_some()
            {
                model.likelihood = l;
            }
        }
        match (&mut model.likelihood, self.mixtures) {
            (Likelihood::DiscretizedLogistic(DiscretizedLogistic { mixtures }), Some(k)) => {
                *mixtures = k
            }
            (_, Some(_)) => {
                return Err(TrainError::Flag(
                    "--mixtures applies to the discretized-logistic likelihood only".into(),
                ))
            }
            _ => {}
        }
        match (&mut model.likelihood, self.alpha) {
            (Likelihood::Gaussian(Gaussian { alpha }), Some(a)) => *alpha = a,
            (_, Some(_)) => {
                return Err(TrainError::Flag(
                    "--alpha applies to the gaussian likelihood only".into(),
                ))
            }
            _ => {}
        }
        let t = &mut cfg.train;
        macro_rules! set {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $(if let Some(v) = &self.$flag { t.$($field).+ = v.clone().into(); })*
            };
        }
        set!(
            epochs => epochs,
            batch_size => batch_size,
            lr => optimizer.lr,
            weight_decay => optimizer.weight_decay,
            lr_schedule => lr_schedule,
            beta => objective.beta,
            kl_warmup => objective.kl_warmup,
            free_bits => objective.free_bits,
            iwae_k => objective.iwae_k,
            keep => keep,
            lr_warmup => lr_warmup,
        );
        let r = &self.runtime;
        if let Some(v) = r.seed {
            t.seed = v;
        }
        if let Some(v) = &r.device {
            t.device = v.clone();
        }
        if let Some(v) = r.threads {
            t.threads = v;
        }
        if let Some(v) = r.kernels {
            t.kernels = v;
        }
        if self.grad_clip.is_some() {
            t.grad_clip = self.grad_clip;
        }
        if self.skip_threshold.is_some() {
            t.skip_threshold = self.skip_threshold;
        }
        if self.early_stop.is_some() {
            t.early_stop = self.early_stop;
        }
        if self.checkpoint_every.is_some() {
            t.checkpoint_every = self.checkpoint_every;
        }
        Ok(cfg)
    }
}

/// Reads a TOML file of flags, refusing unknown keys and wrong types with the file's name.
pub fn read_toml(path: &Path) -> Result<Args> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| TrainError::file(path, e.message()))?;
    // serde's flatten cannot deny unknown fields: check the keys against the known ones.
    let known = serde_json::to_value(Args::default())?;
    let known: Vec<&String> = known
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    for key in table.keys() {
        if !known.contains(&key) {
            let mut names: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
            names.sort();
            return Err(TrainError::file(
                path,
                format!("unknown key `{key}` (known keys: {})", names.join(", ")),
            ));
        }
    }
    table
        .try_into()
        .map_err(|e: toml::de::Error| TrainError::file(path, e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> DataShape {
        DataShape::image(1, 28, 28)
    }

    #[test]
    fn toml_sets_flags_and_the_command_line_wins() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "epochs = 3\nbatch-size = 64\nhidden = [200, 100]\ndataset = \"sample\"\nconditional = true\nlr = 0.01\n")?;
        let args = Args::try_parse_from([
            "vae-train",
            "--config",
            path.to_str().unwrap(),
            "--lr",
            "0.002",
        ])?
        .with_config_file()?;
        let cfg = args.resolve(shape(), Some(10))?;
        assert_eq!(cfg.train.epochs, 3);
        assert_eq!(cfg.train.batch_size, 64);
        assert_eq!(cfg.train.optimizer.lr, 0.002);
        assert_eq!(cfg.data.dataset(), "sample");
        assert_eq!(cfg.model.num_classes, Some(10));
        assert!(matches!(&cfg.model.arch, Arch::Mlp(m) if m.hidden == vec![200, 100]));
        Ok(())
    }

    #[test]
    fn bad_toml_names_the_file_and_the_key() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bad.toml");
        for (text, want) in [
            ("epoch = 3", "unknown key `epoch`"),
            ("epochs = \"three\"", "invalid type"),
            ("epochs = ", ""),
        ] {
            std::fs::write(&path, text)?;
            let err = read_toml(&path).unwrap_err().to_string();
            assert!(err.contains("bad.toml") && err.contains(want), "{err}");
        }
        Ok(())
    }

    #[test]
    fn resume_refuses_changed_settings_and_allows_the_others() -> anyhow::Result<()> {
        let base = Args::try_parse_from(["vae-train", "--dataset", "sample", "--epochs", "2"])?
            .resolve(shape(), Some(10))?;
        let more = Args::try_parse_from(["vae-train", "--epochs", "4", "--threads", "1"])?
            .resolve_resume(&base)?;
        assert_eq!(more.train.epochs, 4);
        assert_eq!(more.data, base.data);
        for (flags, what) in [
            (vec!["--latent-dim", "5"], "model.latent_dim"),
            (vec!["--batch-size", "7"], "train.batch_size"),
            (vec!["--dataset", "fashion-mnist"], "data.dataset"),
            (vec!["--beta", "2"], "train.objective.beta"),
        ] {
            let mut argv = vec!["vae-train"];
            argv.extend(flags);
            let err = Args::try_parse_from(argv)?
                .resolve_resume(&base)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{err}");
        }
        Ok(())
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flags, want) in [
            (vec!["--batch-size", "0"], "--batch-size"),
            (vec!["--latent-dim", "0"], "--latent-dim"),
            (
                vec!["--likelihood", "gaussian", "--alpha", "1.5"],
                "--alpha",
            ),
            (vec!["--grad-clip=-1"], "--grad-clip"),
            (vec!["--iwae-k", "0"], "--iwae-k"),
        ] {
            let mut argv = vec!["vae-train"];
            argv.extend(flags);
            let err = Args::try_parse_from(argv)
                .unwrap()
                .resolve(shape(), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
