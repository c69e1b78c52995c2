//! `vae-train`: trains a VAE and writes its run directory.
//!
//! Exit status: 0 when done, 1 on an error, 2 on a usage error, 130 after Ctrl-C and 143 after
//! SIGTERM (each once the current step has finished and a checkpoint is written; a second
//! signal exits at once).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use vae_run::RunDir;
use vae_train::cli::Args;
use vae_train::metrics::EpochMetrics;
use vae_train::train::{self, Observer, Outcome, Start};

struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: usize,
}

impl Progress {
    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Observer for Progress {
    fn step(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            if batch == 1 || bar.length() != Some(batches as u64) {
                bar.set_length(batches as u64);
                bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
            }
            bar.set_position(batch as u64);
            if batch.is_multiple_of(10) || batch == batches {
                bar.set_message(format!("loss {loss:.1}"));
            }
        }
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        if !self.quiet {
            let skipped = match m.skipped_updates {
                Some(n) => format!("  {n} updates skipped"),
                None => String::new(),
            };
            self.say(&format!(
                "epoch {:>3}  train {:.2}  val {:.2} (recon {:.2} + kl {:.2})  {:.1}s  {:.0} ex/s{skipped}",
                m.epoch,
                m.train_loss,
                m.val_loss,
                m.val_recon,
                m.val_kl,
                m.seconds,
                m.examples_per_second
            ));
        }
    }

    fn note(&mut self, msg: &str) {
        if !self.quiet {
            self.say(msg);
        }
    }
}

/// Signals that stop the run after the current step; a second one exits at once.
struct Signals {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    any: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
        use signal_hook::flag;
        let s = Signals {
            int: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            any: Arc::new(AtomicBool::new(false)),
        };
        // Registered first, so that they see the flag as it was before this signal set it.
        flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&s.any))?;
        flag::register_conditional_shutdown(SIGTERM, 143, Arc::clone(&s.any))?;
        for (sig, f) in [(SIGINT, &s.int), (SIGTERM, &s.term)] {
            flag::register(sig, Arc::clone(f))?;
            flag::register(sig, Arc::clone(&s.any))?;
        }
        // A file grown past its size limit: let the write fail with an error rather than the
        // signal killing the process mid-checkpoint.
        flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))?;
        Ok(s)
    }
}

fn main() -> ExitCode {
    vae_core::device::configure_process();
    let args = Args::parse();
    vae_run::flags::init_logging(if args.quiet { "warn" } else { "info" });
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(args, &signals) {
        Ok(Outcome::Interrupted) => {
            if signals.term.load(Ordering::SeqCst) && !signals.int.load(Ordering::SeqCst) {
                ExitCode::from(143)
            } else {
                ExitCode::from(130)
            }
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, signals: &Signals) -> anyhow::Result<Outcome> {
    let args = args.with_config_file()?;
    let (cfg, out, start, resolved) = match &args.resume {
        Some(dir) => {
            let saved = train::read_config(&RunDir::new(dir)).context("--resume")?;
            let cfg = args.resolve_resume(&saved)?;
            if args.out.as_ref().is_some_and(|o| o != dir) {
                anyhow::bail!(
                    "--out: a resumed run stays in its directory {}",
                    dir.display()
                );
            }
            let resolved = cfg.data.load()?;
            (cfg, dir.clone(), Start::Resume, resolved)
        }
        None => {
            let resolved = args.data_config()?.load()?;
            let cfg = args.resolve(
                resolved.splits.train.shape,
                resolved.splits.train.num_classes,
            )?;
            let out = args.out_dir(&cfg);
            (cfg, out, Start::Fresh, resolved)
        }
    };
    if let Some(note) = &resolved.note {
        tracing::info!("{note}");
    }
    let device = vae_core::device::select(&cfg.train.device)?;
    tracing::info!(
        "training `{}` on {} ({} train / {} validation examples) on {} with {} threads for {} epochs into {}",
        cfg.train.preset,
        resolved.source,
        resolved.splits.train.len(),
        resolved.splits.test.len(),
        vae_core::device::name(&device),
        cfg.train.threads,
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
    let summary = train::run(
        cfg,
        &resolved.splits,
        device,
        &out,
        start,
        &mut progress,
        &signals.any,
    )
    .with_context(|| format!("training into {}", out.display()))?;
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    if let Some(last) = &summary.last {
        tracing::info!(
            "{}: validation loss {:.2} nats (best {:.2}); weights in {}",
            match summary.outcome {
                Outcome::Finished => "done",
                Outcome::EarlyStopped => "stopped early",
                Outcome::Interrupted => "interrupted",
            },
            last.val_loss,
            summary.best_val_loss.unwrap_or(f64::NAN),
            out.join("model.safetensors").display()
        );
    }
    if summary.outcome == Outcome::Interrupted {
        tracing::info!("continue with: vae-train --resume {}", out.display());
    }
    Ok(summary.outcome)
}
