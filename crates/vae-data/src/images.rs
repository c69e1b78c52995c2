//! A folder of PNG or JPEG pictures as a dataset.
//!
//! Layouts, from the folder given:
//! - `*.png|*.jpg|*.jpeg`: unlabelled pictures;
//! - `<class>/*.png …`: one sub-folder per class, classes numbered in sorted order of the names;
//! - `train/…` and `test/…` (or `val/…`), each in one of the two layouts above: the two splits.
//!
//! Every picture is resized to `size` x `size` when a size is given (otherwise all must have the
//! first one's size), and made grey or RGB (`channels`, or RGB as soon as one picture has
//! colour). Decoding runs under [`limits`], so a picture that claims huge sides (a
//! decompression bomb) is refused before its pixels are allocated.

use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage, ImageReader};
use vae_core::DataShape;

use crate::dataset::{Dataset, Values};
use crate::error::{DataError, Result};

/// The longest side a picture may have.
pub const MAX_SIDE: u32 = 8192;
/// The most memory the decoder of one picture may allocate.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;
/// The largest `--image-size`.
pub const MAX_IMAGE_SIZE: usize = 1024;
/// The most bytes all pictures of a folder may take once decoded (16 GiB).
pub const MAX_TOTAL_BYTES: u64 = 1 << 34;

/// The decoding limits applied to every picture.
pub fn limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_DECODE_BYTES);
    l
}

/// How a folder of pictures is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Resize every picture to `size` x `size`.
    pub size: Option<usize>,
    /// 1 (grey) or 3 (RGB); detected when not given.
    pub channels: Option<usize>,
}

fn is_picture(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The pictures and sub-folders directly inside `dir`, each sorted.
fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut pictures = Vec::new();
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let p = entry.map_err(|e| DataError::io(dir, e))?.path();
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            folders.push(p);
        } else if is_picture(&p) {
            pictures.push(p);
        }
    }
    pictures.sort();
    folders.sort();
    Ok((pictures, folders))
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The pictures of one split with their class numbers (`None` when unlabelled).
struct Listing {
    files: Vec<PathBuf>,
    labels: Option<Vec<u32>>,
}

/// Lists one split: loose pictures, or one sub-folder per class (`classes` fixes the names and
/// numbers of the classes, for a test split that must use the training split's).
fn list_split(dir: &Path, classes: Option<&[String]>) -> Result<(Listing, Vec<String>)> {
    let (pictures, folders) = list(dir)?;
    if !pictures.is_empty() && !folders.is_empty() {
        return Err(DataError::format(
            dir,
            format!(
                "holds both pictures ({}) and sub-folders ({}): use loose pictures, or one sub-folder per class",
                name_of(&pictures[0]),
                name_of(&folders[0])
            ),
        ));
    }
    if folders.is_empty() {
        if pictures.is_empty() {
            return Err(DataError::format(
                dir,
                "holds no PNG or JPEG pictures (.png, .jpg, .jpeg)",
            ));
        }
        if classes.is_some_and(|c| !c.is_empty()) {
            return Err(DataError::format(
                dir,
                "holds loose pictures, but the training split has one sub-folder per class",
            ));
        }
        return Ok((
            Listing {
                files: pictures,
                labels: None,
            },
            Vec::new(),
        ));
    }
    let names: Vec<String> = folders.iter().map(|f| name_of(f)).collect();
    let classes: Vec<String> = classes.map_or_else(|| names.clone(), <[String]>::to_vec);
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (folder, name) in folders.iter().zip(&names) {
        let Some(k) = classes.iter().position(|c| c == name) else {
            return Err(DataError::format(
                folder,
                format!(
                    "class `{name}` is not one of the training split's classes ({})",
                    classes.join(", ")
                ),
            ));
        };
        let (pics, sub) = list(folder)?;
        if pics.is_empty() {
            return Err(DataError::format(
                folder,
                if sub.is_empty() {
                    "class folder holds no PNG or JPEG pictures".to_string()
                } else {
                    "class folder holds sub-folders but no pictures (one level of class folders is read)".to_string()
                },
            ));
        }
        labels.extend(std::iter::repeat_n(k as u32, pics.len()));
        files.extend(pics);
    }
    Ok((
        Listing {
            files,
            labels: Some(labels),
        },
        classes,
    ))
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    let mut r = ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    if r.format().is_none() {
        return Err(DataError::format(
            path,
            "not a PNG or JPEG picture (unrecognised contents)",
        ));
    }
    r.limits(limits());
    Ok(r)
}

fn decode_err(path: &Path, e: image::ImageError) -> DataError {
    let msg = match &e {
        image::ImageError::Limits(_) => format!(
            "refused: {e} (pictures may have sides up to {MAX_SIDE} and take up to {} MiB decoded)",
            MAX_DECODE_BYTES >> 20
        ),
        _ => format!("cannot decode the picture: {e}"),
    };
    DataError::format(path, msg)
}

