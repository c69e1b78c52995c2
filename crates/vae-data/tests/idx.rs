//! The IDX reader against every bad input of the specification (section 9): each test writes its
//! own file and checks that the error names the file and the problem, without a panic and, for
//! headers that claim huge sizes, without a large allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use vae_data::dataset::{from_idx, load_idx_dir, load_idx_dir_with, Stream};
use vae_data::idx::{encode_idx, map_idx_file, read_idx_bytes, read_idx_file, MAX_IDX_BYTES};

/// Counts the bytes allocated by the current thread, so that a test can measure the peak of
/// what one call allocates while other tests run on other threads.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most bytes held at once by this thread while `f` ran, above what it held before.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - start).max(0) as usize)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("writing a test file");
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

/// A header of `ndim` dimensions `dims` (no body).
fn header(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// Reads `path` expecting an error; checks that it names the file and contains `what`.
fn refused(path: &Path, ndim: usize, what: &str) -> String {
    let err = match read_idx_file(path, ndim) {
        Ok(a) => panic!("{} was accepted: dims {:?}", path.display(), a.dims),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    assert!(err.contains(what), "error lacks `{what}`: {err}");
    err
}

/// Ten 2x3 images with values 0..60, and their labels.
fn small_set() -> (Vec<u8>, Vec<u8>) {
    let images = encode_idx(&[10, 2, 3], &(0..60).collect::<Vec<u8>>());
    let labels = encode_idx(&[10], &(0..10).collect::<Vec<u8>>());
    (images, labels)
}

#[test]
fn valid_raw_and_gzipped_files_read_the_same() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, _) = small_set();
    let raw = read_idx_file(&write(tmp.path(), "a", &images), 3)?;
    let gz = read_idx_file(&write(tmp.path(), "a.gz", &gzip(&images)), 3)?;
    assert_eq!(raw.dims, [10, 2, 3]);
    assert_eq!(raw.data, (0..60).collect::<Vec<u8>>());
    assert_eq!(raw, gz);
    Ok(())
}

#[test]
fn wrong_magic() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut bytes = header(&[1, 1, 1]);
    bytes[0] = 0x50;
    bytes.push(0);
    refused(&write(tmp.path(), "magic", &bytes), 3, "magic bytes 50 00");
    // A PNG is not an IDX file either.
    refused(
        &write(tmp.path(), "png", b"\x89PNG\r\n\x1a\n\0\0\0\0"),
        3,
        "not an IDX file",
    );
    Ok(())
}

#[test]
fn wrong_element_type() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut bytes = header(&[1]);
    bytes[2] = 0x0d; // float
    bytes.extend_from_slice(&[0; 4]);
    refused(&write(tmp.path(), "float", &bytes), 1, "element type 0x0d");
    Ok(())
}

#[test]
fn wrong_number_of_dimensions() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, labels) = small_set();
    let p = write(tmp.path(), "labels-as-images", &labels);
    refused(&p, 3, "1 dimensions, expected 3");
    let (images, _) = small_set();
    let p = write(tmp.path(), "images-as-labels.gz", &gzip(&images));
    refused(&p, 1, "3 dimensions, expected 1");
    Ok(())
}

#[test]
fn dimensions_that_overflow() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // (2^32 - 1)^3 does not fit in 64 bits.
    let p = write(tmp.path(), "overflow", &header(&[u32::MAX; 3]));
    let ((), peak) = peak_bytes(|| {
        refused(&p, 3, "overflow");
    });
    assert!(peak < 1 << 20, "{peak} bytes allocated");
    Ok(())
}

#[test]
fn a_header_claiming_a_terabyte_is_refused_before_any_allocation() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // 10^6 * 1000 * 1000 = 10^12 bytes, more than the cap: refused from the header alone.
    let mut bytes = header(&[1_000_000, 1000, 1000]);
    bytes.extend_from_slice(&[7; 100]);
    let raw = write(tmp.path(), "terabyte", &bytes);
    let gz = write(tmp.path(), "terabyte.gz", &gzip(&bytes));
    for p in [&raw, &gz] {
        let (err, peak) = peak_bytes(|| refused(p, 3, "1000000000000 bytes"));
        assert!(err.contains(&MAX_IDX_BYTES.to_string()), "{err}");
        // Buffers and decoder state only: far below the 10^12 claimed (and below 1 MiB).
        assert!(peak < 1 << 20, "{}: {peak} bytes allocated", p.display());
    }
    let (r, peak) = peak_bytes(|| map_idx_file(&raw, 3));
    assert!(r.is_err());
    assert!(peak < 1 << 20, "mapping: {peak} bytes allocated");
    Ok(())
}

