//! What the commands share: which model to load and where to run it ([`ModelArgs`]), which
//! examples of its data to use ([`Split`], `--limit`), the latents of both splits
//! ([`LatentArgs`]), and the checks of common flags.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use vae_data::{Dataset, Splits};
use vae_run::flags::RuntimeFlags;
use vae_run::RunDir;

use crate::latent::{encode_dataset, Latents};
use crate::model::{load, Loaded};
use crate::{InferError, Result};

/// Which model to load, and where to run it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A run directory written by vae-train.
    #[arg(long, required_unless_present = "model", conflicts_with_all = ["model", "config"])]
    pub run: Option<PathBuf>,
    /// A weights file (with --config).
    #[arg(long, requires = "config")]
    pub model: Option<PathBuf>,
    /// The config.json that goes with --model.
    #[arg(long, requires = "model")]
    pub config: Option<PathBuf>,
    /// Use best.safetensors of the run instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Print one JSON object on stdout instead of a readable summary.
    #[arg(long)]
    pub json: bool,
}

impl ModelArgs {
    /// The arguments for the run in `dir` on `device` with `threads` threads.
    pub fn for_run(dir: &Path, device: &str, threads: usize) -> Self {
        Self {
            run: Some(dir.to_path_buf()),
            model: None,
            config: None,
            best: false,
            runtime: RuntimeFlags {
                device: Some(device.into()),
                threads: Some(threads),
                seed: None,
                kernels: None,
            },
            json: false,
        }
    }

    /// Opens the device and loads the model.
    pub fn load(&self) -> Result<Loaded> {
        let device = self.runtime.device()?;
        let (w, c) = match (&self.run, &self.model, &self.config) {
            (Some(dir), _, _) => RunDir::new(dir).finished(self.best)?,
            (None, Some(m), Some(c)) => (m.clone(), c.clone()),
            _ => {
                return Err(InferError::Flag(
                    "give --run DIR, or --model FILE with --config FILE".into(),
                ))
            }
        };
        let mut loaded = load(&w, &c, &device)?;
        loaded.model = loaded.model.with_kernels(self.runtime.kernels())?;
        Ok(loaded)
    }

    pub fn seed(&self) -> u64 {
        self.runtime.seed()
    }

    pub fn threads(&self) -> usize {
        self.runtime.threads()
    }

    /// The directory holding the run's config.json (and metrics.jsonl): `--run`, or the
    /// directory of `--config`.
    pub fn run_dir(&self) -> Option<PathBuf> {
        match (&self.run, &self.config) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(c)) => Some(
                c.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            ),
            _ => None,
        }
    }

    /// The config.json of the model.
    pub fn config_path(&self) -> Option<PathBuf> {
        match (&self.run, &self.config) {
            (Some(d), _) => Some(RunDir::new(d).config()),
            (None, c) => c.clone(),
        }
    }
}

/// A split of the run's dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Both splits of the data a model was trained on.
pub fn load_splits(m: &Loaded) -> Result<Splits> {
    let data = m.data.as_ref().ok_or_else(|| {
        InferError::Unsupported(
            "the config has no `data` section; this command needs the run's dataset".into(),
        )
    })?;
    Ok(data.load()?.splits)
}

/// `split` of the data a model was trained on, cut to its first `limit` examples.
pub fn load_split(m: &Loaded, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let splits = load_splits(m)?;
    let d = match split {
        Split::Train => splits.train,
        Split::Test => splits.test,
    };
    Ok(cut(d, limit))
}

/// The first `limit` examples of `d` (all without a limit).
pub fn cut(d: Dataset, limit: Option<usize>) -> Dataset {
    match limit {
        Some(n) => d.take(n),
        None => d,
    }
}

/// The name of the run's dataset, if the config has one.
pub fn dataset_name(m: &Loaded) -> Option<&str> {
    m.data.as_ref().map(|d| d.dataset())
}

/// Flags shared by the commands that encode both splits.
#[derive(Debug, Clone, Args)]
pub struct LatentArgs {
    /// Use only the first N examples of each split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

/// The posterior means of both splits, and the time encoding took.
pub struct SplitLatents {
    pub train: Latents,
    pub test: Latents,
    pub encode_seconds: f64,
}

impl LatentArgs {
    pub fn check(&self) -> Result<()> {
        positive("--batch-size", self.batch_size)?;
        if self.limit == Some(0) {
            return Err(InferError::Flag("--limit must be at least 1".into()));
        }
        Ok(())
    }

    /// Both splits of the model's data, cut to `--limit` examples each.
    pub fn splits(&self, m: &Loaded) -> Result<Splits> {
        let s = load_splits(m)?;
        Ok(Splits {
            train: cut(s.train, self.limit),
            test: cut(s.test, self.limit),
        })
    }
}

/// Encodes both splits.
pub fn encode_splits(m: &Loaded, splits: &Splits, batch_size: usize) -> Result<SplitLatents> {
    let start = Instant::now();
    let train = encode_dataset(&m.model, &splits.train, &m.device, batch_size)?;
    let test = encode_dataset(&m.model, &splits.test, &m.device, batch_size)?;
    Ok(SplitLatents {
        train,
        test,
        encode_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Refuses a model whose data are not pictures, for a command that draws them.
pub fn check_image(m: &Loaded, what: &str) -> Result<()> {
    let s = m.model.config().shape;
    if s.is_image() {
        Ok(())
    } else {
        Err(InferError::Unsupported(format!(
            "{what} draws pictures, but this model's data ({}x{}x{}) are not images",
            s.channels, s.height, s.width
        )))
    }
}

/// Refuses 0 for `flag`.
pub fn positive(flag: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(InferError::Flag(format!("{flag} must be at least 1")))
    } else {
        Ok(())
    }
}

/// Refuses an index outside the validation split.
pub fn in_split(flag: &str, i: usize, data: &Dataset) -> Result<()> {
    if i < data.len() {
        Ok(())
    } else {
        Err(InferError::Flag(format!(
            "{flag} {i}: the validation split has {} examples (0..{})",
            data.len(),
            data.len()
        )))
    }
}

/// Refuses an output file whose directory does not exist, before any work is done.
pub fn check_out(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(InferError::File {
            path: path.into(),
            msg: format!("--out: the directory {} does not exist", dir.display()),
        })
    }
}
