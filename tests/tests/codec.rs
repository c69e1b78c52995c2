//! Lossless compression end to end: models trained on the embedded sample compress its test
//! split at a rate close to their negative ELBO, and `decompress` gives the original bytes
//! back (the test images of the sample, gunzipped), whatever the thread count or SIMD level;
//! damaged files, other models and models that cannot code fail with one line and leave
//! nothing behind.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"))
}

fn tmp_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("codec")
}

/// The sample's test images as the raw IDX file (gunzipped from data/).
fn t10k() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz");
        let gz = std::fs::read(&path).unwrap();
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        raw
    })
}

/// The first `n` test images as a raw IDX file.
fn t10k_first(n: usize) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(&t10k()[16..16 + n * 784]);
    out
}

/// A run trained once per test process on the embedded sample with `flags`.
fn trained(name: &str, flags: &[&str]) -> PathBuf {
    let dir = tmp_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = vec!["--dataset", "sample", "--quiet", "--seed", "3"];
    args.extend_from_slice(flags);
    args.extend(["--out", s(&dir)]);
    ok(train(&args));
    dir
}

/// mlp [400], latent 20, discretized logistic, 3 epochs.
fn logistic_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        trained(
            "logistic",
            &["--likelihood", "discretized-logistic", "--epochs", "3"],
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

/// Checks the rate of a whole test split against the model's negative ELBO on it.
fn check_rate(r: &serde_json::Value, images: u64) {
    let bpd = r["bits_per_dim"].as_f64().unwrap();
    let elbo = r["neg_elbo_bits_per_dim"].as_f64().unwrap();
    assert_eq!(r["images"].as_u64(), Some(images));
    let bytes = r["bytes"].as_u64().unwrap();
    assert!((bpd - 8.0 * bytes as f64 / (images as f64 * 784.0)).abs() < 1e-9);
    assert!(r["initial_bits"].as_f64().unwrap() > 0.0);
    assert!(r["seconds"].as_f64().unwrap() > 0.0);
    // Bits-back coding costs the negative ELBO plus the quantisation of the latents, the
    // initial bits and the header: within 2 % on 1,000 images.
    assert!(
        (bpd - elbo).abs() < 0.02 * elbo,
        "rate {bpd} bits/dim vs negative ELBO {elbo}"
    );
}

/// The test split compresses within 2 % of the negative ELBO and decompresses to the sample's
/// test images byte for byte; the file does not depend on the thread count, and decodes the
/// same with the SIMD level capped (by flag and by `VAE_SIMD`).
#[test]
fn test_split_round_trips_at_the_elbo_whatever_the_threads_and_simd() {
    let run = logistic_run();
    let dir = tmp_root().join("split");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (two, one) = (dir.join("two.vbb"), dir.join("one.vbb"));
    let r = compress(run, &["--split", "test"], &two, &["--threads", "2"]);
    check_rate(&r, 1000);
    assert_eq!(r["threads"].as_u64(), Some(2));
    assert!(r["verify_seconds"].as_f64().unwrap() > 0.0);
    compress(run, &["--split", "test"], &one, &["--threads", "1"]);
    assert!(
        std::fs::read(&two).unwrap() == std::fs::read(&one).unwrap(),
        "the file depends on the thread count"
    );

    let back = dir.join("back.idx");
    let d = decompress(run, &two, &back, &[]);
    assert_eq!(d["images"].as_u64(), Some(1000));
    assert_eq!(d["bytes"].as_u64(), Some(t10k().len() as u64));
    assert!(std::fs::read(&back).unwrap() == t10k(), "decoded bytes differ");

    let base = dir.join("base.idx");
    let d = decompress(run, &two, &base, &["--simd", "baseline", "--threads", "1"]);
    assert_eq!(d["simd"].as_str(), Some("baseline"));
    assert!(std::fs::read(&base).unwrap() == t10k());
    let env = dir.join("env.idx");
    let mut c = infer(&[
        "decompress",
        s(&two),
        "--run",
        s(run),
        "--out",
        s(&env),
        "--json",
    ]);
    c.env("VAE_SIMD", "baseline");
    assert_eq!(json(&ok(c))["simd"].as_str(), Some("baseline"));
    assert!(std::fs::read(&env).unwrap() == t10k());
    // Written at the baseline level: the same file.
    let at_base = dir.join("base.vbb");
    compress(run, &["--split", "test"], &at_base, &["--simd", "baseline"]);
    assert!(std::fs::read(&at_base).unwrap() == std::fs::read(&two).unwrap());
}

/// An IDX file (here gzipped) decompresses to its raw bytes.
#[test]
fn gzipped_idx_file_decompresses_to_its_raw_bytes() {
    let run = logistic_run();
    let dir = tmp_root().join("idx");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let raw = t10k_first(40);
    let gz_path = dir.join("some.idx.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    std::fs::write(&gz_path, enc.finish().unwrap()).unwrap();
    let file = dir.join("some.vbb");
    let r = compress(run, &["--idx", s(&gz_path)], &file, &[]);
    assert_eq!(r["images"].as_u64(), Some(40));
    let back = dir.join("back.idx");
    decompress(run, &file, &back, &[]);
    assert!(std::fs::read(&back).unwrap() == raw);
}

/// A folder of PNG files (one in a sub-folder) comes back as PNG files of the same names whose
/// pixels are the originals; pictures that do not fit the model are refused by name.
#[test]
fn png_folder_round_trips() {
    let run = logistic_run();
    let dir = tmp_root().join("png");
    let _ = std::fs::remove_dir_all(&dir);
    let pics = dir.join("pics");
    std::fs::create_dir_all(pics.join("sub")).unwrap();
    let names = ["a.png", "b.png", "sub/c.png", "z.png"];
    for (i, n) in names.iter().enumerate() {
        let px = t10k()[16 + i * 784..16 + (i + 1) * 784].to_vec();
        image::GrayImage::from_raw(28, 28, px)
            .unwrap()
            .save(pics.join(n))
            .unwrap();
    }
    let file = dir.join("pics.vbb");
    let r = compress(run, &["--images", s(&pics)], &file, &[]);
    assert_eq!(r["images"].as_u64(), Some(4));
    let out = dir.join("out");
    decompress(run, &file, &out, &[]);
    for (i, n) in names.iter().enumerate() {
        let img = image::open(out.join(n)).unwrap().to_luma8();
        assert!(img.as_raw()[..] == t10k()[16 + i * 784..16 + (i + 1) * 784], "{n}");
    }
    // The folder exists now: refused, nothing changed.
    let before = listing(&out);
    let e = fails(
        infer(&[
            "decompress",
            s(&file),
            "--run",
            s(run),
            "--out",
            s(&out),
        ]),
        1,
    );
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(listing(&out), before);
    // A colour picture and one of the wrong size are refused, naming the file.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    image::RgbImage::new(28, 28).save(bad.join("rgb.png")).unwrap();
    let e = fails(
        infer(&[
            "compress",
            "--run",
            s(run),
            "--images",
            s(&bad),
            "--out",
            s(&dir.join("bad.vbb")),
        ]),
        1,
    );
    assert!(e.contains("rgb.png") && e.contains("28x28"), "{e}");
    std::fs::remove_file(bad.join("rgb.png")).unwrap();
    image::GrayImage::new(27, 28).save(bad.join("small.png")).unwrap();
    let e = fails(
        infer(&[
            "compress",
            "--run",
            s(run),
            "--images",
            s(&bad),
            "--out",
            s(&dir.join("bad.vbb")),
        ]),
        1,
    );
    assert!(e.contains("small.png") && e.contains("1x28x27"), "{e}");
    assert!(!dir.join("bad.vbb").exists());
}

/// Beta-binomial and 5-component logistic mixture models code the test split within 2 % of
/// their negative ELBO and decode it back.
#[test]
fn beta_binomial_and_mixture_models_round_trip() {
    for (name, flags) in [
        (
            "beta-binomial",
            &["--likelihood", "beta-binomial", "--epochs", "2"][..],
        ),
        (
            "mixtures-5",
            &[
                "--likelihood",
                "discretized-logistic",
                "--mixtures",
                "5",
                "--epochs",
                "2",
            ][..],
        ),
    ] {
        let run = trained(name, flags);
        let file = run.join("test.vbb");
        let r = compress(&run, &["--split", "test"], &file, &[]);
        check_rate(&r, 1000);
        let back = run.join("back.idx");
        decompress(&run, &file, &back, &[]);
        assert!(std::fs::read(&back).unwrap() == t10k(), "{name}");
    }
}

/// A Bernoulli model trained on statically binarised images codes the binarised split (0 and
/// 255), at its negative ELBO (the figure `evaluate` gives for that split); the decompressed
/// split compressed again as an IDX file gives the same file. Grey levels are refused by
/// image and value.
#[test]
fn bernoulli_codes_the_binarised_split_and_refuses_grey_levels() {
    let run = trained(
        "bernoulli",
        &[
            "--likelihood",
            "bernoulli",
            "--binarize",
            "static",
            "--epochs",
            "2",
        ],
    );
    let file = run.join("test.vbb");
    let r = compress(&run, &["--split", "test"], &file, &[]);
    check_rate(&r, 1000);
    let e = json(&ok(infer(&[
        "evaluate",
        "--run",
        s(&run),
        "--iw-samples",
        "0",
        "--json",
    ])));
    let want = e["neg_elbo_bits_per_dim"].as_f64().unwrap();
    let got = r["neg_elbo_bits_per_dim"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-3 * want, "{got} vs evaluate's {want}");
    let back = run.join("back.idx");
    decompress(&run, &file, &back, &[]);
    let bytes = std::fs::read(&back).unwrap();
    assert_eq!(bytes[..16], t10k()[..16]);
    assert!(bytes[16..].iter().all(|&v| v == 0 || v == 255));
    assert!(bytes[16..].contains(&255) && bytes[16..].contains(&0));
    let again = run.join("again.vbb");
    compress(&run, &["--idx", s(&back)], &again, &[]);
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&file).unwrap());
    // The grey test images: the first pixel that is not 0 or 255 is named.
    let grey = run.join("grey.idx");
    std::fs::write(&grey, t10k_first(3)).unwrap();
    let out = run.join("grey.vbb");
    let e = fails(
        infer(&[
            "compress",
            "--run",
            s(&run),
            "--idx",
            s(&grey),
            "--out",
            s(&out),
        ]),
        1,
    );
    let first = t10k()[16..].iter().position(|&v| v != 0 && v != 255).unwrap();
    let want = format!(
        "grey.idx image {}: pixel {} has the value {}",
        first / 784,
        first % 784,
        t10k()[16 + first]
    );
    assert!(e.contains(&want) && e.contains("0 and 255"), "{e}");
    assert!(!out.exists());
}

