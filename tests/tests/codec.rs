//! Lossless compression end to end, with models trained in seconds on a small cut of the
//! embedded sample (1,000 train / 200 test images): mlp and conv models with discrete
//! likelihoods compress at their negative ELBO plus the coder's small overheads, and
//! `decompress` gives the original bytes back whatever the thread count or SIMD level; PNG
//! files of any size go through in tiles of the model's size, one file, a folder or standard
//! input and output; damaged files, other models, pictures the model cannot code and models
//! that cannot code fail with one line, exit 1, and leave nothing behind.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

const TEST_IMAGES: usize = 200;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"))
}

fn tmp_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("codec")
}

/// A fresh, empty directory under the test's temporary root.
fn fresh(name: &str) -> PathBuf {
    let dir = tmp_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file of the embedded sample, gunzipped.
fn sample_file(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/fashion-mnist-sample")
        .join(format!("{name}.gz"));
    let gz = std::fs::read(&path).unwrap();
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    raw
}

/// The first `n` items of an IDX file of `item` bytes per item (header rewritten).
fn idx_first(raw: &[u8], n: usize, item: usize) -> Vec<u8> {
    let ndim = raw[3] as usize;
    let mut out = raw[..4 + 4 * ndim].to_vec();
    out[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    let start = 4 + 4 * ndim;
    out.extend_from_slice(&raw[start..start + n * item]);
    out
}

/// The sample's test images (all 1,000) as a raw IDX file.
fn t10k() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| sample_file("t10k-images-idx3-ubyte"))
}

/// The first `n` test images as a raw IDX file.
fn t10k_first(n: usize) -> Vec<u8> {
    idx_first(t10k(), n, 784)
}

/// Pixels of test image `i`.
fn image(i: usize) -> &'static [u8] {
    &t10k()[16 + i * 784..16 + (i + 1) * 784]
}

/// A Fashion-MNIST directory of raw IDX files: the sample's first 1,000 train and first
/// [`TEST_IMAGES`] test images with their labels.
fn small_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = fresh("data");
        for (prefix, n) in [("train", 1000), ("t10k", TEST_IMAGES)] {
            let images = sample_file(&format!("{prefix}-images-idx3-ubyte"));
            let labels = sample_file(&format!("{prefix}-labels-idx1-ubyte"));
            std::fs::write(
                dir.join(format!("{prefix}-images-idx3-ubyte")),
                idx_first(&images, n, 784),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{prefix}-labels-idx1-ubyte")),
                idx_first(&labels, n, 1),
            )
            .unwrap();
        }
        dir
    })
}

/// A run trained on [`small_data`] with `flags` (one epoch and seed 3 unless they say
/// otherwise).
fn trained(name: &str, flags: &[&str]) -> PathBuf {
    let dir = tmp_root().join("runs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = vec![
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(small_data()),
        "--quiet",
    ];
    for (flag, default) in [("--epochs", "1"), ("--seed", "3")] {
        if !flags.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(flags);
    args.extend(["--out", s(&dir)]);
    ok(train(&args));
    dir
}

/// mlp [400] relu, latent 20, discretized logistic, 2 epochs: shared by several tests.
fn mlp_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        trained(
            "mlp-logistic",
            &["--likelihood", "discretized-logistic", "--epochs", "2"],
        )
    })
}

/// The mlp of [`mlp_run`] with other weights (seed 4, one epoch): the same architecture and
/// latent size, so only the fingerprint tells it apart.
fn other_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        trained(
            "other-model",
            &["--likelihood", "discretized-logistic", "--seed", "4"],
        )
    })
}

/// The files a directory holds (names), to check that nothing was left behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn compress(run: &Path, input: &[&str], out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["compress", "--run", s(run), "--out", s(out), "--json"];
    args.extend_from_slice(input);
    args.extend_from_slice(extra);
    json(&ok(infer(&args)))
}

fn decompress(run: &Path, file: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "decompress",
        s(file),
        "--run",
        s(run),
        "--out",
        s(out),
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&ok(infer(&args)))
}

