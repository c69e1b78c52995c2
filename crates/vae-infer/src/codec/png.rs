//! The PNG files `compress` reads and `decompress` writes: 8-bit grey or RGB, as the model's
//! channels, without alpha, of any size. Reading checks the file's own header first (bit
//! depth and colour type, which the decoded picture no longer shows), then decodes under
//! vae-data's limits; writing decodes the written bytes again and compares them with the
//! pixels before they are handed on.

use std::io::{BufRead, Cursor, Read, Seek};
use std::path::Path;

use image::{ColorType, DynamicImage, ImageReader};
use vae_core::DataShape;

use crate::{InferError, Result};

/// The first eight bytes of every PNG file.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// A picture: its shape and its pixels, channel-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub shape: DataShape,
    pub pixels: Vec<u8>,
}

/// Whether `bytes` start as a PNG file does.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&SIGNATURE)
}

fn file_err(path: &Path, msg: impl Into<String>) -> InferError {
    InferError::File {
        path: path.into(),
        msg: msg.into(),
    }
}

fn kind_name(channels: usize) -> &'static str {
    if channels == 1 {
        "grey"
    } else {
        "RGB"
    }
}

/// Checks the IHDR chunk (always first, at byte 8): bit depth 8 and colour type 0 (grey) or 2
/// (RGB), the one of the model's `channels`.
fn check_header(head: &[u8], name: &Path, channels: usize) -> Result<()> {
    if !is_png(head) {
        return Err(file_err(name, "not a PNG file"));
    }
    if head.len() < 26 || &head[12..16] != b"IHDR" {
        return Err(file_err(name, "a PNG file without its header (IHDR)"));
    }
    let (depth, colour) = (head[24], head[25]);
    let what = match colour {
        0 => format!("{depth}-bit grey"),
        2 => format!("{depth}-bit RGB"),
        3 => format!("{depth}-bit indexed-colour (palette)"),
        4 => format!("{depth}-bit grey with alpha"),
        6 => format!("{depth}-bit RGBA"),
        c => format!("colour type {c}"),
    };
    let want = if channels == 1 { 0 } else { 2 };
    if depth != 8 || colour != want {
        return Err(file_err(
            name,
            format!(
                "{what} pixels: the model codes 8-bit {} PNG files ({channels} channel{}), \
                 without alpha",
                kind_name(channels),
                if channels == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok(())
}

/// Decodes the PNG of `reader` (whose first bytes are `head`) to channel-major pixels.
fn decode_with<R: BufRead + Seek>(
    reader: R,
    head: &[u8],
    name: &Path,
    channels: usize,
) -> Result<Picture> {
    check_header(head, name, channels)?;
    let mut r = ImageReader::with_format(reader, image::ImageFormat::Png);
    r.limits(vae_data::images::limits());
    let img = r
        .decode()
        .map_err(|e| file_err(name, format!("cannot decode the picture: {e}")))?;
    let c = match img.color() {
        ColorType::L8 => 1,
        ColorType::Rgb8 => 3,
        other => {
            // An 8-bit grey or RGB file whose tRNS chunk the decoder turned into alpha.
            return Err(file_err(
                name,
                format!(
                    "a picture with transparency (decoded as {other:?}): the model codes 8-bit {} \
                     PNG files without alpha",
                    kind_name(channels)
                ),
            ));
        }
    };
    let (h, w) = (img.height() as usize, img.width() as usize);
    let raw = img.into_bytes();
    let s = h * w;
    let mut pixels = vec![0u8; c * s];
    for p in 0..s {
        for k in 0..c {
            pixels[k * s + p] = raw[c * p + k];
        }
    }
    Ok(Picture {
        shape: DataShape::image(c, h, w),
        pixels,
    })
}

/// The picture of a PNG file (see the module's documentation for what is accepted).
pub fn read(path: &Path, channels: usize) -> Result<Picture> {
    let mut f = std::fs::File::open(path).map_err(|e| file_err(path, e.to_string()))?;
    let mut head = Vec::with_capacity(32);
    (&mut f)
        .take(32)
        .read_to_end(&mut head)
        .map_err(|e| file_err(path, e.to_string()))?;
    f.rewind().map_err(|e| file_err(path, e.to_string()))?;
    decode_with(std::io::BufReader::new(f), &head, path, channels)
}

/// The picture of PNG bytes held in memory; `name` names them in messages.
pub fn decode(bytes: &[u8], name: &Path, channels: usize) -> Result<Picture> {
    decode_with(Cursor::new(bytes), bytes, name, channels)
}

/// The PNG bytes of `p` (8-bit grey or RGB), decoded again and compared with its pixels;
/// `name` names it in messages.
pub fn encode(p: &Picture, name: &str) -> Result<Vec<u8>> {
    let (c, h, w) = (p.shape.channels, p.shape.height, p.shape.width);
    let s = h * w;
    let bad = |msg: String| InferError::Input(format!("{name}: {msg}"));
    let img = match c {
        1 => image::GrayImage::from_raw(w as u32, h as u32, p.pixels.clone())
            .map(DynamicImage::ImageLuma8),
        3 if p.pixels.len() == 3 * s => {
            let mut rgb = vec![0u8; 3 * s];
            for q in 0..s {
                for k in 0..3 {
                    rgb[3 * q + k] = p.pixels[k * s + q];
                }
            }
            image::RgbImage::from_raw(w as u32, h as u32, rgb).map(DynamicImage::ImageRgb8)
        }
        _ => None,
    };
    let img = img.ok_or_else(|| {
        bad(format!(
            "{} values for a {c}x{h}x{w} picture",
            p.pixels.len()
        ))
    })?;
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| bad(format!("encoding a PNG: {e}")))?;
    let bytes = out.into_inner();
    let back = decode(&bytes, Path::new(name), c)?;
    if back != *p {
        return Err(bad("the PNG written does not decode to the picture".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// Grey and RGB pictures go through PNG bytes and back to the same channel-major pixels.
    #[test]
    fn pictures_round_trip_through_png_bytes() {
        for c in [1usize, 3] {
            let shape = DataShape::image(c, 5, 7);
            let p = Picture {
                shape,
                pixels: (0..shape.dim()).map(|i| (i * 37 % 256) as u8).collect(),
            };
            let bytes = encode(&p, "x.png").unwrap();
            assert!(is_png(&bytes));
            assert_eq!(decode(&bytes, Path::new("x.png"), c).unwrap(), p);
        }
        // Channel-major: the red plane first.
        let rgb = image::RgbImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let p = decode(&png(DynamicImage::ImageRgb8(rgb)), Path::new("c.png"), 3).unwrap();
        assert_eq!(p.pixels, [1, 4, 2, 5, 3, 6]);
    }

    /// 16-bit, alpha, the other channel count and non-PNG bytes are refused by name.
    #[test]
    fn other_depths_alpha_and_channels_are_refused() {
        let cases = [
            (
                png(DynamicImage::ImageLuma16(image::ImageBuffer::new(3, 3))),
                1,
                "16-bit grey",
            ),
            (
                png(DynamicImage::ImageLumaA8(image::ImageBuffer::new(3, 3))),
                1,
                "grey with alpha",
            ),
            (
                png(DynamicImage::ImageRgba8(image::ImageBuffer::new(3, 3))),
                3,
                "8-bit RGBA",
            ),
            (
                png(DynamicImage::ImageRgb8(image::ImageBuffer::new(3, 3))),
                1,
                "8-bit RGB pixels: the model codes 8-bit grey",
            ),
            (
                png(DynamicImage::ImageLuma8(image::ImageBuffer::new(3, 3))),
                3,
                "8-bit grey pixels: the model codes 8-bit RGB",
            ),
            (b"GIF89a....".to_vec(), 1, "not a PNG file"),
            (SIGNATURE.to_vec(), 1, "without its header"),
        ];
        for (bytes, c, want) in cases {
            let e = decode(&bytes, Path::new("dir/bad.png"), c)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("dir/bad.png: ") && e.contains(want),
                "{want}: {e}"
            );
        }
    }
}
