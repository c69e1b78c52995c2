//! In-memory datasets: examples kept compact (u8 pixels or f32 features) and converted to f32
//! one batch at a time.

use std::path::Path;

use vae_core::{DataShape, Rng};

use crate::error::{DataError, Result};
use crate::idx::{read_idx_bytes, read_idx_file, IdxArray};

/// The values of all examples, row-major, one example after another.
#[derive(Debug, Clone)]
pub enum Values {
    /// Pixels 0..=255, scaled to [0, 1] when batched.
    U8(Vec<u8>),
    /// Features already scaled.
    F32(Vec<f32>),
}

/// A labelled (or unlabelled) set of examples of one shape.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub shape: DataShape,
    values: Values,
    len: usize,
    /// One label per example, when the data has labels.
    pub labels: Option<Vec<u32>>,
    /// Number of classes the labels come from.
    pub num_classes: Option<usize>,
}

impl Dataset {
    /// A dataset from raw values; checks that lengths and labels agree.
    pub fn new(
        shape: DataShape,
        values: Values,
        labels: Option<Vec<u32>>,
        num_classes: Option<usize>,
    ) -> Result<Self> {
        let dim = shape.dim();
        let n_values = match &values {
            Values::U8(v) => v.len(),
            Values::F32(v) => v.len(),
        };
        if dim == 0 || n_values % dim != 0 {
            return Err(DataError::Config(format!(
                "{n_values} values do not divide into examples of {dim}"
            )));
        }
        let len = n_values / dim;
        if let Some(l) = &labels {
            if l.len() != len {
                return Err(DataError::Config(format!(
                    "{} labels for {len} examples",
                    l.len()
                )));
            }
            if let (Some(k), Some(&m)) = (num_classes, l.iter().max()) {
                if m as usize >= k {
                    return Err(DataError::Config(format!(
                        "label {m} is out of range for {k} classes"
                    )));
                }
            }
        }
        Ok(Self {
            shape,
            values,
            len,
            labels,
            num_classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes of the stored values.
    pub fn storage_bytes(&self) -> usize {
        match &self.values {
            Values::U8(v) => v.len(),
            Values::F32(v) => v.len() * 4,
        }
    }

    /// Writes example `i` as f32 into `out` (length `shape.dim()`).
    pub fn write_example(&self, i: usize, out: &mut [f32]) {
        let d = self.shape.dim();
        match &self.values {
            Values::U8(v) => {
                for (o, &p) in out.iter_mut().zip(&v[i * d..(i + 1) * d]) {
                    *o = p as f32 * (1.0 / 255.0);
                }
            }
            Values::F32(v) => out.copy_from_slice(&v[i * d..(i + 1) * d]),
        }
    }

    /// The examples at `indices` as one f32 batch, row-major `[indices.len(), dim]`.
    pub fn gather(&self, indices: &[usize], out: &mut Vec<f32>) {
        let d = self.shape.dim();
        out.resize(indices.len() * d, 0.0);
        for (row, &i) in indices.iter().enumerate() {
            self.write_example(i, &mut out[row * d..(row + 1) * d]);
        }
    }

    /// The labels at `indices`, if the data has labels.
    pub fn gather_labels(&self, indices: &[usize]) -> Option<Vec<u32>> {
        self.labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect())
    }

    /// The first `n` examples (or all), for quick looks and evaluation limits.
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len);
        let d = self.shape.dim();
        let values = match &self.values {
            Values::U8(v) => Values::U8(v[..n * d].to_vec()),
            Values::F32(v) => Values::F32(v[..n * d].to_vec()),
        };
        Self {
            shape: self.shape,
            values,
            len: n,
            labels: self.labels.as_ref().map(|l| l[..n].to_vec()),
            num_classes: self.num_classes,
        }
    }
}

