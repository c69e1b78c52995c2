//! Project tasks: `cargo xtask sample-data`, `cargo xtask bench`, `cargo xtask reproduce`,
//! `cargo xtask compress-bench`, `cargo xtask cuda-build`, `cargo xtask pair`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

mod bench;
mod compress_bench;
mod cuda;
mod cuda_toolkit;
mod pair;
mod reproduce;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  bench [--epochs N] [--repeats N] [--threads 1,2] [--data-dir DIR] [--vs-torch PYTHON]
        [--preset pytorch-example|conv|iwae|hvae] [--iwae-k K] [--bin-dir DIR] [--simd v3|v4]
      train a preset (default the reference workload, pytorch-example; full Fashion-MNIST or
      the IDX files of --data-dir, the preset's batch and optimizer) and print one JSON object:
      median seconds per epoch, examples/s, peak RSS,
      encode and sample throughput per thread count; with --vs-torch, run the preset's twin in
      bench/torch_vae.py with that Python in alternation and add PyTorch's figures and the
      ratios ours/PyTorch; --bin-dir takes vae-train and vae-infer from DIR instead of building;
      --simd v3 caps both sides at AVX2 on an AVX-512 machine (VAE_SIMD=v3; PyTorch's ATen,
      oneDNN and MKL capped too), the level is recorded in the JSON as `simd`; run r of each
      side uses seed r, and the validation losses compared are means over those initialisations
  reproduce [--quick] [--out FILE] [--work DIR] [--bin-dir DIR] [--vs-torch PYTHON]
      train the reference configurations (pytorch-example, seed, iwae with K=1 and K=5, conv) on
      full Fashion-MNIST for 10 epochs, evaluate, analyse and write docs/RESULTS.md; --quick does
      the same on the embedded sample for 2 epochs (into target/quick-results) and checks the file;
      --vs-torch also trains and evaluates bench/torch_vae.py with that Python and puts its
      figures beside ours (else the published ones)

  compress-bench [--epochs N] [--conv-epochs N] [--runs DIR] [--out FILE] [--threads 1,2] [--models mlp,conv]
                 [--codecs png,webp,gzip,bzip2,xz] [--bin-dir DIR] [--quick]
      train (or reuse from --runs DIR/mlp and DIR/conv) an mlp and a conv VAE with discrete
      likelihoods on full Fashion-MNIST, compress and decompress its test set with each at every
      thread count, run the classical codecs (gzip, bzip2, xz, PNG, WebP) on the same images and
      write docs/COMPRESSION.md; --epochs (default 10) for both models unless --conv-epochs;
      --quick does the same on the embedded sample for 2 epochs (into target/compress-bench);
      --bin-dir takes vae-train and vae-infer from DIR (TARGET/<profile>) instead of a release
      build, and builds the baselines in that profile
  cuda-build [--out DIR] [--compute-cap 90] [--target-dir DIR] [--check] [-- CARGO-ARGS]
      build vae-train and vae-infer with `--features cuda` on a machine without a GPU, into
      their own target directory (default $CARGO_TARGET_DIR/cuda or target/cuda), and copy them
      without debug info into --out (default TARGET-DIR/dist); uses the CUDA toolkit of
      CUDA_HOME, CUDA_PATH or PATH, else installs the CUDA 13.0 wheels of PyPI once into
      $VAE_CUDA_CACHE (default ~/.cache/vae-cuda; venv made by $PYTHON, default python3);
      links against a generated stub libcuda; --check then runs them with that stub: training
      on the CPU works and --device cuda exits 1 with a clear error

  pair [-n N] [--warmup N] --vs 'COMMAND B' -- COMMAND A
      time two whole commands in alternation (A B A B ..., N counted pairs after --warmup
      pairs, default 5 and 1), outputs discarded, and print each pair's wall seconds and the
      ratio A/B, then the minimum, median and maximum of wall, CPU and system seconds and of
      the ratios; B is split into words as a shell would (quotes and backslashes, nothing
      expanded); exits 1 when a command failed

  sample-data [--from DIR] [--out DIR] [--train N] [--test N]
      write the embedded sample: the first N train / test images and labels of the IDX
      dataset in DIR (default /usr/share/datasets/fashion-mnist, 6000 / 1000, into
      data/fashion-mnist-sample)";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Each task's flags that take a value and its switches (what `check_args` accepts).
const TASK_FLAGS: &[(&str, &[&str], &[&str])] = &[
    (
        "bench",
        &[
            "--epochs",
            "--repeats",
            "--threads",
            "--data-dir",
            "--vs-torch",
            "--preset",
            "--iwae-k",
            "--bin-dir",
            "--simd",
        ],
        &[],
    ),
    (
        "reproduce",
        &["--out", "--work", "--bin-dir", "--vs-torch"],
        &["--quick"],
    ),
    (
        "compress-bench",
        &[
            "--epochs",
            "--conv-epochs",
            "--runs",
            "--out",
            "--threads",
            "--models",
            "--codecs",
            "--bin-dir",
        ],
        &["--quick"],
    ),
    (
        "cuda-build",
        &["--out", "--compute-cap", "--target-dir"],
        &["--check"],
    ),
    ("pair", &["-n", "--warmup", "--vs"], &[]),
    (
        "sample-data",
        &["--from", "--out", "--train", "--test"],
        &[],
    ),
];

/// Refuses a flag the task does not know (up to a `--`, after which cuda-build passes the
/// arguments to cargo); true when the task's arguments ask for help instead.
fn check_args(task: &str, args: &[String]) -> Result<bool> {
    let Some((_, valued, switches)) = TASK_FLAGS.iter().find(|(t, ..)| *t == task) else {
        return Ok(false);
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--" => break,
            "-h" | "--help" => return Ok(true),
            _ if valued.contains(&a) => i += 2,
            _ if switches.contains(&a) => i += 1,
            _ => bail!("`cargo xtask {task}` takes no argument `{a}`\n\n{USAGE}"),
        }
    }
    Ok(false)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(task) = args.first() {
        if check_args(task, &args[1..])? {
            println!("{USAGE}");
            return Ok(());
        }
    }
    match args.first().map(String::as_str) {
        Some("sample-data") => sample_data(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("reproduce") => reproduce::run(&args[1..]),
        Some("compress-bench") => compress_bench::run(&args[1..]),
        Some("cuda-build") => cuda::run(&args[1..]),
        Some("pair") => pair::run(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// The value after `--name`, if present.
pub(crate) fn flag(args: &[String], name: &str) -> Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .cloned()
            .map(Some)
            .with_context(|| format!("{name} needs a value")),
    }
}

/// Builds the release binaries of vae-train and vae-infer; returns the directory holding them.
pub(crate) fn build_release() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the release binaries");
    let status = std::process::Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "vae-train",
            "-p",
            "vae-infer",
        ])
        .status()?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("release"))
}

