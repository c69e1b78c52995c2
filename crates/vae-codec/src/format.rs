//! The compressed file: a checksummed header, then the payload (the chunks' stacks).
//!
//! All integers little-endian.
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `\x89VAEBB\r\n` |
//! | 8 | 2 | format version ([`FORMAT_VERSION`]) |
//! | 10 | 2 | codec version ([`CODEC_VERSION`]: the arithmetic of the models and the coder) |
//! | 12 | 4 | header length in bytes, its checksum included |
//! | 16 | 1 | latent bin precision (bits) |
//! | 17 | 1 | fixed-point precision of the models (bits) |
//! | 18 | 2 | reserved, 0 |
//! | 20 | 12 | image shape: channels, height, width (u32 each) |
//! | 32 | 8 | image count |
//! | 40 | 4 | latent dimensions |
//! | 44 | 4 | images per chunk |
//! | 48 | 32 | model fingerprint ([`fingerprint`]) |
//! | 80 | 8 | payload length in bytes |
//! | 88 | 32 | SHA-256 of the payload |
//! | 120 | 32 | SHA-256 of the original pixels (count × channels × height × width bytes) |
//! | 152 | 1 | container kind: 0 raw pixels, 1 IDX file, 2 folder of PNG files, 3 PNG files in tiles |
//! | 153 | 4 | container length n |
//! | 157 | n | container (below) |
//! | 157 + n | 32 | SHA-256 of all the header bytes before it |
//!
//! The container: nothing (kind 0); the IDX file's header bytes (kind 1); the count of names
//! (u32) then each name (u16 length, UTF-8), one per image (kind 2); for kind 3, one byte
//! (0: one PNG file, 1: a folder of them), the count of files (u32), then per file its name
//! (u16 length, UTF-8), height and width (u32 each), channels (u8) and padding (u8 kind: 0
//! the edges repeated, 1 a constant; u8 the constant, 0 for the edges).
//!
//! Kind 3 codes pictures of any size: each is cut into tiles of the image shape, row-major
//! ([`tile_grid`]), the last column and row of tiles padded as its [`Padding`] says; the
//! images of the file are the tiles, picture after picture, and the original checksum covers
//! the pictures' own pixels (each channel-major, one after another), without the padding.
//!
//! The payload is, per chunk: the seed prefix (u32), the word count (u32), the count of its
//! levels (u16: one per step of the warm-up plan), the levels (each the image of the chunk
//! from which on the step is taken, see [`Chunk`]: as differences from the one before, LEB128),
//! the words (u32).
//! The file ends with the payload: trailing bytes are an error.

use sha2::{Digest, Sha256};

use crate::driver::{Chunk, CodecParams};
use crate::models::PRECISION;

/// The first bytes of every compressed file.
pub const MAGIC: [u8; 8] = *b"\x89VAEBB\r\n";
/// The layout version this code reads and writes (version 4: the chunks' levels are the
/// steps of a warm-up plan that raises the groups' precisions, stored as LEB128 differences;
/// version 3 had one u32 level per group and is refused, as are earlier versions).
pub const FORMAT_VERSION: u16 = 4;
/// The version of the coder's arithmetic (the exact model passes, detmath, models, bins, ANS
/// parameters): a stream written by another version would not decode to the same pixels.
/// Version 2: the exact convolutions sum in the `(ky, kx, c)` order of channels-last maps.
pub const CODEC_VERSION: u16 = 2;

/// The longest header accepted (names of a large folder included).
const MAX_HEADER: usize = 1 << 28;
/// Bounds that keep every size computation far from overflow.
const MAX_PIXELS: u64 = 1 << 28;
const MAX_COUNT: u64 = 1 << 36;

/// Errors reading a compressed file: one line each, naming the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("empty file")]
    Empty,
    #[error("truncated file: it ends inside the {0}")]
    Truncated(&'static str),
    #[error("not a vae compressed file (bad magic)")]
    BadMagic,
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("unsupported codec version {0} (this build codes version {CODEC_VERSION})")]
    UnsupportedCodec(u16),
    #[error("checksum mismatch in the {0}: the file is corrupted")]
    Checksum(&'static str),
    #[error("compressed with another model: fingerprint {file}, this model {model}")]
    Fingerprint { file: String, model: String },
    #[error("invalid header: {0}")]
    Invalid(String),
    #[error("{0} trailing bytes after the payload")]
    Trailing(u64),
}

