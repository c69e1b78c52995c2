//! `cargo xtask bench`: the training speed of a preset (by default the reference workload,
//! `pytorch-example`; also `conv`, `iwae` with `--iwae-k K`, and `hvae`) on full Fashion-MNIST
//! (or the IDX files of `--data-dir`) with the preset's batch and optimizer, against its PyTorch
//! twin in `bench/torch_vae.py` (`bench/torch_hvae.py` for `hvae`) on the same machine, in
//! alternating runs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{build_release, find, flag, read_maybe_gz, root};

/// The presets that have a PyTorch twin.
const PRESETS: [&str; 4] = ["pytorch-example", "conv", "iwae", "hvae"];

/// Runs `cmd` to completion and returns its stdout and the peak resident memory (KiB) of the
/// process, from the kernel's accounting of the reaped child.
fn run_measured(mut cmd: Command) -> Result<(String, u64)> {
    let out_file = tempfile_path("stdout");
    cmd.stdout(std::fs::File::create(&out_file)?);
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; the child is reaped here and never waited
    // for through `child` (dropping a Child does not wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    drop(child);
    if r != pid {
        bail!("waiting for {cmd:?} failed");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (status {status})");
    }
    let stdout = std::fs::read_to_string(&out_file)?;
    let _ = std::fs::remove_file(&out_file);
    Ok((stdout, usage.ru_maxrss as u64))
}

/// Prior samples decoded by each throughput measurement.
const SAMPLES: &str = "30000";

fn tempfile_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vae-bench-{}-{tag}", std::process::id()))
}

/// The mean of `v` (NaN when empty).
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The epoch lines of our metrics.jsonl or of the PyTorch script's stdout.
fn epoch_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("epoch").is_some() && v.get("seconds").is_some())
        .collect()
}

fn field(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The number of images of the IDX file `stem` (gzipped or not) in `dir`, from its header.
fn idx_count(dir: &std::path::Path, stem: &str) -> Result<usize> {
    let path = find(dir, stem)?;
    let bytes = read_maybe_gz(&path)?;
    let count = bytes
        .get(4..8)
        .with_context(|| format!("{}: truncated IDX header", path.display()))?;
    Ok(u32::from_be_bytes(count.try_into()?) as usize)
}

/// What a preset trains with (`TrainConfig::preset` in crates/vae-train/src/config.rs).
fn recipe(preset: &str) -> &'static str {
    match preset {
        "hvae" => "batch 64, Adam 1e-3 (200-step warm-up, cosine decay), KL warm-up over 1 epoch, free bits 0.5 per group",
        _ => "batch 128, Adam 1e-3",
    }
}

/// The SIMD level of this machine's CPU, named as `VAE_SIMD` names it.
fn detected_simd() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
            return "v4";
        }
        if has!("avx2") && has!("fma") {
            return "v3";
        }
    }
    "baseline"
}

/// PyTorch's settings that cap its kernels at AVX2: ATen's own kernels, oneDNN (the
/// convolutions) and MKL (the matrix products).
const TORCH_AVX2: [(&str, &str); 3] = [
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
];

