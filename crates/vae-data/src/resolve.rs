//! Finding a named dataset: `--data-dir`, then `$VAE_DATA_DIR/<name>`, then
//! `/usr/share/datasets/<name>`, then (for the default dataset) the embedded sample.

use std::path::{Path, PathBuf};

use crate::dataset::{has_idx_set, load_idx_bytes, load_idx_dir, Splits};
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

fn install_hint(name: &str) -> String {
    match name {
        "fashion-mnist" => "get it with `apt-get install dataset-fashion-mnist` (Debian), or put the four IDX files (train-images-idx3-ubyte.gz, ...) in a directory and pass --data-dir DIR or set VAE_DATA_DIR".into(),
        _ => format!("put the dataset's files in a directory and pass --data-dir DIR, or in $VAE_DATA_DIR/{name}"),
    }
}

/// The candidate directories for a named dataset, in order.
pub fn candidates(name: &str, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = data_dir {
        dirs.push(d.to_path_buf());
    }
    if let Some(root) = std::env::var_os("VAE_DATA_DIR") {
        dirs.push(PathBuf::from(root).join(name));
    }
    dirs.push(Path::new("/usr/share/datasets").join(name));
    dirs
}

/// Finds and loads a named dataset. An explicit `data_dir` that does not hold the files is an
/// error (no silent fallback); otherwise the default dataset falls back to the embedded sample.
pub fn resolve(name: &str, data_dir: Option<&Path>) -> Result<Resolved> {
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
    if name == "cifar10" {
        return Err(DataError::Config(
            "--dataset cifar10 is not supported by this build yet".into(),
        ));
    }
    let num_classes = 10;
    if let Some(d) = data_dir {
        if !has_idx_set(d) {
            return Err(DataError::NotFound {
                name: name.into(),
                tried: vec![format!(
                    "--data-dir {}: missing one of the four IDX files",
                    d.display()
                )],
                hint: install_hint(name),
            });
        }
        return Ok(Resolved {
            splits: load_idx_dir(d, num_classes)?,
            source: d.display().to_string(),
            note: None,
        });
    }
    let mut tried = Vec::new();
    for dir in candidates(name, None) {
        if has_idx_set(&dir) {
            return Ok(Resolved {
                splits: load_idx_dir(&dir, num_classes)?,
                source: dir.display().to_string(),
                note: None,
            });
        }
        tried.push(format!("{} (not found)", dir.display()));
    }
    if name == "fashion-mnist" {
        return Ok(Resolved {
            splits: load_sample()?,
            source: SAMPLE_NAME.into(),
            note: Some(format!(
                "full Fashion-MNIST not found, training on the {SAMPLE_NAME}; for the full set, {}",
                install_hint(name)
            )),
        });
    }
    Err(DataError::NotFound {
        name: name.into(),
        tried,
        hint: install_hint(name),
    })
}
