//! Data-parallel training on MPI, as a user runs it: `mpirun -np 2 vae-train` built with
//! `--features mpi` gives the bytes of one process with as many threads as the two ranks have
//! shards; a killed rank stops the job and the run resumes to the same bytes; SIGTERM to
//! `mpirun` checkpoints; ranks started with other flags fail once, with one error.
//!
//! Needs OpenMPI (`apt-get install openmpi-bin libopenmpi-dev libclang-dev`). Without `mpirun`
//! (or when the MPI build fails) each test says on its output that it was skipped; CI installs
//! OpenMPI and sets `VAE_REQUIRE_MPI=1`, which turns a skip into a failure. The tests using the
//! plain binary (`train`) call it after `mpirun`, once the MPI build has put it back.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, train, TINY_HVAE};

fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("VAE_REQUIRE_MPI").is_none_or(|v| v.is_empty()),
        "VAE_REQUIRE_MPI is set but {why}"
    );
    // Written to the terminal directly, past the test harness's capture of print!.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// `vae-train` built with `--features mpi`, once per test process, copied to
/// `target/<profile>/vae-train-mpi`; the reason when it cannot be had. It is built in the
/// workspace's target directory (only vae-train and the MPI bindings are compiled again), after
/// which the plain binary is put back in place.
fn mpi_binary() -> Result<PathBuf, String> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let found = Command::new("mpirun")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(
                    "mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
                        .into(),
                );
            }
            let dir = common::bin_dir();
            let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
            let build = |features: &[&str]| -> Result<(), String> {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut c = Command::new(cargo);
                c.args(["build", "--quiet", "-p", "vae-train", "--bins"]).args(features);
                if profile != "debug" {
                    c.args(["--profile", profile]);
                }
                if let Some(target) = dir.parent() {
                    c.env("CARGO_TARGET_DIR", target);
                }
                let out = c.output().map_err(|e| format!("running cargo: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "`cargo build -p vae-train {}` failed (are libopenmpi-dev and libclang-dev installed?):\n{}",
                        features.join(" "),
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
            };
            let exe = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            let built = build(&["--features", "mpi"])
                .and_then(|()| {
                    std::fs::copy(exe("vae-train"), exe("vae-train-mpi"))
                        .map_err(|e| format!("copying the MPI build: {e}"))
                });
            // The plain binary back, for the other tests.
            build(&[])?;
            built.map(|_| exe("vae-train-mpi"))
        })
        .clone()
}

/// `mpirun -np <ranks> vae-train <args>` (as root where the tests run as root, several ranks
/// per core allowed), or None (the test skipped) without OpenMPI.
fn mpirun(test: &str, ranks: usize, args: &[&str]) -> Option<Command> {
    let exe = match mpi_binary() {
        Ok(exe) => exe,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(exe)
        .args(args)
        .env_remove("VAE_DATA_DIR")
        .env("RUST_LOG", "warn");
    Some(c)
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn two_ranks_of_one_thread_write_the_bytes_of_two_threads() -> anyhow::Result<()> {
    let test = "two_ranks_of_one_thread_write_the_bytes_of_two_threads";
    let tmp = tempfile::tempdir()?;
    let mut tiny_hvae = vec!["--epochs", "1"];
    tiny_hvae.extend_from_slice(TINY_HVAE);
    let cases: [(&str, Vec<&str>); 2] = [
        ("mlp", vec!["--epochs", "2", "--batch-size", "200"]),
        // Free bits (a collective before the backward passes), clipping and skipping.
        ("hvae", tiny_hvae),
    ];
    for (name, flags) in cases {
        let (a, b) = (
            tmp.path().join(format!("{name}-ranks")),
            tmp.path().join(format!("{name}-threads")),
        );
        let mut args = vec![
            "--dataset",
            "sample",
            "--threads",
            "1",
            "--out",
            a.to_str().unwrap(),
        ];
        args.extend(&flags);
        let Some(c) = mpirun(test, 2, &args) else {
            return Ok(());
        };
        ok(c);
        let mut args = vec![
            "--dataset",
            "sample",
            "--threads",
            "2",
            "--quiet",
            "--out",
            b.to_str().unwrap(),
        ];
        args.extend(&flags);
        ok(train(&args));
        assert!(
            same_file(&a.join("model.safetensors"), &b.join("model.safetensors")),
            "{name}: 2 ranks x 1 thread and 1 process x 2 threads wrote different weights"
        );
        // Rank 0 alone wrote the run directory: one line per epoch, its figures those of the
        // process with two threads (all but the time).
        let (ma, mb) = (common::metrics(&a), common::metrics(&b));
        assert_eq!(ma.len(), mb.len());
        for (x, y) in ma.iter().zip(&mb) {
            for key in ["train_loss", "val_loss", "grad_norm_mean"] {
                assert_eq!(x[key], y[key], "{name}: {key}");
            }
        }
        let state = std::fs::read_to_string(a.join("checkpoints/latest"))?;
        let state =
            std::fs::read_to_string(a.join("checkpoints").join(state.trim()).join("state.json"))?;
        assert!(state.contains("\"shards\": 2"), "{state}");
    }
    Ok(())
}

/// The processes `mpirun` started, with their ranks.
fn ranks_of(mpirun: &Child) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let ppid: u32 = after
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid != mpirun.id() {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = env
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(rank) = rank {
            out.push((pid, rank));
        }
    }
    out
}

/// Waits until `path` exists (or fails the test after a minute).
fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {} was written",
            path.display()
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit; returns its status and how long it took.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("mpirun still running after {limit:?}: the job hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, signal: &str) {
    let s = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success(), "kill {signal} {pid}");
}

