//! Classical lossless baselines on a set of 8-bit images: gzip -9 (flate2 at its best level),
//! bzip2 -9, xz -9e (liblzma preset 9 | EXTREME), PNG (the `png` crate at its best deflate
//! level with adaptive filtering) and lossless WebP (libwebp: lossless, method 6, quality
//! 100, exact: `cwebp -lossless -z 9 -exact`).
//!
//! Each codec is measured two ways: per image (each image coded alone, its headers counted)
//! and as one stream (the general-purpose codecs on all pixels concatenated; PNG and WebP on
//! a mosaic of all images, zero-padded to a full grid). Every result is decoded and compared
//! with the input. WebP has no grey mode: grey images are coded as RGB with three equal
//! channels, and the real bytes are counted.

use std::io::{Read, Write};
use std::time::Instant;

use crate::{CodecError, Result};

/// How the images were coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each image alone.
    PerImage,
    /// All images in one stream or mosaic.
    Stream,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::PerImage => "per-image",
            Mode::Stream => "stream",
        }
    }
}

/// One measured baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRow {
    pub codec: &'static str,
    pub mode: Mode,
    /// Compressed bytes in all.
    pub bytes: u64,
    /// 8 × bytes / (images × pixels).
    pub bits_per_dim: f64,
    pub encode_seconds: f64,
    pub decode_seconds: f64,
}

/// The codecs measured, in table order.
pub const CODECS: [&str; 5] = ["png", "webp", "gzip", "bzip2", "xz"];

fn err(codec: &str, e: impl std::fmt::Display) -> CodecError {
    CodecError::BadParameter(format!("{codec}: {e}"))
}

/// Measures every codec both ways on `images` (`count` images of `channels × height × width`
/// bytes, channel-major). Channels must be 1 (grey) or 3 (RGB).
pub fn run_baselines(images: &[u8], shape: (usize, usize, usize)) -> Result<Vec<BaselineRow>> {
    run_codecs(images, shape, &CODECS)
}

