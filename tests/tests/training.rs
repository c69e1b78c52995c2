//! Training that never loses a run: exact resume after a clean stop, SIGKILL or Ctrl-C, atomic
//! checkpoints under a full disk, non-finite losses, and clear errors for bad flags and TOML.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Flags shared by the runs compared byte for byte: the embedded sample, a fixed thread count.
const BASE: &[&str] = &["--dataset", "sample", "--threads", "2", "--quiet"];

fn train_run(out: &Path, extra: &[&str]) -> Command {
    let mut args: Vec<&str> = BASE.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    train(&args)
}

fn resume(dir: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["--resume", dir.to_str().unwrap(), "--quiet"];
    args.extend(extra);
    train(&args)
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

fn epochs_logged(run: &Path) -> Vec<u64> {
    metrics(run)
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect()
}

/// The step of the checkpoint `latest` names, if any.
fn latest_step(run: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(run.join("checkpoints/latest")).ok()?;
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// Starts a run and sends `signal` once its latest checkpoint has reached `step`.
fn interrupt_after(
    out: &Path,
    extra: &[&str],
    step: u64,
    signal: &str,
) -> std::process::ExitStatus {
    let mut cmd = train_run(out, extra);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while latest_step(out).is_none_or(|s| s < step) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint at step {step}"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before step {step}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-s", signal, &pid])
        .status()
        .unwrap()
        .success());
    child.wait().unwrap()
}

/// 4 epochs straight, 2 then `--resume` to 4, and a run killed with SIGKILL in the middle of an
/// epoch after a mid-epoch checkpoint then resumed: all three give byte-identical weights.
#[test]
fn resumed_runs_are_byte_identical_to_straight_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(train_run(&straight, &["--epochs", "4"]));
    assert_eq!(epochs_logged(&straight), vec![1, 2, 3, 4]);

    let split = tmp.path().join("split");
    ok(train_run(&split, &["--epochs", "2"]));
    ok(resume(&split, &["--epochs", "4"]));
    same_bytes(
        &straight.join("model.safetensors"),
        &split.join("model.safetensors"),
    );
    same_bytes(
        &straight.join("best.safetensors"),
        &split.join("best.safetensors"),
    );
    assert_eq!(epochs_logged(&split), vec![1, 2, 3, 4]);

    // The sample has 47 batches an epoch: step 60 is in the middle of epoch 2.
    let killed = tmp.path().join("killed");
    let status = interrupt_after(
        &killed,
        &["--epochs", "4", "--checkpoint-every", "10"],
        60,
        "KILL",
    );
    assert!(!status.success());
    ok(resume(&killed, &[]));
    same_bytes(
        &straight.join("model.safetensors"),
        &killed.join("model.safetensors"),
    );
    assert_eq!(epochs_logged(&killed), vec![1, 2, 3, 4]);
    // --keep 3 (the default) leaves three checkpoints.
    let kept: Vec<String> = std::fs::read_dir(killed.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
}

/// Ctrl-C finishes the step, writes a checkpoint and exits with 130; the resumed run ends
/// where the straight one does.
#[test]
fn ctrl_c_checkpoints_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(train_run(
        &straight,
        &["--epochs", "2", "--checkpoint-every", "20"],
    ));
    let stopped = tmp.path().join("stopped");
    let status = interrupt_after(
        &stopped,
        &["--epochs", "2", "--checkpoint-every", "20"],
        20,
        "INT",
    );
    assert_eq!(status.code(), Some(130));
    let step = latest_step(&stopped).unwrap();
    assert!(step >= 20, "checkpoint at {step}");
    ok(resume(&stopped, &[]));
    same_bytes(
        &straight.join("model.safetensors"),
        &stopped.join("model.safetensors"),
    );
}

