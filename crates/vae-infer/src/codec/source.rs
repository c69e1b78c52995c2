//! The images `compress` codes and the form `decompress` writes them back in: a split of the
//! run's dataset (written back as a raw IDX file), an IDX file (raw or gzipped; written back
//! as the raw file, byte for byte), one PNG file or a folder of them (written back as PNG
//! files of the same relative names whose pixels are the originals). Pictures of the model's
//! size are its images; a folder with a picture of another size, or a single file, is coded in
//! tiles of the model's size ([`super::tiles`]).

use std::borrow::Cow;
use std::path::Path;

use vae_codec::format::{Padding, TiledFile};
use vae_codec::Container;
use vae_core::DataShape;
use vae_data::idx::{encode_idx, read_idx_bytes, read_idx_file, IdxArray};
use vae_data::Dataset;

use super::png::{self, Picture};
use super::tiles;
use crate::{InferError, Result};

/// How the pictures of a file or folder to be coded in tiles are padded: one padding each
/// (see [`super::padding::choose`]).
pub type ChoosePadding<'a> = dyn Fn(&[&Picture]) -> Result<Vec<Padding>> + 'a;

/// Images to code: `count` images of `shape`, channel-major, one after another.
#[derive(Debug, Clone)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub count: usize,
    /// The shape of each image (the model's).
    pub shape: DataShape,
    pub container: Container,
    /// What the images are called in messages (a file, a folder, a split).
    pub origin: String,
}

impl Images {
    /// How image `i` is named in messages: its file (and tile), or its place in the origin.
    pub fn name(&self, i: usize) -> String {
        match &self.container {
            Container::PngFolder { names } if i < names.len() => {
                format!("{}/{}", self.origin, names[i])
            }
            Container::Tiled { folder, files } => {
                let shape = self.shape;
                let mut first = 0;
                for f in files {
                    let n = tiles::count(picture_shape(f), shape);
                    if i < first + n {
                        let file = if *folder {
                            format!("{}/{}", self.origin, f.name)
                        } else {
                            self.origin.clone()
                        };
                        return format!("{file} tile {}", i - first);
                    }
                    first += n;
                }
                format!("{} image {i}", self.origin)
            }
            _ => format!("{} image {i}", self.origin),
        }
    }

    /// The pictures (or images) given: files of a folder, else the images.
    pub fn pictures(&self) -> usize {
        match &self.container {
            Container::Tiled { files, .. } => files.len(),
            _ => self.count,
        }
    }

    /// Values of the pictures given, without the tiles' padding.
    pub fn original_values(&self) -> u64 {
        original_values(&self.container, self.count, self.shape)
    }
}

/// Values of the original pictures of `count` coded images of `shape` under `container`.
pub fn original_values(container: &Container, count: usize, shape: DataShape) -> u64 {
    match container {
        Container::Tiled { files, .. } => files.iter().map(TiledFile::values).sum(),
        _ => (count * shape.dim()) as u64,
    }
}

/// The shape of a tiled picture.
fn picture_shape(f: &TiledFile) -> DataShape {
    DataShape::image(f.channels as usize, f.height as usize, f.width as usize)
}

/// The original pixels of the coded images `pixels` (of `shape`) under `container`: the
/// pictures cropped out of their tiles, each channel-major, one after another (and checked:
/// their tiles must be the coded images, padding included), or the images themselves.
pub fn originals<'a>(
    container: &Container,
    pixels: &'a [u8],
    shape: DataShape,
) -> Result<Cow<'a, [u8]>> {
    let Container::Tiled { files, .. } = container else {
        return Ok(Cow::Borrowed(pixels));
    };
    let d = shape.dim();
    let mut out = Vec::new();
    let mut at = 0;
    for f in files {
        let pic = picture_shape(f);
        let n = tiles::count(pic, shape) * d;
        let own = pixels
            .get(at..at + n)
            .ok_or_else(|| InferError::Input(format!("{}: fewer images than its tiles", f.name)))?;
        let px = tiles::crop(own, pic, shape)?;
        if tiles::cut(&px, pic, shape, f.padding)? != own {
            return Err(InferError::Input(format!(
                "{}: the padding of its tiles is not the one recorded",
                f.name
            )));
        }
        out.extend(px);
        at += n;
    }
    if at != pixels.len() {
        return Err(InferError::Input(format!(
            "{} images beyond the pictures' tiles",
            (pixels.len() - at) / d.max(1)
        )));
    }
    Ok(Cow::Owned(out))
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
        shape,
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
    let arr = read_idx_file(path, idx_dims(0, shape).len())?;
    from_idx_array(arr, path, shape)
}

