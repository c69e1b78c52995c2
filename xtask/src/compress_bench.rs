//! `cargo xtask compress-bench`: lossless compression of the Fashion-MNIST test set with two
//! trained VAEs (bits-back coding, `vae-infer compress`) beside the classical codecs (gzip,
//! bzip2, xz, PNG, WebP, from vae-codec's `baselines` example), with their rates and times;
//! writes docs/COMPRESSION.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{build_release, find, flag, read_maybe_gz, root, run_shown, shown};

/// One model of the table.
struct Model {
    name: &'static str,
    flags: &'static [&'static str],
}

const MODELS: [Model; 2] = [
    Model {
        name: "mlp",
        flags: &["--likelihood", "discretized-logistic"],
    },
    Model {
        name: "conv",
        flags: &["--preset", "conv", "--likelihood", "discretized-logistic"],
    },
];

/// Runs commands, records their command lines.
struct Runner {
    log: Vec<String>,
}

impl Runner {
    /// Records a command that was not run now, with why.
    fn note(&mut self, bin: &Path, args: &[String], why: &str) {
        let shown = shown(bin, args);
        eprintln!("$ {shown}   # {why}");
        self.log.push(format!("{shown}   # {why}"));
    }

    fn run(&mut self, bin: &Path, args: &[String]) -> Result<String> {
        let (line, out) = run_shown(bin, args)?;
        self.log.push(line);
        Ok(out)
    }

