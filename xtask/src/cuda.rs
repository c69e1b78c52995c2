//! `cargo xtask cuda-build`: the CUDA binaries of vae-train and vae-infer, built on a machine
//! without a GPU into a target directory of their own (the CPU build stays valid), stripped of
//! their debug information into `--out`. `--check` then runs them against the stub driver:
//! training on the CPU works, `--device cuda` fails with one clear line.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cuda_toolkit::{self, Toolkit};
use crate::{flag, root};

const BINARIES: [&str; 2] = ["vae-train", "vae-infer"];

struct Opts {
    out: PathBuf,
    target_dir: PathBuf,
    compute_cap: String,
    check: bool,
    /// Extra arguments for `cargo build`, after `--`.
    cargo_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let (ours, cargo_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let mut i = 0;
    while i < ours.len() {
        match ours[i].as_str() {
            "--out" | "--target-dir" | "--compute-cap" => i += 2,
            "--check" => i += 1,
            other => bail!("cuda-build: unknown flag `{other}`"),
        }
    }
    let target_dir = match flag(ours, "--target-dir")? {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("cuda"),
    };
    let target_dir = absolute(target_dir)?;
    let out = match flag(ours, "--out")? {
        Some(d) => absolute(PathBuf::from(d))?,
        None => target_dir.join("dist"),
    };
    let compute_cap = flag(ours, "--compute-cap")?.unwrap_or_else(|| "90".into());
    let digits = compute_cap.trim_end_matches(['a', 'f']);
    if !(2..=3).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--compute-cap {compute_cap}: expected the GPU's compute capability without the dot, such as 90 (H100, H200) or 80 (A100)");
    }
    Ok(Opts {
        out,
        target_dir,
        compute_cap,
        check: ours.iter().any(|a| a == "--check"),
        cargo_args,
    })
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let started = Instant::now();
    let cache = cuda_toolkit::cache_dir()?;
    let tk = cuda_toolkit::prepare(&cache)?;
    eprintln!(
        "toolkit: {} ({:.0} s)",
        tk.describe,
        started.elapsed().as_secs_f64()
    );
    let built = Instant::now();
    build(&tk, &opts)?;
    eprintln!(
        "cargo build: {:.0} s into {}",
        built.elapsed().as_secs_f64(),
        opts.target_dir.display()
    );
    let bins = dist(&opts)?;
    let missing = show_libraries(&bins)?;
    if opts.check {
        smoke_test(&tk, &opts, &bins)?;
    }
    println!(
        "\nOn the GPU machine the binaries need the NVIDIA driver (libcuda.so.1) and the CUDA \
         runtime libraries {}, for instance those of the nvidia wheels of a PyTorch venv:\n  \
         export LD_LIBRARY_PATH=\"$(ls -d /path/to/venv/lib/python3*/site-packages/nvidia/*/lib \
         | paste -sd:)${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"\n  {} --device cuda ...",
        missing.join(" "),
        opts.out.join("vae-train").display()
    );
    eprintln!(
        "cuda-build: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `dirs` then the current value of `var`, as one search path.
fn search_path(dirs: &[&Path], var: &str) -> Result<OsString> {
    let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    if let Some(old) = std::env::var_os(var) {
        all.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(all).with_context(|| format!("{var}: a directory name holds ':'"))
}

fn build(tk: &Toolkit, opts: &Opts) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut link: Vec<&Path> = tk.link_dirs.iter().map(PathBuf::as_path).collect();
    link.push(&tk.stub_dir);
    // candle-kernels compiles its CUDA sources with cudaforge, which runs half as many nvcc
    // processes as there are cores unless told otherwise; while it runs, nothing else of the
    // build can start (every crate left depends on candle-core), so it gets all of them.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .args(["build", "--release", "--locked"])
        .args([
            "-p",
            "vae-train",
            "-p",
            "vae-infer",
            "--no-default-features",
        ])
        .args([
            "--features",
            "vae-train/cuda,vae-infer/cuda",
            "--target-dir",
        ])
        .arg(&opts.target_dir)
        .args(&opts.cargo_args)
        .env("PATH", search_path(&[&tk.root.join("bin")], "PATH")?)
        .env("CUDA_ROOT", &tk.root)
        .env("CUDA_PATH", &tk.root)
        .env("CUDA_HOME", &tk.root)
        .env("CUDA_COMPUTE_CAP", &opts.compute_cap)
        .env("LIBRARY_PATH", search_path(&link, "LIBRARY_PATH")?)
        .env("CUDAFORGE_THREADS", threads.to_string())
        // The release profile's line tables would be stripped from the copies in --out anyway.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    if let Some(v) = tk.cuda_version {
        cmd.env("CUDARC_CUDA_VERSION", v);
    }
    eprintln!(
        "cargo build --release -p vae-train -p vae-infer --features cuda (compute capability {})",
        opts.compute_cap
    );
    // cargo's messages pass through, read on the way for the step that failed.
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .context("cargo build: cannot run cargo")?;
    let stderr = child.stderr.take().context("cargo build: no stderr pipe")?;
    let mut failed_step = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("cargo build: reading its output")?;
        eprintln!("{line}");
        failed_step = failed_step.or_else(|| failing_step(&line));
    }
    let status = child.wait().context("cargo build: waiting for cargo")?;
    if !status.success() {
        let step = failed_step.unwrap_or("cargo build");
        bail!("{step}: the CUDA build failed ({status}); the message is above");
    }
    Ok(())
}

