//! What data a run uses, as saved in the run's `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vae_core::Rng;

use crate::dataset::{Splits, Stream};
use crate::error::{DataError, Result};
use crate::idx_set::load_idx_set;
use crate::images::{load_image_dir, ImageOptions};
use crate::resolve::{resolve_with, ResolveOptions, Resolved};
use crate::tabular::{read_csv, read_npy, LabelColumn, Normalize};

/// Whether pixel intensities are turned into 0/1 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
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

/// Uniform dequantization of 8-bit values (the inputs of a density on [0, 1] scored as a bound
/// on the 8-bit data): each v/255 becomes (v + u)/256 with u ~ U[0, 1) drawn from `rng`.
pub fn dequantize(values: &mut [f32], rng: &mut Rng) {
    for x in values {
        let v = (*x * 255.0).round();
        *x = (v + rng.uniform_f32()) * (1.0 / 256.0);
    }
}

/// [`dequantize`] of example `index` (a row of `values`) with its own generator from `seed`:
/// the noise of an example does not depend on the batch it is in.
pub fn dequantize_example(values: &mut [f32], seed: u64, index: usize) {
    dequantize(values, &mut Rng::stream(seed, index as u64));
}

/// The `dataset` of a [`Source::Idx`]: the IDX files of `data_dir`.
pub const IDX: &str = "idx";

/// The fraction of examples held out for validation when a dataset has no test split and
/// `--val-fraction` is not given.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

/// Where the examples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A dataset known by name (see [`crate::named`]), in `data_dir` when given.
    Named {
        name: String,
        data_dir: Option<PathBuf>,
    },
    /// A folder of PNG/JPEG pictures (see [`crate::images`]), resized to `size` when given, with
    /// 1 or 3 `channels` (detected when absent).
    Images {
        dir: PathBuf,
        size: Option<usize>,
        channels: Option<usize>,
    },
    /// A folder of IDX files of 8-bit images of any size, labels and test split optional
    /// (`--dataset idx --data-dir DIR`; see [`crate::idx_set`]).
    Idx { dir: PathBuf },
    /// A table, one example a row: a CSV file or an NPY file holding a 2-D array.
    Table {
        format: TableFormat,
        path: PathBuf,
        /// The label column: a header name or a 0-based index.
        label_column: Option<String>,
        normalize: Normalize,
    },
}

/// The file format of a [`Source::Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Npy,
}

/// The data of a run: where the examples come from and how they are prepared.
///
/// `config.json` records it in a flat form ([`FlatDataConfig`]: `dataset` names the dataset or
/// the kind of source, with the source's own fields beside it), the same for every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FlatDataConfig", into = "FlatDataConfig")]
pub struct DataConfig {
    pub source: Source,
    pub binarize: Binarize,
    /// Uniform dequantization of 8-bit values during training: each v/255 becomes
    /// (v + u)/256 with fresh u ~ U[0, 1), so that a density on [0, 1] is trained for the
    /// bound on the 8-bit data it is scored with.
    pub dequantize: bool,
    /// Fraction of the training examples held out as the validation split (in place of the
    /// dataset's test split). Datasets without a test split use [`DEFAULT_VAL_FRACTION`].
    pub val_fraction: Option<f64>,
    /// Seed of the validation split.
    pub split_seed: u64,
    /// Whether large raw IDX files are memory-mapped.
    pub stream: Stream,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: Source::Named {
                name: crate::named::DEFAULT.into(),
                data_dir: None,
            },
            binarize: Binarize::None,
            dequantize: false,
            val_fraction: None,
            split_seed: 0,
            stream: Stream::Auto,
        }
    }
}