/// [`run_baselines`] for some of the [`CODECS`] (WebP's method 6 is by far the slowest).
pub fn run_codecs(
    images: &[u8],
    shape: (usize, usize, usize),
    codecs: &[&'static str],
) -> Result<Vec<BaselineRow>> {
    let (c, h, w) = shape;
    let d = c * h * w;
    if d == 0 || images.is_empty() || !images.len().is_multiple_of(d) || !(c == 1 || c == 3) {
        return Err(CodecError::BadParameter(format!(
            "{} bytes are not images of shape {c}x{h}x{w} with 1 or 3 channels",
            images.len()
        )));
    }
    let count = images.len() / d;
    let dims = (count * d) as f64;
    let mut rows = Vec::new();
    if let Some(c) = codecs.iter().find(|c| !CODECS.contains(c)) {
        return Err(err(c, "unknown codec"));
    }
    for &codec in codecs {
        for mode in [Mode::PerImage, Mode::Stream] {
            let (bytes, enc, dec) = match mode {
                Mode::PerImage => {
                    let mut bytes = 0u64;
                    let (mut te, mut td) = (0.0, 0.0);
                    for img in images.chunks_exact(d) {
                        let t = Instant::now();
                        let z = encode_one(codec, img, c, h, w)?;
                        te += t.elapsed().as_secs_f64();
                        let t = Instant::now();
                        let back = decode_one(codec, &z, c, h, w)?;
                        td += t.elapsed().as_secs_f64();
                        if back != img {
                            return Err(err(codec, "per-image round trip differs"));
                        }
                        bytes += z.len() as u64;
                    }
                    (bytes, te, td)
                }
                Mode::Stream => {
                    let (data, mh, mw) = if is_image_codec(codec) {
                        mosaic(images, count, c, h, w)
                    } else {
                        (images.to_vec(), h, w)
                    };
                    let t = Instant::now();
                    let z = encode_one(codec, &data, c, mh, mw)?;
                    let te = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let back = decode_one(codec, &z, c, mh, mw)?;
                    let td = t.elapsed().as_secs_f64();
                    if back != data {
                        return Err(err(codec, "stream round trip differs"));
                    }
                    (z.len() as u64, te, td)
                }
            };
            rows.push(BaselineRow {
                codec,
                mode,
                bytes,
                bits_per_dim: 8.0 * bytes as f64 / dims,
                encode_seconds: enc,
                decode_seconds: dec,
            });
        }
    }
    Ok(rows)
}

fn is_image_codec(codec: &str) -> bool {
    codec == "png" || codec == "webp"
}

/// All images tiled in a grid of ceil(sqrt(n)) columns, zero-padded, channel-major.
fn mosaic(images: &[u8], n: usize, c: usize, h: usize, w: usize) -> (Vec<u8>, usize, usize) {
    let cols = (1..=n).find(|k| k * k >= n).unwrap_or(1);
    let rows = n.div_ceil(cols);
    let (mh, mw) = (rows * h, cols * w);
    let mut out = vec![0u8; c * mh * mw];
    for (i, img) in images.chunks_exact(c * h * w).enumerate() {
        let (r, q) = (i / cols, i % cols);
        for ch in 0..c {
            for y in 0..h {
                let src = &img[(ch * h + y) * w..][..w];
                out[(ch * mh + r * h + y) * mw + q * w..][..w].copy_from_slice(src);
            }
        }
    }
    (out, mh, mw)
}

/// Channel-major to interleaved (3 channels; grey is repeated thrice).
fn interleave(img: &[u8], c: usize, s: usize) -> Vec<u8> {
    let mut out = vec![0u8; 3 * s];
    for p in 0..s {
        for k in 0..3 {
            out[3 * p + k] = img[(if c == 1 { 0 } else { k }) * s + p];
        }
    }
    out
}

fn deinterleave(rgb: &[u8], c: usize, s: usize) -> Vec<u8> {
    let mut out = vec![0u8; c * s];
    for p in 0..s {
        for k in 0..c {
            out[k * s + p] = rgb[3 * p + k];
        }
    }
    out
}

fn encode_one(codec: &str, img: &[u8], c: usize, h: usize, w: usize) -> Result<Vec<u8>> {
    let e = |e: std::io::Error| err(codec, e);
    Ok(match codec {
        "gzip" => {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(img).map_err(e)?;
            z.finish().map_err(e)?
        }
        "bzip2" => {
            let mut z = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            z.write_all(img).map_err(e)?;
            z.finish().map_err(e)?
        }
        "xz" => {
            // Preset 9e; the dictionary no larger than the input needs (as xz does for a file
            // of known size), which changes the memory used, not the output's size.
            let mut opts =
                xz2::stream::LzmaOptions::new_preset(9 | 0x8000_0000).map_err(|x| err(codec, x))?;
            opts.dict_size((img.len() as u32).clamp(4096, 64 << 20));
            let mut filters = xz2::stream::Filters::new();
            filters.lzma2(&opts);
            let stream =
                xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc64)
                    .map_err(|x| err(codec, x))?;
            let mut z = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
            z.write_all(img).map_err(e)?;
            z.finish().map_err(e)?
        }
        "png" => {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
            enc.set_color(if c == 1 {
                png::ColorType::Grayscale
            } else {
                png::ColorType::Rgb
            });
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::High);
            enc.set_filter(png::Filter::Adaptive);
            let data = if c == 1 {
                img.to_vec()
            } else {
                interleave(img, c, h * w)
            };
            let mut wr = enc.write_header().map_err(|x| err(codec, x))?;
            wr.write_image_data(&data).map_err(|x| err(codec, x))?;
            wr.finish().map_err(|x| err(codec, x))?;
            out
        }
        "webp" => {
            let rgb = interleave(img, c, h * w);
            let mut cfg = webp::WebPConfig::new().map_err(|_| err(codec, "no config"))?;
            cfg.lossless = 1;
            cfg.method = 6;
            cfg.quality = 100.0;
            cfg.exact = 1;
            let enc = webp::Encoder::from_rgb(&rgb, w as u32, h as u32);
            let m = enc
                .encode_advanced(&cfg)
                .map_err(|x| err(codec, format!("{x:?}")))?;
            m.to_vec()
        }
        other => return Err(err(other, "unknown codec")),
    })
}

