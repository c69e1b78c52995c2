//! The first path through the product: train on the embedded sample, sample, evaluate.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// `vae-train --dataset sample --epochs 10` reaches the reference quality, writes every file of
/// the run directory, and `vae-infer` samples from and evaluates the result.
#[test]
fn train_sample_evaluate_on_the_embedded_sample() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("s");
    let run_s = run.to_str().unwrap();
    ok(train(&[
        "--dataset",
        "sample",
        "--epochs",
        "10",
        "--out",
        run_s,
        "--quiet",
    ]));

    for f in [
        "config.json",
        "model.safetensors",
        "best.safetensors",
        "metrics.jsonl",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let m = metrics(&run);
    assert_eq!(m.len(), 10);
    for key in [
        "epoch",
        "step",
        "train_loss",
        "val_loss",
        "val_recon",
        "val_kl",
        "beta",
        "lr",
        "seconds",
        "examples_per_second",
    ] {
        assert!(m[9].get(key).is_some(), "metrics lack `{key}`");
    }
    for e in 1..=10 {
        assert!(run.join(format!("samples/epoch-{e:03}.png")).is_file());
    }
    let last = m[9]["val_loss"].as_f64().unwrap();
    // PyTorch's reference (bench/torch_vae.py, same net, same 6,000/1,000 split) reaches
    // 262 nats after 10 epochs; the bar is 266.
    assert!(last <= 266.0, "validation loss {last} after 10 epochs");
    let first = m[0]["val_loss"].as_f64().unwrap();
    assert!(
        last < first,
        "validation loss did not fall: {first} -> {last}"
    );

    let png = tmp.path().join("s.png");
    ok(infer(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "64",
        "--out",
        png.to_str().unwrap(),
    ]));
    // An 8x8 grid of 28x28 pictures drawn at 2x with 2-pixel borders: 8 * 58 + 2.
    assert_eq!(png_size(&png), (466, 466));

    let out = ok(infer(&[
        "evaluate",
        "--run",
        run_s,
        "--iw-samples",
        "50",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    for key in ["neg_elbo", "recon", "kl", "examples"] {
        assert!(v.get(key).is_some(), "evaluate lacks `{key}`: {out}");
    }
    let neg_elbo = v["neg_elbo"].as_f64().unwrap();
    assert!(
        (neg_elbo - last).abs() <= 0.01 * last,
        "evaluate {neg_elbo} vs val_loss {last}"
    );
    assert_eq!(v["examples"].as_u64(), Some(1000));
    Ok(())
}

/// The logs of both binaries carry no colour codes when they go to a file or a pipe, and none
/// on request (`NO_COLOR`) either; they still say what happened.
#[test]
fn logs_to_a_file_have_no_escape_codes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("r");
    let mut c = train(&[
        "--dataset",
        "sample",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    c.env("RUST_LOG", "info");
    let out = c.output()?;
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("training `pytorch-example`"), "{log}");
    assert!(log.contains("epoch   1"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log:?}");
    let mut c = infer(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "tpu",
    ]);
    c.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let err = fails(c, 1);
    assert!(
        err.contains("--device tpu") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    Ok(())
}
