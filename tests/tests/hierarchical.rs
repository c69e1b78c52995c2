//! The hierarchical VAE end to end on the embedded sample, in a tiny configuration of the
//! `hvae` preset (the preset's own sizes take minutes an epoch on two cores): it trains, its
//! importance-sampled NLL bounds its ELBO with a positive bits/dim, it samples with a
//! temperature per group, reconstructs, encodes the top group or all groups, walks the top
//! group, resumes byte for byte after SIGKILL in mid-epoch, refuses --conditional,
//! and stops cleanly when it diverges.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// [`TINY_HVAE`] on the embedded sample.
fn tiny_args() -> Vec<&'static str> {
    let mut args = vec!["--dataset", "sample"];
    args.extend_from_slice(TINY_HVAE);
    args.extend(["--threads", "2", "--quiet"]);
    args
}

fn tiny(out: &Path, extra: &[&str]) -> Command {
    let mut args = tiny_args();
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    train(&args)
}

/// Starts `cmd` (a run into `out`) and kills it with SIGKILL once its latest checkpoint has
/// reached `step`.
fn kill_after(mut cmd: Command, out: &Path, step: u64) -> std::process::ExitStatus {
    let latest = || -> Option<u64> {
        let name = std::fs::read_to_string(out.join("checkpoints/latest")).ok()?;
        name.trim().strip_prefix("step-")?.parse().ok()
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while latest().is_none_or(|s| s < step) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint at step {step}"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before step {step}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn tiny_hvae_trains_evaluates_samples_and_resumes_exactly() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let straight = tmp.path().join("straight");
    let s = straight.to_str().unwrap();
    ok(tiny(&straight, &["--epochs", "2", "--lr-warmup", "20"]));
    let m = metrics(&straight);
    assert_eq!(m.len(), 2);
    let val: Vec<f64> = m.iter().map(|l| l["val_loss"].as_f64().unwrap()).collect();
    assert!(val[1] < val[0], "validation loss did not fall: {val:?}");
    // The preset sets a skip threshold: each epoch counts its skipped updates.
    assert!(m.iter().all(|l| l["skipped_updates"].as_u64().is_some()));
    // Each epoch reports its gradient norms before clipping: a positive mean below the largest.
    for l in &m {
        let (mean, max) = (l["grad_norm_mean"].as_f64(), l["grad_norm_max"].as_f64());
        assert!(
            matches!((mean, max), (Some(a), Some(b)) if a > 0.0 && a <= b),
            "{l}"
        );
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("config.json"))?)?;
    assert_eq!(cfg["model"]["arch"]["kind"], "hierarchical");
    assert_eq!(cfg["model"]["likelihood"]["kind"], "discretized-logistic");
    assert_eq!(cfg["train"]["lr_warmup"], 20);

    // Killed (SIGKILL) in the middle of epoch 1 after a checkpoint at step 10 or later, then
    // resumed: the same bytes as the straight run (the sample has 60 batches of 100 an epoch).
    let killed = tmp.path().join("killed");
    let status = kill_after(
        tiny(
            &killed,
            &[
                "--epochs",
                "2",
                "--lr-warmup",
                "20",
                "--checkpoint-every",
                "10",
            ],
        ),
        &killed,
        10,
    );
    assert!(!status.success());
    ok(train(&["--resume", killed.to_str().unwrap(), "--quiet"]));
    for f in ["model.safetensors", "best.safetensors"] {
        assert!(
            std::fs::read(straight.join(f))? == std::fs::read(killed.join(f))?,
            "{f} differs after resume"
        );
    }
    // The resumed run's epochs report the same gradient norms (they are checkpointed with
    // the epoch's other partial sums).
    let resumed = metrics(&killed);
    assert_eq!(resumed.len(), 2);
    for (a, b) in m.iter().zip(&resumed) {
        for key in ["grad_norm_mean", "grad_norm_max", "train_loss", "val_loss"] {
            assert_eq!(a[key], b[key], "{key} differs after resume");
        }
    }

    let e = json(&ok(infer(&[
        "evaluate",
        "--run",
        s,
        "--iw-samples",
        "20",
        "--limit",
        "100",
        "--json",
    ])));
    let (nll, neg_elbo) = (e["nll"].as_f64().unwrap(), e["neg_elbo"].as_f64().unwrap());
    assert!(nll <= neg_elbo, "nll {nll} > neg_elbo {neg_elbo}");
    let bpd = e["bits_per_dim"].as_f64().unwrap();
    assert!(bpd > 0.0 && bpd < 8.0, "{bpd}");
    assert_eq!(e["density"], "discrete");

    // Samples with a temperature per group (top, 7x7, 14x14), and the refusal of more values
    // than groups.
    let grid = tmp.path().join("samples.png");
    let r = json(&ok(infer(&[
        "sample",
        "--run",
        s,
        "--n",
        "16",
        "--temperature",
        "1.0,0.8,0.6",
        "--out",
        grid.to_str().unwrap(),
        "--json",
    ])));
    // 4x4 pictures of 28x28, drawn twice as large with 2-pixel borders.
    assert_eq!(png_size(&grid), (4 * 58 + 2, 4 * 58 + 2));
    assert_eq!(r["temperatures"], serde_json::json!([1.0, 0.8, 0.6]));
    let err = fails(
        infer(&[
            "sample",
            "--run",
            s,
            "--temperature",
            "1,1,1,1",
            "--out",
            grid.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("3 latent groups"), "{err}");
    // Without --temperature, the architecture's choice: the top group at 1, the groups below
    // at 0.5 (docs/RESULTS.md, "Hierarchical VAE", shows the grids it was chosen from).
    let r = json(&ok(infer(&[
        "sample",
        "--run",
        s,
        "--n",
        "4",
        "--out",
        grid.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(r["temperatures"], serde_json::json!([1.0, 0.5, 0.5]));
    let cold = tmp.path().join("cold.png");
    ok(infer(&[
        "sample",
        "--run",
        s,
        "--temperature",
        "0.7,0",
        "--out",
        cold.to_str().unwrap(),
    ]));

    // Reconstruction (every group at its posterior mean) and the walks on the top group.
    let recon = tmp.path().join("recon.png");
    ok(infer(&[
        "reconstruct",
        "--run",
        s,
        "--n",
        "8",
        "--out",
        recon.to_str().unwrap(),
    ]));
    assert!(recon.is_file());
    for (cmd, extra) in [
        (
            "interpolate",
            vec!["--from", "0", "--to", "1", "--steps", "5"],
        ),
        ("traverse", vec!["--steps", "5"]),
    ] {
        let png = tmp.path().join(format!("{cmd}.png"));
        let mut args = vec![cmd, "--run", s, "--out", png.to_str().unwrap()];
        args.extend(extra);
        ok(infer(&args));
        assert!(png.is_file(), "{cmd}");
    }

    // encode: the top group by default, every group with --all-groups (4 + 2·7·7 + 2·14·14).
    let top = tmp.path().join("top.npy");
    let r = json(&ok(infer(&[
        "encode",
        "--run",
        s,
        "--limit",
        "10",
        "--out",
        top.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(r["groups"], "top");
    assert_eq!(r["latent_dim"], 4);
    let all = tmp.path().join("all.npy");
    let r = json(&ok(infer(&[
        "encode",
        "--run",
        s,
        "--limit",
        "10",
        "--all-groups",
        "--out",
        all.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(r["groups"], "all");
    assert_eq!(r["group_dims"], serde_json::json!([4, 98, 392]));
    assert_eq!(r["latent_dim"], 494);
    Ok(())
}

#[test]
fn conditional_hierarchical_models_are_refused_and_divergence_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("cond");
    let err = fails(tiny(&run, &["--conditional", "--epochs", "1"]), 1);
    assert!(
        err.contains("--conditional") && err.contains("hierarchical"),
        "{err}"
    );
    assert!(!run.join("config.json").exists());

    let run = tmp.path().join("diverge");
    let err = fails(tiny(&run, &["--lr", "1e6", "--epochs", "1"]), 1);
    assert!(
        err.contains("non-finite") && err.contains("epoch 1, step"),
        "{err}"
    );
    assert!(!run.join("model.safetensors").exists());
}
