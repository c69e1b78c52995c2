//! Helpers shared by the end-to-end tests: run the binaries as a user would.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

pub mod codec;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the workspace's binaries (`target/<profile>`), found from this test
/// executable's location (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds the binaries once per test process (`cargo test` builds a package's binaries only for
/// that package's own integration tests, so this crate asks for them), in the profile the tests
/// were built with.
fn build_binaries() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let dir = bin_dir();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_string();
        let mut c = Command::new(cargo);
        c.args([
            "build",
            "--quiet",
            "-p",
            "vae-train",
            "-p",
            "vae-infer",
            "--bins",
        ]);
        if profile != "debug" {
            c.args(["--profile", &profile]);
        }
        if let Some(target) = dir.parent() {
            c.env("CARGO_TARGET_DIR", target);
        }
        let status = c.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
}

fn bin(name: &str) -> Command {
    build_binaries();
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing after the build",
        path.display()
    );
    let mut c = Command::new(path);
    // Tests must not depend on data installed on the machine unless they say so.
    c.env_remove("VAE_DATA_DIR").env("RUST_LOG", "warn");
    c
}

/// `vae-train` with the given arguments.
pub fn train(args: &[&str]) -> Command {
    let mut c = bin("vae-train");
    c.args(args);
    c
}

/// `vae-infer` with the given arguments.
pub fn infer(args: &[&str]) -> Command {
    let mut c = bin("vae-infer");
    c.args(args);
    c
}

/// Runs and requires success; returns stdout.
pub fn ok(mut c: Command) -> String {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and requires exit status `code`; returns stderr. Also checks that nothing panicked.
pub fn fails(mut c: Command, code: i32) -> String {
    let out: Output = c.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{c:?}: expected exit {code}, got {}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{c:?} panicked:\n{stderr}");
    stderr
}

/// The lines of a run's metrics.jsonl, parsed.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Width and height of a PNG.
pub fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// The `hvae` preset at a fraction of its size: a top group of 4 values and one group each at
/// 7x7 and 14x14 (2 channels), narrow maps, no blocks besides the groups'.
pub const TINY_HVAE: &[&str] = &[
    "--preset",
    "hvae",
    "--width",
    "8",
    "--bottleneck",
    "4",
    "--z-channels",
    "2",
    "--groups",
    "1,1",
    "--blocks",
    "0",
    "--latent-dim",
    "4",
    "--mixtures",
    "2",
    "--batch-size",
    "100",
];
