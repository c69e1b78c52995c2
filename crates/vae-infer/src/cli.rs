//! The command line of `vae-infer`: one subcommand per analysis, each a library function.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use vae_core::candle_core::Device;
use vae_core::Rng;
use vae_data::Dataset;

use crate::commands::{
    run_classify, run_cluster, run_encode, run_interpolate, run_manifold, run_plot,
    run_reconstruct, run_report, run_traverse, ClassifyArgs, ClusterArgs, EncodeArgs,
    InterpolateArgs, ManifoldArgs, PlotArgs, ReconstructArgs, ReportArgs, TraverseArgs,
};
use crate::model::{load, run_paths, Loaded};
use crate::{eval, image, sample, InferError, Result};

/// Use a trained variational autoencoder: sample, evaluate, analyse its latent space.
#[derive(Debug, Parser)]
#[command(name = "vae-infer", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode codes drawn from the prior into a PNG grid.
    Sample(SampleArgs),
    /// Negative ELBO (reconstruction + KL) of a split, per example, in nats.
    Evaluate(EvaluateArgs),
    /// Validation images above their reconstructions, as a PNG grid.
    Reconstruct(ReconstructArgs),
    /// Decode the path between the posterior means of two validation images.
    Interpolate(InterpolateArgs),
    /// Move one latent dimension at a time around a base code, one row per dimension.
    Traverse(TraverseArgs),
    /// Decode a grid over two latent dimensions at prior quantiles.
    Manifold(ManifoldArgs),
    /// Write the posterior means and log-variances of a split (CSV, NPY or safetensors).
    Encode(EncodeArgs),
    /// k-means on latent means (fit on train, scored on test): accuracy, NMI, ARI.
    Cluster(ClusterArgs),
    /// k-NN or logistic regression on latent means (fit on train, scored on test).
    Classify(ClassifyArgs),
    /// Latent scatter coloured by label and training curves, as PNG charts.
    Plot(PlotArgs),
    /// One self-contained HTML page with pictures and numbers.
    Report(ReportArgs),
    /// Encoding and sampling speed of the model, in examples per second.
    Throughput(ThroughputArgs),
}

/// Which model to load, and where to run it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A run directory written by vae-train.
    #[arg(long, required_unless_present = "model", conflicts_with_all = ["model", "config"])]
    pub run: Option<PathBuf>,
    /// A weights file (with --config).
    #[arg(long, requires = "config")]
    pub model: Option<PathBuf>,
    /// The config.json that goes with --model.
    #[arg(long, requires = "model")]
    pub config: Option<PathBuf>,
    /// Use best.safetensors of the run instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object on stdout instead of a readable summary.
    #[arg(long)]
    pub json: bool,
    /// CPU threads (default: all cores).
    #[arg(long, default_value_t = vae_core::par::available_threads())]
    pub threads: usize,
}

impl ModelArgs {
    /// Opens the device and loads the model.
    pub fn load(&self) -> Result<Loaded> {
        let device = vae_core::device::select(&self.device)?;
        let (w, c) = match (&self.run, &self.model, &self.config) {
            (Some(dir), _, _) => run_paths(dir, self.best)?,
            (None, Some(m), Some(c)) => (m.clone(), c.clone()),
            _ => {
                return Err(InferError::Usage(
                    "give --run DIR, or --model FILE with --config FILE".into(),
                ))
            }
        };
        load(&w, &c, &device)
    }
}

