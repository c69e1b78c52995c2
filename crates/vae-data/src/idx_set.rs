//! A folder of IDX files holding 8-bit images of any size (`--dataset idx --data-dir DIR`), with
//! labels or without, with a test split or without: what a run made from NumPy arrays keeps in
//! its directory, and what anyone can write with [`write_idx_set`].
//!
//! ```text
//! train-images-idx3-ubyte[.gz]   [n, h, w] grey images, or
//! train-images-idx4-ubyte[.gz]   [n, c, h, w] images of c channels (channel-major)
//! train-labels-idx1-ubyte[.gz]   [n] labels (optional)
//! t10k-images-idx{3,4}-ubyte     the test split (optional; without it the validation split is
//! t10k-labels-idx1-ubyte          held out of the training examples), its labels
//! ```
//!
//! The number of classes is one more than the largest label of either split.

use std::path::{Path, PathBuf};

use vae_core::DataShape;

use crate::dataset::{find_idx, Dataset, Stream, Values};
use crate::error::{DataError, Result};
use crate::idx::{encode_idx, map_idx_file, read_idx_file};

/// The file stems of one split: images with 3 dimensions, with 4, and labels.
const SPLITS: [(&str, &str, &str); 2] = [
    (
        "train-images-idx3-ubyte",
        "train-images-idx4-ubyte",
        "train-labels-idx1-ubyte",
    ),
    (
        "t10k-images-idx3-ubyte",
        "t10k-images-idx4-ubyte",
        "t10k-labels-idx1-ubyte",
    ),
];

/// The images file of a split in `dir` and its number of dimensions, if there is one; both
/// forms at once are refused.
fn images_file(dir: &Path, (three, four): (&str, &str)) -> Result<Option<(PathBuf, usize)>> {
    match (find_idx(dir, three), find_idx(dir, four)) {
        (Some(a), Some(b)) => Err(DataError::format(
            dir,
            format!(
                "both {} and {} hold the images: keep one",
                a.display(),
                b.display()
            ),
        )),
        (Some(a), None) => Ok(Some((a, 3))),
        (None, Some(b)) => Ok(Some((b, 4))),
        (None, None) => Ok(None),
    }
}

/// The values and shape of an images file, read or memory-mapped as `stream` says.
fn read_images(path: &Path, ndim: usize, stream: Stream) -> Result<(usize, DataShape, Values)> {
    let gz = path.extension().is_some_and(|e| e == "gz");
    let map = match stream {
        Stream::Off => false,
        Stream::On => true,
        Stream::Auto => {
            !gz && std::fs::metadata(path)
                .map_err(|e| DataError::io(path, e))?
                .len()
                >= Stream::AUTO_BYTES
        }
    };
    let (dims, values) = if map {
        let m = map_idx_file(path, ndim)?;
        (m.dims, Values::Mapped(m.values))
    } else {
        let a = read_idx_file(path, ndim)?;
        (a.dims, Values::U8(a.data))
    };
    let (n, shape) = match dims[..] {
        [n, h, w] => (n, DataShape::image(1, h, w)),
        [n, c, h, w] => (n, DataShape::image(c, h, w)),
        _ => return Err(DataError::format(path, "expected 3 or 4 dimensions")),
    };
    if n == 0 {
        return Err(DataError::format(path, "the file holds zero images"));
    }
    if shape.dim() == 0 {
        return Err(DataError::format(
            path,
            format!(
                "images of {}x{}x{} values",
                shape.channels, shape.height, shape.width
            ),
        ));
    }
    Ok((n, shape, values))
}

/// Reads the training split and, when the folder has one, the test split (see the module's
/// documentation for the files); the image files are memory-mapped as `stream` says.
pub fn load_idx_set(dir: &Path, stream: Stream) -> Result<(Dataset, Option<Dataset>)> {
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let mut read = Vec::with_capacity(2);
    for (i, (three, four, labels)) in SPLITS.into_iter().enumerate() {
        let Some((path, ndim)) = images_file(dir, (three, four))? else {
            if i == 0 {
                return Err(DataError::format(
                    dir,
                    format!("no training images: expected {three}[.gz] or {four}[.gz]"),
                ));
            }
            continue;
        };
        let (n, shape, values) = read_images(&path, ndim, stream)?;
        let labels = match find_idx(dir, labels) {
            Some(lp) => {
                let l = read_idx_file(&lp, 1)?;
                if l.dims != [n] {
                    return Err(DataError::format(
                        &lp,
                        format!(
                            "{} labels for the {n} images of {}",
                            l.dims[0],
                            path.display()
                        ),
                    ));
                }
                Some((lp, l.data))
            }
            None => None,
        };
        read.push((path, shape, values, labels));
    }
    if let [(a, sa, ..), (b, sb, ..)] = &read[..] {
        if sa != sb {
            return Err(DataError::format(
                b,
                format!(
                    "images of {}x{}x{}, but those of {} are {}x{}x{}",
                    sb.channels,
                    sb.height,
                    sb.width,
                    a.display(),
                    sa.channels,
                    sa.height,
                    sa.width
                ),
            ));
        }
    }
    if let [(_, _, _, la), (b, _, _, lb)] = &read[..] {
        if la.is_some() != lb.is_some() {
            return Err(DataError::format(
                b,
                "one split has labels and the other has none: give both label files or neither",
            ));
        }
    }
    let classes = read
        .iter()
        .filter_map(|(.., l)| l.as_ref())
        .flat_map(|(_, l)| l.iter().max())
        .max()
        .map(|&m| m as usize + 1);
    let mut sets = read.into_iter().map(|(_, shape, values, labels)| {
        let labels = labels.map(|(_, l)| l.into_iter().map(u32::from).collect());
        Dataset::new(shape, values, labels, classes)
    });
    let train = sets
        .next()
        .ok_or_else(|| DataError::Config("no training split".into()))??;
    let test = sets.next().transpose()?;
    Ok((train, test))
}

