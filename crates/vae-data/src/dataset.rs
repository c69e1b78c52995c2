//! Datasets: examples kept compact (u8 pixels, f32 features, or a memory-mapped file) and
//! converted to f32 one batch at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vae_core::{DataShape, Rng};

use crate::config::Binarize;
use crate::error::{DataError, Result};
use crate::idx::{map_idx_file, read_idx_bytes, read_idx_file, IdxArray, MappedIdx};

/// The values of all examples, row-major, one example after another.
#[derive(Debug, Clone)]
pub enum Values {
    /// Pixels 0..=255, scaled to [0, 1] when batched.
    U8(Vec<u8>),
    /// Features already scaled.
    F32(Vec<f32>),
    /// Pixels 0..=255 read from a memory-mapped file as batches are made: the dataset may be
    /// larger than memory, and what is resident stays bounded (see [`Mapped`]).
    Mapped(Mapped),
}

/// Bytes of a read-only memory-mapped file, shared by the datasets that view it.
///
/// Pages come in as examples are read. So that a dataset larger than memory does not fill the
/// process's resident set, the mapping's pages are released (`MADV_DONTNEED`; they stay in the
/// page cache) each time about [`Mapped::RESIDENT_WINDOW`] bytes have been read. The file must
/// not be truncated or rewritten while it is mapped.
#[derive(Debug, Clone)]
pub struct Mapped {
    inner: Arc<MappedInner>,
}

#[derive(Debug)]
struct MappedInner {
    map: memmap2::Mmap,
    offset: usize,
    len: usize,
    path: PathBuf,
    /// Bytes of pages touched since the pages were last released.
    touched: AtomicUsize,
}

impl Mapped {
    /// How many bytes of pages may be touched before the mapping's pages are released.
    pub const RESIDENT_WINDOW: usize = 64 << 20;
    const PAGE: usize = 4096;

    /// Maps `len` bytes of `file` starting at `offset`; `path` names the file in errors.
    pub fn new(file: std::fs::File, path: &Path, offset: usize, len: usize) -> Result<Self> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| DataError::format(path, "mapped range overflows"))?;
        // SAFETY: the map is read-only and private to this process; the documented condition is
        // that the file is not truncated or rewritten while mapped, as for any memory map.
        let map = unsafe { memmap2::MmapOptions::new().len(end).map(&file) }
            .map_err(|e| DataError::io(path, e))?;
        if map.len() < end {
            return Err(DataError::format(
                path,
                format!("the file holds {} bytes, {end} are needed", map.len()),
            ));
        }
        // Batches visit examples in random order: read-ahead would only load pages not needed.
        #[cfg(unix)]
        {
            let _ = map.advise(memmap2::Advice::Random);
        }
        Ok(Self {
            inner: Arc::new(MappedInner {
                map,
                offset,
                len,
                path: path.to_path_buf(),
                touched: AtomicUsize::new(0),
            }),
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        let i = &self.inner;
        &i.map[i.offset..i.offset + i.len]
    }

    /// Number of mapped bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The mapped file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Records that `n` bytes were read, and releases the resident pages once a window is full.
    ///
    /// A read may map more than its own pages: on a page fault Linux also maps the neighbouring
    /// pages that are in the page cache ("fault-around", 64 KiB by default, more where the page
    /// cache holds large folios). Each read is counted as its pages plus 256 KiB, which kept the
    /// resident set of mapped pages near the window on Linux 6.18 (see the `stream_epoch`
    /// example); with 64 KiB it grew to four times the window.
    fn touch(&self, n: usize) {
        const FAULT_AROUND: usize = 256 << 10;
        let pages = n.div_ceil(Self::PAGE) * Self::PAGE + FAULT_AROUND;
        let before = self.inner.touched.fetch_add(pages, Ordering::Relaxed);
        if before < Self::RESIDENT_WINDOW && before + pages >= Self::RESIDENT_WINDOW {
            self.release();
            self.inner.touched.store(0, Ordering::Relaxed);
        }
    }

    /// Drops the mapping's resident pages; they are read again (from the page cache) when used.
    pub fn release(&self) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping is a read-only shared view of a file: dropping its pages loses
            // nothing, a later access faults them in again with the same contents.
            let _ = unsafe {
                self.inner
                    .map
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
        }
    }
}

