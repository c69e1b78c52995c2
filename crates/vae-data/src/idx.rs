//! The IDX format of MNIST-like datasets, gzipped or raw, read with every check up front.
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then
//! one big-endian u32 per dimension, then the values. Nothing is allocated from a size the header
//! claims until that size has been checked: against the file's length for raw files, and against
//! the largest output deflate can produce from the compressed length for gzipped ones (so a
//! "gzip bomb" or a header claiming 10^12 bytes is refused before any allocation).

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

/// The deflate format cannot expand data by more than about 1032:1.
const MAX_DEFLATE_RATIO: u64 = 1100;
/// Upper bound on any IDX payload we agree to read (16 GiB).
pub const MAX_IDX_BYTES: u64 = 1 << 34;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip detected from its magic bytes) and checks that it has `ndim` dims.
pub fn read_idx_file(path: &Path, ndim: usize) -> Result<IdxArray> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut reader = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let gz = match reader.get_mut().read_exact(&mut magic) {
        Ok(()) => magic == [0x1f, 0x8b],
        Err(_) => {
            return Err(DataError::format(
                path,
                format!("file is only {len} bytes; an IDX header needs at least 4"),
            ))
        }
    };
    // Start again from the beginning with the right decoder.
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = std::io::BufReader::new(file);
    if gz {
        parse(
            MultiGzDecoder::new(reader),
            path,
            ndim,
            Source::Gzip { compressed: len },
        )
    } else {
        parse(reader, path, ndim, Source::Raw { len })
    }
}

/// Reads IDX bytes held in memory (raw or gzipped); `name` is used in error messages.
pub fn read_idx_bytes(bytes: &[u8], name: &Path, ndim: usize) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse(
            MultiGzDecoder::new(bytes),
            name,
            ndim,
            Source::Gzip {
                compressed: bytes.len() as u64,
            },
        )
    } else {
        parse(
            bytes,
            name,
            ndim,
            Source::Raw {
                len: bytes.len() as u64,
            },
        )
    }
}

#[derive(Clone, Copy)]
enum Source {
    Raw { len: u64 },
    Gzip { compressed: u64 },
}

fn read_err(path: &Path, e: std::io::Error, what: &str) -> DataError {
    let msg = match e.kind() {
        std::io::ErrorKind::UnexpectedEof => format!(
            "truncated while reading {what} (the file ends early or the gzip stream is cut)"
        ),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            format!("corrupt data while reading {what}: {e}")
        }
        _ => format!("error while reading {what}: {e}"),
    };
    DataError::format(path, msg)
}

/// A checked IDX header: its dimensions and the number of body bytes they describe.
struct Header {
    dims: Vec<u64>,
    total: u64,
}

/// Checks the 4 + 4 * ndim header bytes `head` (fewer bytes means the file ended early).
fn check_header(head: &[u8], path: &Path, ndim: usize) -> Result<Header> {
    let truncated = |what: &str| {
        DataError::format(
            path,
            format!("truncated while reading {what} (the file ends early)"),
        )
    };
    let [m0, m1, ty, n] = head.get(..4).ok_or_else(|| truncated("the IDX header"))? else {
        return Err(truncated("the IDX header"));
    };
    if (*m0, *m1) != (0, 0) {
        return Err(DataError::format(
            path,
            format!("not an IDX file: magic bytes {m0:02x} {m1:02x} should be 00 00"),
        ));
    }
    if *ty != 0x08 {
        return Err(DataError::format(
            path,
            format!("IDX element type 0x{ty:02x} is not supported (expected 0x08, unsigned bytes)"),
        ));
    }
    let n = *n as usize;
    if n != ndim {
        return Err(DataError::format(
            path,
            format!("IDX file has {n} dimensions, expected {ndim}"),
        ));
    }
    let mut dims = Vec::with_capacity(n);
    for i in 0..n {
        let b: [u8; 4] = head
            .get(4 + 4 * i..8 + 4 * i)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| truncated(&format!("dimension {i} of the header")))?;
        dims.push(u32::from_be_bytes(b) as u64);
    }
    let total = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(path, format!("IDX dimensions {dims:?} overflow")))?;
    if total > MAX_IDX_BYTES {
        return Err(DataError::format(
            path,
            format!("IDX dimensions {dims:?} claim {total} bytes, more than the {MAX_IDX_BYTES} allowed"),
        ));
    }
    Ok(Header { dims, total })
}