#[test]
fn dimensions_that_claim_more_than_the_file_holds() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // 10^10 bytes is below the cap, so only the file's length can refuse it.
    let mut bytes = header(&[10_000, 1000, 1000]);
    bytes.extend_from_slice(&[1; 784]);
    let p = write(tmp.path(), "short", &bytes);
    let (err, peak) = peak_bytes(|| refused(&p, 3, "truncated"));
    assert!(err.contains("need 10000000000 bytes"), "{err}");
    assert!(err.contains("holds 784"), "{err}");
    assert!(peak < 1 << 20, "{peak} bytes allocated");
    // Gzipped, the claim is checked against the most deflate can expand 1 KB to.
    let p = write(tmp.path(), "short.gz", &gzip(&bytes));
    let (err, peak) = peak_bytes(|| refused(&p, 3, "gzip bomb"));
    assert!(err.contains("compressed bytes can hold"), "{err}");
    assert!(peak < 1 << 20, "{peak} bytes allocated");
    Ok(())
}

#[test]
fn truncated_body() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, _) = small_set();
    let cut = &images[..images.len() - 7];
    let err = refused(&write(tmp.path(), "cut", cut), 3, "truncated");
    assert!(err.contains("need 60 bytes"), "{err}");
    // The same body, complete gzip stream: the decoder delivers too few bytes.
    let err = refused(&write(tmp.path(), "cut.gz", &gzip(cut)), 3, "truncated");
    assert!(err.contains("found 53"), "{err}");
    // A header cut in the middle of its dimensions.
    refused(
        &write(tmp.path(), "cut-header", &images[..9]),
        3,
        "dimension 1 of the header",
    );
    refused(&write(tmp.path(), "empty", &[]), 3, "only 0 bytes");
    Ok(())
}

#[test]
fn trailing_bytes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut images, _) = small_set();
    images.extend_from_slice(&[0; 5]);
    let err = refused(&write(tmp.path(), "long", &images), 3, "trailing bytes");
    assert!(err.contains("5 trailing bytes"), "{err}");
    refused(
        &write(tmp.path(), "long.gz", &gzip(&images)),
        3,
        "trailing bytes",
    );
    Ok(())
}

#[test]
fn truncated_gzip_stream() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, _) = small_set();
    let gz = gzip(&images);
    // Without its 8-byte trailer (CRC and length) and a bit of the deflate stream.
    let p = write(tmp.path(), "cut.gz", &gz[..gz.len() - 12]);
    refused(&p, 3, "truncated");
    // Only the trailer missing: the data is all there but cannot be verified.
    let p = write(tmp.path(), "no-trailer.gz", &gz[..gz.len() - 8]);
    refused(&p, 3, "gzip");
    Ok(())
}

#[test]
fn bad_crc() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, _) = small_set();
    let mut gz = gzip(&images);
    // The CRC32 is the first 4 of the last 8 bytes (RFC 1952).
    let n = gz.len();
    gz[n - 8] ^= 0xff;
    let err = refused(&write(tmp.path(), "crc.gz", &gz), 3, "corrupt");
    assert!(err.contains("checksum"), "{err}");
    Ok(())
}

#[test]
fn gzip_bomb() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // A valid header for 10 small images followed by 256 MB of zeros: about 250 KB compressed.
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&header(&[10, 2, 3]))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros)?;
    }
    let bomb = e.finish()?;
    drop(zeros);
    assert!(bomb.len() < 1 << 20);
    let p = write(tmp.path(), "bomb.gz", &bomb);
    let (err, peak) = peak_bytes(|| refused(&p, 3, "trailing bytes"));
    assert!(err.contains("60 bytes"), "{err}");
    // Reading stops one byte past the 60 the header describes.
    assert!(peak < 1 << 20, "{peak} bytes allocated");
    // A header that claims 1 GiB, four times what the bomb expands to, is refused from the
    // compressed length alone (deflate expands at most about 1032:1).
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&header(&[1024, 1024, 1024]))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros)?;
    }
    let p = write(tmp.path(), "bomb2.gz", &e.finish()?);
    let (_, peak) = peak_bytes(|| refused(&p, 3, "gzip bomb"));
    assert!(peak < 1 << 20, "{peak} bytes allocated");
    Ok(())
}

fn write_set(dir: &Path, images: &[u8], labels: &[u8]) {
    let (ti, tl) = small_set();
    write(dir, "train-images-idx3-ubyte", images);
    write(dir, "train-labels-idx1-ubyte.gz", &gzip(labels));
    write(dir, "t10k-images-idx3-ubyte.gz", &gzip(&ti));
    write(dir, "t10k-labels-idx1-ubyte", &tl);
}