/// A folder of 24 of the test pictures, for small models trained in seconds.
fn tiny_pictures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tmp_root().join("tiny-pictures");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..24 {
            let px = t10k()[16 + i * 784..16 + (i + 1) * 784].to_vec();
            image::GrayImage::from_raw(28, 28, px)
                .unwrap()
                .save(dir.join(format!("{i:02}.png")))
                .unwrap();
        }
        dir
    })
}

/// A model trained for one epoch on [`tiny_pictures`].
fn tiny(name: &str, flags: &[&str]) -> PathBuf {
    let dir = tmp_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = vec![
        "--images",
        s(tiny_pictures()),
        "--channels",
        "1",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        s(&dir),
    ];
    args.extend_from_slice(flags);
    ok(train(&args));
    dir
}

/// Damaged files (cut short, a flipped byte, empty, not ours), another model's file and a
/// missing one fail with exit 1 and one line naming the file and the cause, and leave nothing
/// behind.
#[test]
fn damaged_files_and_other_models_fail_cleanly() {
    let run = logistic_run();
    let dir = tmp_root().join("damaged");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
    let other = tiny("other-model", &["--likelihood", "discretized-logistic"]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cut.vbb", bytes[..bytes.len() - 7].to_vec(), "truncated"),
        ("cut-header.vbb", bytes[..100].to_vec(), "truncated"),
        ("payload.vbb", flipped_payload, "checksum"),
        ("header.vbb", flipped_header, "checksum"),
        ("empty.vbb", Vec::new(), "empty"),
        ("other.vbb", b"not a compressed file".to_vec(), "not a vae compressed file"),
    ];
    for (name, content, cause) in &cases {
        let f = dir.join(name);
        std::fs::write(&f, content).unwrap();
        let before = listing(&dir);
        let out = dir.join(format!("{name}.idx"));
        let e = fails(
            infer(&[
                "decompress",
                s(&f),
                "--run",
                s(run),
                "--out",
                s(&out),
            ]),
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
            s(&other),
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

/// Likelihoods that are densities and activations without an exact pass are refused with a
/// message saying what codes; nothing is written.
#[test]
fn models_that_cannot_code_are_refused() {
    let dir = tmp_root().join("refused");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let idx = dir.join("x.idx");
    std::fs::write(&idx, t10k_first(5)).unwrap();
    for (name, flags, want) in [
        (
            "gaussian",
            &["--likelihood", "gaussian"][..],
            "discretized-logistic or beta-binomial",
        ),
        (
            "gelu",
            &["--likelihood", "discretized-logistic", "--activation", "gelu"][..],
            "relu or tanh",
        ),
    ] {
        let run = tiny(name, flags);
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
        assert!(!out.exists());
    }
    assert_eq!(listing(&dir), ["x.idx"]);
}