fn decode_one(codec: &str, z: &[u8], c: usize, h: usize, w: usize) -> Result<Vec<u8>> {
    let e = |e: std::io::Error| err(codec, e);
    let mut out = Vec::new();
    match codec {
        "gzip" => {
            flate2::read::GzDecoder::new(z)
                .read_to_end(&mut out)
                .map_err(e)?;
        }
        "bzip2" => {
            bzip2::read::BzDecoder::new(z)
                .read_to_end(&mut out)
                .map_err(e)?;
        }
        "xz" => {
            xz2::read::XzDecoder::new(z)
                .read_to_end(&mut out)
                .map_err(e)?;
        }
        "png" => {
            let mut dec = png::Decoder::new(std::io::Cursor::new(z))
                .read_info()
                .map_err(|x| err(codec, x))?;
            let mut buf = vec![0u8; dec.output_buffer_size().unwrap_or(0)];
            let info = dec.next_frame(&mut buf).map_err(|x| err(codec, x))?;
            buf.truncate(info.buffer_size());
            out = if c == 1 {
                buf
            } else {
                deinterleave(&buf, c, h * w)
            };
        }
        "webp" => {
            let img = webp::Decoder::new(z)
                .decode()
                .ok_or_else(|| err(codec, "decoding failed"))?;
            if img.is_alpha() || (img.width() as usize, img.height() as usize) != (w, h) {
                return Err(err(codec, "decoded image has another shape"));
            }
            out = deinterleave(&img, c, h * w);
        }
        other => return Err(err(other, "unknown codec")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every codec round-trips (checked inside) and reports consistent sizes; a flat image
    /// set compresses far below 8 bits/dim and noise does not.
    #[test]
    fn baselines_round_trip_and_rank_sensibly() {
        let (c, h, w) = (1, 12, 10);
        let n = 7;
        let flat = vec![17u8; n * c * h * w];
        let mut s = 7u32;
        let noise: Vec<u8> = (0..n * c * h * w)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            })
            .collect();
        for (data, low) in [(&flat, true), (&noise, false)] {
            let rows = run_baselines(data, (c, h, w)).unwrap();
            assert_eq!(rows.len(), 10);
            for r in &rows {
                let want = 8.0 * r.bytes as f64 / (n * c * h * w) as f64;
                assert!((r.bits_per_dim - want).abs() < 1e-12);
                if low && r.mode == Mode::Stream {
                    assert!(r.bits_per_dim < 1.0, "{r:?}");
                }
                if !low {
                    assert!(r.bits_per_dim > 7.0, "{r:?}");
                }
            }
        }
        let rgb: Vec<u8> = (0..3 * 4 * 5 * 3).map(|i| (i * 7) as u8).collect();
        assert_eq!(run_baselines(&rgb, (3, 4, 5)).unwrap().len(), 10);
        assert!(run_baselines(&rgb, (2, 4, 5)).is_err());
        assert!(run_baselines(&rgb[..10], (3, 4, 5)).is_err());
        let some = run_codecs(&rgb, (3, 4, 5), &["xz", "png"]).unwrap();
        assert_eq!(
            some.iter().map(|r| r.codec).collect::<Vec<_>>(),
            ["xz", "xz", "png", "png"]
        );
        assert!(run_codecs(&rgb, (3, 4, 5), &["zip"]).is_err());
    }
}