/// The form of [`DataConfig`] in `config.json` and on the command line: every field but
/// `dataset` has a serde default, so configurations written before a field existed still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatDataConfig {
    /// A dataset name (`fashion-mnist`, `mnist`, `kmnist`, `cifar10`, `sample`), `idx` (the IDX
    /// files in `data_dir`), or the kind of source given by one of the fields below (`images`,
    /// `csv`, `npy`).
    pub dataset: String,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub binarize: Binarize,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dequantize: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npy: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    #[serde(default)]
    pub normalize: Normalize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    #[serde(default)]
    pub split_seed: u64,
    #[serde(default)]
    pub stream: Stream,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl From<DataConfig> for FlatDataConfig {
    fn from(c: DataConfig) -> Self {
        let mut f = FlatDataConfig {
            dataset: String::new(),
            data_dir: None,
            binarize: c.binarize,
            dequantize: c.dequantize,
            images: None,
            image_size: None,
            channels: None,
            csv: None,
            npy: None,
            label_column: None,
            normalize: Normalize::default(),
            val_fraction: c.val_fraction,
            split_seed: c.split_seed,
            stream: c.stream,
        };
        match c.source {
            Source::Named { name, data_dir } => {
                f.dataset = name;
                f.data_dir = data_dir;
            }
            Source::Idx { dir } => {
                f.dataset = IDX.into();
                f.data_dir = Some(dir);
            }
            Source::Images {
                dir,
                size,
                channels,
            } => {
                f.dataset = "images".into();
                f.images = Some(dir);
                f.image_size = size;
                f.channels = channels;
            }
            Source::Table {
                format,
                path,
                label_column,
                normalize,
            } => {
                f.label_column = label_column;
                f.normalize = normalize;
                match format {
                    TableFormat::Csv => {
                        f.dataset = "csv".into();
                        f.csv = Some(path);
                    }
                    TableFormat::Npy => {
                        f.dataset = "npy".into();
                        f.npy = Some(path);
                    }
                }
            }
        }
        f
    }
}

impl TryFrom<FlatDataConfig> for DataConfig {
    type Error = DataError;

    /// Checks that the settings agree with each other; the message names the flags.
    fn try_from(f: FlatDataConfig) -> Result<Self> {
        let bad = |m: String| Err(DataError::Config(m));
        let given: Vec<&str> = [
            (f.images.is_some(), "--images"),
            (f.csv.is_some(), "--csv"),
            (f.npy.is_some(), "--npy"),
        ]
        .into_iter()
        .filter_map(|(g, flag)| g.then_some(flag))
        .collect();
        if given.len() > 1 {
            return bad(format!("give only one of {}", given.join(", ")));
        }
        if let Some(flag) = given.first() {
            if f.dataset != flag[2..] {
                return bad(format!(
                    "--dataset {} cannot be combined with {flag}",
                    f.dataset
                ));
            }
            if f.data_dir.is_some() {
                return bad(format!("--data-dir cannot be combined with {flag}"));
            }
        }
        let images = f.images.is_some();
        let tabular = f.csv.is_some() || f.npy.is_some();
        if f.image_size.is_some() && !images {
            return bad("--image-size applies to --images only".into());
        }
        if f.channels.is_some() && !images {
            return bad("--channels applies to --images only".into());
        }
        if let Some(c) = f.channels {
            if c != 1 && c != 3 {
                return bad(format!("--channels must be 1 (grey) or 3 (RGB), got {c}"));
            }
        }
        if let Some(s) = f.image_size {
            if s == 0 || s > crate::images::MAX_IMAGE_SIZE {
                return bad(format!(
                    "--image-size must be between 1 and {}, got {s}",
                    crate::images::MAX_IMAGE_SIZE
                ));
            }
        }
        if f.label_column.is_some() && !tabular {
            return bad("--label-column applies to --csv and --npy only".into());
        }
        if f.dequantize && f.binarize != Binarize::None {
            return bad("--dequantize cannot be combined with --binarize".into());
        }
        if let Some(v) = f.val_fraction {
            if !(v > 0.0 && v < 1.0) {
                return bad(format!(
                    "--val-fraction must be between 0 and 1 (exclusive), got {v}"
                ));
            }
        }
        let table = |format, path| Source::Table {
            format,
            path,
            label_column: f.label_column.clone(),
            normalize: f.normalize,
        };
        let source = match (f.images.clone(), f.csv.clone(), f.npy.clone()) {
            (Some(dir), _, _) => Source::Images {
                dir,
                size: f.image_size,
                channels: f.channels,
            },
            (_, Some(p), _) => table(TableFormat::Csv, p),
            (_, _, Some(p)) => table(TableFormat::Npy, p),
            _ if f.dataset == IDX => Source::Idx {
                dir: f.data_dir.clone().ok_or_else(|| {
                    DataError::Config(
                        "--dataset idx reads the IDX files of a folder: give it with --data-dir"
                            .into(),
                    )
                })?,
            },
            _ => Source::Named {
                name: f.dataset.clone(),
                data_dir: f.data_dir.clone(),
            },
        };
        Ok(DataConfig {
            source,
            binarize: f.binarize,
            dequantize: f.dequantize,
            val_fraction: f.val_fraction,
            split_seed: f.split_seed,
            stream: f.stream,
        })
    }
}