/// A command line as the reports show it: the binary's name, and paths inside the repository
/// relative to it.
pub(crate) fn shown(bin: &Path, args: &[String]) -> String {
    let prefix = format!("{}/", root().display());
    format!(
        "{} {}",
        bin.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        args.join(" ").replace(&prefix, "")
    )
}

/// Runs `bin args` from the repository root with `RUST_LOG=warn`, echoing the command line to
/// stderr; returns that line ([`shown`]) and the command's stdout. Fails with its stderr.
pub(crate) fn run_shown(bin: &Path, args: &[String]) -> Result<(String, String)> {
    let line = shown(bin, args);
    eprintln!("$ {line}");
    let out = std::process::Command::new(bin)
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {line}"))?;
    if !out.status.success() {
        bail!("`{line}` failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((line, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The repository's root: above the manifest of the xtask that `cargo xtask` runs (cargo
/// sets `CARGO_MANIFEST_DIR` for the process), else above the one it was built from (a build
/// shared by several checkouts through one target directory would otherwise work on the
/// checkout that built it).
pub(crate) fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = manifest.join("..");
    dir.canonicalize().unwrap_or(dir)
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: no {stem} or {stem}.gz (install Fashion-MNIST with `apt-get install dataset-fashion-mnist`)", dir.display())
}

/// Keeps the first `n` records of an IDX file (header rewritten with the new count).
fn truncate_idx(bytes: &[u8], n: usize, path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 {
        bail!("{}: not an IDX file of unsigned bytes", path.display());
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        bail!("{}: truncated IDX header", path.display());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    if dims[0] < n {
        bail!(
            "{}: holds {} records, {n} requested",
            path.display(),
            dims[0]
        );
    }
    let record: usize = dims[1..].iter().product();
    let mut out = bytes[..header].to_vec();
    out[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    let end = header + n * record;
    if bytes.len() < end {
        bail!("{}: truncated IDX body", path.display());
    }
    out.extend_from_slice(&bytes[header..end]);
    Ok(out)
}

fn sample_data(args: &[String]) -> Result<()> {
    let from = PathBuf::from(
        flag(args, "--from")?.unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into()),
    );
    let out = flag(args, "--out")?
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("data/fashion-mnist-sample"));
    let n_train: usize = flag(args, "--train")?
        .unwrap_or_else(|| "6000".into())
        .parse()
        .context("--train")?;
    let n_test: usize = flag(args, "--test")?
        .unwrap_or_else(|| "1000".into())
        .parse()
        .context("--test")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (stem, n) in [
        ("train-images-idx3-ubyte", n_train),
        ("train-labels-idx1-ubyte", n_train),
        ("t10k-images-idx3-ubyte", n_test),
        ("t10k-labels-idx1-ubyte", n_test),
    ] {
        let src = find(&from, stem)?;
        let kept = truncate_idx(&read_maybe_gz(&src)?, n, &src)?;
        let dst = out.join(format!("{stem}.gz"));
        // mtime 0 in the gzip header keeps the output byte-for-byte reproducible.
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        enc.write_all(&kept)?;
        let bytes = enc.finish()?;
        std::fs::write(&dst, &bytes).with_context(|| format!("writing {}", dst.display()))?;
        println!("{}: {n} records, {} bytes", dst.display(), bytes.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_args;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Help is help, not a run with the defaults; an unknown flag is refused by name; what
    /// follows `--` goes to cargo unchecked.
    #[test]
    fn task_arguments_are_checked() {
        assert!(check_args("compress-bench", &args(&["--help"])).unwrap());
        assert!(check_args("bench", &args(&["--epochs", "2", "-h"])).unwrap());
        assert!(!check_args("compress-bench", &args(&["--epochs", "3", "--quick"])).unwrap());
        let e = check_args("reproduce", &args(&["--quick", "--epochs", "3"])).unwrap_err();
        assert!(
            e.to_string().contains("takes no argument `--epochs`"),
            "{e}"
        );
        // A flag's value is not taken for a flag.
        assert!(!check_args("bench", &args(&["--data-dir", "--weird-dir-name"])).unwrap());
        assert!(!check_args("cuda-build", &args(&["--check", "--", "--release", "-v"])).unwrap());
    }
}