/// What the original data was, so that decompression can write it back as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// Just the pixels.
    Raw,
    /// An IDX file: its header bytes (magic and dimensions), followed by the pixels.
    Idx { header: Vec<u8> },
    /// A folder of PNG files of the image shape: their relative names, in image order.
    PngFolder { names: Vec<String> },
    /// PNG files of any size, each coded as its tiles of the image shape (see the module's
    /// documentation): one file (`folder` false; its name is only recorded) or a folder of
    /// files of these relative names.
    Tiled { folder: bool, files: Vec<TiledFile> },
}

/// A picture coded in tiles: its name, size and channels, and what fills its edge tiles
/// beyond it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TiledFile {
    pub name: String,
    pub height: u32,
    pub width: u32,
    pub channels: u8,
    pub padding: Padding,
}

/// What fills the tiles of a picture's last row and column beyond the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The picture's last column and row, repeated.
    Edge,
    /// One value everywhere.
    Constant(u8),
}

impl Padding {
    /// The two bytes of the container.
    fn bytes(self) -> [u8; 2] {
        match self {
            Padding::Edge => [0, 0],
            Padding::Constant(v) => [1, v],
        }
    }
}

impl TiledFile {
    /// Its values (height × width × channels).
    pub fn values(&self) -> u64 {
        u64::from(self.height) * u64::from(self.width) * u64::from(self.channels)
    }
}

/// The tiles of `tile_height` × `tile_width` that cover a picture of `height` × `width`: rows
/// and columns of tiles (the last row and column padded).
pub fn tile_grid(height: u32, width: u32, tile_height: u32, tile_width: u32) -> (u64, u64) {
    (
        u64::from(height).div_ceil(u64::from(tile_height.max(1))),
        u64::from(width).div_ceil(u64::from(tile_width.max(1))),
    )
}

/// The longest side of a picture coded in tiles.
pub const MAX_TILED_SIDE: u32 = 1 << 20;

/// Everything the header records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub codec_version: u16,
    pub params: CodecParams,
    /// Channels, height, width.
    pub shape: (u32, u32, u32),
    pub count: u64,
    pub latent_dim: u32,
    pub fingerprint: [u8; 32],
    pub payload_sha256: [u8; 32],
    pub original_sha256: [u8; 32],
    pub container: Container,
}