impl DataConfig {
    /// Checks the settings that do not depend on the source; the message names the flag.
    pub fn validate(&self) -> Result<()> {
        if let Some(v) = self.val_fraction {
            if !(v > 0.0 && v < 1.0) {
                return Err(DataError::Config(format!(
                    "--val-fraction must be between 0 and 1 (exclusive), got {v}"
                )));
            }
        }
        if self.dequantize && self.binarize != Binarize::None {
            return Err(DataError::Config(
                "--dequantize cannot be combined with --binarize".into(),
            ));
        }
        Ok(())
    }

    /// The name recorded as `dataset`: the dataset's name, or `images`, `csv`, `npy`.
    pub fn dataset(&self) -> &str {
        match &self.source {
            Source::Named { name, .. } => name,
            Source::Idx { .. } => IDX,
            Source::Images { .. } => "images",
            Source::Table {
                format: TableFormat::Csv,
                ..
            } => "csv",
            Source::Table {
                format: TableFormat::Npy,
                ..
            } => "npy",
        }
    }

    /// Finds and loads the data: resolves the source, applies static binarisation, then holds
    /// out the validation split (`val_fraction`, or [`DEFAULT_VAL_FRACTION`] of a dataset
    /// without a test split).
    pub fn load(&self) -> Result<Resolved> {
        self.load_with(true)
    }

    /// [`DataConfig::load`], with or without trying the Hugging Face hub.
    pub fn load_with(&self, hub: bool) -> Result<Resolved> {
        self.validate()?;
        let (mut train, test, source, mut notes) = match &self.source {
            Source::Named { name, data_dir } => {
                let r = resolve_with(
                    name,
                    data_dir.as_deref(),
                    ResolveOptions {
                        stream: self.stream,
                        hub,
                    },
                )?;
                let notes = r.note.into_iter().collect::<Vec<_>>();
                (r.splits.train, Some(r.splits.test), r.source, notes)
            }
            Source::Idx { dir } => {
                let (train, test) = load_idx_set(dir, self.stream)?;
                (train, test, dir.display().to_string(), Vec::new())
            }
            Source::Images {
                dir,
                size,
                channels,
            } => {
                let f = load_image_dir(
                    dir,
                    ImageOptions {
                        size: *size,
                        channels: *channels,
                    },
                )?;
                (f.train, f.test, dir.display().to_string(), Vec::new())
            }
            Source::Table {
                format,
                path,
                label_column,
                normalize,
            } => {
                let label_column = label_column.as_deref().map(LabelColumn::parse);
                let t = match format {
                    TableFormat::Csv => read_csv(path, label_column.as_ref())?,
                    TableFormat::Npy => read_npy(path, label_column.as_ref())?,
                };
                (
                    t.into_dataset(*normalize)?,
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