fn num(r: &serde_json::Value, key: &str) -> f64 {
    r[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {r}"))
}

/// Checks a compress report of `images` 28x28 images: the rate is the file's bytes; the bytes
/// are the header, the net bits and the initial bits; the net bits are the negative ELBO plus
/// the latents' quantisation (within 2 % and 0.02 bits/dim).
fn check_rate(r: &serde_json::Value, images: u64) {
    assert_eq!(r["images"].as_u64(), Some(images), "{r}");
    let dims = images as f64 * 784.0;
    let bytes = num(r, "bytes");
    let bpd = num(r, "bits_per_dim");
    assert!((bpd - 8.0 * bytes / dims).abs() < 1e-9, "{r}");
    let (net, initial, header) = (
        num(r, "net_bits_per_dim"),
        num(r, "initial_bits"),
        num(r, "header_bytes"),
    );
    assert!(initial > 0.0 && header > 150.0, "{r}");
    assert!(
        (8.0 * header + net * dims + initial - 8.0 * bytes).abs() < 1e-6 * 8.0 * bytes,
        "header + net + initial bits != file bits: {r}"
    );
    let elbo = num(r, "neg_elbo_bits_per_dim");
    assert!(
        (net - elbo).abs() < 0.02 * elbo + 0.02,
        "net rate {net} bits/dim vs negative ELBO {elbo}"
    );
    assert!(num(r, "seconds") > 0.0);
}

/// The mlp model codes the test split within its negative ELBO's reach and decompresses it to
/// the test IDX file byte for byte; the file does not depend on the thread count (1 or 2) and
/// decodes the same with the SIMD level capped (by flag and by `VAE_SIMD`); a gzipped IDX file
/// given as the positional input comes back as its raw bytes.
#[test]
fn mlp_round_trip_is_exact_whatever_the_threads_and_simd() {
    let run = mlp_run();
    let dir = fresh("mlp");
    let (two, one) = (dir.join("two.vbb"), dir.join("one.vbb"));
    let r = compress(run, &["--split", "test"], &two, &["--threads", "2"]);
    check_rate(&r, TEST_IMAGES as u64);
    assert_eq!(r["threads"].as_u64(), Some(2));
    assert!(num(&r, "verify_seconds") > 0.0);
    compress(run, &["--split", "test"], &one, &["--threads", "1"]);
    assert!(
        std::fs::read(&two).unwrap() == std::fs::read(&one).unwrap(),
        "the file depends on the thread count"
    );
    let want = t10k_first(TEST_IMAGES);

    let back = dir.join("back.idx");
    let d = decompress(run, &two, &back, &["--threads", "2"]);
    assert_eq!(d["images"].as_u64(), Some(TEST_IMAGES as u64));
    assert_eq!(d["bytes"].as_u64(), Some(want.len() as u64));
    assert!(
        std::fs::read(&back).unwrap() == want,
        "decoded bytes differ"
    );

    let base = dir.join("base.idx");
    let d = decompress(run, &two, &base, &["--simd", "baseline", "--threads", "1"]);
    assert_eq!(d["simd"].as_str(), Some("baseline"));
    assert!(std::fs::read(&base).unwrap() == want);
    let env = dir.join("env.idx");
    let mut c = infer(&[
        "decompress",
        s(&two),
        "--run",
        s(run),
        "-o",
        s(&env),
        "--json",
    ]);
    c.env("VAE_SIMD", "baseline");
    assert_eq!(json(&ok(c))["simd"].as_str(), Some("baseline"));
    assert!(std::fs::read(&env).unwrap() == want);

    // The same images as a gzipped IDX file, positional, written at the baseline SIMD level:
    // the same file as the split's, and the raw bytes back.
    let gz_path = dir.join("some.idx.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &want).unwrap();
    std::fs::write(&gz_path, enc.finish().unwrap()).unwrap();
    let file = dir.join("gz.vbb");
    let g = compress(run, &[s(&gz_path)], &file, &["--simd", "baseline"]);
    assert_eq!(g["simd"].as_str(), Some("baseline"));
    assert!(std::fs::read(&file).unwrap() == std::fs::read(&two).unwrap());
    let raw = dir.join("gz.idx");
    decompress(run, &file, &raw, &[]);
    assert!(std::fs::read(&raw).unwrap() == want);
}

/// A folder of 12 PNG files (one in a sub-folder) through a conv model with a 3-component
/// logistic mixture: the same bytes at 1 and 2 threads, and PNG files of the same names whose
/// pixels are the originals; an existing output folder, a colour picture and a 16-bit one are
/// refused by name.
#[test]
fn conv_mixture_round_trips_a_png_folder() {
    let run = trained(
        "conv-mixture",
        &[
            "--preset",
            "conv",
            "--likelihood",
            "discretized-logistic",
            "--mixtures",
            "3",
        ],
    );
    let dir = fresh("png");
    let pics = dir.join("pics");
    std::fs::create_dir_all(pics.join("sub")).unwrap();
    let names: Vec<String> = (0..12)
        .map(|i| {
            if i == 5 {
                "sub/c.png".to_string()
            } else {
                format!("{i:02}.png")
            }
        })
        .collect();
    for (i, n) in names.iter().enumerate() {
        image::GrayImage::from_raw(28, 28, image(i).to_vec())
            .unwrap()
            .save(pics.join(n))
            .unwrap();
    }
    let (one, two) = (dir.join("one.vbb"), dir.join("two.vbb"));
    let r = compress(&run, &["--images", s(&pics)], &one, &["--threads", "1"]);
    assert_eq!(r["images"].as_u64(), Some(12));
    assert_eq!(r["likelihood"].as_str(), Some("discretized-logistic"));
    compress(&run, &["--images", s(&pics)], &two, &["--threads", "2"]);
    assert!(std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap());
    let out = dir.join("out");
    decompress(&run, &two, &out, &["--threads", "2"]);
    let mut sorted = names.clone();
    sorted.sort();
    for n in &sorted {
        let i = names.iter().position(|m| m == n).unwrap();
        let img = image::open(out.join(n)).unwrap().to_luma8();
        assert!(img.as_raw()[..] == *image(i), "{n}");
    }
    // The folder exists now: refused, nothing changed.
    let before = listing(&out);
    let e = fails(
        infer(&["decompress", s(&two), "--run", s(&run), "--out", s(&out)]),
        1,
    );
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(listing(&out), before);
    // A colour picture and a 16-bit one are refused, naming the file.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let bad_out = dir.join("bad.vbb");
    image::RgbImage::new(28, 28)
        .save(bad.join("rgb.png"))
        .unwrap();
    let cmd = || {
        infer(&[
            "compress",
            "--run",
            s(&run),
            "--images",
            s(&bad),
            "--out",
            s(&bad_out),
        ])
    };
    let e = fails(cmd(), 1);
    assert!(e.contains("rgb.png") && e.contains("8-bit RGB"), "{e}");
    std::fs::remove_file(bad.join("rgb.png")).unwrap();
    image::DynamicImage::ImageLuma16(image::ImageBuffer::new(28, 28))
        .save(bad.join("deep.png"))
        .unwrap();
    let e = fails(cmd(), 1);
    assert!(e.contains("deep.png") && e.contains("16-bit grey"), "{e}");
    assert!(!bad_out.exists());
}

/// A beta-binomial model codes grey levels; a Bernoulli model trained on statically binarised
/// images codes the binarised split (0 and 255) at the negative ELBO `evaluate` reports for it,
/// and refuses grey levels by image and value.
#[test]
fn beta_binomial_and_bernoulli_round_trip() {
    let run = trained(
        "beta-binomial",
        &["--likelihood", "beta-binomial", "--epochs", "3"],
    );
    let file = run.join("test.vbb");
    let r = compress(&run, &["--split", "test"], &file, &[]);
    check_rate(&r, TEST_IMAGES as u64);
    let back = run.join("back.idx");
    decompress(&run, &file, &back, &[]);
    assert!(std::fs::read(&back).unwrap() == t10k_first(TEST_IMAGES));

    let run = trained(
        "bernoulli",
        &["--likelihood", "bernoulli", "--binarize", "static"],
    );
    let file = run.join("test.vbb");
    let r = compress(&run, &["--split", "test"], &file, &[]);
    check_rate(&r, TEST_IMAGES as u64);
    let e = json(&ok(infer(&[
        "evaluate",
        "--run",
        s(&run),
        "--iw-samples",
        "0",
        "--json",
    ])));
    let want = num(&e, "neg_elbo_bits_per_dim");
    let got = num(&r, "neg_elbo_bits_per_dim");
    assert!(
        (got - want).abs() < 1e-3 * want,
        "{got} vs evaluate's {want}"
    );
    let back = run.join("back.idx");
    decompress(&run, &file, &back, &[]);
    let bytes = std::fs::read(&back).unwrap();
    assert_eq!(bytes[..16], t10k_first(TEST_IMAGES)[..16]);
    assert!(bytes[16..].iter().all(|&v| v == 0 || v == 255));
    assert!(bytes[16..].contains(&255) && bytes[16..].contains(&0));
    // The grey test images: the first pixel that is not 0 or 255 is named.
    let grey = run.join("grey.idx");
    std::fs::write(&grey, t10k_first(3)).unwrap();
    let out = run.join("grey.vbb");
    let e = fails(
        infer(&["compress", "--run", s(&run), s(&grey), "--out", s(&out)]),
        1,
    );
    let first = t10k()[16..]
        .iter()
        .position(|&v| v != 0 && v != 255)
        .unwrap();
    let want = format!(
        "grey.idx image {}: pixel {} has the value {}",
        first / 784,
        first % 784,
        t10k()[16 + first]
    );
    assert!(e.contains(&want) && e.contains("0 and 255"), "{e}");
    assert!(!out.exists());
}

/// Damaged files (cut short, a flipped byte, empty, not ours), another model's file and a
/// missing one fail with exit 1 and one line naming the file and the cause, and leave nothing
/// behind.
#[test]
fn damaged_files_and_other_models_fail_cleanly() {
    let run = mlp_run();
    let dir = fresh("damaged");
    let good = dir.join("good.vbb");
    let idx = dir.join("first.idx");
    std::fs::write(&idx, t10k_first(30)).unwrap();
    compress(run, &["--idx", s(&idx)], &good, &[]);
    let bytes = std::fs::read(&good).unwrap();
    let mut flipped_payload = bytes.clone();
    let last = flipped_payload.len() - 5;
    flipped_payload[last] ^= 0x10;
    let mut flipped_header = bytes.clone();
    flipped_header[40] ^= 1;
    let other = other_run();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cut.vbb", bytes[..bytes.len() - 7].to_vec(), "truncated"),
        ("cut-header.vbb", bytes[..100].to_vec(), "truncated"),
        ("payload.vbb", flipped_payload, "checksum"),
        ("header.vbb", flipped_header, "checksum"),
        ("empty.vbb", Vec::new(), "empty"),
        (
            "other.vbb",
            b"not a compressed file".to_vec(),
            "not a vae compressed file",
        ),
    ];
    for (name, content, cause) in &cases {
        let f = dir.join(name);
        std::fs::write(&f, content).unwrap();
        let before = listing(&dir);
        let out = dir.join(format!("{name}.idx"));
        let e = fails(
            infer(&["decompress", s(&f), "--run", s(run), "--out", s(&out)]),
            1,
        );
        assert_eq!(e.trim().lines().count(), 1, "{name}: {e}");
        assert!(e.contains(name) && e.contains(cause), "{name}: {e}");
        assert_eq!(listing(&dir), before, "{name} left something behind");
    }
    // Another model (same shape and latent size).
    let before = listing(&dir);
    let e = fails(
        infer(&[
            "decompress",
            s(&good),
            "--run",
            s(other),
            "--out",
            s(&dir.join("o.idx")),
        ]),
        1,
    );
    assert!(e.contains("good.vbb") && e.contains("another model"), "{e}");
    assert_eq!(listing(&dir), before);
    let e = fails(
        infer(&[
            "decompress",
            s(&dir.join("missing.vbb")),
            "--run",
            s(run),
            "--out",
            s(&dir.join("m.idx")),
        ]),
        1,
    );
    assert!(e.contains("missing.vbb"), "{e}");
    assert_eq!(listing(&dir), before);
    // The undamaged file still decodes.
    decompress(run, &good, &dir.join("good.idx"), &[]);
    assert!(std::fs::read(dir.join("good.idx")).unwrap() == t10k_first(30));
}

/// A hierarchical model (the `hvae` preset, narrow: a top group of 4 and a group of 2x7x7 and
/// one of 2x14x14 values) codes through all its groups: its net rate is its negative ELBO's
/// within the bins' error, the file (three chunks of `--chunk-images 100`) is the same at 1
/// and 2 threads, and it decodes byte for byte, also at the baseline SIMD level.
#[test]
fn hierarchical_model_codes_through_every_group() {
    let run = trained("hvae", &[TINY_HVAE, &["--epochs", "2"]].concat());
    let dir = fresh("hvae");
    let n = 300;
    let idx = dir.join("first.idx");
    std::fs::write(&idx, t10k_first(n)).unwrap();
    let (two, one) = (dir.join("two.vbb"), dir.join("one.vbb"));
    let chunks = ["--chunk-images", "100"];
    let r = compress(
        &run,
        &["--idx", s(&idx)],
        &two,
        &[&chunks[..], &["--threads", "2"]].concat(),
    );
    check_rate(&r, n as u64);
    assert_eq!(r["chunk_images"].as_u64(), Some(100), "{r}");
    compress(
        &run,
        &["--idx", s(&idx)],
        &one,
        &[&chunks[..], &["--threads", "1"]].concat(),
    );
    assert!(
        std::fs::read(&two).unwrap() == std::fs::read(&one).unwrap(),
        "the file depends on the thread count"
    );
    let back = dir.join("back.idx");
    let d = decompress(&run, &two, &back, &["--simd", "baseline"]);
    assert_eq!(d["images"].as_u64(), Some(n as u64));
    assert!(
        std::fs::read(&back).unwrap() == t10k_first(n),
        "decoded bytes differ"
    );
}

/// Likelihoods that are densities and activations without an exact pass are refused with a
/// message naming the flag and what codes; nothing is written.
#[test]
fn models_that_cannot_code_are_refused() {
    let dir = fresh("refused");
    let idx = dir.join("x.idx");
    std::fs::write(&idx, t10k_first(5)).unwrap();
    for (name, flags, want) in [
        (
            "gaussian",
            &["--likelihood", "gaussian", "--hidden", "64"][..],
            "--likelihood discretized-logistic",
        ),
        (
            "gelu",
            &[
                "--likelihood",
                "discretized-logistic",
                "--activation",
                "gelu",
                "--hidden",
                "64",
            ][..],
            "--activation relu",
        ),
    ] {
        let run = trained(name, flags);
        let out = dir.join(format!("{name}.vbb"));
        let e = fails(
            infer(&[
                "compress",
                "--run",
                s(&run),
                "--idx",
                s(&idx),
                "--out",
                s(&out),
            ]),
            1,
        );
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{name}: {e}");
        assert!(!out.exists());
    }
    assert_eq!(listing(&dir), ["x.idx"]);
}

/// Grey pixels of an `h` x `w` picture cut from a mosaic of the test images (two across),
/// starting at image `first`: content on a black background up to its edges.
fn mosaic(first: usize, h: usize, w: usize) -> Vec<u8> {
    (0..h * w)
        .map(|p| {
            let (y, x) = (p / w, p % w);
            image(first + (y / 28) * 2 + x / 28)[(y % 28) * 28 + x % 28]
        })
        .collect()
}

fn save_grey(path: &Path, h: usize, w: usize, px: &[u8]) {
    image::GrayImage::from_raw(w as u32, h as u32, px.to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

/// The grey pixels of a PNG file (or bytes), checked to be `h` x `w`.
fn grey_pixels(png: &[u8], h: usize, w: usize) -> Vec<u8> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    assert_eq!((img.height() as usize, img.width() as usize), (h, w));
    img.into_raw()
}

/// Runs `c` with `input` on its standard input.
fn piped(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Checks a compress report of pictures of `values` values in `tiles` tiles of 28x28: every
/// rate is per value given, the padding's cost included, the file's bits are the header, the
/// net bits and the initial bits, and the net rate is about the negative ELBO's.
fn check_tiled_rate(r: &serde_json::Value, values: u64, tiles: u64) {
    assert_eq!(r["values"].as_u64(), Some(values), "{r}");
    assert_eq!(r["tiles"].as_u64(), Some(tiles), "{r}");
    assert_eq!(r["coded_values"].as_u64(), Some(tiles * 784), "{r}");
    let bytes = num(r, "bytes");
    assert!(
        (num(r, "bits_per_dim") - 8.0 * bytes / values as f64).abs() < 1e-9,
        "{r}"
    );
    assert!(
        (num(r, "bits_per_coded_dim") - 8.0 * bytes / (tiles * 784) as f64).abs() < 1e-9,
        "{r}"
    );
    let (net, initial, header) = (
        num(r, "net_bits_per_dim"),
        num(r, "initial_bits"),
        num(r, "header_bytes"),
    );
    assert!(
        (8.0 * header + net * values as f64 + initial - 8.0 * bytes).abs() < 1e-6 * 8.0 * bytes,
        "header + net + initial bits != file bits: {r}"
    );
    // A chunk's first image codes its pixels with its latents at their prior means (nothing
    // on the stack pays for popping them), the images after it through their posteriors. One
    // tile alone is that first image: it costs more than its negative ELBO (3.65 against 3.36
    // bits per value, measured with this model), and well under 8 bits. From six tiles on,
    // the first's extra cost is spread, and the one-sample negative ELBO of so few images is
    // itself off by a few percent.
    let elbo = num(r, "neg_elbo_bits_per_dim");
    if tiles == 1 {
        assert!(net > elbo && net < 1.25 * elbo, "net {net} vs ELBO {elbo}");
    } else {
        assert!((net - elbo).abs() < 0.06 * elbo, "net {net} vs ELBO {elbo}");
    }
}

/// The tiles of an `h` x `w` grey picture with its last column and row repeated, written
/// here independently of the coder, as an IDX file.
fn edge_tiles_idx(px: &[u8], h: usize, w: usize) -> Vec<u8> {
    let (rows, cols) = (h.div_ceil(28), w.div_ceil(28));
    let mut out = vec![0, 0, 8, 3];
    for d in [rows * cols, 28, 28] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    for t in 0..rows * cols {
        for y in 0..28 {
            for x in 0..28 {
                let (py, px_) = (
                    (t / cols * 28 + y).min(h - 1),
                    (t % cols * 28 + x).min(w - 1),
                );
                out.push(px[py * w + px_]);
            }
        }
    }
    out
}

/// With the 28x28 grey mlp: a 28x28 PNG is one image, a 61x45 PNG six tiles (3 x 2); each
/// comes back from `decompress` as a PNG file of its pixels, the rates are per pixel given
/// (the padding paid for), and the padding the model chose (zeros, for pictures on Fashion-
/// MNIST's black background) makes a smaller file than repeated edges. Through standard
/// input and output the same picture makes the same rate and comes back the same; a file of
/// several pictures is refused on standard output.
#[test]
fn png_files_of_any_size_round_trip_in_tiles() {
    let run = mlp_run();
    let dir = fresh("tiles");
    for (name, h, w, tiles) in [("one.png", 28, 28, 1u64), ("odd.png", 61, 45, 6)] {
        let px = mosaic(3, h, w);
        let path = dir.join(name);
        save_grey(&path, h, w, &px);
        let file = dir.join(format!("{name}.vbb"));
        let r = compress(run, &[s(&path)], &file, &[]);
        assert_eq!(r["images"].as_u64(), Some(1), "{r}");
        check_tiled_rate(&r, (h * w) as u64, tiles);
        let back = dir.join(format!("back-{name}"));
        let d = decompress(run, &file, &back, &[]);
        assert_eq!(d["images"].as_u64(), Some(tiles), "{d}");
        assert_eq!(d["files"].as_u64(), Some(1), "{d}");
        assert!(
            grey_pixels(&std::fs::read(&back).unwrap(), h, w) == px,
            "{name}: other pixels"
        );
        if tiles == 1 {
            assert_eq!(r["padding"], serde_json::json!({}), "{r}");
            continue;
        }
        assert_eq!(r["padding"], serde_json::json!({"0": 1}), "{r}");
        // The same tiles with repeated edges, coded as an IDX file, take more bytes.
        let edges = dir.join("edges.idx");
        std::fs::write(&edges, edge_tiles_idx(&px, h, w)).unwrap();
        let e = compress(run, &["--idx", s(&edges)], &dir.join("edges.vbb"), &[]);
        assert!(
            num(&r, "net_bits_per_dim")
                < num(&e, "net_bits_per_dim") * (tiles * 784) as f64 / (h * w) as f64,
            "zeros {r} vs edges {e}"
        );

        // `-` for both: the compressed bytes on stdout, the report on stderr, the PNG back.
        let png = std::fs::read(&path).unwrap();
        let c = infer(&["compress", "--run", s(run), "-", "-o", "-", "--json"]);
        let out = piped(c, &png);
        let rs = json(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(num(&rs, "bytes") as usize, out.stdout.len(), "{rs}");
        assert_eq!(rs["tiles"], r["tiles"], "{rs}");
        // The one difference: the name recorded ("-" for "odd.png").
        assert_eq!(out.stdout.len() + 6, std::fs::read(&file).unwrap().len());
        let c = infer(&["decompress", "-", "--run", s(run), "-o", "-"]);
        let back = piped(c, &out.stdout);
        assert!(
            grey_pixels(&back.stdout, h, w) == px,
            "stdout: other pixels"
        );
        assert!(String::from_utf8_lossy(&back.stderr).contains("decompressed 6 images"));
    }
}

/// A folder of pictures of mixed sizes (one of the model's, three others, one in a
/// sub-folder) comes back as a folder of the same names and pixels; standard output is
/// refused for it, an RGB or 16-bit picture among them is refused by name with nothing
/// written, and the tiled file, cut short, damaged or decoded with another model, fails like
/// any other with nothing left behind.
#[test]
fn png_folder_of_mixed_sizes_round_trips() {
    let run = mlp_run();
    let dir = fresh("mixed");
    let pics = dir.join("pics");
    std::fs::create_dir_all(pics.join("sub")).unwrap();
    let sizes = [
        ("a.png", 28, 28),
        ("b.png", 61, 45),
        ("sub/c.png", 10, 70),
        ("wide.png", 29, 57),
    ];
    let mut want = Vec::new();
    for (i, &(name, h, w)) in sizes.iter().enumerate() {
        let px = mosaic(10 * i, h, w);
        save_grey(&pics.join(name), h, w, &px);
        want.push((name, h, w, px));
    }
    let file = dir.join("pics.vbb");
    let r = compress(run, &["--images", s(&pics)], &file, &["--threads", "2"]);
    assert_eq!(r["images"].as_u64(), Some(4), "{r}");
    // 1 + 3x2 + 1x3 + 2x3 tiles.
    let values = sizes.iter().map(|&(_, h, w)| (h * w) as u64).sum();
    check_tiled_rate(&r, values, 16);
    let one = dir.join("one.vbb");
    compress(run, &["--images", s(&pics)], &one, &["--threads", "1"]);
    assert!(std::fs::read(&one).unwrap() == std::fs::read(&file).unwrap());
    let out = dir.join("out");
    let d = decompress(run, &file, &out, &[]);
    assert_eq!(d["files"].as_u64(), Some(4), "{d}");
    for (name, h, w, px) in &want {
        let back = std::fs::read(out.join(name)).unwrap();
        assert!(grey_pixels(&back, *h, *w) == *px, "{name}: other pixels");
    }
    let e = fails(
        infer(&["decompress", s(&file), "--run", s(run), "-o", "-"]),
        1,
    );
    assert!(
        e.contains("folder of 4 PNG files") && e.contains("--out DIR"),
        "{e}"
    );

    // Damaged and foreign: one line each, exit 1, nothing written.
    let bytes = std::fs::read(&file).unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    for (name, content, model, cause) in [
        (
            "cut.vbb",
            bytes[..bytes.len() / 2].to_vec(),
            run,
            "truncated",
        ),
        ("flipped.vbb", flipped, run, "checksum"),
        ("other.vbb", bytes.clone(), other_run(), "another model"),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, content).unwrap();
        let before = listing(&dir);
        let e = fails(
            infer(&[
                "decompress",
                s(&f),
                "--run",
                s(model),
                "-o",
                s(&dir.join("x")),
            ]),
            1,
        );
        assert_eq!(e.trim().lines().count(), 1, "{name}: {e}");
        assert!(e.contains(name) && e.contains(cause), "{name}: {e}");
        assert_eq!(listing(&dir), before, "{name} left something behind");
    }

    // A colour picture for the grey model, then a 16-bit one: refused by name.
    let bad_out = dir.join("bad.vbb");
    for (name, img) in [
        (
            "sub/colour.png",
            image::DynamicImage::ImageRgb8(image::ImageBuffer::new(30, 30)),
        ),
        (
            "deep.png",
            image::DynamicImage::ImageLuma16(image::ImageBuffer::new(30, 30)),
        ),
    ] {
        img.save(pics.join(name)).unwrap();
        let before = listing(&dir);
        let e = fails(
            infer(&[
                "compress",
                "--run",
                s(run),
                "--images",
                s(&pics),
                "-o",
                s(&bad_out),
            ]),
            1,
        );
        assert!(
            e.contains(name) && e.contains("the model codes 8-bit grey"),
            "{e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert_eq!(listing(&dir), before, "{name}: something was written");
        std::fs::remove_file(pics.join(name)).unwrap();
    }
    // Alone, as a file: the same.
    let rgb = dir.join("rgb.png");
    image::RgbImage::new(61, 45).save(&rgb).unwrap();
    let e = fails(
        infer(&["compress", "--run", s(run), s(&rgb), "-o", s(&bad_out)]),
        1,
    );
    assert!(
        e.contains("rgb.png") && e.contains("8-bit RGB pixels"),
        "{e}"
    );
    assert!(!bad_out.exists());
}
