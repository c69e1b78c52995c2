//! vae-train: the training loop of vae, its optimizer and its run directory.
//!
//! - [`config`]: [`RunConfig`] (model, data, training), saved as `config.json`.
//! - [`optim`]: Adam(W) with saveable state and a fused CPU update.
//! - [`train`]: the loop ([`train::run`]), the metrics, the [`train::Observer`] hooks.
//! - [`checkpoint`]: atomic checkpoints and exact resume.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data_args;
mod error;
pub mod optim;
pub mod train;

pub use config::{RunConfig, TrainConfig};
pub use error::{Result, TrainError};
