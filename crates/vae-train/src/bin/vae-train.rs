//! `vae-train`: trains a VAE and writes its run directory.
//!
//! Exit status: 0 when done, 1 on an error, 2 on a usage error, 130 after Ctrl-C and 143 after
//! SIGTERM (each once the current step has finished and a checkpoint is written; a second
//! signal exits at once).
//!
//! Built with the `mpi` feature and started by an MPI launcher (`mpirun -np N vae-train`),
//! each process is one rank of a data-parallel run ([`vae_train::reduce`]): rank 0 alone
//! prints and writes the run directory; an error every rank shares is reported once and every
//! rank exits 1; an error of one rank alone ends the whole job (`MPI_Abort`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use vae_run::RunDir;
use vae_train::cli::Args;
use vae_train::launch::Launch;
use vae_train::metrics::EpochMetrics;
use vae_train::reduce::{Local, Reduce, STOP_INTERRUPT, STOP_TERMINATE};
use vae_train::train::{self, Observer, Outcome};
use vae_train::{RunConfig, TrainError};

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

/// The ranks this process trains with: itself alone, or the ranks of an MPI job.
enum Group {
    Local(Local),
    #[cfg(feature = "mpi")]
    Mpi(vae_train::mpi::Mpi),
}

impl Group {
    fn reduce(&mut self) -> &mut dyn Reduce {
        match self {
            Group::Local(l) => l,
            #[cfg(feature = "mpi")]
            Group::Mpi(m) => m,
        }
    }

    /// The GPU index of this rank among its node's ranks, when there are several ranks.
    fn local_rank(&self) -> Option<usize> {
        match self {
            Group::Local(_) => None,
            #[cfg(feature = "mpi")]
            Group::Mpi(m) => (Reduce::ranks(m) > 1).then(|| m.local_rank()),
        }
    }

    /// Ends the process after an error of this rank alone.
    fn fail_alone(&self) -> ExitCode {
        match self {
            Group::Local(_) => ExitCode::FAILURE,
            #[cfg(feature = "mpi")]
            Group::Mpi(m) => m.abort(1),
        }
    }
}

fn main() -> ExitCode {
    vae_core::device::configure_process();
    let args = Args::parse();
    #[cfg(feature = "mpi")]
    let mpi = vae_train::mpi::launched()
        .then(vae_train::mpi::Mpi::init)
        .flatten();
    #[cfg(feature = "mpi")]
    let (_universe, mut group) = match mpi {
        Some((u, m)) => (Some(u), Group::Mpi(m)),
        None => (None, Group::Local(Local::default())),
    };
    #[cfg(not(feature = "mpi"))]
    let mut group = Group::Local(Local::default());
    let rank = group.reduce().rank();
    vae_run::flags::init_logging(if args.quiet || rank > 0 {
        "warn"
    } else {
        "info"
    });
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(args, &signals, &mut group) {
        Ok((Outcome::Interrupted, bits)) => {
            if bits & STOP_TERMINATE != 0 && bits & STOP_INTERRUPT == 0 {
                ExitCode::from(143)
            } else {
                ExitCode::from(130)
            }
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let agreed = group.reduce().ranks() == 1
                || e.downcast_ref::<TrainError>()
                    .is_some_and(TrainError::is_agreed);
            if agreed {
                // Every rank has this error: rank 0 reports it, every rank exits 1.
                if rank == 0 {
                    eprintln!("error: {e:#}");
                }
                ExitCode::FAILURE
            } else {
                eprintln!("error (rank {rank}): {e:#}");
                group.fail_alone()
            }
        }
    }
}

/// On every rank: `r`'s failure on any rank becomes every rank's (in one process, `r`).
fn agree<T>(group: &mut dyn Reduce, r: anyhow::Result<T>) -> anyhow::Result<T> {
    if group.ranks() == 1 {
        return r;
    }
    match r {
        Ok(v) => {
            group.agree(Ok(()))?;
            Ok(v)
        }
        Err(e) => {
            group.agree(Err(format!("{e:#}")))?;
            Err(e)
        }
    }
}

/// The configuration a resumed run was written with, read by rank 0 and sent to the others
/// (which need not see its directory).
fn saved_config(group: &mut dyn Reduce, dir: &std::path::Path) -> anyhow::Result<RunConfig> {
    let read = (group.rank() == 0)
        .then(|| train::read_config(&RunDir::new(dir)).context("--resume"))
        .transpose();
    let saved = agree(group, read)?;
    let mut bytes = match &saved {
        Some(c) => serde_json::to_vec(c)?,
        None => Vec::new(),
    };
    group.broadcast(&mut bytes)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Refuses ranks started with settings other than rank 0's.
fn same_settings(group: &mut dyn Reduce, cfg: &RunConfig) -> anyhow::Result<()> {
    if group.ranks() == 1 {
        return Ok(());
    }
    let mut bytes = serde_json::to_vec(cfg)?;
    group.broadcast(&mut bytes)?;
    let first: RunConfig = serde_json::from_slice(&bytes)?;
    let diffs = first.all_differences(cfg);
    let mine = if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "started with other settings than rank 0 (every rank must get the same flags and config file): {}",
            diffs.join(", ")
        ))
    };
    group.agree(mine)?;
    Ok(())
}

fn run(args: Args, signals: &Signals, group: &mut Group) -> anyhow::Result<(Outcome, u8)> {
    let local_rank = group.local_rank();
    let group = group.reduce();
    let args = agree(group, args.with_config_file().map_err(anyhow::Error::from))?;
    let saved = args
        .resume
        .as_ref()
        .map(|dir| saved_config(group, dir))
        .transpose()?;
    let launch = agree(group, args.launch_with(saved).map_err(anyhow::Error::from))?;
    let cfg = &launch.cfg;
    same_settings(group, cfg)?;
    if let Some(note) = &launch.data.note {
        tracing::info!("{note}");
    }
    for note in &launch.notes {
        tracing::warn!("{note}");
    }
    // Each rank of a node takes its own GPU (`cuda` and `auto`; an explicit `cuda:N` is kept).
    let device_name = match (local_rank, cfg.train.device.as_str()) {
        (Some(i), "cuda" | "auto") if cfg!(feature = "cuda") => format!("cuda:{i}"),
        _ => cfg.train.device.clone(),
    };
    let device = agree(
        group,
        vae_core::device::select(&device_name).map_err(anyhow::Error::from),
    )?;
    tracing::info!("{}", launch.describe(&device, group.ranks()));
    let Launch {
        cfg,
        out,
        start,
        data,
        ..
    } = launch;
    let show_bar = !args.quiet && group.rank() == 0 && std::io::stderr().is_terminal();
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
        quiet: args.quiet || group.rank() > 0,
        epochs: cfg.train.epochs,
    };
    let flags = train::Signals {
        interrupt: &signals.int,
        terminate: &signals.term,
    };
    let summary = train::run_in(
        group,
        cfg,
        &data.splits,
        device,
        &out,
        start,
        &mut progress,
        flags,
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
    Ok((summary.outcome, summary.signals))
}
