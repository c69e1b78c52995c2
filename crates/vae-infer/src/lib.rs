//! vae-infer: using a trained VAE. Every command of the `vae-infer` binary is a function here.
//!
//! - [`model`]: loading a run (config.json + safetensors), batching data for a model.
//! - [`sample`]: generation from the prior.
//! - [`eval`]: the negative ELBO of a dataset.
//! - [`image`]: PNG grids.
//! - [`latent`]: encoding a dataset to posterior means and log-variances; CSV, NPY, safetensors.
//! - [`reconstruct`], [`walk`]: reconstructions, interpolations, traversals, the manifold.
//! - [`cluster`], [`classify`], [`metrics`]: k-means, k-NN, logistic regression and their scores.
//! - [`pca`], [`plot`]: 2-D views of the latent space and training curves as PNG charts.
//! - [`report`]: one self-contained HTML page with all of the above.
//! - [`commands`]: the analysis commands of the binary, one function each.

pub mod classify;
pub mod cli;
pub mod cluster;
pub mod commands;
mod error;
pub mod eval;
pub mod image;
pub mod latent;
pub mod metrics;
pub mod model;
pub mod pca;
pub mod plot;
pub mod reconstruct;
pub mod report;
pub mod sample;
pub mod walk;

pub use error::{InferError, Result};