    fn json(&mut self, bin: &Path, args: &[String]) -> Result<Value> {
        let out = self.run(bin, args)?;
        serde_json::from_str(out.trim()).with_context(|| format!("parsing the JSON of {args:?}"))
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn path_s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Builds vae-codec's `baselines` example with the classical codecs in the profile of
/// `bin_dir` (`TARGET/<profile>`, where the binaries are); returns its path.
fn build_baselines(bin_dir: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the classical baselines (bzip2, xz and WebP build C libraries)");
    let profile = bin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| if n == "debug" { "dev" } else { n })
        .unwrap_or("release");
    let mut c = Command::new(cargo);
    c.current_dir(root()).args([
        "build",
        "--profile",
        profile,
        "--quiet",
        "-p",
        "vae-codec",
        "--features",
        "classical",
        "--example",
        "baselines",
    ]);
    if let Some(target) = bin_dir.parent() {
        c.env("CARGO_TARGET_DIR", target);
    }
    if !c.status()?.success() {
        bail!("building the baselines example failed");
    }
    Ok(bin_dir.join("examples/baselines"))
}

/// The rates of the classical codecs on the images of the IDX file `test_file`: one JSON object
/// per codec and mode (`codec`, `mode`, `images`, `bytes`, `bits_per_dim`, `encode_seconds`,
/// `decode_seconds`) from vae-codec's `baselines` example, built in the profile of `bin_dir`.
/// The rows of an earlier run of the same command line are kept in `cache` and reused (WebP's
/// method 6 takes long). Also returns the command line as a report shows it, and whether the
/// rows were reused.
pub(crate) fn classical_rates(
    test_file: &Path,
    bin_dir: &Path,
    codecs: Option<&str>,
    cache: &Path,
) -> Result<(Vec<Value>, String, bool)> {
    let baselines = build_baselines(bin_dir)?;
    let mut b = s(&[&path_s(test_file), "--json"]);
    if let Some(c) = codecs {
        b.extend(s(&["--codecs", c]));
    }
    let shown = shown(&baselines, &b);
    let key = format!("# {}", b.join(" "));
    let cached = std::fs::read_to_string(cache)
        .ok()
        .filter(|text| text.lines().next() == Some(key.as_str()));
    let reused = cached.is_some();
    let out = match cached {
        Some(text) => {
            eprintln!("$ {shown}   # already run: reused");
            text
        }
        None => {
            let mut r = Runner { log: Vec::new() };
            let out = r.run(&baselines, &b)?;
            if let Some(p) = cache.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(cache, format!("{key}\n{out}"))
                .with_context(|| format!("writing {}", cache.display()))?;
            out
        }
    };
    let classical: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if classical.is_empty() {
        bail!("the baselines example printed no rows:\n{out}");
    }
    let want_images = read_maybe_gz(test_file)?.len().saturating_sub(16) / 784;
    if let Some(c) = classical
        .iter()
        .find(|c| num(c, "images") != want_images as f64)
    {
        bail!(
            "{}: a row of {} images, not {want_images}: {c}",
            cache.display(),
            num(c, "images")
        );
    }
    Ok((classical, shown, reused))
}

/// The 1-, 5- and 15-minute load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The measurements of one model.
struct Measured {
    name: &'static str,
    epochs: String,
    train_seconds: f64,
    /// compress of the first 1,000 and of all test images.
    first: Value,
    all: Value,
    /// (threads, compress report, decompress report).
    runs: Vec<(usize, Value, Value)>,
}

/// One row of the codec table.
struct Row {
    images: f64,
    bytes: f64,
    bpd: f64,
    enc: f64,
    dec: f64,
}

/// The heading of the section of COMPRESSION.md run by hand (the hierarchical model's file),
/// which a rewrite of the tables keeps.
const KEPT_SECTION: &str = "\n## The hierarchical model";

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let models: Vec<&Model> = match flag(args, "--models")? {
        None => MODELS.iter().collect(),
        Some(list) => {
            list.split(',')
                .map(|n| {
                    MODELS.iter().find(|m| m.name == n.trim()).with_context(|| {
                        format!("--models: unknown model `{n}` (known: mlp, conv)")
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    let codecs = flag(args, "--codecs")?;
    let epochs: usize = flag(args, "--epochs")?
        .unwrap_or_else(|| if quick { "2" } else { "10" }.into())
        .parse()
        .context("--epochs")?;
    let conv_epochs: usize = match flag(args, "--conv-epochs")? {
        Some(e) => e.parse().context("--conv-epochs")?,
        None => epochs,
    };
    let threads: Vec<usize> = flag(args, "--threads")?
        .unwrap_or_else(|| "1,2".into())
        .split(',')
        .map(|t| t.trim().parse().context("--threads"))
        .collect::<Result<_>>()?;
    let root = root();
    let base = root.join(if quick {
        "target/compress-bench"
    } else {
        "runs/compress-bench"
    });
    let runs = flag(args, "--runs")?
        .map(PathBuf::from)
        .unwrap_or_else(|| base.clone());
    let out_file = flag(args, "--out")?.map(PathBuf::from).unwrap_or_else(|| {
        if quick {
            base.join("COMPRESSION.md")
        } else {
            root.join("docs/COMPRESSION.md")
        }
    });
    let (dataset, data_dir) = if quick {
        ("sample", root.join("data/fashion-mnist-sample"))
    } else {
        let d = std::env::var_os("VAE_DATA_DIR")
            .map(|d| PathBuf::from(d).join("fashion-mnist"))
            .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
        ("fashion-mnist", d)
    };
    let test_file = find(&data_dir, "t10k-images-idx3-ubyte").with_context(|| {
        "the full benchmark needs Fashion-MNIST (`--quick` uses the embedded sample)"
    })?;
    let test_bytes = read_maybe_gz(&test_file)?;
    let bins = match flag(args, "--bin-dir")? {
        Some(d) => PathBuf::from(&d)
            .canonicalize()
            .with_context(|| format!("--bin-dir {d}"))?,
        None => build_release()?,
    };
    let (train, infer) = (bins.join("vae-train"), bins.join("vae-infer"));
    std::fs::create_dir_all(&runs)?;
    let load_before = load();
    let started = Instant::now();
    let mut r = Runner { log: Vec::new() };

    let mut measured = Vec::new();
    for m in models {
        let dir = runs.join(m.name);
        let d = path_s(&dir);
        let want_epochs = if m.name == "conv" {
            conv_epochs
        } else {
            epochs
        };
        let reuse = dir.join("config.json").is_file() && dir.join("model.safetensors").is_file();
        let mut a = s(&[
            "--dataset",
            dataset,
            "--epochs",
            &want_epochs.to_string(),
            "--quiet",
            "--out",
            &d,
        ]);
        a.extend(s(m.flags));
        if reuse {
            // Trained earlier by this command line (checked below by its epochs).
            r.note(&train, &a, "already trained: reused");
        } else {
            r.run(&train, &a)?;
        }
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .with_context(|| format!("{}: no metrics.jsonl", dir.display()))?;
        let lines: Vec<Value> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let train_seconds: f64 = lines.iter().map(|v| num(v, "seconds")).sum();
        let trained = lines
            .iter()
            .filter_map(|v| v.get("epoch").and_then(Value::as_u64))
            .max();
        if trained != Some(want_epochs as u64) {
            bail!(
                "{}: trained for {} epochs, not {want_epochs} (remove it, or give the epochs it \
                 was trained for)",
                dir.display(),
                trained.map_or("?".into(), |e| e.to_string())
            );
        }
        let trained_epochs = want_epochs.to_string();
        let work = dir.join("compress-bench");
        std::fs::create_dir_all(&work)?;
        let top = threads.iter().copied().max().unwrap_or(1).to_string();
        let first_file = path_s(&work.join("first-1000.vbb"));
        let first = r.json(
            &infer,
            &s(&[
                "compress",
                "--run",
                &d,
                "--split",
                "test",
                "--limit",
                "1000",
                "--threads",
                &top,
                "--out",
                &first_file,
                "--json",
                "--elbo",
            ]),
        )?;
        let mut runs_t = Vec::new();
        let mut reference: Option<Vec<u8>> = None;
        for &t in &threads {
            let file = work.join(format!("test-{t}.vbb"));
            let back = work.join(format!("test-{t}.idx"));
            let ts = t.to_string();
            let c = r.json(
                &infer,
                &s(&[
                    "compress",
                    "--run",
                    &d,
                    "--split",
                    "test",
                    "--threads",
                    &ts,
                    "--out",
                    &path_s(&file),
                    "--json",
                    "--elbo",
                ]),
            )?;
            let dec = r.json(
                &infer,
                &s(&[
                    "decompress",
                    &path_s(&file),
                    "--run",
                    &d,
                    "--threads",
                    &ts,
                    "--out",
                    &path_s(&back),
                    "--json",
                ]),
            )?;
            let bytes = std::fs::read(&file)?;
            match &reference {
                Some(b) if *b != bytes => {
                    bail!("{}: the file depends on the thread count", file.display())
                }
                Some(_) => {}
                None => reference = Some(bytes),
            }
            if std::fs::read(&back)? != test_bytes {
                bail!(
                    "{}: does not match {} byte for byte",
                    back.display(),
                    test_file.display()
                );
            }
            runs_t.push((t, c, dec));
        }
        let all = runs_t
            .first()
            .map(|(_, c, _)| c.clone())
            .context("--threads is empty")?;
        measured.push(Measured {
            name: m.name,
            epochs: trained_epochs,
            train_seconds,
            first,
            all,
            runs: runs_t,
        });
    }

    let (classical, shown, reused) = classical_rates(
        &test_file,
        &bins,
        codecs.as_deref(),
        &runs.join("baselines.jsonl"),
    )?;
    r.log.push(if reused {
        format!("{shown}   # already run: reused")
    } else {
        shown
    });
    let md = render(
        &args.join(" "),
        &measured,
        &classical,
        &r.log,
        (&load_before, &load()),
        started.elapsed().as_secs_f64(),
    );
    check(&md, &measured, &classical)?;
    let md = crate::reproduce::with_kept_section(
        md,
        std::fs::read_to_string(&out_file).ok().as_deref(),
        KEPT_SECTION,
    );
    if let Some(p) = out_file.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&out_file, md).with_context(|| format!("writing {}", out_file.display()))?;
    eprintln!("wrote {}", out_file.display());
    Ok(())
}

fn render(
    args: &str,
    measured: &[Measured],
    classical: &[Value],
    log: &[String],
    load: (&str, &str),
    seconds: f64,
) -> String {
    let quick = args.split(' ').any(|a| a == "--quick");
    let mut m = String::new();
    let images = measured.first().map_or(f64::NAN, |x| num(&x.all, "images"));
    let _ = writeln!(
        m,
        "# Lossless compression{}\n",
        if quick {
            " (quick run on the embedded sample)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        m,
        "Written by `cargo xtask compress-bench{}{args}` in {seconds:.0} s on a {}-core {} \
         (load average {} before, {} after: other work shared the machine). Images: the {images:.0} \
         test images of {} (28×28, 8-bit grey), as one IDX file. Every file written by `vae-infer \
         compress` was decoded again by `decompress` and compared with the test file byte for byte; \
         every classical result was decoded and compared too. Bits/dim counts every byte of the \
         output (headers included) over 784 values per image; seconds are wall-clock, this \
         command running one process at a time{}.\n",
        if args.is_empty() { "" } else { " " },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model(),
        load.0,
        load.1,
        if quick {
            "the embedded sample of Fashion-MNIST"
        } else {
            "Fashion-MNIST"
        },
        if log.iter().any(|l| l.ends_with("reused")) {
            " (what the commands below mark as reused comes from an earlier run of the same \
             command line, its seconds measured then)"
        } else {
            ""
        },
    );
    let _ = writeln!(m, "## Rates\n");
    let _ = writeln!(
        m,
        "| codec | threads | bytes | bits/dim | compress s | decompress s | compress images/s | decompress images/s | compress MB/s | decompress MB/s |"
    );
    let _ = writeln!(
        m,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut rows = Vec::new();
    for x in measured {
        for (t, c, d) in &x.runs {
            rows.push((
                format!("VAE bits-back, {}", x.name),
                t.to_string(),
                Row {
                    images: num(c, "images"),
                    bytes: num(c, "bytes"),
                    bpd: num(c, "bits_per_dim"),
                    enc: num(c, "seconds"),
                    dec: num(d, "seconds"),
                },
            ));
        }
    }
    for c in classical {
        let name = format!(
            "{} ({})",
            c.get("codec").and_then(Value::as_str).unwrap_or("?"),
            c.get("mode").and_then(Value::as_str).unwrap_or("?")
        );
        rows.push((
            name,
            "1".into(),
            Row {
                images: num(c, "images"),
                bytes: num(c, "bytes"),
                bpd: num(c, "bits_per_dim"),
                enc: num(c, "encode_seconds"),
                dec: num(c, "decode_seconds"),
            },
        ));
    }
    // Megabytes (10^6 bytes) of pixels: 784 a 28×28 grey image.
    let mb = |images: f64| images * 784.0 / 1e6;
    for (name, t, r) in &rows {
        let _ = writeln!(
            m,
            "| {name} | {t} | {:.0} | {:.4} | {:.2} | {:.2} | {:.0} | {:.0} | {:.3} | {:.3} |",
            r.bytes,
            r.bpd,
            r.enc,
            r.dec,
            r.images / r.enc,
            r.images / r.dec,
            mb(r.images) / r.enc,
            mb(r.images) / r.dec
        );
    }
    let _ = writeln!(
        m,
        "\nVAE compress seconds are the coding alone (the model's passes included); `compress` \
         then decodes the file once more before renaming it into place (`verify_seconds`) and \
         computes the negative ELBO, neither counted here. Classical codecs run on one thread: \
         gzip -9, bzip2 -9 and xz -9e on the concatenated pixels (stream) or each image alone \
         (per-image, its headers counted); PNG (best deflate, adaptive filters) and lossless WebP \
         (method 6, quality 100, exact) on one mosaic of all the images (stream) or each image \
         alone.\n"
    );
    let _ = writeln!(m, "## Rate against the negative ELBO\n");
    let _ = writeln!(
        m,
        "| model | epochs | train s | images | bits/dim | −ELBO bits/dim | net bits/dim | initial bits | header bytes |"
    );
    let _ = writeln!(
        m,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for x in measured {
        for r in [&x.first, &x.all] {
            let _ = writeln!(
                m,
                "| {} | {} | {:.0} | {:.0} | {:.4} | {:.4} | {:.4} | {:.0} | {:.0} |",
                x.name,
                x.epochs,
                x.train_seconds,
                num(r, "images"),
                num(r, "bits_per_dim"),
                num(r, "neg_elbo_bits_per_dim"),
                num(r, "net_bits_per_dim"),
                num(r, "initial_bits"),
                num(r, "header_bytes"),
            );
        }
    }
    let simd = measured
        .first()
        .and_then(|x| x.all.get("simd"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let _ = writeln!(
        m,
        "\n−ELBO is the model's one-sample negative ELBO on the same images (`evaluate`'s \
         figure, −log2 P per value for a discrete likelihood); net bits/dim is Σ −log2 p(x|z) − \
         log2 p(z) + log2 q(z|x) under the coder's quantised models, the rate before the initial \
         bits (what the first image of each chunk of 256 cannot get back) and the header. The \
         models' kernels ran at SIMD level `{simd}`.\n"
    );
    let _ = writeln!(m, "## Commands\n\n```");
    for l in log {
        let _ = writeln!(m, "{l}");
    }
    let _ = writeln!(m, "```");
    m
}

/// Refuses a table with a missing or non-finite figure.
fn check(md: &str, measured: &[Measured], classical: &[Value]) -> Result<()> {
    if measured.is_empty() || classical.is_empty() {
        bail!("the benchmark is missing rows");
    }
    for x in measured {
        for v in [
            num(&x.all, "bits_per_dim"),
            num(&x.all, "neg_elbo_bits_per_dim"),
        ] {
            if !v.is_finite() || v <= 0.0 {
                bail!("{}: a rate of {v}", x.name);
            }
        }
    }
    if md.contains("NaN") || md.contains("| inf") {
        bail!("the table holds a value that is not a number:\n{md}");
    }
    Ok(())
}