const CONV: &[&str] = &["--dataset", "sample", "--preset", "conv", "--epochs", "1"];

#[test]
fn a_killed_rank_stops_the_job_and_the_run_resumes_to_the_same_bytes() -> anyhow::Result<()> {
    let test = "a_killed_rank_stops_the_job_and_the_run_resumes_to_the_same_bytes";
    let tmp = tempfile::tempdir()?;
    let (run, whole) = (tmp.path().join("run"), tmp.path().join("whole"));
    let mut args = CONV.to_vec();
    args.extend([
        "--threads",
        "1",
        "--checkpoint-every",
        "5",
        "--out",
        run.to_str().unwrap(),
    ]);
    let Some(mut c) = mpirun(test, 2, &args) else {
        return Ok(());
    };
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    wait_for(&run.join("checkpoints/latest"), &mut child);
    let ranks = ranks_of(&child);
    let (pid, _) = *ranks.iter().find(|r| r.1 == 1).expect("rank 1's process");
    kill(pid, "-KILL");
    let (status, took) = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        !status.success(),
        "mpirun exited {status} after a rank was killed"
    );
    assert!(
        took < Duration::from_secs(30),
        "mpirun took {took:?} to stop"
    );

    // The checkpoint is whole: the run resumes from it, under mpirun, to the bytes of a run
    // that was never interrupted.
    let latest = std::fs::read_to_string(run.join("checkpoints/latest"))?;
    assert!(run
        .join("checkpoints")
        .join(latest.trim())
        .join("state.json")
        .is_file());
    let resumed = mpirun(
        test,
        2,
        &["--resume", run.to_str().unwrap(), "--threads", "1"],
    )
    .unwrap();
    let log = ok_stderr(resumed);
    assert!(log.contains("as before"), "{log}");
    let mut args = CONV.to_vec();
    args.extend([
        "--threads",
        "2",
        "--quiet",
        "--out",
        whole.to_str().unwrap(),
    ]);
    ok(train(&args));
    assert!(same_file(
        &run.join("model.safetensors"),
        &whole.join("model.safetensors")
    ));
    Ok(())
}

/// Runs and requires success; returns stderr.
fn ok_stderr(mut c: Command) -> String {
    let out = c.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{c:?} failed with {}\n{stderr}",
        out.status
    );
    stderr
}

#[test]
fn sigterm_to_mpirun_checkpoints_and_the_run_resumes_to_the_same_bytes() -> anyhow::Result<()> {
    let test = "sigterm_to_mpirun_checkpoints_and_the_run_resumes_to_the_same_bytes";
    let tmp = tempfile::tempdir()?;
    let (run, whole) = (tmp.path().join("run"), tmp.path().join("whole"));
    let mut args = CONV.to_vec();
    args.extend([
        "--threads",
        "1",
        "--checkpoint-every",
        "5",
        "--out",
        run.to_str().unwrap(),
    ]);
    let Some(mut c) = mpirun(test, 2, &args) else {
        return Ok(());
    };
    // mpirun passes SIGTERM on to the ranks after this many seconds, and kills them as many
    // seconds later (1 by default): time for a debug build's step and checkpoint.
    c.env("OMPI_MCA_odls_base_sigkill_timeout", "5");
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    wait_for(&run.join("checkpoints/latest"), &mut child);
    kill(child.id(), "-TERM");
    let (status, _) = wait_exit(&mut child, Duration::from_secs(60));
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log)?;
    assert!(!status.success(), "mpirun exited {status} after SIGTERM");
    assert_eq!(log.matches("stopped after step").count(), 1, "{log}");
    let resumed = mpirun(
        test,
        2,
        &["--resume", run.to_str().unwrap(), "--threads", "1"],
    )
    .unwrap();
    ok(resumed);
    let mut args = CONV.to_vec();
    args.extend([
        "--threads",
        "2",
        "--quiet",
        "--out",
        whole.to_str().unwrap(),
    ]);
    ok(train(&args));
    assert!(same_file(
        &run.join("model.safetensors"),
        &whole.join("model.safetensors")
    ));
    Ok(())
}

#[test]
fn ranks_with_other_flags_or_too_small_a_batch_fail_once_on_every_rank() -> anyhow::Result<()> {
    let test = "ranks_with_other_flags_or_too_small_a_batch_fail_once_on_every_rank";
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run");
    let exe = match mpi_binary() {
        Ok(exe) => exe,
        Err(why) => {
            skip(test, &why);
            return Ok(());
        }
    };
    // Two programs in one job (MPMD): the second rank with another learning rate.
    let o = out.to_str().unwrap();
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", "1"])
        .arg(&exe)
        .args([
            "--dataset",
            "sample",
            "--threads",
            "1",
            "--out",
            o,
            "--lr",
            "1e-3",
        ])
        .args([":", "-np", "1"])
        .arg(&exe)
        .args([
            "--dataset",
            "sample",
            "--threads",
            "1",
            "--out",
            o,
            "--lr",
            "2e-3",
        ])
        .env("RUST_LOG", "warn");
    let got = c.output()?;
    let err = String::from_utf8_lossy(&got.stderr);
    assert_eq!(got.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("rank 1: started with other settings than rank 0")
            && err.contains("lr: 0.001 -> 0.002"),
        "{err}"
    );
    assert!(!out.exists(), "a run directory was written");

    let c = mpirun(
        test,
        2,
        &[
            "--dataset",
            "sample",
            "--threads",
            "2",
            "--batch-size",
            "3",
            "--out",
            o,
        ],
    )
    .unwrap();
    let got = {
        let mut c = c;
        c.output()?
    };
    let err = String::from_utf8_lossy(&got.stderr);
    assert_eq!(got.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("--batch-size 3 does not split into 4 shards"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}