fn dir_refused(dir: &Path, file: &str, what: &str) -> String {
    let err = match load_idx_dir(dir, 10) {
        Ok(s) => panic!("accepted: {} examples", s.train.len()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(file), "error does not name {file}: {err}");
    assert!(err.contains(what), "error lacks `{what}`: {err}");
    err
}

#[test]
fn label_count_differs_from_image_count() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, _) = small_set();
    write_set(tmp.path(), &images, &encode_idx(&[9], &[0; 9]));
    let err = dir_refused(tmp.path(), "train-labels-idx1-ubyte.gz", "9 labels");
    assert!(err.contains("10 images"), "{err}");
    Ok(())
}

#[test]
fn label_out_of_range() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, _) = small_set();
    let mut labels: Vec<u8> = (0..10).collect();
    labels[4] = 10;
    write_set(tmp.path(), &images, &encode_idx(&[10], &labels));
    let err = dir_refused(tmp.path(), "train-labels-idx1-ubyte.gz", "label 10");
    assert!(err.contains("index 4"), "{err}");
    assert!(err.contains("out of range"), "{err}");
    Ok(())
}

#[test]
fn zero_images() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    write_set(
        tmp.path(),
        &encode_idx(&[0, 28, 28], &[]),
        &encode_idx(&[0], &[]),
    );
    dir_refused(tmp.path(), "train-images-idx3-ubyte", "zero images");
    // The same from memory.
    let p = Path::new("mem-images");
    let images = read_idx_bytes(&encode_idx(&[0, 28, 28], &[]), p, 3)?;
    let labels = read_idx_bytes(&encode_idx(&[0], &[]), Path::new("mem-labels"), 1)?;
    let err = from_idx(images, labels, 10, p, Path::new("mem-labels"))
        .expect_err("zero images accepted")
        .to_string();
    assert!(
        err.contains("mem-images") && err.contains("zero images"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_missing_file_is_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, labels) = small_set();
    write_set(tmp.path(), &images, &labels);
    std::fs::remove_file(tmp.path().join("t10k-labels-idx1-ubyte"))?;
    dir_refused(tmp.path(), "t10k-labels-idx1-ubyte", "not found");
    Ok(())
}

#[test]
fn mapped_files_are_checked_like_read_ones_and_give_the_same_batches() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (images, labels) = small_set();
    // Refusals: gzipped, truncated, trailing bytes, terabyte header.
    let gz = write(tmp.path(), "x.gz", &gzip(&images));
    let err = map_idx_file(&gz, 3).expect_err("gz mapped").to_string();
    assert!(err.contains("x.gz") && err.contains("gunzip"), "{err}");
    let cut = write(tmp.path(), "cut", &images[..images.len() - 1]);
    let err = map_idx_file(&cut, 3).expect_err("cut mapped").to_string();
    assert!(err.contains("cut") && err.contains("truncated"), "{err}");
    let mut long = images.clone();
    long.push(1);
    let long = write(tmp.path(), "long", &long);
    let err = map_idx_file(&long, 3).expect_err("long mapped").to_string();
    assert!(
        err.contains("long") && err.contains("1 trailing bytes"),
        "{err}"
    );
    let m = map_idx_file(&write(tmp.path(), "ok", &images), 3)?;
    assert_eq!(m.dims, [10, 2, 3]);
    assert_eq!(m.values.bytes(), &images[16..]);

    // A directory read both ways gives the same examples.
    write_set(tmp.path(), &images, &labels);
    let mem = load_idx_dir_with(tmp.path(), 10, Stream::Off)?;
    let mapped = load_idx_dir_with(tmp.path(), 10, Stream::On);
    // The test images are gzipped, so they cannot be mapped: the error says which.
    let err = mapped.expect_err("gz mapped").to_string();
    assert!(err.contains("t10k-images-idx3-ubyte.gz"), "{err}");
    write(tmp.path(), "t10k-images-idx3-ubyte", &images);
    let mapped = load_idx_dir_with(tmp.path(), 10, Stream::On)?;
    assert!(mapped.train.is_mapped() && !mem.train.is_mapped());
    assert_eq!(mapped.train.storage_bytes(), 0);
    let idx = [9, 0, 4, 4];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    mem.train.gather(&idx, &mut a);
    mapped.train.gather(&idx, &mut b);
    assert_eq!(a, b);
    // Image 9 starts with value 54 (values 0..60 in order, 6 per image), scaled by 1/255.
    assert_eq!((a[0] * 255.0).round(), 54.0);
    assert_eq!(mapped.train.gather_labels(&idx), Some(vec![9, 0, 4, 4]));
    Ok(())
}