/// Checks that a raw file of `len` bytes holds exactly the header and the body it describes.
fn check_raw_length(path: &Path, h: &Header, len: u64) -> Result<()> {
    let (dims, total) = (&h.dims, h.total);
    let body = len.saturating_sub(4 + 4 * dims.len() as u64);
    if body < total {
        return Err(DataError::format(
            path,
            format!(
                "truncated: dimensions {dims:?} need {total} bytes of data, the file holds {body}"
            ),
        ));
    }
    if body > total {
        return Err(DataError::format(
            path,
            format!(
                "{} trailing bytes after the {total} bytes that dimensions {dims:?} describe",
                body - total
            ),
        ));
    }
    Ok(())
}

/// Checks the header and reads the body of an IDX stream.
fn parse<R: Read>(mut r: R, path: &Path, ndim: usize, source: Source) -> Result<IdxArray> {
    let mut head = [0u8; 4 + 4 * 255];
    let want = 4 + 4 * ndim.min(255);
    let mut got = 0;
    // Read the header up to what `ndim` dimensions need; a short read is reported by the checks.
    while got < want {
        match r.read(&mut head[got..want]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(path, e, "the IDX header")),
        }
    }
    if got < 4 {
        return Err(DataError::format(
            path,
            format!("file is only {got} bytes; an IDX header needs at least 4"),
        ));
    }
    let h = check_header(&head[..got], path, ndim)?;
    match source {
        Source::Raw { len } => check_raw_length(path, &h, len)?,
        Source::Gzip { compressed } => {
            let most = compressed.saturating_mul(MAX_DEFLATE_RATIO) + 1024;
            if h.total > most {
                return Err(DataError::format(
                    path,
                    format!(
                        "dimensions {:?} claim {} bytes, more than {compressed} compressed bytes can hold (corrupt header or gzip bomb)",
                        h.dims, h.total
                    ),
                ));
            }
        }
    }
    let Header { dims, total } = h;
    let total = total as usize;
    // Grow as data arrives rather than trusting the header for a large allocation.
    let mut data = Vec::with_capacity(total.min(1 << 26));
    (&mut r)
        .take(total as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_err(path, e, "the IDX body"))?;
    if data.len() < total {
        return Err(DataError::format(
            path,
            format!(
                "truncated: dimensions {dims:?} need {total} bytes of data, found {}",
                data.len()
            ),
        ));
    }
    if data.len() > total {
        return Err(DataError::format(
            path,
            format!("trailing bytes after the {total} bytes that dimensions {dims:?} describe"),
        ));
    }
    if let Source::Gzip { .. } = source {
        // Reading on to the end makes the decoder check the CRC and length of every member.
        let mut rest = [0u8; 1];
        match r.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => {
                return Err(DataError::format(path, "trailing bytes after the IDX body"));
            }
            Err(e) => return Err(read_err(path, e, "the end of the gzip stream")),
        }
    }
    Ok(IdxArray {
        dims: dims.into_iter().map(|d| d as usize).collect(),
        data,
    })
}

/// The header of a raw IDX file that was checked against the file's length, and the file mapped
/// into memory (see [`crate::dataset::Mapped`]).
#[derive(Debug, Clone)]
pub struct MappedIdx {
    pub dims: Vec<usize>,
    pub values: crate::dataset::Mapped,
}

/// Memory-maps a raw (uncompressed) IDX file after checking its header and that the file holds
/// exactly the bytes the header describes. The body is not read: pages are loaded when used.
///
/// The file must not be truncated or rewritten while it is mapped (as for any memory map).
pub fn map_idx_file(path: &Path, ndim: usize) -> Result<MappedIdx> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut head = Vec::with_capacity(4 + 4 * ndim);
    (&file)
        .take(4 + 4 * ndim as u64)
        .read_to_end(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err(DataError::format(
            path,
            "a gzipped IDX file cannot be memory-mapped; decompress it (gunzip) to stream it",
        ));
    }
    let header = check_header(&head, path, ndim)?;
    check_raw_length(path, &header, len)?;
    let offset = 4 + 4 * ndim;
    let values = crate::dataset::Mapped::new(file, path, offset, header.total as usize)?;
    Ok(MappedIdx {
        dims: header.dims.iter().map(|&d| d as usize).collect(),
        values,
    })
}

/// Encodes an IDX array of unsigned bytes (used to write the embedded sample and test files).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
