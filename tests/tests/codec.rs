//! Lossless compression end to end, with models trained in seconds on a small cut of the
//! embedded sample (1,000 train / 200 test images): mlp and conv models with discrete
//! likelihoods compress at their negative ELBO plus the coder's small overheads, and
//! `decompress` gives the original bytes back whatever the thread count or SIMD level; damaged
//! files, other models and models that cannot code fail with one line, exit 1, and leave
//! nothing behind. PNG files of any size, in tiles: `codec_png.rs`.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::codec::*;
use common::*;

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
