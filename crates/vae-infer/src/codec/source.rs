//! The images `compress` codes and the form `decompress` writes them back in: a split of the
//! run's dataset (written back as a raw IDX file), an IDX file (raw or gzipped; written back
//! as the raw file, byte for byte), or a folder of 8-bit PNG files (written back as PNG files
//! of the same relative names whose pixels are the originals).

use std::path::Path;

use image::{ColorType, DynamicImage, ImageReader};
use vae_codec::Container;
use vae_core::DataShape;
use vae_data::idx::{encode_idx, read_idx_file};
use vae_data::Dataset;

use crate::{InferError, Result};

/// Images to code: `count` images of `shape`, channel-major, one after another.
#[derive(Debug, Clone)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub count: usize,
    pub container: Container,
    /// What the images are called in messages (a file, a folder, a split).
    pub origin: String,
}

impl Images {
    /// How image `i` is named in messages: its file, or its place in the origin.
    pub fn name(&self, i: usize) -> String {
        match &self.container {
            Container::PngFolder { names } if i < names.len() => {
                format!("{}/{}", self.origin, names[i])
            }
            _ => format!("{} image {i}", self.origin),
        }
    }
}

fn file_err(path: &Path, msg: impl Into<String>) -> InferError {
    InferError::File {
        path: path.into(),
        msg: msg.into(),
    }
}

/// The IDX dimensions of `count` images of `shape`: `[n, h, w]` for grey, `[n, c, h, w]` else.
fn idx_dims(count: usize, shape: DataShape) -> Vec<usize> {
    if shape.channels == 1 {
        vec![count, shape.height, shape.width]
    } else {
        vec![count, shape.channels, shape.height, shape.width]
    }
}

/// The images of a dataset split (8-bit values, as the dataset holds them; a statically
/// binarised split as 0 and 255), written back as a raw IDX images file.
pub fn from_dataset(data: &Dataset, origin: &str) -> Result<Images> {
    if !data.is_8bit() {
        return Err(InferError::Unsupported(format!(
            "{origin}: the values are not 8-bit pixels, and compress codes 8-bit images"
        )));
    }
    if data.is_empty() {
        return Err(InferError::Flag(format!("{origin}: no images to compress")));
    }
    let d = data.shape.dim();
    let mut pixels = Vec::with_capacity(data.len() * d);
    let mut buf = Vec::new();
    for start in (0..data.len()).step_by(1024) {
        let rows: Vec<usize> = (start..(start + 1024).min(data.len())).collect();
        data.gather(&rows, &mut buf);
        // The dataset gives v/255 (or 0/1 once binarised): 255x is within 1e-4 of an integer.
        pixels.extend(
            buf.iter()
                .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8),
        );
    }
    from_pixels(pixels, data.shape, origin)
}

/// `pixels`, images of `shape` (channel-major) one after another, written back as a raw IDX
/// images file (as an IDX file of those images would be).
pub fn from_pixels(pixels: Vec<u8>, shape: DataShape, origin: &str) -> Result<Images> {
    let d = shape.dim();
    if d == 0 || pixels.is_empty() || !pixels.len().is_multiple_of(d) {
        return Err(InferError::Input(format!(
            "{origin}: {} values do not make whole images of {}x{}x{}",
            pixels.len(),
            shape.channels,
            shape.height,
            shape.width
        )));
    }
    let count = pixels.len() / d;
    Ok(Images {
        count,
        container: Container::Idx {
            header: encode_idx(&idx_dims(count, shape), &[]),
        },
        pixels,
        origin: origin.to_string(),
    })
}

/// An IDX file of unsigned bytes (raw or gzipped) holding images of `shape`: `[n, h, w]` for
/// a grey model, `[n, c, h, w]` (channel-major) for a colour one.
pub fn from_idx(path: &Path, shape: DataShape) -> Result<Images> {
    let want = idx_dims(0, shape);
    let arr = read_idx_file(path, want.len())?;
    if arr.dims[1..] != want[1..] {
        return Err(file_err(
            path,
            format!(
                "images of shape {:?}, but the model codes {}x{}x{} images (IDX dimensions {:?})",
                &arr.dims[1..],
                shape.channels,
                shape.height,
                shape.width,
                &want[1..]
            ),
        ));
    }
    if arr.dims[0] == 0 {
        return Err(file_err(path, "the file holds no images"));
    }
    Ok(Images {
        count: arr.dims[0],
        container: Container::Idx {
            header: encode_idx(&arr.dims, &[]),
        },
        pixels: arr.data,
        origin: path.display().to_string(),
    })
}