impl Header {
    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        (self.shape.0 as usize) * (self.shape.1 as usize) * (self.shape.2 as usize)
    }

    /// Refuses a model whose fingerprint differs from the file's.
    pub fn check_model(&self, fingerprint: &[u8; 32]) -> Result<(), FormatError> {
        if &self.fingerprint == fingerprint {
            Ok(())
        } else {
            Err(FormatError::Fingerprint {
                file: hex(&self.fingerprint[..8]),
                model: hex(&fingerprint[..8]),
            })
        }
    }

    /// Refuses decoded pixels that differ from the original's checksum.
    pub fn check_original(&self, pixels: &[u8]) -> Result<(), FormatError> {
        if sha256(pixels) == self.original_sha256 {
            Ok(())
        } else {
            Err(FormatError::Checksum("decoded images"))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The model fingerprint: SHA-256 of the length of the canonical config JSON (u64), the
/// JSON, then the weights' bytes.
pub fn fingerprint(config_json: &[u8], weights: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((config_json.len() as u64).to_le_bytes());
    h.update(config_json);
    h.update(weights);
    h.finalize().into()
}

/// The payload bytes of the chunks.
pub fn payload_bytes(chunks: &[Chunk]) -> Vec<u8> {
    let n: usize = chunks.iter().map(Chunk::stored_bytes).sum();
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        out.extend_from_slice(&c.seed_prefix.to_le_bytes());
        out.extend_from_slice(&(c.words.len() as u32).to_le_bytes());
        out.extend_from_slice(&(c.levels.len() as u16).to_le_bytes());
        out.extend_from_slice(&c.level_bytes());
        for w in &c.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// A whole file: `header` (its payload checksum is filled in here) then the payload.
pub fn write_file(header: &Header, chunks: &[Chunk]) -> Vec<u8> {
    let payload = payload_bytes(chunks);
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&header.codec_version.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // header length, patched below
    h.push(header.params.latent_bits as u8);
    h.push(PRECISION as u8);
    h.extend_from_slice(&0u16.to_le_bytes());
    for v in [header.shape.0, header.shape.1, header.shape.2] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&header.count.to_le_bytes());
    h.extend_from_slice(&header.latent_dim.to_le_bytes());
    h.extend_from_slice(&header.params.chunk_images.to_le_bytes());
    h.extend_from_slice(&header.fingerprint);
    h.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    h.extend_from_slice(&sha256(&payload));
    h.extend_from_slice(&header.original_sha256);
    let container = match &header.container {
        Container::Raw => (0u8, Vec::new()),
        Container::Idx { header } => (1, header.clone()),
        Container::PngFolder { names } => {
            let mut c = (names.len() as u32).to_le_bytes().to_vec();
            for n in names {
                c.extend_from_slice(&(n.len() as u16).to_le_bytes());
                c.extend_from_slice(n.as_bytes());
            }
            (2, c)
        }
        Container::Tiled { folder, files } => {
            let mut c = vec![u8::from(*folder)];
            c.extend_from_slice(&(files.len() as u32).to_le_bytes());
            for f in files {
                c.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
                c.extend_from_slice(f.name.as_bytes());
                c.extend_from_slice(&f.height.to_le_bytes());
                c.extend_from_slice(&f.width.to_le_bytes());
                c.push(f.channels);
                c.extend_from_slice(&f.padding.bytes());
            }
            (3, c)
        }
    };
    h.push(container.0);
    h.extend_from_slice(&(container.1.len() as u32).to_le_bytes());
    h.extend_from_slice(&container.1);
    let len = (h.len() + 32) as u32;
    h[12..16].copy_from_slice(&len.to_le_bytes());
    let sum = sha256(&h);
    h.extend_from_slice(&sum);
    h.extend_from_slice(&payload);
    h
}

/// Reads fields in order, naming the field a truncation hits.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(FormatError::Truncated(field))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u8(&mut self, f: &'static str) -> Result<u8, FormatError> {
        Ok(self.arr::<1>(f)?[0])
    }
    fn u16(&mut self, f: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.arr(f)?))
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.arr(f)?))
    }
    fn u64(&mut self, f: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.arr(f)?))
    }
    /// A LEB128 u32 in at most 5 bytes, its shortest form (what [`Chunk::level_bytes`] writes).
    fn leb128(&mut self, f: &'static str) -> Result<u32, FormatError> {
        let mut v = 0u64;
        for k in 0..5 {
            let b = self.take(1, f)?[0];
            v |= u64::from(b & 0x7f) << (7 * k);
            if b & 0x80 == 0 {
                if k > 0 && b == 0 {
                    return Err(invalid("a level written longer than it needs"));
                }
                return u32::try_from(v).map_err(|_| invalid("a level past 2^32"));
            }
        }
        Err(invalid("a level of more than 5 bytes"))
    }
}

fn invalid(m: impl Into<String>) -> FormatError {
    FormatError::Invalid(m.into())
}

/// Parses and checks a whole file: header, header checksum, payload length and checksum.
/// Returns the header and the payload. Never panics.
pub fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(FormatError::BadMagic);
    }
    let mut r = Reader { b: bytes, at: 0 };
    r.take(8, "magic")?;
    let version = r.u16("format version")?;
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let codec_version = r.u16("codec version")?;
    if codec_version != CODEC_VERSION {
        return Err(FormatError::UnsupportedCodec(codec_version));
    }
    let header_len = r.u32("header length")? as usize;
    if !(157 + 32..=MAX_HEADER).contains(&header_len) {
        return Err(invalid(format!("header length {header_len}")));
    }
    if bytes.len() < header_len {
        // Name the field the file ends in.
        let mut probe = Reader { b: bytes, at: 16 };
        probe_fields(&mut probe)?;
        return Err(FormatError::Truncated("header checksum"));
    }
    let (head, rest) = bytes.split_at(header_len);
    if sha256(&head[..header_len - 32]) != head[header_len - 32..] {
        return Err(FormatError::Checksum("header"));
    }
    let mut r = Reader {
        b: &head[..header_len - 32],
        at: 16,
    };
    let f = probe_fields(&mut r)?;
    if r.at != header_len - 32 {
        return Err(invalid("the container does not end where the header says"));
    }
    if (rest.len() as u64) < f.payload_len {
        return Err(FormatError::Truncated("payload"));
    }
    if (rest.len() as u64) > f.payload_len {
        return Err(FormatError::Trailing(rest.len() as u64 - f.payload_len));
    }
    if sha256(rest) != f.payload_sha256 {
        return Err(FormatError::Checksum("payload"));
    }
    let h = f.into_header(codec_version)?;
    Ok((h, rest))
}