/// A training split and a validation split.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// Builds a dataset from an IDX image array and an IDX label array, checking that they agree.
pub fn from_idx(
    images: IdxArray,
    labels: IdxArray,
    num_classes: usize,
    images_path: &Path,
    labels_path: &Path,
) -> Result<Dataset> {
    let [n, h, w] = images.dims[..] else {
        return Err(DataError::format(images_path, "expected 3 dimensions"));
    };
    if n == 0 {
        return Err(DataError::format(images_path, "the file holds zero images"));
    }
    if h == 0 || w == 0 {
        return Err(DataError::format(
            images_path,
            format!("images of size {h}x{w}"),
        ));
    }
    if labels.dims != [n] {
        return Err(DataError::format(
            labels_path,
            format!(
                "{} labels for the {n} images of {}",
                labels.dims.first().copied().unwrap_or(0),
                images_path.display()
            ),
        ));
    }
    if let Some(pos) = labels.data.iter().position(|&l| l as usize >= num_classes) {
        return Err(DataError::format(
            labels_path,
            format!(
                "label {} at index {pos} is out of range (expected 0..{num_classes})",
                labels.data[pos]
            ),
        ));
    }
    Dataset::new(
        DataShape::image(1, h, w),
        Values::U8(images.data),
        Some(labels.data.into_iter().map(u32::from).collect()),
        Some(num_classes),
    )
}

/// The four files of an MNIST-like dataset: (images, labels) for train, then for test.
pub const IDX_FILES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

/// Finds `stem` or `stem.gz` in `dir`.
pub fn find_idx(dir: &Path, stem: &str) -> Option<std::path::PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Whether `dir` holds all four files of an MNIST-like dataset.
pub fn has_idx_set(dir: &Path) -> bool {
    IDX_FILES
        .iter()
        .all(|(i, l)| find_idx(dir, i).is_some() && find_idx(dir, l).is_some())
}

/// Reads the train and test splits of an MNIST-like dataset from a directory.
pub fn load_idx_dir(dir: &Path, num_classes: usize) -> Result<Splits> {
    let mut sets = Vec::with_capacity(2);
    for (img, lab) in IDX_FILES {
        let ip = find_idx(dir, img).ok_or_else(|| {
            DataError::io(
                dir.join(img),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "file not found (also tried .gz)",
                ),
            )
        })?;
        let lp = find_idx(dir, lab).ok_or_else(|| {
            DataError::io(
                dir.join(lab),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "file not found (also tried .gz)",
                ),
            )
        })?;
        let images = read_idx_file(&ip, 3)?;
        let labels = read_idx_file(&lp, 1)?;
        sets.push(from_idx(images, labels, num_classes, &ip, &lp)?);
    }
    let test = sets.pop().expect("two splits");
    let train = sets.pop().expect("two splits");
    Ok(Splits { train, test })
}

/// Reads the train and test splits from IDX files held in memory: `[(name, bytes); 4]` in the
/// order train images, train labels, test images, test labels.
pub fn load_idx_bytes(files: [(&str, &[u8]); 4], num_classes: usize) -> Result<Splits> {
    let mut sets = Vec::with_capacity(2);
    for pair in files.chunks_exact(2) {
        let (iname, ibytes) = pair[0];
        let (lname, lbytes) = pair[1];
        let (ip, lp) = (Path::new(iname), Path::new(lname));
        let images = read_idx_bytes(ibytes, ip, 3)?;
        let labels = read_idx_bytes(lbytes, lp, 1)?;
        sets.push(from_idx(images, labels, num_classes, ip, lp)?);
    }
    let test = sets.pop().expect("two splits");
    let train = sets.pop().expect("two splits");
    Ok(Splits { train, test })
}

/// The order in which one epoch visits the examples: a permutation drawn from a generator
/// derived from the run's seed and the epoch number, so that any epoch's order can be rebuilt
/// on resume from those two numbers alone.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    Rng::stream(seed, 0x5eed_0000 + epoch).shuffle(&mut order);
    order
}