/// The PNG files under `dir` (sub-folders included), as relative names with `/` separators,
/// sorted.
fn png_names(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| file_err(dir, e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| file_err(dir, e.to_string()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| file_err(&path, e.to_string()))?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let parts: Option<Vec<&str>> = rel.iter().map(|c| c.to_str()).collect();
                let parts =
                    parts.ok_or_else(|| file_err(&path, "the file name is not valid UTF-8"))?;
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut names = Vec::new();
    walk(dir, dir, &mut names)?;
    names.sort();
    Ok(names)
}

/// Channel-major pixels of one 8-bit picture of `shape`, or why it does not fit.
fn png_pixels(path: &Path, shape: DataShape) -> Result<Vec<u8>> {
    let mut r = ImageReader::open(path)
        .map_err(|e| file_err(path, e.to_string()))?
        .with_guessed_format()
        .map_err(|e| file_err(path, e.to_string()))?;
    if r.format() != Some(image::ImageFormat::Png) {
        return Err(file_err(path, "not a PNG file"));
    }
    r.limits(vae_data::images::limits());
    let img = r
        .decode()
        .map_err(|e| file_err(path, format!("cannot decode the picture: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (c, want) = match img.color() {
        ColorType::L8 => (1, shape.channels == 1),
        ColorType::Rgb8 => (3, shape.channels == 3),
        other => {
            return Err(file_err(
                path,
                format!(
                    "a {other:?} picture: compress codes 8-bit {} PNG files without alpha",
                    if shape.channels == 1 { "grey" } else { "RGB" }
                ),
            ))
        }
    };
    if !want || (h, w) != (shape.height, shape.width) {
        return Err(file_err(
            path,
            format!(
                "a {c}x{h}x{w} picture, but the model codes {}x{}x{} images",
                shape.channels, shape.height, shape.width
            ),
        ));
    }
    let raw = img.into_bytes();
    let s = h * w;
    let mut out = vec![0u8; c * s];
    for p in 0..s {
        for k in 0..c {
            out[k * s + p] = raw[c * p + k];
        }
    }
    Ok(out)
}

/// The PNG files under `dir` (8-bit grey or RGB, the model's shape), in name order.
pub fn from_png_dir(dir: &Path, shape: DataShape) -> Result<Images> {
    if !dir.is_dir() {
        return Err(file_err(dir, "--images: not a directory"));
    }
    let names = png_names(dir)?;
    if names.is_empty() {
        return Err(file_err(dir, "--images: no .png files in the folder"));
    }
    let mut pixels = Vec::with_capacity(names.len() * shape.dim());
    for n in &names {
        pixels.extend(png_pixels(&dir.join(n), shape)?);
    }
    Ok(Images {
        count: names.len(),
        container: Container::PngFolder { names },
        pixels,
        origin: dir.display().to_string(),
    })
}

/// One image as PNG bytes (channel-major pixels of `shape`).
fn png_bytes(px: &[u8], shape: DataShape) -> Result<Vec<u8>> {
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let s = h * w;
    let img = if c == 1 {
        image::GrayImage::from_raw(w as u32, h as u32, px.to_vec()).map(DynamicImage::ImageLuma8)
    } else {
        let mut rgb = vec![0u8; 3 * s];
        for p in 0..s {
            for k in 0..3 {
                rgb[3 * p + k] = px[k * s + p];
            }
        }
        image::RgbImage::from_raw(w as u32, h as u32, rgb).map(DynamicImage::ImageRgb8)
    };
    let img = img.ok_or_else(|| InferError::Input(format!("an image of shape {c}x{h}x{w}")))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| InferError::Input(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

/// Writes decoded `pixels` (`count` images of `shape`) to `out` in the form `container`
/// describes, atomically: a file (raw pixels, or the IDX header then the pixels), or a new
/// folder of PNG files (each decoded again and compared first). Returns the bytes written.
pub fn write_back(
    container: &Container,
    pixels: &[u8],
    shape: DataShape,
    out: &Path,
) -> Result<u64> {
    let write_err = |e: vae_codec::io::WriteError| file_err(out, e.to_string());
    match container {
        Container::Raw | Container::Idx { .. } => {
            let mut bytes = match container {
                Container::Idx { header } => header.clone(),
                _ => Vec::new(),
            };
            bytes.extend_from_slice(pixels);
            vae_codec::io::write_atomic(out, &bytes, |back| {
                (back == bytes)
                    .then_some(())
                    .ok_or_else(|| "the file reads back differently".to_string())
            })
            .map_err(write_err)?;
            Ok(bytes.len() as u64)
        }
        Container::PngFolder { names } => {
            let d = shape.dim();
            let mut files = Vec::with_capacity(names.len());
            for (name, px) in names.iter().zip(pixels.chunks_exact(d.max(1))) {
                let png = png_bytes(px, shape)?;
                let back = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
                    .map_err(|e| InferError::Input(format!("{name}: {e}")))?;
                let mut check = px.to_vec();
                if shape.channels == 3 {
                    // back is interleaved; compare channel-major.
                    let raw = back.into_bytes();
                    let s = shape.height * shape.width;
                    for p in 0..s {
                        for k in 0..3 {
                            check[k * s + p] = raw[3 * p + k];
                        }
                    }
                } else {
                    check = back.into_bytes();
                }
                if check != px {
                    return Err(InferError::Input(format!(
                        "{name}: the PNG written does not decode to the image"
                    )));
                }
                files.push((name.clone(), png));
            }
            vae_codec::io::write_atomic_dir(out, &files).map_err(write_err)?;
            Ok(files.iter().map(|(_, b)| b.len() as u64).sum())
        }
    }
}

/// Where a decompressed folder of PNG files must not exist yet; a file may be replaced.
pub fn check_out_free(container: &Container, out: &Path) -> Result<()> {
    if matches!(container, Container::PngFolder { .. }) && out.exists() {
        return Err(file_err(
            out,
            "--out: already exists (PNG files are written into a new folder)",
        ));
    }
    crate::args::check_out(out)
}