/// One split to write: `pixels` holds images of `shape` (channel-major) one after another.
#[derive(Debug, Clone, Copy)]
pub struct IdxSplit<'a> {
    pub shape: DataShape,
    pub pixels: &'a [u8],
    pub labels: Option<&'a [u32]>,
}

impl IdxSplit<'_> {
    /// Checks the split (`what` names it in messages) and returns its number of images.
    fn check(&self, what: &str) -> Result<usize> {
        let d = self.shape.dim();
        if d == 0 || !self.pixels.len().is_multiple_of(d) || self.pixels.is_empty() {
            return Err(DataError::Config(format!(
                "{what}: {} values do not make whole images of {}x{}x{}",
                self.pixels.len(),
                self.shape.channels,
                self.shape.height,
                self.shape.width
            )));
        }
        let n = self.pixels.len() / d;
        let s = self.shape;
        if [n, s.channels, s.height, s.width]
            .iter()
            .any(|&v| u32::try_from(v).is_err())
        {
            return Err(DataError::Config(format!(
                "{what}: {n} images of {}x{}x{}: a size beyond what an IDX header holds",
                s.channels, s.height, s.width
            )));
        }
        if let Some(l) = self.labels {
            if l.len() != n {
                return Err(DataError::Config(format!(
                    "{what}: {} labels for {n} images",
                    l.len()
                )));
            }
            if let Some(&m) = l.iter().find(|&&m| m > u32::from(u8::MAX)) {
                return Err(DataError::Config(format!(
                    "{what}: label {m} does not fit an IDX label file (0 to 255)"
                )));
            }
        }
        Ok(n)
    }
}

/// Writes `train` (and `test`) into `dir` as the files [`load_idx_set`] reads, each atomically,
/// and removes the files of the set that are not written (a set written before), so that the
/// folder holds exactly these splits.
pub fn write_idx_set(dir: &Path, train: IdxSplit, test: Option<IdxSplit>) -> Result<()> {
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    for (split, (three, four, labels), what) in [
        (Some(train), SPLITS[0], "the training split"),
        (test, SPLITS[1], "the test split"),
    ] {
        let Some(s) = split else { continue };
        let n = s.check(what)?;
        if s.shape != train.shape {
            return Err(DataError::Config(format!(
                "{what}: images of {}x{}x{}, but the training images are {}x{}x{}",
                s.shape.channels,
                s.shape.height,
                s.shape.width,
                train.shape.channels,
                train.shape.height,
                train.shape.width
            )));
        }
        if s.labels.is_some() != train.labels.is_some() {
            return Err(DataError::Config(
                "one split has labels and the other has none: give labels for both or neither"
                    .into(),
            ));
        }
        let (h, w, c) = (s.shape.height, s.shape.width, s.shape.channels);
        if c == 1 {
            files.push((three, encode_idx(&[n, h, w], s.pixels)));
        } else {
            files.push((four, encode_idx(&[n, c, h, w], s.pixels)));
        }
        if let Some(l) = s.labels {
            let bytes: Vec<u8> = l.iter().map(|&v| v as u8).collect();
            files.push((labels, encode_idx(&[n], &bytes)));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    for (stem, bytes) in &files {
        let path = dir.join(stem);
        vae_core::weights::atomic_write(&path, bytes).map_err(|e| match e {
            vae_core::Error::Io { path, source } => DataError::Io { path, source },
            other => DataError::Config(other.to_string()),
        })?;
    }
    for stem in SPLITS.iter().flat_map(|(a, b, c)| [*a, *b, *c]) {
        if files.iter().any(|(s, _)| *s == stem) {
            continue;
        }
        for name in [stem.to_string(), format!("{stem}.gz")] {
            let p = dir.join(name);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| DataError::io(&p, e))?;
            }
        }
    }
    Ok(())
}