/// The fields after the header length, unchecked but bounded.
struct Fields {
    latent_bits: u8,
    precision: u8,
    shape: (u32, u32, u32),
    count: u64,
    latent_dim: u32,
    chunk_images: u32,
    fingerprint: [u8; 32],
    payload_len: u64,
    payload_sha256: [u8; 32],
    original_sha256: [u8; 32],
    kind: u8,
    container: Vec<u8>,
}

fn probe_fields(r: &mut Reader) -> Result<Fields, FormatError> {
    let latent_bits = r.u8("latent bin precision")?;
    let precision = r.u8("model precision")?;
    r.u16("reserved field")?;
    let shape = (
        r.u32("image shape")?,
        r.u32("image shape")?,
        r.u32("image shape")?,
    );
    let count = r.u64("image count")?;
    let latent_dim = r.u32("latent dimension")?;
    let chunk_images = r.u32("chunk size")?;
    let fingerprint = r.arr("model fingerprint")?;
    let payload_len = r.u64("payload length")?;
    let payload_sha256 = r.arr("payload checksum")?;
    let original_sha256 = r.arr("original checksum")?;
    let kind = r.u8("container kind")?;
    let clen = r.u32("container length")? as usize;
    let container = r.take(clen, "container")?.to_vec();
    Ok(Fields {
        latent_bits,
        precision,
        shape,
        count,
        latent_dim,
        chunk_images,
        fingerprint,
        payload_len,
        payload_sha256,
        original_sha256,
        kind,
        container,
    })
}

impl Fields {
    fn into_header(self, codec_version: u16) -> Result<Header, FormatError> {
        if !crate::models::LATENT_BITS.contains(&(self.latent_bits as u32)) {
            return Err(invalid(format!(
                "latent bin precision {}",
                self.latent_bits
            )));
        }
        if self.precision as usize != PRECISION {
            return Err(invalid(format!("model precision {}", self.precision)));
        }
        let (c, h, w) = self.shape;
        let pixels = (c as u64)
            .checked_mul(h as u64)
            .and_then(|p| p.checked_mul(w as u64))
            .unwrap_or(u64::MAX);
        if pixels == 0 || pixels > MAX_PIXELS {
            return Err(invalid(format!("image shape {c}x{h}x{w}")));
        }
        if self.count == 0 || self.count > MAX_COUNT || self.count.saturating_mul(pixels) > 1 << 46
        {
            return Err(invalid(format!("{} images", self.count)));
        }
        if self.latent_dim == 0 || self.latent_dim > 1 << 20 {
            return Err(invalid(format!("{} latent dimensions", self.latent_dim)));
        }
        if self.chunk_images == 0 {
            return Err(invalid("chunks of 0 images"));
        }
        let container = match self.kind {
            0 if self.container.is_empty() => Container::Raw,
            1 => Container::Idx {
                header: self.container,
            },
            2 => Container::PngFolder {
                names: parse_names(&self.container, self.count)?,
            },
            3 => parse_tiled(&self.container, self.shape, self.count)?,
            k => return Err(invalid(format!("container kind {k}"))),
        };
        Ok(Header {
            codec_version,
            params: CodecParams {
                latent_bits: self.latent_bits as u32,
                chunk_images: self.chunk_images,
            },
            shape: self.shape,
            count: self.count,
            latent_dim: self.latent_dim,
            fingerprint: self.fingerprint,
            payload_sha256: self.payload_sha256,
            original_sha256: self.original_sha256,
            container,
        })
    }
}

/// One file name (u16 length, UTF-8), which must be a plain relative path.
fn read_name(r: &mut Reader) -> Result<String, FormatError> {
    let len = r.u16("file names")? as usize;
    let s = std::str::from_utf8(r.take(len, "file names")?)
        .map_err(|_| invalid("a file name is not UTF-8"))?;
    let p = std::path::Path::new(s);
    if s.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(invalid(format!(
            "file name `{s}` is not a plain relative path"
        )));
    }
    Ok(s.to_string())
}