/// The step a line of cargo's output says failed: CUDA compilation, cudarc's set-up, the link
/// or Rust compilation.
fn failing_step(line: &str) -> Option<&'static str> {
    if line.contains("failed to run custom build command for `candle-kernels") {
        Some("nvcc (candle-kernels)")
    } else if line.contains("failed to run custom build command for `cudarc") {
        Some("cudarc build script (CUDA version or paths)")
    } else if line.contains("error: linking with") || line.contains("undefined reference to") {
        Some("link")
    } else if line.starts_with("error") {
        Some("cargo build")
    } else {
        None
    }
}

/// Copies the binaries into `--out` without their line tables: `strip --strip-debug` keeps the
/// symbol table, so a backtrace still names its functions, at a few MB per binary.
fn dist(opts: &Opts) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("dist: creating {}", opts.out.display()))?;
    let mut bins = Vec::new();
    for name in BINARIES {
        let src = opts.target_dir.join("release").join(name);
        let dst = opts.out.join(name);
        let tmp = opts.out.join(format!(".{name}.tmp"));
        std::fs::copy(&src, &tmp)
            .with_context(|| format!("dist: copying {} to {}", src.display(), tmp.display()))?;
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg(&tmp)
            .status()
            .context("strip: cannot run strip (binutils)")?;
        if !status.success() {
            bail!(
                "strip: `strip --strip-debug {}` failed ({status})",
                tmp.display()
            );
        }
        std::fs::rename(&tmp, &dst)
            .with_context(|| format!("dist: renaming to {}", dst.display()))?;
        let mib = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0);
        println!(
            "{}: {:.1} MiB ({:.1} MiB before strip)",
            dst.display(),
            mib(&dst),
            mib(&src)
        );
        bins.push(dst);
    }
    Ok(bins)
}

/// Prints `ldd` of each binary; returns the libraries this machine does not have, other than
/// the driver's `libcuda.so.1`.
fn show_libraries(bins: &[PathBuf]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for bin in bins {
        let out = ldd(bin, None)?;
        println!("ldd {}:\n{}", bin.display(), out.trim_end());
        for lib in not_found(&out) {
            if lib != "libcuda.so.1" && !missing.contains(&lib) {
                missing.push(lib);
            }
        }
    }
    Ok(missing)
}

