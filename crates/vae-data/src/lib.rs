//! vae-data: the datasets of vae, read with every check up front, and batching.
//!
//! - [`idx`]: the IDX reader (gzip or raw).
//! - [`dataset`]: [`Dataset`] (compact storage, f32 batches), train/test [`Splits`], epoch order.
//! - [`resolve`]: finding a named dataset on disk, or the embedded sample.
//!
//! This crate never prints; it returns errors that name the file and the problem.

pub mod dataset;
mod error;
pub mod idx;
pub mod resolve;

pub use dataset::{epoch_order, Dataset, Splits, Values};
pub use error::{DataError, Result};
pub use resolve::{resolve, Resolved};
pub mod config;
pub use config::{Binarize, DataConfig};
