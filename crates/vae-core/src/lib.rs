//! vae-core: variational autoencoders on candle.
//!
//! - [`config`]: what a model is ([`ModelConfig`], presets), serialised to `config.json`.
//! - [`arch`]: the architectures (mlp, conv), each in its own file behind [`arch::Net`].
//! - [`model`]: the [`Vae`]: an architecture, a likelihood, the prior; initialisation.
//! - [`likelihood`]: the observation models p(x|z), each in its own file.
//! - [`objective`]: the ELBO and its variants, the IWAE bound, the log-likelihood estimate.
//! - [`dist`]: the Gaussian posterior and the prior; [`noise`]: the reparameterisation noise.
//! - [`ops`], [`fastmath`]: fused CPU kernels for the hot spots, each with its own backward.
//! - [`special`]: ln Γ, ψ and their differences in f64, for the beta-binomial likelihood.
//! - [`par`]: data parallelism over examples on the CPU.
//! - [`rng`]: the seeded host generator behind every random draw.
//! - [`weights`]: safetensors I/O, atomic and checked (the only file-system access here).
//! - [`device`]: `auto`, `cpu`, `cuda:N` or `metal`.

pub mod arch;
pub mod config;
pub mod device;
pub mod dist;
mod error;
pub mod fastmath;
pub mod likelihood;
pub mod model;
pub mod noise;
pub mod objective;
pub mod ops;
pub mod par;
pub mod rng;
pub mod special;
pub mod weights;

pub use arch::{Activation, Arch, Upsampling};
pub use config::{DataShape, ModelConfig, Preset};
pub use dist::DiagonalGaussian;
pub use error::{Error, Result};
pub use likelihood::{Density, Likelihood, LikelihoodKind, PixelCoding};
pub use model::Vae;
pub use noise::Noise;
pub use objective::{Objective, Terms};
pub use rng::Rng;

pub use candle_core;
pub use candle_nn;
