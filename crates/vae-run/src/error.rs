//! The error type of vae-run.

use std::path::PathBuf;

/// What can go wrong in the shared parts of training and inference.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Core(#[from] vae_core::Error),
    #[error(transparent)]
    Data(#[from] vae_data::DataError),
    /// A value given on the command line is out of range; the message names the flag.
    #[error("{0}")]
    Flag(String),
    /// The data does not suit the model (no labels for a conditional model, not images, …).
    #[error("{0}")]
    Mismatch(String),
    /// A file could not be read, parsed or written.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A picture could not be encoded.
    #[error("encoding PNG: {0}")]
    Png(String),
}

impl From<vae_core::candle_core::Error> for RunError {
    fn from(e: vae_core::candle_core::Error) -> Self {
        Self::Core(e.into())
    }
}

pub type Result<T> = std::result::Result<T, RunError>;
