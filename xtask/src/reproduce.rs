//! `cargo xtask reproduce`: trains the reference configurations and writes docs/RESULTS.md with
//! every figure, the command that produced it, and PyTorch's reference figures beside ours.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{build_release, flag, root};

mod render;
pub(crate) use render::with_kept_section;
use render::{check, render, KEPT_SECTION};

/// One configuration of the table.
struct Config {
    /// Row name and run directory name.
    name: &'static str,
    /// Extra vae-train flags (the preset included).
    flags: &'static [&'static str],
    /// Whether latent-space analysis is run on it.
    analyse: bool,
}

const CONFIGS: [Config; 8] = [
    Config {
        name: "pytorch-example",
        flags: &["--preset", "pytorch-example"],
        analyse: true,
    },
    Config {
        name: "seed",
        flags: &["--preset", "seed"],
        analyse: true,
    },
    Config {
        name: "iwae (K=1)",
        flags: &["--preset", "iwae", "--iwae-k", "1"],
        analyse: false,
    },
    Config {
        name: "iwae (K=5)",
        flags: &["--preset", "iwae", "--iwae-k", "5"],
        analyse: false,
    },
    Config {
        name: "conv",
        flags: &["--preset", "conv"],
        analyse: true,
    },
    Config {
        name: "mlp, discretized logistic",
        flags: &[
            "--preset",
            "pytorch-example",
            "--likelihood",
            "discretized-logistic",
        ],
        analyse: false,
    },
    Config {
        name: "mlp, beta-binomial",
        flags: &[
            "--preset",
            "pytorch-example",
            "--likelihood",
            "beta-binomial",
        ],
        analyse: false,
    },
    Config {
        name: "conv, discretized logistic (5 mixtures)",
        flags: &[
            "--preset",
            "conv",
            "--likelihood",
            "discretized-logistic",
            "--mixtures",
            "5",
        ],
        analyse: true,
    },
];

