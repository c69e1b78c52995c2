//! The composite path, what a device without kernels of its own runs (candle's operations
//! everywhere, `--kernels composite`), against the native one (the fused CPU kernels), end to
//! end for every preset: a training run, `evaluate`, `encode` and `sample` give the same
//! figures within the rounding of sums taken in another order.
//!
//! Tolerances: a relative 1e-3 on losses after an epoch of training (each step's rounding
//! differences, about 1e-6 relative, feed the next step), 1e-4 on the figures of one model
//! (evaluation, latent means), one grey level on sampled pictures (a mean on each side of a
//! rounding boundary).

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::Path;

use common::*;

/// The first `n` records of a gzipped IDX file of the embedded sample, as a raw IDX file
/// in `dir` under the same name without `.gz`.
fn write_head(name: &str, n: u32, dir: &Path) {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/fashion-mnist-sample")
        .join(format!("{name}.gz"));
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(gz).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let dims = usize::from(bytes[3]);
    let record: usize = (1..dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .product();
    let header = 4 + 4 * dims;
    let mut out = bytes[..header].to_vec();
    out[4..8].copy_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&bytes[header..header + n as usize * record]);
    std::fs::write(dir.join(name), out).unwrap();
}

/// 512 training and 128 test images of the sample as a Fashion-MNIST directory.
fn small_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [
        ("train-images-idx3-ubyte", 512),
        ("train-labels-idx1-ubyte", 512),
        ("t10k-images-idx3-ubyte", 128),
        ("t10k-labels-idx1-ubyte", 128),
    ] {
        write_head(name, n, dir);
    }
}

/// `vae-train` for one epoch of `preset` on the dataset in `data`, one thread, into `run`.
fn one_epoch(preset: &str, data: &Path, run: &Path, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "--preset",
        preset,
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--threads",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ];
    args.extend(extra);
    train(&args)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap()
}

/// The values of an `.npy` file of f32 (encode's output), read past its header.
fn npy_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn grey(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_luma8().into_raw()
}

#[test]
fn the_composite_path_gives_the_native_figures_for_every_preset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_dataset(&data);
    for preset in ["pytorch-example", "seed", "iwae", "conv", "hvae"] {
        let mut runs = Vec::new();
        for kernels in ["native", "composite"] {
            let run = tmp.path().join(format!("{preset}-{kernels}"));
            ok(one_epoch(preset, &data, &run, &["--kernels", kernels]));
            runs.push(run);
        }
        let loss = |run: &Path| metrics(run)[0]["val_loss"].as_f64().unwrap();
        let (native, composite) = (loss(&runs[0]), loss(&runs[1]));
        assert!(native.is_finite(), "{preset}: {native}");
        assert!(
            rel(composite, native) < 1e-3,
            "{preset}: validation loss {composite} (composite) vs {native} (native)"
        );

        // One trained model through both paths.
        let run = runs[0].to_str().unwrap();
        let both = |args: &[&str]| -> Vec<String> {
            ["native", "composite"]
                .iter()
                .map(|k| {
                    let mut a = args.to_vec();
                    a.extend(["--run", run, "--threads", "1", "--kernels", k]);
                    ok(infer(&a))
                })
                .collect()
        };
        let e = both(&["evaluate", "--iw-samples", "20", "--json"]);
        let (a, b) = (json(&e[0]), json(&e[1]));
        for key in ["neg_elbo", "nll"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(rel(y, x) < 1e-4, "{preset} evaluate {key}: {y} vs {x}");
        }
        let mut latents = Vec::new();
        let mut pictures = Vec::new();
        for k in ["native", "composite"] {
            let npy = tmp.path().join(format!("{preset}-{k}.npy"));
            let png = tmp.path().join(format!("{preset}-{k}.png"));
            for args in [
                vec!["encode", "--split", "test", "--out", npy.to_str().unwrap()],
                vec!["sample", "--n", "16", "--out", png.to_str().unwrap()],
            ] {
                let mut a = args;
                a.extend(["--run", run, "--threads", "1", "--kernels", k]);
                ok(infer(&a));
            }
            latents.push(npy_f32(&npy));
            pictures.push(grey(&png));
        }
        assert_eq!(latents[0].len(), latents[1].len());
        let d = latents[0]
            .iter()
            .zip(&latents[1])
            .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "{preset} encode: latents differ by {d}");
        let p = pictures[0]
            .iter()
            .zip(&pictures[1])
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(p <= 1, "{preset} sample: pixels differ by {p} levels");
    }
}

/// `VAE_SIMD` caps every kernel of a training step, the matrix products included
/// (vendor/gemm-common): capped at AVX2 (`v3`) and at the build's baseline (`gemm`'s scalar
/// kernels), a conv and an hvae run give the validation loss of the uncapped run within the
/// rounding of sums taken in another order (the tolerance of the composite comparison above).
#[test]
fn every_simd_level_gives_the_native_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    small_dataset(&data);
    for preset in ["conv", "hvae"] {
        let mut losses = Vec::new();
        for level in [None, Some("v3"), Some("baseline")] {
            let run = tmp
                .path()
                .join(format!("{preset}-{}", level.unwrap_or("native")));
            let mut c = one_epoch(preset, &data, &run, &[]);
            match level {
                Some(l) => c.env("VAE_SIMD", l),
                None => c.env_remove("VAE_SIMD"),
            };
            ok(c);
            losses.push(metrics(&run)[0]["val_loss"].as_f64().unwrap());
        }
        assert!(losses[0].is_finite(), "{preset}: {}", losses[0]);
        for (level, loss) in ["v3", "baseline"].iter().zip(&losses[1..]) {
            assert!(
                rel(*loss, losses[0]) < 1e-3,
                "{preset}: validation loss {loss} at VAE_SIMD={level} vs {} uncapped",
                losses[0]
            );
        }
    }
}