/// The images of an IDX array read from `path` (a name in messages).
fn from_idx_array(arr: IdxArray, path: &Path, shape: DataShape) -> Result<Images> {
    let want = idx_dims(0, shape);
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
        shape,
        container: Container::Idx {
            header: encode_idx(&arr.dims, &[]),
        },
        pixels: arr.data,
        origin: path.display().to_string(),
    })
}

/// The bytes of a file given on standard input: a PNG file (by its signature; coded in tiles,
/// decompressed as one PNG file) or an IDX file, raw or gzipped (as [`from_idx`]).
pub fn from_bytes(
    bytes: &[u8],
    name: &Path,
    shape: DataShape,
    pad: &ChoosePadding,
) -> Result<Images> {
    if png::is_png(bytes) {
        let pic = png::decode(bytes, name, shape.channels)?;
        return tiled(vec![("-".into(), pic)], false, shape, name, pad);
    }
    let arr = read_idx_bytes(bytes, name, idx_dims(0, shape).len())?;
    from_idx_array(arr, name, shape)
}

/// One PNG file of any size (8-bit, the model's channels), coded in tiles.
pub fn from_png_file(path: &Path, shape: DataShape, pad: &ChoosePadding) -> Result<Images> {
    let pic = png::read(path, shape.channels)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| file_err(path, "the file name is not valid UTF-8"))?;
    tiled(vec![(name.to_string(), pic)], false, shape, path, pad)
}

