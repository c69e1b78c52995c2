//! What data a run uses, as saved in the run's `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vae_core::Rng;

use crate::dataset::{Splits, Stream};
use crate::error::{DataError, Result};
use crate::images::{load_image_dir, ImageOptions};
use crate::resolve::{resolve_with, ResolveOptions, Resolved};
use crate::tabular::{read_csv, read_npy, LabelColumn, Normalize};

/// Whether pixel intensities are turned into 0/1 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Binarize {
    /// Grey levels in [0, 1] are used as they are.
    #[default]
    None,
    /// Each value is drawn once as Bernoulli(x) with a fixed seed (the same 0/1 data every epoch).
    Static,
    /// Each value is drawn as Bernoulli(x) anew every time it is used (Burda et al.).
    Dynamic,
}

impl std::str::FromStr for Binarize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "static" => Ok(Self::Static),
            "dynamic" => Ok(Self::Dynamic),
            _ => Err(format!(
                "unknown binarisation `{s}` (expected none, static or dynamic)"
            )),
        }
    }
}

impl Binarize {
    /// Replaces each value v of `batch` by 1 with probability v, else 0.
    pub fn sample(batch: &mut [f32], rng: &mut Rng) {
        for v in batch {
            *v = if rng.uniform_f32() < *v { 1.0 } else { 0.0 };
        }
    }

    /// The static binarisation of example `index`: a generator derived from the index alone, so
    /// every example always gets the same bits.
    pub fn sample_static(batch_row: &mut [f32], index: usize) {
        Self::sample(batch_row, &mut Rng::stream(0x0057_471c, index as u64));
    }
}

/// The fraction of examples held out for validation when a dataset has no test split and
/// `--val-fraction` is not given.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

/// The data of a run. Every field but `dataset` has a serde default, so configurations written
/// before a field existed still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// A dataset name (`fashion-mnist`, `mnist`, `kmnist`, `cifar10`, `sample`), or the kind of
    /// source given by one of the fields below (`images`, `csv`, `npy`).
    pub dataset: String,
    /// Where the dataset's files are, if given explicitly.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub binarize: Binarize,
    /// A folder of PNG/JPEG pictures (see [`crate::images`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// Side the pictures of `images` are resized to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// 1 (grey) or 3 (RGB) for `images`; detected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// A CSV file, one example a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,
    /// An NPY file of a 2-D array, one example a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npy: Option<PathBuf>,
    /// The label column of `csv` or `npy`: a header name or a 0-based index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// How the columns of `csv` or `npy` are scaled.
    #[serde(default)]
    pub normalize: Normalize,
    /// Fraction of the training examples held out as the validation split (in place of the
    /// dataset's test split). Datasets without a test split use [`DEFAULT_VAL_FRACTION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// Seed of the validation split.
    #[serde(default)]
    pub split_seed: u64,
    /// Whether large raw IDX files are memory-mapped.
    #[serde(default)]
    pub stream: Stream,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "fashion-mnist".into(),
            data_dir: None,
            binarize: Binarize::None,
            images: None,
            image_size: None,
            channels: None,
            csv: None,
            npy: None,
            label_column: None,
            normalize: Normalize::Unit,
            val_fraction: None,
            split_seed: 0,
            stream: Stream::Auto,
        }
    }
}

