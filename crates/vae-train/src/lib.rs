//! vae-train: the training loop of vae, its optimizer and its run directory.
//!
//! - [`config`]: [`RunConfig`] (model, data, training), saved as `config.json`.
//! - [`cli`], [`data_args`], [`arch_args`]: the command line and the `--config` TOML file.
//! - [`launch`]: from the flags to a run ready to start ([`launch::Launch`]).
//! - [`optim`]: Adam(W) with saveable state; the reduction of the shards' gradients.
//! - [`step`]: one training step ([`step::Trainer`]): shard passes, reduction, update.
//! - [`train`]: the loop ([`train::run`]), the [`train::Observer`] hooks.
//! - [`metrics`]: the lines of `metrics.jsonl`.
//! - [`checkpoint`]: atomic checkpoints and exact resume.
//! - [`reduce`]: the reduction phase of a step (in one process, or a chain across ranks);
//!   [`replicate`]: what rank 0 sends the others; `mpi` (feature `mpi`): the ranks of an
//!   MPI job.

pub mod arch_args;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data_args;
mod error;
pub mod launch;
pub mod metrics;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod optim;
pub mod reduce;
pub mod replicate;
pub mod step;
pub mod train;

pub use config::{RunConfig, TrainConfig};
pub use error::{Result, TrainError};
