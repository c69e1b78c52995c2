//! Finding a named dataset: `--data-dir`, then `$VAE_DATA_DIR/<name>`, then
//! `/usr/share/datasets/<name>`, then the Hugging Face hub, then (for the default dataset) the
//! embedded sample.

use std::path::{Path, PathBuf};

use crate::cifar::{has_cifar_set, load_cifar_dir, missing_cifar_files};
use crate::dataset::{
    has_idx_set, load_idx_bytes, load_idx_dir_with, missing_idx_files, Splits, Stream,
};
use crate::error::{DataError, Result};

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

/// The datasets known by name.
pub const NAMES: [&str; 5] = ["fashion-mnist", "mnist", "kmnist", "cifar10", "sample"];

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

/// How to provide the files of a named dataset.
fn install_hint(name: &str) -> String {
    let files = if name == "cifar10" {
        "unpack cifar-10-binary.tar.gz (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) into a directory".to_string()
    } else {
        "put the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or .gz) in a directory".to_string()
    };
    let apt = if name == "fashion-mnist" {
        "install it with `apt-get install dataset-fashion-mnist` (Debian), or "
    } else {
        ""
    };
    let hub = if cfg!(feature = "hub") && crate::hub::repo_id(name).is_some() {
        "; with a network connection it is downloaded from the Hugging Face hub"
    } else {
        ""
    };
    format!(
        "to provide it: {apt}{files} and pass --data-dir DIR, or make it $VAE_DATA_DIR/{name}{hub}"
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

/// The data files that `dir` lacks for dataset `name`, or `None` when it holds them all.
fn missing(name: &str, dir: &Path) -> Option<String> {
    let m = if name == "cifar10" {
        missing_cifar_files(dir)
    } else {
        missing_idx_files(dir)
    };
    (!m.is_empty()).then(|| m.join(", "))
}

/// Reads the dataset in `dir`: CIFAR-10 batches for `cifar10`, IDX files otherwise.
fn load_dir(name: &str, dir: &Path, stream: Stream) -> Result<Splits> {
    if name == "cifar10" {
        load_cifar_dir(dir)
    } else {
        load_idx_dir_with(dir, 10, stream)
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
    if !NAMES.contains(&name) {
        return Err(DataError::Config(format!(
            "--dataset {name}: unknown dataset (expected one of {})",
            NAMES.join(", ")
        )));
    }
    if name == "sample" {
        return Ok(Resolved {
            splits: load_sample()?,
            source: SAMPLE_NAME.into(),
            note: None,
        });
    }
    if let Some(d) = data_dir {
        // An explicit directory may hold either format: IDX files, or CIFAR-10 batches.
        let kind = if has_idx_set(d) {
            "mnist"
        } else if has_cifar_set(d) {
            "cifar10"
        } else {
            let what = if !d.is_dir() {
                "no such directory".to_string()
            } else {
                format!("missing {}", missing(name, d).unwrap_or_default())
            };
            return Err(DataError::NotFound {
                name: name.into(),
                tried: vec![format!("--data-dir {}: {what}", d.display())],
                hint: install_hint(name),
            });
        };
        return Ok(Resolved {
            splits: load_dir(kind, d, opts.stream)?,
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
        match missing(name, &dir) {
            None => {
                return Ok(Resolved {
                    splits: load_dir(name, &dir, opts.stream)?,
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
                    source: format!(
                        "Hugging Face hub ({})",
                        crate::hub::repo_id(name).unwrap_or(name)
                    ),
                    note: None,
                })
            }
            Err(why) => tried.push(format!("Hugging Face hub: {why}")),
        }
    } else {
        tried.push("Hugging Face hub: not tried (disabled)".into());
    }
    if name == "fashion-mnist" {
        return Ok(Resolved {
            splits: load_sample()?,
            source: SAMPLE_NAME.into(),
            note: Some(format!(
                "full Fashion-MNIST not found, training on the {SAMPLE_NAME}; for the full set, {}",
                install_hint(name).trim_start_matches("to provide it: ")
            )),
        });
    }
    Err(DataError::NotFound {
        name: name.into(),
        tried,
        hint: install_hint(name),
    })
}