fn ldd(bin: &Path, library_path: Option<&OsString>) -> Result<String> {
    let mut cmd = Command::new("ldd");
    cmd.arg(bin);
    if let Some(p) = library_path {
        cmd.env("LD_LIBRARY_PATH", p);
    }
    let out = cmd.output().context("ldd: cannot run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd: `ldd {}` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names `ldd` reports as `not found`.
fn not_found(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter(|l| l.contains("=> not found"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// What a smoke-test command left: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `bin args` with `LD_LIBRARY_PATH=lib_path`, killed after `limit`.
fn run_bin(
    bin: &Path,
    args: &[&str],
    lib_path: &OsString,
    work: &Path,
    limit: Duration,
) -> Result<Ran> {
    let name = bin
        .file_name()
        .map_or("bin".into(), |n| n.to_string_lossy());
    let (out_f, err_f) = (work.join("stdout.txt"), work.join("stderr.txt"));
    let what = format!("check: {name} {}", args.join(" "));
    let mut child = Command::new(bin)
        .args(args)
        .env("LD_LIBRARY_PATH", lib_path)
        // candle adds a backtrace to its errors when these ask for one: the check is of what a
        // user sees by default.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_f)?)
        .stderr(std::fs::File::create(&err_f)?)
        .spawn()
        .with_context(|| format!("{what}: cannot start"))?;
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: still running after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Ran {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_f).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_f).unwrap_or_default(),
    })
}

/// The stripped binaries with the stub driver first on the library path: they load, train and
/// evaluate on the CPU, and `--device cuda` ends with exit status 1 and the stub's error (the
/// path a GPU-less machine takes), not a panic.
fn smoke_test(tk: &Toolkit, opts: &Opts, bins: &[PathBuf]) -> Result<()> {
    let work = opts.target_dir.join("smoke");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("check: removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)
        .with_context(|| format!("check: creating {}", work.display()))?;
    let mut dirs: Vec<&Path> = vec![&tk.stub_dir];
    dirs.extend(tk.runtime_dirs.iter().map(PathBuf::as_path));
    let lib_path = search_path(&dirs, "LD_LIBRARY_PATH")?;
    for bin in bins {
        let lost = not_found(&ldd(bin, Some(&lib_path))?);
        if !lost.is_empty() {
            bail!(
                "check: {} misses {} even with the toolkit's libraries",
                bin.display(),
                lost.join(" ")
            );
        }
    }
    let (train, infer) = (&bins[0], &bins[1]);
    let limit = Duration::from_secs(600);
    let cpu = work.join("cpu");
    let cpu_s = cpu.to_string_lossy().into_owned();
    let base = ["--dataset", "sample", "--epochs", "1", "--quiet", "--out"];
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain([cpu_s.as_str(), "--device", "cpu"])
        .collect();
    let r = run_bin(train, &args, &lib_path, &work, limit)?;
    if r.code != Some(0) {
        bail!(
            "check: vae-train --device cpu failed ({:?}): {}",
            r.code,
            r.stderr.trim()
        );
    }
    let metrics = std::fs::read_to_string(cpu.join("metrics.jsonl"))
        .with_context(|| format!("check: reading {}/metrics.jsonl", cpu.display()))?;
    let val = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["epoch"] == 1)
        .find_map(|m| m["val_loss"].as_f64())
        .filter(|v| v.is_finite() && *v > 0.0)
        .context("check: vae-train --device cpu wrote no finite val_loss for epoch 1")?;
    println!("check: vae-train --device cpu trained 1 epoch of the sample, val_loss {val:.2}");

    let r = run_bin(
        infer,
        &[
            "evaluate",
            "--run",
            &cpu_s,
            "--device",
            "cpu",
            "--limit",
            "200",
            "--iw-samples",
            "10",
            "--json",
        ],
        &lib_path,
        &work,
        limit,
    )?;
    let neg_elbo = serde_json::from_str::<serde_json::Value>(r.stdout.trim())
        .ok()
        .and_then(|v| v["neg_elbo"].as_f64())
        .filter(|v| v.is_finite());
    match (r.code, neg_elbo) {
        (Some(0), Some(v)) => println!("check: vae-infer evaluate --device cpu: neg_elbo {v:.2}"),
        _ => bail!(
            "check: vae-infer evaluate --device cpu failed ({:?}): {}",
            r.code,
            r.stderr.trim()
        ),
    }
    // `auto` tries CUDA, meets the stub's error and falls back to the CPU.
    let r = run_bin(
        infer,
        &[
            "evaluate",
            "--run",
            &cpu_s,
            "--device",
            "auto",
            "--limit",
            "200",
            "--iw-samples",
            "10",
            "--json",
        ],
        &lib_path,
        &work,
        limit,
    )?;
    if r.code != Some(0) {
        bail!(
            "check: vae-infer evaluate --device auto failed ({:?}): {}",
            r.code,
            r.stderr.trim()
        );
    }
    println!("check: vae-infer evaluate --device auto falls back to the CPU");

    let gpu = work.join("cuda").to_string_lossy().into_owned();
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain([gpu.as_str(), "--device", "cuda"])
        .collect();
    let runs = [
        (
            "vae-train --device cuda",
            run_bin(train, &args, &lib_path, &work, limit)?,
        ),
        (
            "vae-infer evaluate --device cuda",
            run_bin(
                infer,
                &["evaluate", "--run", &cpu_s, "--device", "cuda"],
                &lib_path,
                &work,
                limit,
            )?,
        ),
    ];
    for (what, r) in runs {
        let err = r.stderr.trim();
        let clear = err.lines().count() == 1
            && err.contains("--device cuda")
            && err.contains("CUDA_ERROR_STUB_LIBRARY");
        if r.code != Some(1) || !clear || err.contains("panicked") {
            bail!("check: {what} with the stub driver should exit 1 with one line naming the flag and the stub; it exited {:?} with: {err}", r.code);
        }
        println!("check: {what} without a driver exits 1: {err}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags() {
        let o = parse(&s(&[
            "--check",
            "--compute-cap",
            "80",
            "--target-dir",
            "/t",
            "--",
            "-v",
        ]))
        .unwrap();
        assert!(o.check);
        assert_eq!(o.compute_cap, "80");
        assert_eq!(o.target_dir, Path::new("/t"));
        assert_eq!(o.out, Path::new("/t/dist"));
        assert_eq!(o.cargo_args, ["-v"]);
        assert!(parse(&s(&["--compute-cap", "9.0"])).is_err());
        assert!(parse(&s(&["--bogus"])).is_err());
        assert!(parse(&s(&["--out"])).is_err());
    }

    #[test]
    fn failing_steps() {
        let nvcc = "error: failed to run custom build command for `candle-kernels v0.11.1`";
        assert_eq!(failing_step(nvcc), Some("nvcc (candle-kernels)"));
        let link = "error: linking with `cc` failed: exit status: 1";
        assert_eq!(failing_step(link), Some("link"));
        assert_eq!(
            failing_step("error[E0425]: cannot find value"),
            Some("cargo build")
        );
        assert_eq!(failing_step("   Compiling candle-core v0.11.1"), None);
    }

    #[test]
    fn not_found_lists_missing_libraries() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcuda.so.1 => not found\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \tlibcublas.so.13 => not found\n";
        assert_eq!(not_found(out), ["libcuda.so.1", "libcublas.so.13"]);
    }
}
