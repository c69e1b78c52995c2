//! The error type of vae-infer.

use std::path::PathBuf;

/// Everything that can go wrong while using a trained model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Core(#[from] vae_core::Error),
    #[error(transparent)]
    Data(#[from] vae_data::DataError),
    #[error(transparent)]
    Run(#[from] vae_run::RunError),
    /// A flag's value is refused; the message names the flag.
    #[error("{0}")]
    Flag(String),
    /// The model or its data cannot do what was asked (no labels, not images, …).
    #[error("{0}")]
    Unsupported(String),
    /// Values handed to an analysis are malformed (non-finite latents, sizes that disagree).
    #[error("{0}")]
    Input(String),
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// Writing latents as safetensors failed.
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("{0}")]
    Plot(String),
    /// Writing a report as JSON failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<vae_core::candle_core::Error> for InferError {
    fn from(e: vae_core::candle_core::Error) -> Self {
        Self::Core(e.into())
    }
}

pub type Result<T> = std::result::Result<T, InferError>;