#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Class of a conditional model.
    #[arg(long)]
    pub label: Option<u32>,
    /// Scale of the prior's standard deviation.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Where codes come from: `prior` (N(0, I)) or `posterior` (the aggregate posterior of the
    /// training split, of class --label if given: samples that stay where the data is).
    #[arg(long, value_enum, default_value_t = LatentSource::Prior)]
    pub latent: LatentSource,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Where `sample` draws its codes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatentSource {
    Prior,
    Posterior,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    pub out: PathBuf,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

/// `vae-infer sample`.
pub fn run_sample(a: &SampleArgs) -> Result<SampleReport> {
    if a.n == 0 {
        return Err(InferError::Usage("--n must be at least 1".into()));
    }
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        return Err(InferError::Usage(format!(
            "--temperature must be positive, got {}",
            a.temperature
        )));
    }
    let m = a.model.load()?;
    let mut rng = Rng::stream(a.model.seed, 0x5a3b1e);
    let source = match a.latent {
        LatentSource::Prior => sample::LatentGaussian::standard(m.model.latent_dim()),
        LatentSource::Posterior => {
            let train = load_split(&m, Split::Train, None)?;
            sample::aggregate_posterior(&m.model, &train, a.label, &m.device)?
        }
    };
    let x = sample::sample_from(
        &m.model,
        &source,
        a.n,
        a.temperature,
        a.label,
        &mut rng,
        &m.device,
    )?;
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    image::write_grid(&a.out, &values, m.model.config().shape, cols)?;
    Ok(SampleReport {
        out: a.out.clone(),
        n: a.n,
        rows: a.n.div_ceil(cols),
        cols,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which split of the run's dataset.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Importance samples per example for the log-likelihood estimate (0 skips it).
    #[arg(long, default_value_t = 5000)]
    pub iw_samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    pub split: Split,
    #[serde(flatten)]
    pub elbo: eval::ElboStats,
    /// -log p(x) estimated with `iw_samples` importance samples (null when skipped).
    pub nll: Option<f64>,
    pub bits_per_dim: Option<f64>,
    pub iw_samples: usize,
}

/// The split of the data a model was trained on.
pub fn load_split(m: &Loaded, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let data = m.data.as_ref().ok_or_else(|| {
        InferError::Usage(
            "the config has no `data` section; this command needs the run's dataset".into(),
        )
    })?;
    let splits = data.load()?.splits;
    let d = match split {
        Split::Train => splits.train,
        Split::Test => splits.test,
    };
    Ok(match limit {
        Some(n) => d.take(n),
        None => d,
    })
}

/// `vae-infer evaluate`.
pub fn run_evaluate(a: &EvaluateArgs) -> Result<EvaluateReport> {
    if a.batch_size == 0 {
        return Err(InferError::Usage("--batch-size must be at least 1".into()));
    }
    let m = a.model.load()?;
    let data = load_split(&m, a.split, a.limit)?;
    if data.is_empty() {
        return Err(InferError::Usage("no examples to evaluate".into()));
    }
    let elbo = eval::elbo_stats(
        &m.model,
        &data,
        &m.device,
        a.batch_size,
        a.model.seed,
        a.model.threads,
    )?;
    let ll = if a.iw_samples > 0 {
        Some(eval::nll(
            &m.model,
            &data,
            &m.device,
            a.iw_samples,
            a.model.seed,
            a.model.threads,
        )?)
    } else {
        None
    };
    Ok(EvaluateReport {
        split: a.split,
        elbo,
        nll: ll.map(|l| l.nll),
        bits_per_dim: ll.map(|l| l.bits_per_dim),
        iw_samples: a.iw_samples,
    })
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Codes drawn from the prior and decoded.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Posterior means of the training split, per second.
    pub encode_per_second: f64,
    /// Prior samples decoded to the likelihood's mean, per second.
    pub sample_per_second: f64,
    pub examples: usize,
    pub samples: usize,
    pub threads: usize,
}

/// `vae-infer throughput`: the time to encode the training split and to decode `--samples`
/// prior codes, in batches spread over the threads.
pub fn run_throughput(a: &ThroughputArgs) -> Result<ThroughputReport> {
    if a.batch_size == 0 || a.samples == 0 {
        return Err(InferError::Usage(
            "--batch-size and --samples must be at least 1".into(),
        ));
    }
    let m = a.model.load()?;
    let data = load_split(&m, Split::Train, None)?;
    let threads = if m.device.is_cpu() {
        a.model.threads.max(1)
    } else {
        1
    };
    let bs = a.batch_size;
    let time =
        |n: usize, f: &(dyn Fn(std::ops::Range<usize>) -> Result<()> + Sync)| -> Result<f64> {
            let start = std::time::Instant::now();
            let batches = n.div_ceil(bs);
            for r in vae_core::par::map_ranges(batches, threads, |r| -> Result<()> {
                for b in r {
                    f(b * bs..((b + 1) * bs).min(n))?;
                }
                Ok(())
            }) {
                r?;
            }
            Ok(n as f64 / start.elapsed().as_secs_f64())
        };
    let encode = time(data.len(), &|rows| {
        let idx: Vec<usize> = rows.collect();
        let mut buf = Vec::new();
        let (x, labels) = crate::model::batch(&data, &idx, &m.model, &m.device, &mut buf)?;
        m.model.encode(&x, labels.as_ref())?.mu.to_vec2::<f32>()?;
        Ok(())
    })?;
    let sample = time(a.samples, &|rows| {
        let mut rng = Rng::stream(a.model.seed, rows.start as u64);
        let x = sample::sample(&m.model, rows.len(), 1.0, None, &mut rng, &m.device)?;
        x.to_vec2::<f32>()?;
        Ok(())
    })?;
    Ok(ThroughputReport {
        encode_per_second: encode,
        sample_per_second: sample,
        examples: data.len(),
        samples: a.samples,
        threads,
    })
}

/// Runs a command and renders its report: JSON, or readable lines.
pub fn dispatch(cli: &Cli) -> Result<String> {
    fn render<T: Serialize>(json: bool, r: &T, text: impl FnOnce(&T) -> String) -> Result<String> {
        if json {
            serde_json::to_string(r).map_err(|e| InferError::Usage(e.to_string()))
        } else {
            Ok(text(r))
        }
    }
    match &cli.command {
        Command::Sample(a) => render(a.model.json, &run_sample(a)?, |r| {
            format!(
                "wrote {} samples ({}x{} grid) to {}",
                r.n,
                r.rows,
                r.cols,
                r.out.display()
            )
        }),
        Command::Throughput(a) => render(a.model.json, &run_throughput(a)?, |r| {
            format!(
                "encode {:.0} examples/s ({} examples), sample {:.0} examples/s ({} samples), {} threads",
                r.encode_per_second, r.examples, r.sample_per_second, r.samples, r.threads
            )
        }),
        Command::Evaluate(a) => render(a.model.json, &run_evaluate(a)?, |r| {
            let mut s = format!(
                "{} split, {} examples\n  negative ELBO  {:.3} nats\n  reconstruction {:.3} nats\n  KL             {:.3} nats",
                match r.split {
                    Split::Train => "train",
                    Split::Test => "test",
                },
                r.elbo.examples,
                r.elbo.neg_elbo,
                r.elbo.recon,
                r.elbo.kl
            );
            if let (Some(nll), Some(bpd)) = (r.nll, r.bits_per_dim) {
                s.push_str(&format!(
                    "\n  NLL ({} samples) {nll:.3} nats ({bpd:.4} bits/dim)",
                    r.iw_samples
                ));
            }
            s
        }),
        Command::Reconstruct(a) => render(a.model.json, &run_reconstruct(a)?, |r| r.text()),
        Command::Interpolate(a) => render(a.model.json, &run_interpolate(a)?, |r| r.text()),
        Command::Traverse(a) => render(a.model.json, &run_traverse(a)?, |r| r.text()),
        Command::Manifold(a) => render(a.model.json, &run_manifold(a)?, |r| r.text()),
        Command::Encode(a) => render(a.model.json, &run_encode(a)?, |r| r.text()),
        Command::Cluster(a) => render(a.model.json, &run_cluster(a)?, |r| r.text()),
        Command::Classify(a) => render(a.model.json, &run_classify(a)?, |r| r.text()),
        Command::Plot(a) => render(a.model.json, &run_plot(a)?, |r| r.text()),
        Command::Report(a) => render(a.model.json, &run_report(a)?, |r| r.text()),
    }
}

/// The device a report was computed on (for messages).
pub fn device_name(d: &Device) -> String {
    vae_core::device::name(d)
}
