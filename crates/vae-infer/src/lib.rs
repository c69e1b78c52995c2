//! vae-infer: using a trained VAE. Every command of the `vae-infer` binary is a function here.
//!
//! - [`model`]: loading a run (config.json + safetensors), batching data for a model.
//! - [`sample`]: generation from the prior.
//! - [`eval`]: the negative ELBO of a dataset.
//! - [`image`]: PNG grids.

pub mod cli;
mod error;
pub mod eval;
pub mod image;
pub mod model;
pub mod sample;

pub use error::{InferError, Result};
