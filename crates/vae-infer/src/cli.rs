//! The command line of `vae-infer`: one subcommand per analysis, each a library function.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use vae_core::candle_core::Device;

pub use crate::commands::*;
use crate::model::{load, run_paths, Loaded};
use crate::{InferError, Result};

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