/// Pictures coded in tiles of `shape`, picture after picture, each padded as `pad` chooses:
/// one file or a folder.
fn tiled(
    pics: Vec<(String, Picture)>,
    folder: bool,
    shape: DataShape,
    origin: &Path,
    pad: &ChoosePadding,
) -> Result<Images> {
    let paddings = pad(&pics.iter().map(|(_, p)| p).collect::<Vec<_>>())?;
    if paddings.len() != pics.len() {
        return Err(InferError::Input(format!(
            "{} paddings for {} pictures",
            paddings.len(),
            pics.len()
        )));
    }
    let mut pixels = Vec::new();
    let mut files = Vec::with_capacity(pics.len());
    for ((name, pic), padding) in pics.into_iter().zip(paddings) {
        pixels.extend(tiles::cut(&pic.pixels, pic.shape, shape, padding)?);
        files.push(TiledFile {
            name,
            height: pic.shape.height as u32,
            width: pic.shape.width as u32,
            channels: pic.shape.channels as u8,
            padding,
        });
    }
    Ok(Images {
        count: pixels.len() / shape.dim().max(1),
        shape,
        container: Container::Tiled { folder, files },
        pixels,
        origin: origin.display().to_string(),
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

/// The PNG files under `dir` (8-bit, the model's channels, any size), in name order. A folder
/// of pictures of the model's size codes them as its images; any other size, tiles.
pub fn from_png_dir(dir: &Path, shape: DataShape, pad: &ChoosePadding) -> Result<Images> {
    if !dir.is_dir() {
        return Err(file_err(dir, "--images: not a directory"));
    }
    let names = png_names(dir)?;
    if names.is_empty() {
        return Err(file_err(dir, "--images: no .png files in the folder"));
    }
    let mut pics = Vec::with_capacity(names.len());
    for n in names {
        let pic = png::read(&dir.join(&n), shape.channels)?;
        pics.push((n, pic));
    }
    if pics.iter().any(|(_, p)| p.shape != shape) {
        return tiled(pics, true, shape, dir, pad);
    }
    let mut pixels = Vec::with_capacity(pics.len() * shape.dim());
    let mut names = Vec::with_capacity(pics.len());
    for (n, p) in pics {
        pixels.extend(p.pixels);
        names.push(n);
    }
    Ok(Images {
        count: names.len(),
        shape,
        container: Container::PngFolder { names },
        pixels,
        origin: dir.display().to_string(),
    })
}

/// What decoded images become: one file's bytes, or a folder's files (relative names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    File(Vec<u8>),
    Folder(Vec<(String, Vec<u8>)>),
}

impl Output {
    /// Bytes of all the files.
    pub fn bytes(&self) -> u64 {
        match self {
            Output::File(b) => b.len() as u64,
            Output::Folder(files) => files.iter().map(|(_, b)| b.len() as u64).sum(),
        }
    }
}

/// The files of decoded `pixels` (coded images of `shape`) in the form `container`
/// describes: raw pixels, the IDX header then the pixels, or PNG files (each decoded again
/// and compared with its pixels).
pub fn render(container: &Container, pixels: &[u8], shape: DataShape) -> Result<Output> {
    Ok(match container {
        Container::Raw => Output::File(pixels.to_vec()),
        Container::Idx { header } => {
            let mut bytes = header.clone();
            bytes.extend_from_slice(pixels);
            Output::File(bytes)
        }
        Container::PngFolder { names } => {
            let d = shape.dim().max(1);
            if names.len() * d != pixels.len() {
                return Err(InferError::Input(format!(
                    "{} names for {} images",
                    names.len(),
                    pixels.len() / d
                )));
            }
            let files = names
                .iter()
                .zip(pixels.chunks_exact(d))
                .map(|(name, px)| {
                    let pic = Picture {
                        shape,
                        pixels: px.to_vec(),
                    };
                    Ok((name.clone(), png::encode(&pic, name)?))
                })
                .collect::<Result<Vec<_>>>()?;
            Output::Folder(files)
        }
        Container::Tiled { folder, files } => {
            let all = originals(container, pixels, shape)?;
            let mut at = 0;
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                let pic_shape = picture_shape(f);
                let pic = Picture {
                    shape: pic_shape,
                    pixels: all[at..at + pic_shape.dim()].to_vec(),
                };
                at += pic_shape.dim();
                out.push((f.name.clone(), png::encode(&pic, &f.name)?));
            }
            match (folder, out.pop()) {
                (false, Some((_, bytes))) if out.is_empty() => Output::File(bytes),
                (false, _) => {
                    return Err(InferError::Input(format!(
                        "{} pictures in a one-file container",
                        files.len()
                    )))
                }
                (true, last) => {
                    out.extend(last);
                    Output::Folder(out)
                }
            }
        }
    })
}

/// Writes decoded `pixels` (coded images of `shape`) to `out` in the form `container`
/// describes, atomically: a file (read back and compared first), or a new folder of files.
/// Returns the bytes written.
pub fn write_back(
    container: &Container,
    pixels: &[u8],
    shape: DataShape,
    out: &Path,
) -> Result<u64> {
    let write_err = |e: vae_codec::io::WriteError| file_err(out, e.to_string());
    let output = render(container, pixels, shape)?;
    match &output {
        Output::File(bytes) => vae_codec::io::write_atomic(out, bytes, |back| {
            (back == bytes)
                .then_some(())
                .ok_or_else(|| "the file reads back differently".to_string())
        })
        .map_err(write_err)?,
        Output::Folder(files) => vae_codec::io::write_atomic_dir(out, files).map_err(write_err)?,
    }
    Ok(output.bytes())
}

/// Whether the container decodes to a folder of files (and how many), not one file.
pub fn folder_files(container: &Container) -> Option<usize> {
    match container {
        Container::PngFolder { names } => Some(names.len()),
        Container::Tiled {
            folder: true,
            files,
        } => Some(files.len()),
        _ => None,
    }
}

/// Where a decompressed folder of PNG files must not exist yet; a file may be replaced.
pub fn check_out_free(container: &Container, out: &Path) -> Result<()> {
    if folder_files(container).is_some() && out.exists() {
        return Err(file_err(
            out,
            "--out: already exists (PNG files are written into a new folder)",
        ));
    }
    crate::args::check_out(out)
}
