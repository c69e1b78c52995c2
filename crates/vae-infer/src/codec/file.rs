//! Whole compressed files in memory: [`compress`] codes images into the bytes of a file and
//! [`decompress`] gives them back, checked. The `compress` and `decompress` commands and the
//! Python package go through these two functions, so a file is the same from either.

use std::time::Instant;

use vae_codec::format::{self, Header, CODEC_VERSION};
use vae_codec::CodecParams;

use super::source::{self, Images};
use super::{fingerprint, CodecModel};
use crate::model::Loaded;
use crate::{InferError, Result};

/// A compressed file and what its coding cost.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// The whole file: header, then payload.
    pub file: Vec<u8>,
    pub header: Header,
    /// Bytes of the payload (the file less its header).
    pub payload_bytes: usize,
    /// Σ over images of -log2 p(x|z) - log2 p(z) + log2 q(z|x) under the quantised models.
    pub net_bits: f64,
    /// Bits of the payload beyond the images' net bits.
    pub initial_bits: f64,
    /// Seconds of coding (the model's passes included).
    pub seconds: f64,
}

/// Codes `imgs` with `glue`, the coder's form of the model of `m` (on the CPU, see
/// [`CodecModel::new`]), into a file, the chunks shared out over `threads` threads.
pub fn compress(
    m: &Loaded,
    glue: &CodecModel,
    imgs: &Images,
    params: CodecParams,
    threads: usize,
) -> Result<Compressed> {
    let d = glue.pixels();
    if imgs.count == 0 || imgs.pixels.len() != imgs.count * d {
        return Err(InferError::Input(format!(
            "{}: {} values for {} images of {d}",
            imgs.origin,
            imgs.pixels.len(),
            imgs.count
        )));
    }
    glue.check_values(&imgs.pixels, |i| imgs.name(i))?;
    let s = m.model.config().shape;
    if imgs.shape != s {
        let t = imgs.shape;
        return Err(InferError::Input(format!(
            "{}: images of {}x{}x{} for a model of {}x{}x{}",
            imgs.origin, t.channels, t.height, t.width, s.channels, s.height, s.width
        )));
    }
    let original_sha256 = format::sha256(&source::originals(&imgs.container, &imgs.pixels, s)?);
    let t = Instant::now();
    let enc = vae_codec::encode(glue, &imgs.pixels, d, params, threads)
        .map_err(|e| InferError::Input(format!("{}: {e}", imgs.origin)))?;
    let seconds = t.elapsed().as_secs_f64();
    let payload = format::payload_bytes(&enc.chunks);
    let header = Header {
        codec_version: CODEC_VERSION,
        params,
        shape: (s.channels as u32, s.height as u32, s.width as u32),
        count: imgs.count as u64,
        latent_dim: m.model.latent_dim() as u32,
        fingerprint: fingerprint(&m.model, &m.varmap)?,
        payload_sha256: format::sha256(&payload),
        original_sha256,
        container: imgs.container.clone(),
    };
    let file = format::write_file(&header, &enc.chunks);
    Ok(Compressed {
        file,
        header,
        payload_bytes: payload.len(),
        net_bits: enc.net_bits(),
        initial_bits: enc.initial_bits(),
        seconds,
    })
}

/// The images of a file, decoded and checked.
#[derive(Debug, Clone)]
pub struct Decompressed {
    pub header: Header,
    /// `header.count` images of `header.shape`, channel-major, one after another (for PNG
    /// files coded in tiles, the tiles: [`source::originals`] crops the pictures out).
    pub pixels: Vec<u8>,
    /// Seconds of decoding (the model's passes included).
    pub seconds: f64,
}

/// Decodes the file `bytes` with `glue`, the coder's form of the model of `m` (the one that
/// wrote it: its fingerprint is checked first), over `threads` threads, and checks the
/// original pictures (the images, or the pictures cropped out of their tiles) against the
/// original's checksum. `name` names the file in messages.
pub fn decompress(
    m: &Loaded,
    glue: &CodecModel,
    bytes: &[u8],
    name: &str,
    threads: usize,
) -> Result<Decompressed> {
    let bad = |e: &dyn std::fmt::Display| InferError::Input(format!("{name}: {e}"));
    let (header, payload) = format::parse(bytes).map_err(|e| bad(&e))?;
    header
        .check_model(&fingerprint(&m.model, &m.varmap)?)
        .map_err(|e| bad(&e))?;
    let s = m.model.config().shape;
    let (c, h, w) = header.shape;
    if (c as usize, h as usize, w as usize) != (s.channels, s.height, s.width)
        || header.latent_dim as usize != m.model.latent_dim()
    {
        return Err(bad(&format!(
            "images of {c}x{h}x{w} with {} latents, but the model has {}x{}x{} and {}",
            header.latent_dim,
            s.channels,
            s.height,
            s.width,
            m.model.latent_dim()
        )));
    }
    let chunks = format::parse_payload(&header, payload).map_err(|e| bad(&e))?;
    let count =
        usize::try_from(header.count).map_err(|_| bad(&format!("{} images", header.count)))?;
    let t = Instant::now();
    let pixels = vae_codec::decode(glue, &chunks, count, glue.pixels(), header.params, threads)
        .map_err(|e| bad(&e))?;
    let seconds = t.elapsed().as_secs_f64();
    let originals = source::originals(&header.container, &pixels, s).map_err(|e| bad(&e))?;
    header.check_original(&originals).map_err(|e| bad(&e))?;
    Ok(Decompressed {
        header,
        pixels,
        seconds,
    })
}