/// Refuses a name given twice (its second file would replace the first).
fn check_unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), FormatError> {
    let mut sorted: Vec<&str> = names.collect();
    sorted.sort_unstable();
    match sorted.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(invalid(format!("file name `{}` appears twice", w[0]))),
        None => Ok(()),
    }
}

fn parse_names(b: &[u8], count: u64) -> Result<Vec<String>, FormatError> {
    let mut r = Reader { b, at: 0 };
    let n = r.u32("file names")? as u64;
    if n != count {
        return Err(invalid(format!("{n} file names for {count} images")));
    }
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(read_name(&mut r)?);
    }
    if r.at != b.len() {
        return Err(invalid("bytes after the file names"));
    }
    check_unique(names.iter().map(String::as_str))?;
    Ok(names)
}

/// The files of a tiled container (kind 3) whose tiles of `shape` must be the `count` images.
fn parse_tiled(b: &[u8], shape: (u32, u32, u32), count: u64) -> Result<Container, FormatError> {
    let mut r = Reader { b, at: 0 };
    let folder = match r.u8("file names")? {
        0 => false,
        1 => true,
        f => return Err(invalid(format!("tiled container form {f}"))),
    };
    let n = r.u32("file names")? as u64;
    if n == 0 || n > count || (!folder && n != 1) {
        return Err(invalid(format!("{n} files for {count} tiles")));
    }
    let (mut files, mut tiles, mut values) = (Vec::new(), 0u64, 0u64);
    for _ in 0..n {
        let name = read_name(&mut r)?;
        let (height, width) = (r.u32("file sizes")?, r.u32("file sizes")?);
        let channels = r.u8("file sizes")?;
        let padding = match (r.u8("file sizes")?, r.u8("file sizes")?) {
            (0, 0) => Padding::Edge,
            (1, v) => Padding::Constant(v),
            (k, v) => return Err(invalid(format!("`{name}`: padding {k} {v}"))),
        };
        if !(1..=MAX_TILED_SIDE).contains(&height) || !(1..=MAX_TILED_SIDE).contains(&width) {
            return Err(invalid(format!("`{name}`: a picture of {height}x{width}")));
        }
        if u32::from(channels) != shape.0 {
            return Err(invalid(format!(
                "`{name}`: {channels} channels in tiles of {}",
                shape.0
            )));
        }
        let (rows, cols) = tile_grid(height, width, shape.1, shape.2);
        let f = TiledFile {
            name,
            height,
            width,
            channels,
            padding,
        };
        // rows · cols ≤ 2^40 and values ≤ 2^48; the sums saturate rather than wrap.
        tiles = tiles.saturating_add(rows * cols);
        values = values.saturating_add(f.values());
        files.push(f);
    }
    if tiles != count {
        return Err(invalid(format!(
            "files of {tiles} tiles for {count} images"
        )));
    }
    if values > 1 << 46 {
        return Err(invalid(format!("pictures of {values} values")));
    }
    if r.at != b.len() {
        return Err(invalid("bytes after the file names"));
    }
    check_unique(files.iter().map(|f| f.name.as_str()))?;
    Ok(Container::Tiled { folder, files })
}

/// Splits a checked payload into the chunks `header` announces.
pub fn parse_payload(header: &Header, payload: &[u8]) -> Result<Vec<Chunk>, FormatError> {
    let chunks = header.count.div_ceil(header.params.chunk_images as u64);
    let mut r = Reader { b: payload, at: 0 };
    let mut out = Vec::new();
    for _ in 0..chunks {
        let seed_prefix = r.u32("payload")?;
        let n = r.u32("payload")? as usize;
        let levels = r.u16("payload")? as usize;
        let mut last = 0u32;
        let levels = (0..levels)
            .map(|_| {
                last = last
                    .checked_add(r.leb128("payload")?)
                    .ok_or_else(|| invalid("a chunk's level past 2^32"))?;
                Ok(last)
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        let words = r.take(n.saturating_mul(4), "payload")?;
        out.push(Chunk {
            seed_prefix,
            levels,
            words: words
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect(),
        });
    }
    if r.at != payload.len() {
        return Err(FormatError::Trailing((payload.len() - r.at) as u64));
    }
    Ok(out)
}