/// Sets the SIMD level `simd` for a PyTorch run: the AVX2 caps for `v3`, none (whatever the
/// CPU has) for `v4`.
fn torch_simd(cmd: &mut Command, simd: &str) {
    for (k, v) in TORCH_AVX2 {
        if simd == "v3" {
            cmd.env(k, v);
        } else {
            cmd.env_remove(k);
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let detected = detected_simd();
    let simd = flag(args, "--simd")?.unwrap_or_else(|| detected.into());
    match (simd.as_str(), detected) {
        ("v4", "v4") | ("v3", "v4" | "v3") => {}
        ("v4" | "v3", _) => bail!("--simd {simd}: this CPU's level is {detected}"),
        _ => bail!("--simd {simd}: the levels are v3 (AVX2 and FMA) and v4 (AVX-512)"),
    }
    let epochs: usize = flag(args, "--epochs")?
        .unwrap_or_else(|| "3".into())
        .parse()
        .context("--epochs")?;
    let repeats: usize = flag(args, "--repeats")?
        .unwrap_or_else(|| "3".into())
        .parse()
        .context("--repeats")?;
    let threads: Vec<usize> = flag(args, "--threads")?
        .unwrap_or_else(|| "1,2".into())
        .split(',')
        .map(|t| t.trim().parse().context("--threads"))
        .collect::<Result<_>>()?;
    let data_dir = PathBuf::from(
        flag(args, "--data-dir")?.unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into()),
    );
    let python = flag(args, "--vs-torch")?;
    let preset = flag(args, "--preset")?.unwrap_or_else(|| "pytorch-example".into());
    if !PRESETS.contains(&preset.as_str()) {
        bail!(
            "--preset {preset}: the PyTorch twins are {}",
            PRESETS.join(", ")
        );
    }
    let iwae_k: usize = flag(args, "--iwae-k")?
        .unwrap_or_else(|| "1".into())
        .parse()
        .context("--iwae-k")?;
    if iwae_k == 0 {
        bail!("--iwae-k must be at least 1");
    }
    if !data_dir.join("train-images-idx3-ubyte.gz").is_file()
        && !data_dir.join("train-images-idx3-ubyte").is_file()
    {
        bail!(
            "{}: Fashion-MNIST not found; install it with `apt-get install dataset-fashion-mnist` or pass --data-dir",
            data_dir.display()
        );
    }
    let train_images = idx_count(&data_dir, "train-images-idx3-ubyte")?;
    let test_images = idx_count(&data_dir, "t10k-images-idx3-ubyte")?;
    let root = root();
    // Binaries built elsewhere (an older commit, to compare with) or the current tree's.
    let bins = match flag(args, "--bin-dir")? {
        Some(d) => PathBuf::from(d),
        None => build_release()?,
    };
    let train = bins.join("vae-train");
    let infer = bins.join("vae-infer");
    let script = root.join("bench/torch_vae.py");
    let work = tempfile_path("runs");
    std::fs::create_dir_all(&work)?;

    let mut results = Vec::new();
    for &t in &threads {
        let (mut ours, mut torch) = (Vec::new(), Vec::new());
        let (mut our_val, mut torch_val) = (Vec::new(), Vec::new());
        let (mut enc, mut samp, mut tenc, mut tsamp) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rss = 0u64;
        for rep in 0..repeats {
            // Ours: train, then time encoding and sampling with the trained model. Run `rep` of
            // each side uses seed `rep` (initial weights, data order, noise): the validation
            // losses compared are means over as many initialisations as repeats, not one draw
            // of each side's initial weights.
            let out = work.join(format!("t{t}-r{rep}"));
            let mut cmd = Command::new(&train);
            cmd.args(["--dataset", "fashion-mnist", "--data-dir"])
                .arg(&data_dir)
                .args([
                    "--epochs",
                    &epochs.to_string(),
                    "--threads",
                    &t.to_string(),
                    "--preset",
                    &preset,
                    "--iwae-k",
                    &iwae_k.to_string(),
                    "--seed",
                    &rep.to_string(),
                    "--quiet",
                    "--out",
                ])
                .arg(&out)
                .env("RUST_LOG", "warn")
                .env("VAE_SIMD", &simd);
            let (_, kib) = run_measured(cmd)?;
            rss = rss.max(kib);
            let lines = epoch_lines(&std::fs::read_to_string(out.join("metrics.jsonl"))?);
            ours.extend(lines.iter().map(|v| field(v, "seconds")));
            our_val.push(
                lines
                    .last()
                    .map(|v| field(v, "val_loss"))
                    .unwrap_or(f64::NAN),
            );
            eprintln!(
                "ours  threads {t} run {rep}: {:?} s",
                lines
                    .iter()
                    .map(|v| field(v, "seconds"))
                    .collect::<Vec<_>>()
            );
            let mut cmd = Command::new(&infer);
            cmd.args([
                "throughput",
                "--json",
                "--samples",
                SAMPLES,
                "--threads",
                &t.to_string(),
                "--run",
            ])
            .arg(&out)
            .env("RUST_LOG", "warn")
            .env("VAE_SIMD", &simd);
            let (stdout, _) = run_measured(cmd)?;
            let tp: Value = serde_json::from_str(stdout.trim()).context("throughput output")?;
            enc.push(field(&tp, "encode_per_second"));
            samp.push(field(&tp, "sample_per_second"));
            let _ = std::fs::remove_dir_all(&out);
            // PyTorch: the same epochs, then the same throughput measurement.
            if let Some(py) = &python {
                let mut cmd = Command::new(py);
                cmd.arg(&script)
                    .args(["--threads", &t.to_string(), "--epochs", &epochs.to_string()])
                    .args(["--preset", &preset, "--iwae-k", &iwae_k.to_string()])
                    .args(["--seed", &rep.to_string()])
                    .args(["--throughput", "--samples", SAMPLES, "--data-dir"])
                    .arg(&data_dir);
                torch_simd(&mut cmd, &simd);
                let (stdout, _) = run_measured(cmd)?;
                let lines = epoch_lines(&stdout);
                torch.extend(lines.iter().map(|v| field(v, "seconds")));
                torch_val.push(
                    lines
                        .last()
                        .map(|v| field(v, "val_loss"))
                        .unwrap_or(f64::NAN),
                );
                eprintln!(
                    "torch threads {t} run {rep}: {:?} s",
                    lines
                        .iter()
                        .map(|v| field(v, "seconds"))
                        .collect::<Vec<_>>()
                );
                let ttp = stdout
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| v.get("encode_per_second").is_some())
                    .unwrap_or(Value::Null);
                tenc.push(field(&ttp, "encode_per_second"));
                tsamp.push(field(&ttp, "sample_per_second"));
            }
        }
        let secs = median(&mut ours);
        let (e, s) = (median(&mut enc), median(&mut samp));
        // Seconds are medians (a run slowed by other work is an outlier); validation losses,
        // one per seed, are averaged: their mean estimates the loss an initialisation gives.
        let ov = mean(&our_val);
        let mut r = json!({
            "threads": t,
            "seconds_per_epoch": secs,
            "examples_per_second": train_images as f64 / secs,
            "peak_rss_mib": rss as f64 / 1024.0,
            "val_loss": ov,
            "val_losses": our_val,
            "encode_per_second": e,
            "sample_per_second": s,
        });
        if python.is_some() {
            let tsecs = median(&mut torch);
            let (te, ts) = (median(&mut tenc), median(&mut tsamp));
            let tv = mean(&torch_val);
            r["torch"] = json!({
                "seconds_per_epoch": tsecs,
                "val_loss": tv,
                "val_losses": torch_val,
                "encode_per_second": te,
                "sample_per_second": ts,
            });
            r["ratio_epoch_time"] = json!(secs / tsecs);
            r["ratio_encode"] = json!(e / te);
            r["ratio_sample"] = json!(s / ts);
            r["val_loss_difference_percent"] = json!(100.0 * (ov - tv) / tv);
        }
        results.push(r);
    }
    let _ = std::fs::remove_dir_all(&work);
    let k = if iwae_k > 1 {
        format!(" with the IWAE bound, K = {iwae_k}")
    } else {
        String::new()
    };
    let report = json!({
        "workload": format!(
            "preset {preset}{k}, Fashion-MNIST from {} ({train_images} train images), {}",
            data_dir.display(),
            recipe(&preset)
        ),
        "preset": preset,
        "iwae_k": iwae_k,
        "epochs": epochs,
        "repeats": repeats,
        "simd": simd,
        "simd_detected": detected,
        "train_images": train_images,
        "dataset_u8_mib": ((train_images + test_images) * 784) as f64 / 1048576.0,
        "results": results,
    });
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded sample holds the first 6,000 training and 1,000 test images
    /// (data/fashion-mnist-sample, written by `cargo xtask sample-data`).
    #[test]
    fn idx_count_reads_the_header() -> Result<()> {
        let dir = root().join("data/fashion-mnist-sample");
        assert_eq!(idx_count(&dir, "train-images-idx3-ubyte")?, 6000);
        assert_eq!(idx_count(&dir, "t10k-images-idx3-ubyte")?, 1000);
        assert!(idx_count(&dir, "no-such-file").is_err());
        Ok(())
    }
}
