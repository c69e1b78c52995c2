//! The error type of vae-infer.

use std::path::PathBuf;

/// Everything that can go wrong while using a trained model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Core(#[from] vae_core::Error),
    #[error(transparent)]
    Data(#[from] vae_data::DataError),
    #[error("{0}")]
    Usage(String),
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("{0}")]
    Plot(String),
}

impl From<vae_core::candle_core::Error> for InferError {
    fn from(e: vae_core::candle_core::Error) -> Self {
        Self::Core(e.into())
    }
}

pub type Result<T> = std::result::Result<T, InferError>;