/// A checkpoint that cannot be written (the file-size limit stands for a full disk) fails with
/// a clear error and leaves the previous checkpoint loadable: resuming from it later gives the
/// same weights as a run that never failed.
#[test]
fn a_full_disk_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(train_run(&straight, &["--epochs", "2"]));
    let run = tmp.path().join("run");
    ok(train_run(&run, &["--epochs", "1"]));
    let before = std::fs::read(run.join("checkpoints/step-00000047/model.safetensors")).unwrap();
    // 64 KiB: weights are 2.6 MB, so the next write fails.
    let exe = bin_dir().join("vae-train");
    let script = format!(
        "ulimit -f 64; exec {} --resume {} --epochs 2 --quiet",
        exe.display(),
        run.display()
    );
    let mut sh = Command::new("bash");
    sh.args(["-c", &script]).env("RUST_LOG", "warn");
    let err = fails(sh, 1);
    assert!(
        err.contains("File too large") || err.contains("No space"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert_eq!(latest_step(&run), Some(47));
    assert_eq!(
        before,
        std::fs::read(run.join("checkpoints/step-00000047/model.safetensors")).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "partial files left: {leftovers:?}");
    ok(resume(&run, &[]));
    same_bytes(
        &straight.join("model.safetensors"),
        &run.join("model.safetensors"),
    );
}

/// A learning rate of 1e6 makes the loss non-finite: the run stops with an error naming the
/// epoch and step, and what was saved stays finite and loadable.
#[test]
fn a_non_finite_loss_stops_without_saving() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    let err = fails(train_run(&fresh, &["--lr", "1e6", "--epochs", "2"]), 1);
    assert!(
        err.contains("non-finite") && err.contains("epoch 1, step"),
        "{err}"
    );
    assert!(!fresh.join("model.safetensors").exists());

    // A good epoch, then a resume with the same learning rate blowing up.
    let run = tmp.path().join("run");
    ok(train_run(&run, &["--epochs", "1"]));
    let best = std::fs::read(run.join("best.safetensors")).unwrap();
    let err = fails(resume(&run, &["--lr", "1e6", "--epochs", "3"]), 1);
    assert!(
        err.contains("non-finite") && err.contains("epoch 2"),
        "{err}"
    );
    assert_eq!(best, std::fs::read(run.join("best.safetensors")).unwrap());
    assert_eq!(latest_step(&run), Some(47));
    // Loadable: vae-infer checks every value is finite when it loads.
    ok(infer(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--best",
        "--iw-samples",
        "0",
    ]));
    ok(infer(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--iw-samples",
        "0",
    ]));
}

/// Bad flags and bad TOML: one clear line naming the flag or key, exit status 1 (2 for what
/// the argument parser itself rejects), no panic.
#[test]
fn bad_flags_and_toml_give_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (vec!["--batch-size", "0"], "--batch-size"),
        (vec!["--latent-dim", "0"], "--latent-dim"),
        (
            vec!["--likelihood", "gaussian", "--alpha", "1.5"],
            "--alpha",
        ),
        (vec!["--alpha", "0"], "--alpha"),
        (vec!["--device", "tpu"], "--device tpu"),
        (vec!["--iwae-k", "5", "--free-bits", "1"], "--free-bits"),
        (vec!["--hidden", "0"], "--hidden"),
    ] {
        let mut a = vec!["--dataset", "sample", "--out", o];
        a.extend(args);
        let err = fails(train(&a), 1);
        assert!(err.contains(want), "{a:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{a:?}: {err}");
    }
    // The tests build the binaries without the `cuda` feature.
    let err = fails(
        train(&["--dataset", "sample", "--out", o, "--device", "cuda"]),
        1,
    );
    assert!(err.contains("--features cuda"), "{err}");
    fails(train(&["--no-such-flag"]), 2);
    fails(train(&["--epochs", "many"]), 2);

    let toml = tmp.path().join("run.toml");
    for (text, want) in [
        ("epoch = 3\n", "unknown key `epoch`"),
        ("epochs = \"three\"\n", "invalid type"),
        ("batch-size = 0\n", "--batch-size"),
        ("latent-dim = 0\n", "--latent-dim"),
        ("likelihood = \"gaussian\"\nalpha = 2.0\n", "--alpha"),
    ] {
        std::fs::write(&toml, text).unwrap();
        let err = fails(
            train(&[
                "--config",
                toml.to_str().unwrap(),
                "--dataset",
                "sample",
                "--out",
                o,
            ]),
            1,
        );
        assert!(err.contains(want), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{text}: {err}");
    }
    std::fs::write(&toml, "epochs = 1\ndataset = \"sample\"\nhidden = [64]\n").unwrap();
    ok(train(&[
        "--config",
        toml.to_str().unwrap(),
        "--out",
        o,
        "--quiet",
    ]));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["arch"]["hidden"], serde_json::json!([64]));

    // A run directory is never overwritten, and an output path that cannot be created is named.
    let err = fails(train(&["--dataset", "sample", "--out", o]), 1);
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("run");
    let err = fails(
        train(&["--dataset", "sample", "--out", bad.to_str().unwrap()]),
        1,
    );
    assert!(
        err.contains(bad.to_str().unwrap()) || err.contains(file.to_str().unwrap()),
        "{err}"
    );
    // Resuming with a changed model is refused, saying what differs.
    let err = fails(resume(&out, &["--latent-dim", "3"]), 1);
    assert!(err.contains("model.latent_dim"), "{err}");
}
