//! The error type of vae-train.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] vae_core::Error),
    #[error(transparent)]
    Data(#[from] vae_data::DataError),
    #[error(transparent)]
    Run(#[from] vae_run::RunError),
    /// A flag's value, or a combination of flags, is refused; the message names the flag.
    #[error("{0}")]
    Flag(String),
    /// A file of the run (config, state, TOML) is malformed.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Serialising a configuration, a state or a metrics line failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Something failed on one rank of a run across processes, and every rank stops with it
    /// (`rank` is the first that failed).
    #[error("{}{msg}", if *rank > 0 { format!("rank {rank}: ") } else { String::new() })]
    Agreed { rank: usize, msg: String },
    /// A broken invariant of the program itself.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error with what was being done (a flag, a file) in front.
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<TrainError>,
    },
    /// Inside a step: the loop adds the epoch.
    #[error("the {what} became non-finite ({value}) at step {step}")]
    NonFinite {
        what: &'static str,
        step: u64,
        value: f64,
    },
    #[error("the {what} became non-finite ({value}) at epoch {epoch}, step {step}; stopped without saving: the last checkpoint and best.safetensors are as they were (try a lower --lr, or --grad-clip)")]
    NonFiniteAt {
        what: &'static str,
        epoch: usize,
        step: u64,
        value: f64,
    },
}

impl TrainError {
    /// Whether every rank of a run across processes stops with this same error (it came from
    /// an agreement, or from values every rank computed alike), so that one rank reporting it
    /// is enough.
    pub fn is_agreed(&self) -> bool {
        matches!(
            self,
            Self::Agreed { .. } | Self::NonFinite { .. } | Self::NonFiniteAt { .. }
        )
    }

    /// This error with `what` in front of its message.
    pub fn context(self, what: impl Into<String>) -> Self {
        Self::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

impl From<vae_core::candle_core::Error> for TrainError {
    fn from(e: vae_core::candle_core::Error) -> Self {
        Self::Core(e.into())
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
