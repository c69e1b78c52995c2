//! vae-data: the datasets of vae, read with every check up front, and batching.
//!
//! - [`idx`]: the IDX reader (gzip or raw), and memory-mapping of raw IDX files.
//! - [`idx_set`]: a folder of IDX files of 8-bit images of any size (`--dataset idx`), read and
//!   written.
//! - [`cifar`]: CIFAR-10 binary batches.
//! - [`images`]: folders of PNG/JPEG pictures.
//! - [`tabular`]: CSV and NPY files, scaled per column.
//! - [`hub`]: named datasets from the Hugging Face hub (feature `hub`).
//! - [`dataset`]: [`Dataset`] (compact or mapped storage, f32 batches), train/test [`Splits`],
//!   epoch order.
//! - [`named`]: the table of datasets known by name.
//! - [`resolve`]: finding a named dataset on disk, on the hub, or the embedded sample.
//! - [`config`]: [`DataConfig`], what a run's data is ([`Source`]), and [`DataConfig::load`].
//!
//! This crate never prints; it returns errors that name the file and the problem.
//!
//! Streaming benchmark: `cargo run --release -p vae-data --example stream_epoch -- 2` writes a
//! 2 GiB raw IDX file to a temporary directory, visits one shuffled epoch of it memory-mapped,
//! prints the peak resident set beside the file's size, and removes the file.

pub mod cifar;
pub mod config;
pub mod dataset;
mod error;
pub mod hub;
pub mod idx;
pub mod idx_set;
pub mod images;
pub mod named;
pub mod resolve;
pub mod tabular;

pub use config::{
    dequantize, dequantize_example, Binarize, DataConfig, FlatDataConfig, Source, TableFormat,
    DEFAULT_VAL_FRACTION,
};
pub use dataset::{epoch_order, Dataset, Mapped, Splits, Stream, Values};
pub use error::{DataError, Result};
pub use resolve::{resolve, resolve_with, ResolveOptions, Resolved};
pub use tabular::Normalize;
