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
use vae_train::cli::Args;
use vae_train::launch::Launch;
use vae_train::metrics::EpochMetrics;
use vae_train::train::{self, Observer, Outcome};

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
            self.say(&m.line());
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
    let launch = args.launch()?;
    if let Some(note) = &launch.data.note {
        tracing::info!("{note}");
    }
    let device = vae_core::device::select(&launch.cfg.train.device)?;
    tracing::info!("{}", launch.describe(&device));
    let Launch {
        cfg,
        out,
        start,
        data,
    } = launch;
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
        &data.splits,
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
    if let Some(line) = summary.describe(&out) {
        tracing::info!("{line}");
    }
    if summary.outcome == Outcome::Interrupted {
        tracing::info!("continue with: vae-train --resume {}", out.display());
    }
    Ok(summary.outcome)
}
