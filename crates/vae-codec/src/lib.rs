//! vae-codec: lossless compression of 8-bit images by bits-back coding with ANS (BB-ANS).
//!
//! - [`detmath`]: elementary functions whose bits do not depend on the CPU or the build.
//! - [`models`]: integer entropy models for constriction's stack coder; the latent bins.
//! - [`pixels`]: pixel models p(x|z) (Bernoulli, discretised logistic mixture, beta-binomial).
//! - [`bitsback`]: the bits-back building blocks (any number of latent groups).
//! - [`chunk`]: a chunk's stored stack and the warm-up plan of its first images.
//! - [`driver`]: compression of many images, in parallel chunks, with a model of any number
//!   of latent groups.
//! - [`format`]: the compressed file (header, checksums, original container) and its parser.
//! - [`classical`] (feature `classical`): gzip, bzip2, xz, PNG and WebP baselines.
//!
//! A model plugs in through [`driver::LatentModel`] (a top-down pass giving each group's prior
//! and posterior Gaussians and p(x|z) as [`pixels::PixelParams`]) or, with one latent group of
//! prior N(0, I), through [`driver::SingleLatentModel`] (q(z|x) per image and p(x|z)). For the stream to decode on another machine, the model's
//! own arithmetic must be deterministic too (`vae_core::ops::set_exact`).

pub mod bitsback;
pub mod chunk;
#[cfg(feature = "classical")]
pub mod classical;
pub mod detmath;
pub mod driver;
pub mod format;
pub mod io;
pub mod models;
pub mod pixels;

pub use driver::{
    decode, encode, Choose, Chunk, CodecParams, Encoded, ImageRate, Kept, LatentModel,
    SingleLatentModel,
};
pub use format::{Container, FormatError, Header, Padding, TiledFile};
pub use models::Gaussian;
pub use pixels::PixelParams;

/// Errors of the coder.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A model parameter or argument that cannot be coded.
    #[error("cannot code: {0}")]
    BadParameter(String),
    /// The compressed data does not decode consistently.
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),
    /// The model failed.
    #[error("model: {0}")]
    Model(String),
    /// A file format error.
    #[error(transparent)]
    Format(#[from] FormatError),
}

pub type Result<T, E = CodecError> = std::result::Result<T, E>;
