//! vae-infer: using a trained VAE. Every command of the `vae-infer` binary is a library
//! function here.
//!
//! - [`commands`]: one file per command (its flags, its report, how it runs); [`cli`] parses
//!   and dispatches them.
//! - [`args`]: what the commands share: the model to load, the split, the latents of both
//!   splits, checks of common flags.
//! - [`model`]: loading a run (config.json + safetensors).
//! - [`latent`]: encoding a dataset to posterior means and log-variances; CSV, NPY, safetensors.
//! - [`reconstruct`], [`walk`]: reconstructions, interpolations, traversals, the manifold.
//! - [`analysis`]: k-means, k-NN, logistic regression, their scores, PCA.
//! - [`plot`]: charts as PNG; [`page`]: the self-contained HTML page of `report`.
//! - [`codec`]: the model as a bits-back coder's model (exact arithmetic) and the images
//!   `compress` reads and `decompress` writes back.
//!
//! Batching, evaluation, prior sampling and PNG grids are shared with training (`vae-run`).

pub mod analysis;
pub mod args;
pub mod cli;
pub mod codec;
pub mod commands;
mod error;
pub mod latent;
pub mod model;
pub mod page;
pub mod plot;
pub mod reconstruct;
pub mod walk;

pub use error::{InferError, Result};
