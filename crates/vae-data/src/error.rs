//! The error type of vae-data.

use std::path::PathBuf;

/// Everything that can go wrong while finding or reading data. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are malformed.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A named dataset was found nowhere.
    #[error("dataset `{name}` not found; tried:\n{}\n{hint}", tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n"))]
    NotFound {
        name: String,
        tried: Vec<String>,
        hint: String,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
}

impl DataError {
    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result type of vae-data.
pub type Result<T> = std::result::Result<T, DataError>;
