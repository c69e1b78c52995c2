//! Helpers of the lossless compression tests (`codec.rs`, `codec_png.rs`): models trained in
//! seconds on a small cut of the embedded sample (1,000 train / 200 test images), and the
//! `compress` and `decompress` commands run with `--json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;

pub const TEST_IMAGES: usize = 200;

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

pub fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"))
}

pub fn tmp_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME"))
}

/// A fresh, empty directory under the test's temporary root.
pub fn fresh(name: &str) -> PathBuf {
    let dir = tmp_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file of the embedded sample, gunzipped.
pub fn sample_file(name: &str) -> Vec<u8> {
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
pub fn idx_first(raw: &[u8], n: usize, item: usize) -> Vec<u8> {
    let ndim = raw[3] as usize;
    let mut out = raw[..4 + 4 * ndim].to_vec();
    out[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    let start = 4 + 4 * ndim;
    out.extend_from_slice(&raw[start..start + n * item]);
    out
}

/// The sample's test images (all 1,000) as a raw IDX file.
pub fn t10k() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| sample_file("t10k-images-idx3-ubyte"))
}

/// The first `n` test images as a raw IDX file.
pub fn t10k_first(n: usize) -> Vec<u8> {
    idx_first(t10k(), n, 784)
}

/// Pixels of test image `i`.
pub fn image(i: usize) -> &'static [u8] {
    &t10k()[16 + i * 784..16 + (i + 1) * 784]
}

/// A Fashion-MNIST directory of raw IDX files: the sample's first 1,000 train and first
/// [`TEST_IMAGES`] test images with their labels.
pub fn small_data() -> &'static Path {
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
pub fn trained(name: &str, flags: &[&str]) -> PathBuf {
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
pub fn mlp_run() -> &'static Path {
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
pub fn other_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        trained(
            "other-model",
            &["--likelihood", "discretized-logistic", "--seed", "4"],
        )
    })
}

/// The files a directory holds (names), to check that nothing was left behind.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `compress --json --elbo` (the rate beside the model's negative ELBO).
pub fn compress(run: &Path, input: &[&str], out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "compress",
        "--run",
        s(run),
        "--out",
        s(out),
        "--json",
        "--elbo",
    ];
    args.extend_from_slice(input);
    args.extend_from_slice(extra);
    json(&ok(infer(&args)))
}

pub fn decompress(run: &Path, file: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
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

pub fn num(r: &serde_json::Value, key: &str) -> f64 {
    r[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {r}"))
}