/// Reads the header of a picture: its sides and whether it has colour.
fn probe(path: &Path) -> Result<((u32, u32), bool)> {
    use image::ImageDecoder;
    let mut decoder = reader(path)?
        .into_decoder()
        .map_err(|e| decode_err(path, e))?;
    decoder
        .set_limits(limits())
        .map_err(|e| decode_err(path, e))?;
    let colour = !matches!(
        decoder.color_type(),
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    Ok((decoder.dimensions(), colour))
}

/// Decodes a picture into `out` as `channels` planes of `h` x `w` bytes (channel-major).
fn decode_into(path: &Path, channels: usize, h: usize, w: usize, out: &mut Vec<u8>) -> Result<()> {
    let img: DynamicImage = reader(path)?.decode().map_err(|e| decode_err(path, e))?;
    let img = if (img.width() as usize, img.height() as usize) != (w, h) {
        img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    if channels == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        let raw = rgb.as_raw();
        for c in 0..3 {
            out.extend(raw.iter().skip(c).step_by(3));
        }
    }
    Ok(())
}

/// Reads the pictures of `listings` (one per split) with common options into datasets.
fn read_splits(
    root: &Path,
    listings: Vec<Listing>,
    num_classes: Option<usize>,
    opts: ImageOptions,
) -> Result<Vec<Dataset>> {
    if let Some(c) = opts.channels {
        if c != 1 && c != 3 {
            return Err(DataError::Config(format!(
                "--channels must be 1 (grey) or 3 (RGB), got {c}"
            )));
        }
    }
    if let Some(s) = opts.size {
        if s == 0 || s > MAX_IMAGE_SIZE {
            return Err(DataError::Config(format!(
                "--image-size must be between 1 and {MAX_IMAGE_SIZE}, got {s}"
            )));
        }
    }
    // First pass, headers only: sides and colour.
    let mut first: Option<(PathBuf, (u32, u32))> = None;
    let mut colour = false;
    let mut n = 0usize;
    for l in &listings {
        for f in &l.files {
            let (dims, c) = probe(f)?;
            colour |= c;
            n += 1;
            match &first {
                None => first = Some((f.clone(), dims)),
                Some((p0, d0)) if opts.size.is_none() && *d0 != dims => {
                    return Err(DataError::format(
                        f,
                        format!(
                            "picture is {}x{} but {} is {}x{}: give --image-size N to resize them all to NxN",
                            dims.0,
                            dims.1,
                            p0.display(),
                            d0.0,
                            d0.1
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    let Some((_, (w0, h0))) = first else {
        return Err(DataError::format(root, "holds no pictures"));
    };
    let (h, w) = match opts.size {
        Some(s) => (s, s),
        None => (h0 as usize, w0 as usize),
    };
    let channels = opts.channels.unwrap_or(if colour { 3 } else { 1 });
    let dim = channels * h * w;
    let total = (n as u64).saturating_mul(dim as u64);
    if total > MAX_TOTAL_BYTES {
        return Err(DataError::format(
            root,
            format!(
                "{n} pictures of {channels}x{h}x{w} take {total} bytes, more than the {MAX_TOTAL_BYTES} allowed: give a smaller --image-size"
            ),
        ));
    }
    let mut out = Vec::with_capacity(listings.len());
    for l in listings {
        let mut values = Vec::with_capacity(l.files.len() * dim);
        for f in &l.files {
            decode_into(f, channels, h, w, &mut values)?;
        }
        out.push(Dataset::new(
            DataShape::image(channels, h, w),
            Values::U8(values),
            l.labels,
            num_classes,
        )?);
    }
    Ok(out)
}

/// What a folder of pictures holds.
#[derive(Debug)]
pub struct ImageFolder {
    /// The training split and, when the folder has `train/` and `test/` (or `val/`), the test
    /// split.
    pub train: Dataset,
    pub test: Option<Dataset>,
    /// The class names, in the order of their numbers (empty when unlabelled).
    pub classes: Vec<String>,
}

/// Reads a folder of pictures (see the module documentation for the layouts).
pub fn load_image_dir(dir: &Path, opts: ImageOptions) -> Result<ImageFolder> {
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let (pictures, folders) = list(dir)?;
    let split_dir = |names: &[&str]| {
        folders
            .iter()
            .find(|f| names.contains(&name_of(f).as_str()))
            .cloned()
    };
    let (train_dir, test_dir) = (split_dir(&["train"]), split_dir(&["test", "val"]));
    if let (true, Some(train_dir), Some(test_dir)) = (pictures.is_empty(), train_dir, test_dir) {
        let (train, classes) = list_split(&train_dir, None)?;
        let (test, _) = list_split(&test_dir, Some(&classes))?;
        let k = (!classes.is_empty()).then_some(classes.len());
        let mut sets = read_splits(dir, vec![train, test], k, opts)?;
        let test = sets.pop();
        let train = sets
            .pop()
            .ok_or_else(|| DataError::format(dir, "holds no pictures"))?;
        return Ok(ImageFolder {
            train,
            test,
            classes,
        });
    }
    let (listing, classes) = list_split(dir, None)?;
    let k = (!classes.is_empty()).then_some(classes.len());
    let train = read_splits(dir, vec![listing], k, opts)?
        .pop()
        .ok_or_else(|| DataError::format(dir, "holds no pictures"))?;
    Ok(ImageFolder {
        train,
        test: None,
        classes,
    })
}
