//! CIFAR-10 in its binary form: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`,
//! each a sequence of records of one label byte followed by 3072 pixel bytes (the red, green
//! and blue planes of a 32x32 picture, channel-major, as the model wants them).
//!
//! Every check is made before the pixels are kept: a non-empty file whose length is a multiple
//! of the record size and below [`MAX_CIFAR_BYTES`], labels below 10.

use std::io::Read;
use std::path::{Path, PathBuf};

use vae_core::DataShape;

use crate::dataset::{Dataset, Splits, Values};
use crate::error::{DataError, Result};

/// Sides of a CIFAR picture.
pub const SIDE: usize = 32;
/// Colour channels of a CIFAR picture.
pub const CHANNELS: usize = 3;
/// Bytes of pixels in one record.
pub const PIXELS: usize = SIDE * SIDE * CHANNELS;
/// Bytes of one record: the label, then the pixels.
pub const RECORD: usize = 1 + PIXELS;
/// Number of classes of CIFAR-10.
pub const CLASSES: usize = 10;
/// Upper bound on a batch file we agree to read (4 GiB; the real ones are 30 MB).
pub const MAX_CIFAR_BYTES: u64 = 1 << 32;
/// The training batches, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch.
pub const TEST_FILE: &str = "test_batch.bin";

/// The pixels (channel-major, record after record) and labels of one batch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarBatch {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl CifarBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Checks a batch's length: non-empty, bounded, a whole number of records. Returns the count.
fn check_len(path: &Path, len: u64) -> Result<usize> {
    if len == 0 {
        return Err(DataError::format(
            path,
            "empty file: a CIFAR-10 batch holds at least one record",
        ));
    }
    if len > MAX_CIFAR_BYTES {
        return Err(DataError::format(
            path,
            format!("{len} bytes is more than the {MAX_CIFAR_BYTES} a CIFAR-10 batch may hold"),
        ));
    }
    if !len.is_multiple_of(RECORD as u64) {
        return Err(DataError::format(
            path,
            format!(
                "{len} bytes is not a whole number of {RECORD}-byte records (1 label + {PIXELS} pixels): {} records and {} bytes over (truncated or not a CIFAR-10 binary batch)",
                len / RECORD as u64,
                len % RECORD as u64
            ),
        ));
    }
    Ok((len / RECORD as u64) as usize)
}

/// Splits `n` records read from `r` into labels and pixels, checking each label.
fn read_records<R: Read>(mut r: R, path: &Path, n: usize) -> Result<CifarBatch> {
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    let mut rec = [0u8; RECORD];
    for i in 0..n {
        r.read_exact(&mut rec).map_err(|e| {
            DataError::format(
                path,
                format!("truncated: record {i} of {n} could not be read ({e})"),
            )
        })?;
        if rec[0] as usize >= CLASSES {
            return Err(DataError::format(
                path,
                format!(
                    "label {} of record {i} is out of range (expected 0..{CLASSES}; is this a CIFAR-100 file?)",
                    rec[0]
                ),
            ));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => Ok(CifarBatch { pixels, labels }),
        Ok(_) => Err(DataError::format(
            path,
            "the file grew while it was read (trailing bytes after the last record)",
        )),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Reads one CIFAR-10 binary batch file.
pub fn read_cifar_file(path: &Path) -> Result<CifarBatch> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let n = check_len(path, len)?;
    read_records(std::io::BufReader::new(file), path, n)
}

/// Reads one CIFAR-10 binary batch held in memory; `name` is used in error messages.
pub fn read_cifar_bytes(bytes: &[u8], name: &Path) -> Result<CifarBatch> {
    let n = check_len(name, bytes.len() as u64)?;
    read_records(bytes, name, n)
}

/// Where the batch files of a CIFAR-10 directory are: `dir` itself, or the
/// `cifar-10-batches-bin` folder that the official archive unpacks to.
pub fn cifar_root(dir: &Path) -> PathBuf {
    let nested = dir.join("cifar-10-batches-bin");
    if !dir.join(TEST_FILE).is_file() && nested.join(TEST_FILE).is_file() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// The batch files that `dir` (or its `cifar-10-batches-bin` folder) lacks.
pub fn missing_cifar_files(dir: &Path) -> Vec<String> {
    let root = cifar_root(dir);
    TRAIN_FILES
        .iter()
        .chain(std::iter::once(&TEST_FILE))
        .filter(|f| !root.join(f).is_file())
        .map(|f| f.to_string())
        .collect()
}

/// Whether `dir` holds the six batch files.
pub fn has_cifar_set(dir: &Path) -> bool {
    missing_cifar_files(dir).is_empty()
}

/// Reads batch files one after another into one dataset (no batch is held twice).
fn dataset(paths: &[PathBuf]) -> Result<Dataset> {
    let mut n = 0usize;
    for p in paths {
        let len = std::fs::metadata(p).map_err(|e| DataError::io(p, e))?.len();
        n = n.saturating_add(check_len(p, len)?);
    }
    let mut pixels = Vec::with_capacity(n.saturating_mul(PIXELS));
    let mut labels = Vec::with_capacity(n);
    for p in paths {
        let b = read_cifar_file(p)?;
        pixels.extend_from_slice(&b.pixels);
        labels.extend(b.labels.into_iter().map(u32::from));
    }
    Dataset::new(
        DataShape::image(CHANNELS, SIDE, SIDE),
        Values::U8(pixels),
        Some(labels),
        Some(CLASSES),
    )
}

/// Reads the five training batches and the test batch of a CIFAR-10 directory.
pub fn load_cifar_dir(dir: &Path) -> Result<Splits> {
    let missing = missing_cifar_files(dir);
    if !missing.is_empty() {
        return Err(DataError::format(
            dir,
            format!(
                "not a complete CIFAR-10 binary directory: missing {} (expected data_batch_1.bin ... data_batch_5.bin and test_batch.bin, as in cifar-10-binary.tar.gz)",
                missing.join(", ")
            ),
        ));
    }
    let root = cifar_root(dir);
    let train: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| root.join(f)).collect();
    Ok(Splits {
        train: dataset(&train)?,
        test: dataset(&[root.join(TEST_FILE)])?,
    })
}

/// Encodes records (label, 3072 pixels) as a CIFAR-10 binary batch (used by tests and tools).
pub fn encode_cifar(labels: &[u8], pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * RECORD);
    for (l, px) in labels.iter().zip(pixels.chunks(PIXELS)) {
        out.push(*l);
        out.extend_from_slice(px);
    }
    out
}