/// The run directory and picture stem of a configuration.
fn stem(name: &str) -> String {
    name.chars()
        .filter_map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The settings of a full or a quick reproduction.
struct Plan {
    quick: bool,
    dataset: &'static str,
    epochs: usize,
    /// Importance samples and examples of the NLL column (all configurations).
    nll_k: usize,
    nll_limit: usize,
    /// The larger evaluation of the reference run (whole test set, `evaluate`'s default K).
    full_k: usize,
    analysis_limit: Option<usize>,
}

struct Runner {
    train: PathBuf,
    infer: PathBuf,
    log: String,
}

impl Runner {
    /// Runs a binary, records the command line, returns stdout.
    fn run(&mut self, bin: &Path, args: &[String]) -> Result<String> {
        let (line, out) = crate::run_shown(bin, args)?;
        writeln!(self.log, "{line}")?;
        Ok(out)
    }

    /// Trains and evaluates the PyTorch reference (`bench/torch_vae.py --evaluate`) with as many
    /// threads as our runs use; returns its evaluation object. (Its speed is compared by
    /// `cargo xtask bench`, in alternating runs, not here.)
    fn torch(&mut self, python: &Path) -> Result<Value> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut args = s(&["bench/torch_vae.py", "--epochs", "10", "--evaluate"]);
        args.extend(["--threads".into(), threads.to_string()]);
        if let Some(d) = std::env::var_os("VAE_DATA_DIR") {
            let d = PathBuf::from(d).join("fashion-mnist");
            args.extend(["--data-dir".into(), d.to_string_lossy().into_owned()]);
        }
        let out = self.run(python, &args)?;
        let lines: Vec<Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines
            .into_iter()
            .find(|v| v.get("neg_elbo").is_some())
            .with_context(|| format!("bench/torch_vae.py printed no evaluation: {out}"))
    }

    fn json(&mut self, bin_is_infer: bool, args: &[String]) -> Result<Value> {
        let bin = if bin_is_infer {
            self.infer.clone()
        } else {
            self.train.clone()
        };
        let out = self.run(&bin, args)?;
        serde_json::from_str(out.trim())
            .with_context(|| format!("parsing the JSON of {args:?}: {out}"))
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// One row of the results table.
#[derive(Default)]
struct Row {
    name: String,
    epochs: usize,
    seconds: f64,
    neg_elbo: f64,
    nll: f64,
    /// What the figures bound (`evaluate`'s `density`).
    density: String,
    /// Bits per dimension, where the figures bound a probability of the data.
    bpd: Option<f64>,
    /// The negative ELBO in bits per dimension on the whole test split, where it bounds one.
    elbo_bpd: Option<f64>,
    knn: Option<f64>,
    linear: Option<f64>,
    kmeans: Option<(f64, f64, f64)>,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            quick,
            dataset: "sample",
            epochs: 2,
            nll_k: 100,
            nll_limit: 200,
            full_k: 200,
            analysis_limit: Some(1000),
        }
    } else {
        Plan {
            quick,
            dataset: "fashion-mnist",
            epochs: 10,
            nll_k: 1000,
            nll_limit: 1000,
            full_k: 500,
            analysis_limit: None,
        }
    };
    let root = root();
    let out_file = flag(args, "--out")?.map(PathBuf::from).unwrap_or_else(|| {
        root.join(if quick {
            "target/quick-results/RESULTS.md"
        } else {
            "docs/RESULTS.md"
        })
    });
    let work = flag(args, "--work")?.map(PathBuf::from).unwrap_or_else(|| {
        root.join(if quick {
            "target/quick-results/runs"
        } else {
            "runs/reproduce"
        })
    });
    let python = flag(args, "--vs-torch")?.map(PathBuf::from);
    if quick && python.is_some() {
        bail!("--vs-torch compares the full reproduction; it has no quick form");
    }
    let bin_dir = match flag(args, "--bin-dir")? {
        Some(d) => PathBuf::from(d),
        None => build_release()?,
    };
    if !quick
        && !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()
        && std::env::var_os("VAE_DATA_DIR").is_none()
    {
        bail!("the full reproduction needs Fashion-MNIST: `apt-get install dataset-fashion-mnist` (or set VAE_DATA_DIR); `--quick` uses the embedded sample");
    }
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let pictures = out_file
        .parent()
        .map(|p| p.join("results"))
        .context("--out needs a directory")?;
    std::fs::create_dir_all(&pictures)?;
    let mut r = Runner {
        train: bin_dir.join("vae-train"),
        infer: bin_dir.join("vae-infer"),
        log: String::new(),
    };
    let started = Instant::now();

    let mut rows = Vec::new();
    let mut reference_full = None;
    for c in &CONFIGS {
        let dir = work.join(stem(c.name));
        let d = dir.to_string_lossy().to_string();
        let mut a = s(&[
            "--dataset",
            plan.dataset,
            "--epochs",
            &plan.epochs.to_string(),
            "--quiet",
            "--out",
            &d,
        ]);
        a.extend(s(c.flags));
        let train = r.train.clone();
        r.run(&train, &a)?;
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
        let lines: Vec<Value> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let seconds: f64 = lines.iter().map(|v| num(v, "seconds")).sum();
        let ev = r.json(
            true,
            &s(&[
                "evaluate",
                "--run",
                &d,
                "--iw-samples",
                &plan.nll_k.to_string(),
                "--limit",
                &plan.nll_limit.to_string(),
                "--json",
            ]),
        )?;
        let full = r.json(
            true,
            &s(&["evaluate", "--run", &d, "--iw-samples", "0", "--json"]),
        )?;
        let mut row = Row {
            name: c.name.into(),
            epochs: plan.epochs,
            seconds,
            neg_elbo: num(&full, "neg_elbo"),
            nll: num(&ev, "nll"),
            density: ev
                .get("density")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            bpd: ev.get("bits_per_dim").and_then(Value::as_f64),
            elbo_bpd: full.get("neg_elbo_bits_per_dim").and_then(Value::as_f64),
            ..Default::default()
        };
        if c.analyse {
            let mut lim = Vec::new();
            if let Some(n) = plan.analysis_limit {
                lim = s(&["--limit", &n.to_string()]);
            }
            let mut args = s(&["classify", "--run", &d, "--json"]);
            args.extend(lim.clone());
            row.knn = Some(num(&r.json(true, &args)?, "accuracy"));
            let mut args = s(&["classify", "--method", "linear", "--run", &d, "--json"]);
            args.extend(lim.clone());
            row.linear = Some(num(&r.json(true, &args)?, "accuracy"));
            let mut args = s(&["cluster", "--run", &d, "--json"]);
            args.extend(lim.clone());
            let cl = r.json(true, &args)?;
            row.kmeans = Some((num(&cl, "accuracy"), num(&cl, "nmi"), num(&cl, "ari")));
            let stem = stem(c.name);
            for (cmd, file) in [
                ("sample", format!("{stem}-samples.png")),
                ("reconstruct", format!("{stem}-reconstructions.png")),
            ] {
                let p = pictures.join(&file).to_string_lossy().to_string();
                let infer = r.infer.clone();
                r.run(&infer, &s(&[cmd, "--run", &d, "--out", &p]))?;
            }
        }
        if c.name == "pytorch-example" {
            let t = Instant::now();
            let mut full = r.json(
                true,
                &s(&[
                    "evaluate",
                    "--run",
                    &d,
                    "--iw-samples",
                    &plan.full_k.to_string(),
                    "--json",
                ]),
            )?;
            full["seconds"] = t.elapsed().as_secs_f64().into();
            let report = pictures
                .join("pytorch-example-report.html")
                .to_string_lossy()
                .to_string();
            let mut args = s(&["report", "--run", &d, "--out", &report]);
            if let Some(n) = plan.analysis_limit {
                args.extend(s(&["--limit", &n.to_string()]));
            }
            let infer = r.infer.clone();
            r.run(&infer, &args)?;
            reference_full = Some(full);
        }
        rows.push(row);
    }
    let torch = match (&python, plan.quick) {
        (Some(py), false) => Some(r.torch(py)?),
        _ => None,
    };
    // The classical codecs on the same test images, as `cargo xtask compress-bench` measures
    // them (and from its cache when it has run). The quick run leaves them out: their WebP
    // and xz builds compile C libraries.
    let classical = if plan.quick {
        None
    } else {
        let data = std::env::var_os("VAE_DATA_DIR")
            .map(|d| PathBuf::from(d).join("fashion-mnist"))
            .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
        let test_file = crate::find(&data, "t10k-images-idx3-ubyte")?;
        let cache = root.join("runs/compress-bench/baselines.jsonl");
        let (rows, shown, reused) =
            crate::compress_bench::classical_rates(&test_file, &bin_dir, None, &cache)?;
        r.log.push_str(&if reused {
            format!("{shown}   # measured earlier by `cargo xtask compress-bench`: reused\n")
        } else {
            format!("{shown}\n")
        });
        Some(rows)
    };

    let md = render(
        &plan,
        &rows,
        reference_full.as_ref(),
        torch.as_ref(),
        classical.as_deref(),
        &r.log,
        started.elapsed().as_secs_f64(),
    );
    // The hierarchical model's section comes from its own multi-hour run (its commands are in
    // the section): a rewrite keeps it as it was.
    let md = with_kept_section(
        md,
        std::fs::read_to_string(&out_file).ok().as_deref(),
        KEPT_SECTION,
    );
    std::fs::write(&out_file, &md).with_context(|| format!("writing {}", out_file.display()))?;
    check(&std::fs::read_to_string(&out_file)?)?;
    eprintln!("wrote {}", out_file.display());
    Ok(())
}
