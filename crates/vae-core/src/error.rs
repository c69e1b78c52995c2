//! The error type of vae-core.

use std::path::PathBuf;

/// Everything that can go wrong in vae-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The requested device is unknown or not compiled in.
    #[error("{0}")]
    Device(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weights file is malformed or does not fit the model.
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Weights {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// The result type of vae-core.
pub type Result<T> = std::result::Result<T, Error>;
