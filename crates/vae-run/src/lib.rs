//! vae-run: what training and inference share, below both binaries.
//!
//! - [`run_dir`]: the files of a run directory ([`RunDir`]), written by vae-train, read by
//!   vae-infer.
//! - [`batch`]: examples of a [`vae_data::Dataset`] as tensors, with one-hot labels.
//! - [`eval`]: the negative ELBO and the importance-sampled log-likelihood of a dataset.
//! - [`sample`]: codes from the prior (or an aggregate posterior) decoded to pictures.
//! - [`image`]: PNG grids.
//! - [`flags`]: the command-line flags both binaries take (device, threads, seed).

pub mod batch;
mod error;
pub mod eval;
pub mod flags;
pub mod image;
pub mod run_dir;
pub mod sample;

pub use batch::{batch, one_hot};
pub use error::{Result, RunError};
pub use run_dir::RunDir;
