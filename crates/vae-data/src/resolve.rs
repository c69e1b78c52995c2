//! Finding a named dataset: `--data-dir`, then `$VAE_DATA_DIR/<name>`, then
//! `/usr/share/datasets/<name>`, then the Hugging Face hub, then (for the default dataset) the
//! embedded sample.

use std::path::{Path, PathBuf};

use crate::cifar::{has_cifar_set, load_cifar_dir, missing_cifar_files};
use crate::dataset::{
    has_idx_set, load_idx_bytes, load_idx_dir_with, missing_idx_files, Splits, Stream,
};
use crate::error::{DataError, Result};
use crate::named::{self, Format};

/// The embedded sample: the first 6,000 training and 1,000 test images of Fashion-MNIST
/// (`data/fashion-mnist-sample`, written by `cargo xtask sample-data`).
pub mod sample {
    pub const TRAIN_IMAGES: &[u8] =
        include_bytes!("../../../data/fashion-mnist-sample/train-images-idx3-ubyte.gz");
    pub const TRAIN_LABELS: &[u8] =
        include_bytes!("../../../data/fashion-mnist-sample/train-labels-idx1-ubyte.gz");
    pub const TEST_IMAGES: &[u8] =
        include_bytes!("../../../data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz");
    pub const TEST_LABELS: &[u8] =
        include_bytes!("../../../data/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz");
}

/// A dataset found and loaded, with where it came from.
#[derive(Debug)]
pub struct Resolved {
    pub splits: Splits,
    /// A short description of the source (a directory or "embedded sample").
    pub source: String,
    /// Something the user should be told (for example that the sample stands in for the full set).
    pub note: Option<String>,
}

const SAMPLE_NAME: &str =
    "embedded sample (first 6,000 train / 1,000 test images of Fashion-MNIST)";

/// Loads the embedded sample.
pub fn load_sample() -> Result<Splits> {
    load_idx_bytes(
        [
            (
                "<embedded>/train-images-idx3-ubyte.gz",
                sample::TRAIN_IMAGES,
            ),
            (
                "<embedded>/train-labels-idx1-ubyte.gz",
                sample::TRAIN_LABELS,
            ),
            ("<embedded>/t10k-images-idx3-ubyte.gz", sample::TEST_IMAGES),
            ("<embedded>/t10k-labels-idx1-ubyte.gz", sample::TEST_LABELS),
        ],
        10,
    )
}

/// The candidate directories for a named dataset, in order.
pub fn candidates(name: &str, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = data_dir {
        dirs.push(d.to_path_buf());
    }
    if let Some(root) = std::env::var_os("VAE_DATA_DIR").filter(|r| !r.is_empty()) {
        dirs.push(PathBuf::from(root).join(name));
    }
    dirs.push(Path::new("/usr/share/datasets").join(name));
    dirs
}

/// How a named dataset is looked for and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Whether image files of IDX datasets are memory-mapped.
    pub stream: Stream,
    /// Whether the Hugging Face hub is tried when no directory holds the files.
    pub hub: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        Self {
            stream: Stream::Auto,
            hub: true,
        }
    }
}

/// The data files that `dir` lacks for a dataset of `format`, or `None` when it holds them all.
fn missing(format: Format, dir: &Path) -> Option<String> {
    let m = match format {
        Format::Cifar10 => missing_cifar_files(dir),
        _ => missing_idx_files(dir),
    };
    (!m.is_empty()).then(|| m.join(", "))
}

/// Reads a dataset of `format` with `classes` classes in `dir`.
fn load_dir(format: Format, classes: usize, dir: &Path, stream: Stream) -> Result<Splits> {
    match format {
        Format::Cifar10 => load_cifar_dir(dir),
        _ => load_idx_dir_with(dir, classes, stream),
    }
}

/// Finds and loads a named dataset (see [`resolve_with`]), streaming large raw files and trying
/// the hub.
pub fn resolve(name: &str, data_dir: Option<&Path>) -> Result<Resolved> {
    resolve_with(name, data_dir, ResolveOptions::default())
}

/// Finds and loads a named dataset: `data_dir` (an explicit directory that does not hold the
/// files is an error, with no fallback), then `$VAE_DATA_DIR/<name>`, then
/// `/usr/share/datasets/<name>`, then the Hugging Face hub; the default dataset then falls back
/// to the embedded sample. Nothing found: [`DataError::NotFound`] lists every place tried.
pub fn resolve_with(name: &str, data_dir: Option<&Path>, opts: ResolveOptions) -> Result<Resolved> {
    let Some(ds) = named::find(name) else {
        return Err(DataError::Config(format!(
            "--dataset {name}: unknown dataset (expected one of {})",
            named::names().join(", ")
        )));
    };
    if ds.format == Format::Embedded {
        return Ok(Resolved {
            splits: load_sample()?,
            source: SAMPLE_NAME.into(),
            note: None,
        });
    }
    if let Some(d) = data_dir {
        // An explicit directory may hold either format: IDX files, or CIFAR-10 batches.
        let format = if has_idx_set(d) {
            Format::Idx
        } else if has_cifar_set(d) {
            Format::Cifar10
        } else {
            let what = if !d.is_dir() {
                "no such directory".to_string()
            } else {
                format!("missing {}", missing(ds.format, d).unwrap_or_default())
            };
            return Err(DataError::NotFound {
                name: name.into(),
                tried: vec![format!("--data-dir {}: {what}", d.display())],
                hint: ds.install_hint(),
            });
        };
        return Ok(Resolved {
            splits: load_dir(format, ds.classes, d, opts.stream)?,
            source: d.display().to_string(),
            note: None,
        });
    }
    let mut tried = Vec::new();
    if std::env::var_os("VAE_DATA_DIR").is_none_or(|r| r.is_empty()) {
        tried.push(format!("$VAE_DATA_DIR/{name} (VAE_DATA_DIR is not set)"));
    }
    for dir in candidates(name, None) {
        if !dir.is_dir() {
            tried.push(format!("{} (no such directory)", dir.display()));
            continue;
        }
        match missing(ds.format, &dir) {
            None => {
                return Ok(Resolved {
                    splits: load_dir(ds.format, ds.classes, &dir, opts.stream)?,
                    source: dir.display().to_string(),
                    note: None,
                })
            }
            Some(m) => tried.push(format!("{} (missing {m})", dir.display())),
        }
    }
    if opts.hub {
        match crate::hub::load(name) {
            Ok(splits) => {
                return Ok(Resolved {
                    splits,
                    source: format!("Hugging Face hub ({})", ds.hub_repo.unwrap_or(name)),
                    note: None,
                })
            }
            Err(why) => tried.push(format!("Hugging Face hub: {why}")),
        }
    } else {
        tried.push("Hugging Face hub: not tried (disabled)".into());
    }
    if let Some(fallback) = ds.fallback {
        let mut r = resolve_with(fallback, None, opts)?;
        r.note = Some(format!(
            "{name} not found, training on the {}; for the full set, {}",
            r.source,
            ds.install_hint().trim_start_matches("to provide it: ")
        ));
        return Ok(r);
    }
    Err(DataError::NotFound {
        name: name.into(),
        tried,
        hint: ds.install_hint(),
    })
}