/// A labelled (or unlabelled) set of examples of one shape.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub shape: DataShape,
    values: Values,
    /// The storage row of each example, when this dataset views part of a mapped file.
    rows: Option<Arc<[usize]>>,
    len: usize,
    /// One label per example, when the data has labels.
    pub labels: Option<Vec<u32>>,
    /// Number of classes the labels come from.
    pub num_classes: Option<usize>,
    /// Static binarisation applied as examples are read (for values that cannot be rewritten).
    static_bits: bool,
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
            Values::Mapped(m) => m.len(),
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
            rows: None,
            len,
            labels,
            num_classes,
            static_bits: false,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the values are 8-bit (images: v/255 as batches give them), so that a
    /// distribution over the 256 values of each applies to them.
    pub fn is_8bit(&self) -> bool {
        matches!(self.values, Values::U8(_) | Values::Mapped(_))
    }

    /// Whether the examples are read from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.values, Values::Mapped(_))
    }

    /// Size in bytes of the values held in memory (zero for a mapped file).
    pub fn storage_bytes(&self) -> usize {
        match &self.values {
            Values::U8(v) => v.len(),
            Values::F32(v) => v.len() * 4,
            Values::Mapped(_) => 0,
        }
    }

    fn row(&self, i: usize) -> usize {
        self.rows.as_ref().map_or(i, |r| r[i])
    }

    /// Writes example `i` as f32 into `out` (length `shape.dim()`).
    pub fn write_example(&self, i: usize, out: &mut [f32]) {
        let d = self.shape.dim();
        let r = self.row(i);
        let from_u8 = |out: &mut [f32], px: &[u8]| {
            for (o, &p) in out.iter_mut().zip(px) {
                *o = p as f32 * (1.0 / 255.0);
            }
        };
        match &self.values {
            Values::U8(v) => from_u8(out, &v[r * d..(r + 1) * d]),
            Values::F32(v) => out.copy_from_slice(&v[r * d..(r + 1) * d]),
            Values::Mapped(m) => {
                from_u8(out, &m.bytes()[r * d..(r + 1) * d]);
                m.touch(d);
            }
        }
        if self.static_bits {
            Binarize::sample_static(out, r);
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
        self.subset(&(0..n).collect::<Vec<_>>())
    }

    /// The examples at `indices` (each below `len()`), in that order. In-memory values are
    /// copied; a mapped file is shared.
    pub fn subset(&self, indices: &[usize]) -> Self {
        fn copy_rows<T: Copy>(v: &[T], rows: &[usize], d: usize) -> Vec<T> {
            rows.iter()
                .flat_map(|&r| v[r * d..(r + 1) * d].iter().copied())
                .collect()
        }
        let d = self.shape.dim();
        let rows: Vec<usize> = indices.iter().map(|&i| self.row(i)).collect();
        let (values, rows) = match &self.values {
            Values::U8(v) => (Values::U8(copy_rows(v, &rows, d)), None),
            Values::F32(v) => (Values::F32(copy_rows(v, &rows, d)), None),
            Values::Mapped(m) => (Values::Mapped(m.clone()), Some(rows.into())),
        };
        // A mapped view keeps the file's row numbers, which its read-time binarisation uses;
        // copied values were binarised (if at all) when loaded.
        Self {
            shape: self.shape,
            values,
            rows,
            len: indices.len(),
            labels: self.gather_labels(indices),
            num_classes: self.num_classes,
            static_bits: self.static_bits,
        }
    }

    /// Applies static binarisation: each value v becomes 1 with probability v, else 0, with
    /// bits that depend only on the example's position in its file, the same every epoch and
    /// every run. In-memory values are rewritten now; a mapped file is binarised as it is read.
    pub fn binarize_static(&mut self) {
        if self.static_bits {
            return;
        }
        let d = self.shape.dim();
        let mut row = vec![0f32; d];
        match &mut self.values {
            Values::U8(v) => {
                for (r, px) in v.chunks_exact_mut(d).enumerate() {
                    for (o, &p) in row.iter_mut().zip(px.iter()) {
                        *o = p as f32 * (1.0 / 255.0);
                    }
                    Binarize::sample_static(&mut row, r);
                    for (p, &b) in px.iter_mut().zip(&row) {
                        *p = if b > 0.5 { 255 } else { 0 };
                    }
                }
            }
            Values::F32(v) => {
                for (r, x) in v.chunks_exact_mut(d).enumerate() {
                    Binarize::sample_static(x, r);
                }
            }
            Values::Mapped(_) => self.static_bits = true,
        }
    }

    /// Splits off a seeded random `fraction` of the examples: returns (rest, held out). At least
    /// one example goes to each side.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DataError::Config(format!(
                "--val-fraction must be between 0 and 1 (exclusive), got {fraction}"
            )));
        }
        if self.len < 2 {
            return Err(DataError::Config(format!(
                "{} example(s) cannot be split into training and validation sets",
                self.len
            )));
        }
        let held = ((self.len as f64 * fraction).round() as usize).clamp(1, self.len - 1);
        let mut order: Vec<usize> = (0..self.len).collect();
        Rng::stream(seed, 0x0005_9117).shuffle(&mut order);
        let (val, train) = order.split_at(held);
        let (mut val, mut train) = (val.to_vec(), train.to_vec());
        // Keep file order within each side: friendlier to the page cache and to readers.
        val.sort_unstable();
        train.sort_unstable();
        Ok((self.subset(&train), self.subset(&val)))
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
    idx_dataset(
        &images.dims,
        Values::U8(images.data),
        labels,
        num_classes,
        images_path,
        labels_path,
    )
}