/// Where the examples of a [`DataConfig`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind<'a> {
    Named(&'a str),
    Images(&'a std::path::Path),
    Csv(&'a std::path::Path),
    Npy(&'a std::path::Path),
}

impl DataConfig {
    /// Checks that the settings agree with each other; the message names the flags.
    pub fn validate(&self) -> Result<SourceKind<'_>> {
        let bad = |m: String| Err(DataError::Config(m));
        let given: Vec<(&str, SourceKind)> = [
            self.images
                .as_deref()
                .map(|p| ("--images", SourceKind::Images(p))),
            self.csv.as_deref().map(|p| ("--csv", SourceKind::Csv(p))),
            self.npy.as_deref().map(|p| ("--npy", SourceKind::Npy(p))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let kind = match given[..] {
            [] => SourceKind::Named(&self.dataset),
            [(flag, kind)] => {
                let own = &flag[2..];
                if self.dataset != own {
                    return bad(format!(
                        "--dataset {} cannot be combined with {flag}",
                        self.dataset
                    ));
                }
                if self.data_dir.is_some() {
                    return bad(format!("--data-dir cannot be combined with {flag}"));
                }
                kind
            }
            _ => {
                let flags: Vec<&str> = given.iter().map(|(f, _)| *f).collect();
                return bad(format!("give only one of {}", flags.join(", ")));
            }
        };
        let images = matches!(kind, SourceKind::Images(_));
        let tabular = matches!(kind, SourceKind::Csv(_) | SourceKind::Npy(_));
        if self.image_size.is_some() && !images {
            return bad("--image-size applies to --images only".into());
        }
        if self.channels.is_some() && !images {
            return bad("--channels applies to --images only".into());
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return bad(format!("--channels must be 1 (grey) or 3 (RGB), got {c}"));
            }
        }
        if let Some(s) = self.image_size {
            if s == 0 || s > crate::images::MAX_IMAGE_SIZE {
                return bad(format!(
                    "--image-size must be between 1 and {}, got {s}",
                    crate::images::MAX_IMAGE_SIZE
                ));
            }
        }
        if self.label_column.is_some() && !tabular {
            return bad("--label-column applies to --csv and --npy only".into());
        }
        if let Some(f) = self.val_fraction {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!(
                    "--val-fraction must be between 0 and 1 (exclusive), got {f}"
                ));
            }
        }
        Ok(kind)
    }

    /// Finds and loads the data: resolves the source, applies static binarisation, then holds
    /// out the validation split (`val_fraction`, or [`DEFAULT_VAL_FRACTION`] of a dataset
    /// without a test split).
    pub fn load(&self) -> Result<Resolved> {
        self.load_with(true)
    }

    /// [`DataConfig::load`], with or without trying the Hugging Face hub.
    pub fn load_with(&self, hub: bool) -> Result<Resolved> {
        let kind = self.validate()?;
        let label_column = self.label_column.as_deref().map(LabelColumn::parse);
        let (mut train, test, source, mut notes) = match kind {
            SourceKind::Named(name) => {
                let r = resolve_with(
                    name,
                    self.data_dir.as_deref(),
                    ResolveOptions {
                        stream: self.stream,
                        hub,
                    },
                )?;
                let notes = r.note.into_iter().collect::<Vec<_>>();
                (r.splits.train, Some(r.splits.test), r.source, notes)
            }
            SourceKind::Images(dir) => {
                let f = load_image_dir(
                    dir,
                    ImageOptions {
                        size: self.image_size,
                        channels: self.channels,
                    },
                )?;
                (f.train, f.test, dir.display().to_string(), Vec::new())
            }
            SourceKind::Csv(path) => {
                let t = read_csv(path, label_column.as_ref())?;
                (
                    t.into_dataset(self.normalize)?,
                    None,
                    path.display().to_string(),
                    Vec::new(),
                )
            }
            SourceKind::Npy(path) => {
                let t = read_npy(path, label_column.as_ref())?;
                (
                    t.into_dataset(self.normalize)?,
                    None,
                    path.display().to_string(),
                    Vec::new(),
                )
            }
        };
        if train.is_empty() {
            return Err(DataError::Config(format!(
                "{source}: the training split is empty"
            )));
        }
        let mut test = test;
        if self.binarize == Binarize::Static {
            train.binarize_static();
            if let Some(t) = &mut test {
                t.binarize_static();
            }
        }
        let splits = match (test, self.val_fraction) {
            (Some(test), None) => Splits { train, test },
            (test, fraction) => {
                let f = fraction.unwrap_or(DEFAULT_VAL_FRACTION);
                let (train, val) = train
                    .split(f, self.split_seed)
                    .map_err(|e| DataError::Config(format!("{source}: {e}")))?;
                notes.push(format!(
                    "validation split: {} of the {} training examples held out ({:.0}%{})",
                    val.len(),
                    train.len() + val.len(),
                    f * 100.0,
                    match (test.is_some(), fraction.is_some()) {
                        (true, _) => ", --val-fraction, in place of the test split",
                        (false, true) => ", --val-fraction",
                        (false, false) => ", the default for data without a test split",
                    }
                ));
                Splits { train, test: val }
            }
        };
        Ok(Resolved {
            splits,
            source,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }
}
