//! From flags to a run ready to start: its configuration, its directory, whether it resumes,
//! and its data. What `vae-train` does before the loop, as a library function, so that every
//! caller (the binary, the Python package) starts runs the same way.

use std::path::PathBuf;

use vae_core::candle_core::Device;
use vae_data::Resolved;
use vae_run::RunDir;

use crate::cli::Args;
use crate::config::RunConfig;
use crate::train::{self, Outcome, Start, Summary};
use crate::{Result, TrainError};

/// A run ready for [`train::run`].
pub struct Launch {
    pub cfg: RunConfig,
    /// The run directory.
    pub out: PathBuf,
    pub start: Start,
    /// The data, loaded, with where it came from.
    pub data: Resolved,
    /// What the caller should tell the user before the run starts (such as a resumed run's
    /// re-planned schedule).
    pub notes: Vec<String>,
}

impl Args {
    /// Resolves these flags (already merged with `--config`, see [`Args::with_config_file`])
    /// into a run: with `--resume`, the run's saved configuration with the flags that may change
    /// applied; otherwise the data is loaded and the configuration resolved for its shape.
    pub fn launch(&self) -> Result<Launch> {
        let saved = match &self.resume {
            Some(dir) => {
                Some(train::read_config(&RunDir::new(dir)).map_err(|e| e.context("--resume"))?)
            }
            None => None,
        };
        self.launch_with(saved)
    }

    /// [`Args::launch`] with the configuration of the run `--resume` names already read (by
    /// the caller: under MPI, rank 0 reads it and sends it to the others). `saved` is ignored
    /// without `--resume`.
    pub fn launch_with(&self, saved: Option<RunConfig>) -> Result<Launch> {
        match (&self.resume, saved) {
            (Some(dir), Some(saved)) => {
                let cfg = self.resolve_resume(&saved)?;
                let notes = crate::config::resume_notes(&saved, &cfg);
                if self.out.as_ref().is_some_and(|o| o != dir) {
                    return Err(TrainError::Flag(format!(
                        "--out: a resumed run stays in its directory {}",
                        dir.display()
                    )));
                }
                let data = cfg.data.load()?;
                Ok(Launch {
                    cfg,
                    out: dir.clone(),
                    start: Start::Resume,
                    data,
                    notes,
                })
            }
            (Some(dir), None) => Err(TrainError::Flag(format!(
                "--resume {}: the run's configuration was not read",
                dir.display()
            ))),
            (None, _) => {
                let data = self.data_config()?.load()?;
                let cfg = self.resolve(data.splits.train.shape, data.splits.train.num_classes)?;
                let out = self.out_dir(&cfg);
                Ok(Launch {
                    cfg,
                    out,
                    start: Start::Fresh,
                    data,
                    notes: Vec::new(),
                })
            }
        }
    }
}

impl Launch {
    /// What is about to happen, in one line (the binary logs it before the first step), on
    /// `ranks` processes.
    pub fn describe(&self, device: &Device, ranks: usize) -> String {
        let t = &self.cfg.train;
        let ranks = match ranks {
            1 => String::new(),
            n => format!(" {n} ranks of"),
        };
        format!(
            "training `{}` on {} ({} train / {} validation examples) on{ranks} {} with {} threads for {} epochs into {}",
            t.preset,
            self.data.source,
            self.data.splits.train.len(),
            self.data.splits.test.len(),
            vae_core::device::name(device),
            t.threads,
            t.epochs,
            self.out.display()
        )
    }
}

impl Summary {
    /// How the run ended, in one line, when an epoch finished (the binary logs it).
    pub fn describe(&self, out: &std::path::Path) -> Option<String> {
        let last = self.last.as_ref()?;
        Some(format!(
            "{}: validation loss {:.2} nats (best {:.2}); weights in {}",
            match self.outcome {
                Outcome::Finished => "done",
                Outcome::EarlyStopped => "stopped early",
                Outcome::Interrupted => "interrupted",
            },
            last.val_loss,
            self.best_val_loss.unwrap_or(f64::NAN),
            out.join(RunDir::MODEL).display()
        ))
    }
}