/// Builds a dataset from a memory-mapped IDX image file and an IDX label array.
pub fn from_mapped_idx(
    images: MappedIdx,
    labels: IdxArray,
    num_classes: usize,
    images_path: &Path,
    labels_path: &Path,
) -> Result<Dataset> {
    idx_dataset(
        &images.dims,
        Values::Mapped(images.values),
        labels,
        num_classes,
        images_path,
        labels_path,
    )
}

fn idx_dataset(
    dims: &[usize],
    values: Values,
    labels: IdxArray,
    num_classes: usize,
    images_path: &Path,
    labels_path: &Path,
) -> Result<Dataset> {
    let [n, h, w] = dims[..] else {
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
    check_labels(labels_path, &labels.data, num_classes)?;
    Dataset::new(
        DataShape::image(1, h, w),
        values,
        Some(labels.data.into_iter().map(u32::from).collect()),
        Some(num_classes),
    )
}

/// Checks that every label is below `num_classes`; the error names the first one that is not.
pub(crate) fn check_labels(path: &Path, labels: &[u8], num_classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= num_classes) {
        None => Ok(()),
        Some(pos) => Err(DataError::format(
            path,
            format!(
                "label {} at index {pos} is out of range (expected 0..{num_classes})",
                labels[pos]
            ),
        )),
    }
}

/// The four files of an MNIST-like dataset: (images, labels) for train, then for test.
pub const IDX_FILES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

/// Finds `stem` or `stem.gz` in `dir` (the raw file first: it is cheaper to read, and can be
/// memory-mapped).
pub fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Whether `dir` holds all four files of an MNIST-like dataset.
pub fn has_idx_set(dir: &Path) -> bool {
    missing_idx_files(dir).is_empty()
}

/// The files of an MNIST-like dataset that `dir` lacks (each stem, raw or gzipped).
pub fn missing_idx_files(dir: &Path) -> Vec<String> {
    IDX_FILES
        .iter()
        .flat_map(|(i, l)| [*i, *l])
        .filter(|stem| find_idx(dir, stem).is_none())
        .map(|stem| format!("{stem}[.gz]"))
        .collect()
}

/// Whether the images of an IDX dataset are read into memory or memory-mapped.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    /// Map raw image files of at least [`Stream::AUTO_BYTES`]; read smaller or gzipped ones.
    #[default]
    Auto,
    /// Map the image files (they must be raw, not gzipped).
    On,
    /// Read everything into memory.
    Off,
}

impl Stream {
    /// The size from which `auto` maps a raw image file (256 MiB).
    pub const AUTO_BYTES: u64 = 256 << 20;
}

fn not_found(path: PathBuf) -> DataError {
    DataError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "file not found (also tried .gz)",
        ),
    )
}

/// Reads the train and test splits of an MNIST-like dataset from a directory, into memory.
pub fn load_idx_dir(dir: &Path, num_classes: usize) -> Result<Splits> {
    load_idx_dir_with(dir, num_classes, Stream::Off)
}

/// Reads the train and test splits of an MNIST-like dataset from a directory; the image files
/// are memory-mapped as `stream` says.
pub fn load_idx_dir_with(dir: &Path, num_classes: usize, stream: Stream) -> Result<Splits> {
    let mut sets = Vec::with_capacity(2);
    for (img, lab) in IDX_FILES {
        let ip = find_idx(dir, img).ok_or_else(|| not_found(dir.join(img)))?;
        let lp = find_idx(dir, lab).ok_or_else(|| not_found(dir.join(lab)))?;
        let labels = read_idx_file(&lp, 1)?;
        let gz = ip.extension().is_some_and(|e| e == "gz");
        let map = match stream {
            Stream::Off => false,
            Stream::On => true,
            Stream::Auto => {
                !gz && std::fs::metadata(&ip)
                    .map_err(|e| DataError::io(&ip, e))?
                    .len()
                    >= Stream::AUTO_BYTES
            }
        };
        let set = if map {
            from_mapped_idx(map_idx_file(&ip, 3)?, labels, num_classes, &ip, &lp)?
        } else {
            from_idx(read_idx_file(&ip, 3)?, labels, num_classes, &ip, &lp)?
        };
        sets.push(set);
    }
    two_splits(sets)
}

fn two_splits(mut sets: Vec<Dataset>) -> Result<Splits> {
    let (Some(test), Some(train)) = (sets.pop(), sets.pop()) else {
        return Err(DataError::Config(
            "a dataset needs a train and a test split".into(),
        ));
    };
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
    two_splits(sets)
}

/// The order in which one epoch visits the examples: a permutation drawn from a generator
/// derived from the run's seed and the epoch number, so that any epoch's order can be rebuilt
/// on resume from those two numbers alone.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    Rng::stream(seed, 0x5eed_0000 + epoch).shuffle(&mut order);
    order
}
