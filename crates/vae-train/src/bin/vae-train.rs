//! `vae-train`: trains a VAE and writes its run directory.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use vae_train::cli::Args;
use vae_train::train::{self, EpochMetrics, Observer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: usize,
}

impl Observer for Progress {
    fn step(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            if batch == 1 {
                bar.set_length(batches as u64);
                bar.set_position(0);
                bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
            }
            bar.set_position(batch as u64);
            if batch % 10 == 0 || batch == batches {
                bar.set_message(format!("loss {loss:.1}"));
            }
        }
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        if self.quiet {
            return;
        }
        let line = format!(
            "epoch {:>3}  train {:.2}  val {:.2} (recon {:.2} + kl {:.2})  {:.1}s  {:.0} ex/s",
            m.epoch,
            m.train_loss,
            m.val_loss,
            m.val_recon,
            m.val_kl,
            m.seconds,
            m.examples_per_second
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

fn main() -> ExitCode {
    vae_core::device::single_threaded_candle();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if args.quiet { "warn" } else { "info" })
            }),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let data_cfg = args.data_config();
    let resolved = data_cfg.load()?;
    if let Some(note) = &resolved.note {
        tracing::info!("{note}");
    }
    let cfg = args.resolve(
        resolved.splits.train.shape,
        resolved.splits.train.num_classes,
    )?;
    let out = args.out_dir(&cfg);
    let device = vae_core::device::select(&cfg.train.device)?;
    tracing::info!(
        "training `{}` on {} ({} train / {} validation examples) on {} for {} epochs into {}",
        cfg.train.preset,
        resolved.source,
        resolved.splits.train.len(),
        resolved.splits.test.len(),
        vae_core::device::name(&device),
        cfg.train.epochs,
        out.display()
    );
    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let bar = show_bar.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut progress = Progress {
        bar,
        quiet: args.quiet,
        epochs: cfg.train.epochs,
    };
    let summary = train::run(cfg, &resolved.splits, device, &out, &mut progress)
        .with_context(|| format!("training into {}", out.display()))?;
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    tracing::info!(
        "done: validation loss {:.2} nats (best {:.2}); weights in {}",
        summary.last.val_loss,
        summary.best_val_loss,
        out.join("model.safetensors").display()
    );
    Ok(())
}
