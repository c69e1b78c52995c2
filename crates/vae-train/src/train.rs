//! The training loop: epochs of shuffled batches, validation, checkpoints and the run directory.
//!
//! A run directory holds `config.json`, `model.safetensors` (end of the last finished epoch),
//! `best.safetensors` (best validation loss), `metrics.jsonl` (one line per epoch, appended),
//! `samples/epoch-NNN.png` and `checkpoints/` (see [`crate::checkpoint`]). Everything random
//! comes from generators whose state is in the checkpoints, so a resumed run computes exactly
//! what the uninterrupted run would have.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use vae_core::candle_core::Device;
use vae_core::{par, weights, Density, Rng};
use vae_data::{epoch_order, Splits};
use vae_run::eval::{elbo_stats, Prep};
use vae_run::RunDir;

use crate::checkpoint::{self, TrainState, STATE_VERSION};
use crate::config::RunConfig;
use crate::metrics::{logged_epochs, write_json_line, EpochMetrics};
use crate::reduce::{Local, Reduce, STOP_INTERRUPT, STOP_TERMINATE};
use crate::step::Trainer;
use crate::{replicate, Result, TrainError};

/// What the loop reports while it runs; the binary turns these into a progress bar and logs.
pub trait Observer {
    /// A step finished: `batch` of `batches` in `epoch`, with its mean negative ELBO.
    fn step(&mut self, _epoch: usize, _batch: usize, _batches: usize, _loss: f64) {}
    /// An epoch finished and its metrics were written.
    fn epoch(&mut self, _m: &EpochMetrics) {}
    /// Something worth telling the user (resumed from, checkpoint written on interrupt...).
    fn note(&mut self, _msg: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// The configuration a run directory was written with.
pub fn read_config(dir: &RunDir) -> Result<RunConfig> {
    Ok(vae_run::run_dir::read_json(
        &dir.config(),
        "run configuration",
    )?)
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs done.
    Finished,
    /// The validation loss stopped improving (`--early-stop`).
    EarlyStopped,
    /// Asked to stop (Ctrl-C, SIGTERM): a checkpoint was written after the current step.
    Interrupted,
}

/// Summary of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub outcome: Outcome,
    /// Metrics of the last finished epoch, if any.
    pub last: Option<EpochMetrics>,
    pub best_val_loss: Option<f64>,
    pub step: u64,
    /// The signals that stopped an interrupted run ([`STOP_INTERRUPT`], [`STOP_TERMINATE`]),
    /// as every rank agreed on them.
    pub signals: u8,
}

/// The flags the signal handlers set, polled after every step.
#[derive(Clone, Copy)]
pub struct Signals<'a> {
    /// Ctrl-C (SIGINT).
    pub interrupt: &'a AtomicBool,
    /// SIGTERM.
    pub terminate: &'a AtomicBool,
}

impl Signals<'_> {
    /// The signals received so far, as [`STOP_INTERRUPT`] and [`STOP_TERMINATE`] bits.
    pub fn bits(&self) -> u8 {
        let mut b = 0;
        if self.interrupt.load(Ordering::SeqCst) {
            b |= STOP_INTERRUPT;
        }
        if self.terminate.load(Ordering::SeqCst) {
            b |= STOP_TERMINATE;
        }
        b
    }
}

/// Validation examples per forward pass (per thread): small enough to keep the peak memory of
/// training low; the figures do not depend on it.
const VAL_BATCH: usize = 250;

/// Whether a run starts afresh or continues the run already in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Fresh,
    Resume,
}

/// Refuses a likelihood the data cannot have: a distribution over 8-bit values on data that are
/// not 8-bit, dequantization of anything but a density on [0, 1] of 8-bit data.
fn check_data(cfg: &RunConfig, splits: &Splits) -> Result<()> {
    let lik = &cfg.model.likelihood;
    let eight_bit = splits.train.is_8bit() && splits.test.is_8bit();
    if lik.density() == Density::Discrete && !eight_bit {
        return Err(TrainError::Flag(format!(
            "--likelihood {}: a distribution over the 256 values of 8-bit data, and these data ({}) are not 8-bit",
            lik.name(),
            cfg.data.dataset()
        )));
    }
    if cfg.data.dequantize {
        if lik.density() != Density::Continuous {
            return Err(TrainError::Flag(format!(
                "--dequantize applies to densities on [0, 1] (gaussian, gaussian-learned, continuous-bernoulli), not to {}",
                lik.name()
            )));
        }
        if !eight_bit {
            return Err(TrainError::Flag(format!(
                "--dequantize: the data ({}) are not 8-bit values",
                cfg.data.dataset()
            )));
        }
    }
    Ok(())
}

/// Refuses to start a fresh run in `out` when it already holds one.
pub fn check_fresh(out: &Path) -> Result<()> {
    if RunDir::new(out).config().exists() {
        return Err(TrainError::Flag(format!(
            "{} already holds a run; continue it with --resume {}, or choose another --out",
            out.display(),
            out.display()
        )));
    }
    Ok(())
}

/// Trains, writing the run directory `out` as it goes. With [`Start::Resume`] the run continues
/// from the latest complete checkpoint in `out`. `stop` is polled after every step: when set, a
/// checkpoint is written and the run returns [`Outcome::Interrupted`].
pub fn run(
    cfg: RunConfig,
    splits: &Splits,
    device: Device,
    out: &Path,
    start: Start,
    obs: &mut dyn Observer,
    stop: &AtomicBool,
) -> Result<Summary> {
    let never = AtomicBool::new(false);
    let signals = Signals {
        interrupt: stop,
        terminate: &never,
    };
    run_in(
        &mut Local::default(),
        cfg,
        splits,
        device,
        out,
        start,
        obs,
        signals,
    )
}

/// Runs `f` on rank 0 only, and makes every rank fail with its error when it fails (in one
/// process: just `f`). Returns `f`'s value on rank 0, None elsewhere.
fn on_root<T>(group: &mut dyn Reduce, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
    if group.ranks() == 1 {
        return f().map(Some);
    }
    if group.rank() != 0 {
        group.agree(Ok(()))?;
        return Ok(None);
    }
    match f() {
        Ok(v) => {
            group.agree(Ok(()))?;
            Ok(Some(v))
        }
        Err(e) => {
            group.agree(Err(e.to_string()))?;
            Err(e)
        }
    }
}

/// Checks every rank computes alike: across ranks, each failure becomes every rank's.
fn everywhere(group: &mut dyn Reduce, r: Result<()>) -> Result<()> {
    if group.ranks() == 1 {
        return r;
    }
    group.agree(r.map_err(|e| e.to_string()))
}

/// [`run`] as one rank of `group`: every rank trains on its own shards of each batch; rank 0
/// alone writes the run directory (and reads it on resume, sending the checkpoint to the
/// others); all stop together, after the step at which any rank saw one of `signals`.
#[allow(clippy::too_many_arguments)]
pub fn run_in(
    group: &mut dyn Reduce,
    cfg: RunConfig,
    splits: &Splits,
    device: Device,
    out: &Path,
    start: Start,
    obs: &mut dyn Observer,
    signals: Signals,
) -> Result<Summary> {
    let shards = group.ranks() * par::threads_for(&device, cfg.train.threads);
    let checks = (|| -> Result<()> {
        cfg.train.validate().map_err(TrainError::Flag)?;
        cfg.model.validate()?;
        check_data(&cfg, splits)?;
        if group.ranks() > 1 && cfg.train.batch_size < shards {
            return Err(TrainError::Flag(format!(
                "--batch-size {} does not split into {shards} shards ({} ranks × {} threads): each shard needs an example; use a larger batch or fewer --threads",
                cfg.train.batch_size,
                group.ranks(),
                shards / group.ranks()
            )));
        }
        Ok(())
    })();
    everywhere(group, checks)?;
    let dir = RunDir::new(out);
    on_root(group, || {
        if start == Start::Fresh {
            check_fresh(out)?;
        }
        std::fs::create_dir_all(dir.samples()).map_err(|e| TrainError::io(dir.samples(), e))?;
        let json = serde_json::to_string_pretty(&cfg)?;
        weights::atomic_write(&dir.config(), json.as_bytes())?;
        Ok(())
    })?;

    let hash = cfg.hash();
    let mut trainer = Trainer::new(cfg, device)?;
    let ranks = group.ranks();
    if ranks > 1 {
        obs.note(&format!(
            "{ranks} ranks x {} threads: each step all-reduces {} values ({:.1} MiB)",
            shards / ranks,
            trainer.layout.len(),
            trainer.layout.len() as f64 * 4.0 / (1 << 20) as f64
        ));
    }
    let mut state = TrainState {
        version: STATE_VERSION,
        epoch: 1,
        batch: 0,
        step: 0,
        cursor: 0,
        rng: trainer.noise.state(),
        best_val_loss: None,
        best_epoch: 0,
        epoch_neg_elbo: 0.0,
        epoch_objective: 0.0,
        epoch_seconds: 0.0,
        epoch_skipped: 0,
        epoch_grad_norm_sum: 0.0,
        epoch_grad_norm_max: 0.0,
        epoch_reduce_seconds: 0.0,
        last_metrics: None,
        config_hash: hash.clone(),
        shards: Some(shards),
    };
    if start == Start::Resume {
        let found = on_root(group, || {
            let found =
                checkpoint::resume(&dir.checkpoints(), &trainer.varmap, &mut trainer.opt, &hash)?;
            match &found {
                Some((path, s)) => {
                    obs.note(&format!(
                        "resuming from {} (epoch {}, step {})",
                        path.display(),
                        s.epoch,
                        s.step
                    ));
                    // A line lost between the checkpoint and metrics.jsonl is written now.
                    if let Some(m) = &s.last_metrics {
                        if !logged_epochs(&dir.metrics()).contains(&m.epoch) {
                            write_json_line(&dir.metrics(), m)?;
                        }
                    }
                }
                None => obs.note(&format!(
                    "{} has no checkpoint yet: starting from the beginning",
                    dir.checkpoints().display()
                )),
            }
            Ok(found.map(|(_, s)| s))
        })?
        .flatten();
        let found = replicate::checkpoint(group, &mut trainer, found)?;
        if let Some(s) = found {
            match s.shards {
                Some(before) if before == shards => obs.note(&format!(
                    "the batches are split into {shards} shards as before: the weights will be those of an uninterrupted run"
                )),
                Some(before) => obs.note(&format!(
                    "this run split its batches into {before} shards and goes on with {shards} ({} ranks × {} threads): its weights will differ from an uninterrupted run's in the last bits",
                    group.ranks(),
                    shards / group.ranks()
                )),
                None => {}
            }
            state = TrainState {
                shards: Some(shards),
                ..s
            };
            trainer.noise = Rng::from_state(state.rng);
            trainer.step = state.step;
        }
    }
    let t = trainer.cfg.train.clone();
    let train = &splits.train;
    let batches = train.len().div_ceil(t.batch_size);
    let total_steps = (t.epochs * batches) as u64;
    let mut buf = Vec::new();
    let sample_rng = Rng::stream(t.seed, 3);
    let mut last = state.last_metrics.clone();
    let mut outcome = Outcome::Finished;
    let mut stopped_by = 0;
    let mut beta = t.objective.beta_at((state.epoch - 1) as f64);
    // A run trained on dequantized values is validated on them too.
    let val_prep = if trainer.cfg.data.dequantize {
        Prep::Dequantize
    } else {
        Prep::AsIs
    };

    'epochs: while state.epoch <= t.epochs {
        let epoch = state.epoch;
        let order = epoch_order(train.len(), t.seed, epoch as u64);
        let mut started = Instant::now();
        for (b, chunk) in order.chunks(t.batch_size).enumerate().skip(state.batch) {
            beta = t
                .objective
                .beta_at((epoch - 1) as f64 + b as f64 / batches as f64);
            trainer.opt.set_lr(t.lr_at(trainer.step, total_steps));
            let loss = trainer
                .train_step_in(group, train, chunk, beta, &mut buf, signals.bits())
                .map_err(|e| match e {
                    TrainError::NonFinite { what, step, value } => TrainError::NonFiniteAt {
                        what,
                        epoch,
                        step,
                        value,
                    },
                    e => e,
                })?;
            state.epoch_neg_elbo += loss.neg_elbo;
            state.epoch_objective += loss.objective * chunk.len() as f64;
            state.epoch_skipped += u64::from(loss.skipped);
            state.epoch_grad_norm_sum += loss.grad_norm;
            state.epoch_grad_norm_max = state.epoch_grad_norm_max.max(loss.grad_norm);
            state.epoch_reduce_seconds += loss.reduce_seconds;
            state.batch = b + 1;
            state.cursor = ((b + 1) * t.batch_size).min(train.len());
            state.step = trainer.step;
            obs.step(epoch, b + 1, batches, loss.neg_elbo / chunk.len() as f64);
            // Across ranks, the signals every rank saw before this step's reduction: all stop
            // after the same step.
            let stop = if group.ranks() == 1 {
                signals.bits()
            } else {
                loss.stop
            };
            let periodic =
                t.checkpoint_every.is_some_and(|k| trainer.step % k == 0) && state.batch < batches;
            if stop != 0 || periodic {
                state.epoch_seconds += started.elapsed().as_secs_f64();
                started = Instant::now();
                state.rng = trainer.noise.state();
                let path = on_root(group, || {
                    checkpoint::write(
                        &dir.checkpoints(),
                        &trainer.varmap,
                        &trainer.opt,
                        &state,
                        t.keep,
                    )
                })?;
                if stop != 0 {
                    if let Some(path) = path {
                        obs.note(&format!(
                            "stopped after step {}; checkpoint written to {}",
                            trainer.step,
                            path.display()
                        ));
                    }
                    outcome = Outcome::Interrupted;
                    stopped_by = stop;
                    break 'epochs;
                }
            }
        }
        let seconds = state.epoch_seconds + started.elapsed().as_secs_f64();
        let rng = trainer.noise.state();
        // Rank 0 validates and writes; its decisions (stop early, a signal seen meanwhile)
        // are then every rank's.
        let decided = on_root(group, || -> Result<[u8; 2]> {
            let m = finish_epoch(
                &trainer,
                &mut state,
                splits,
                &dir,
                val_prep,
                &sample_rng,
                epoch,
                beta,
                seconds,
                batches,
                ranks,
            )?;
            obs.epoch(&m);
            last = Some(m);
            let early = t.early_stop.is_some_and(|p| epoch >= state.best_epoch + p);
            if early {
                obs.note(&format!(
                    "no improvement for {} epochs (best {:.3} at epoch {}): stopping",
                    epoch - state.best_epoch,
                    state.best_val_loss.unwrap_or(f64::NAN),
                    state.best_epoch
                ));
            }
            Ok([u8::from(early), signals.bits()])
        })?;
        if decided.is_none() {
            // Not rank 0: the same state as rank 0's checkpoint, without the validation.
            state.next_epoch(rng, None);
        }
        let [early, stop] = replicate::decision(group, decided.unwrap_or_default())?;
        if early != 0 {
            outcome = Outcome::EarlyStopped;
            break;
        }
        if stop != 0 {
            outcome = Outcome::Interrupted;
            stopped_by = stop;
            break;
        }
    }
    Ok(Summary {
        outcome,
        last,
        best_val_loss: state.best_val_loss,
        step: trainer.step,
        signals: stopped_by,
    })
}

/// The end of an epoch on rank 0: validation, the metrics line, the model and best weights,
/// the sample grid, and the checkpoint that starts the next epoch.
#[allow(clippy::too_many_arguments)]
fn finish_epoch(
    trainer: &Trainer,
    state: &mut TrainState,
    splits: &Splits,
    dir: &RunDir,
    val_prep: Prep,
    sample_rng: &Rng,
    epoch: usize,
    beta: f64,
    seconds: f64,
    batches: usize,
    ranks: usize,
) -> Result<EpochMetrics> {
    let t = &trainer.cfg.train;
    let train = &splits.train;
    // Validation and samples need no gradient: the same weights, detached.
    let eval_model = trainer.model.detached(&trainer.varmap)?;
    let val = elbo_stats(
        &eval_model,
        &splits.test,
        &trainer.device,
        VAL_BATCH,
        t.seed,
        t.threads,
        val_prep,
    )?;
    let m = EpochMetrics {
        epoch,
        step: trainer.step,
        train_loss: state.epoch_neg_elbo / train.len() as f64,
        train_objective: state.epoch_objective / train.len() as f64,
        val_loss: val.neg_elbo,
        val_recon: val.recon,
        val_kl: val.kl,
        beta,
        lr: trainer.opt.config().lr,
        seconds,
        examples_per_second: train.len() as f64 / seconds.max(1e-9),
        skipped_updates: t.skip_threshold.map(|_| state.epoch_skipped),
        grad_norm_mean: Some(state.epoch_grad_norm_sum / batches.max(1) as f64),
        grad_norm_max: Some(state.epoch_grad_norm_max),
        reduce_seconds: (ranks > 1).then_some(state.epoch_reduce_seconds),
    };
    if !m.val_loss.is_finite() {
        return Err(TrainError::NonFiniteAt {
            what: "validation loss",
            epoch,
            step: trainer.step,
            value: m.val_loss,
        });
    }
    weights::save_varmap(&trainer.varmap, &dir.model())?;
    if state.best_val_loss.is_none_or(|b| m.val_loss < b) {
        state.best_val_loss = Some(m.val_loss);
        state.best_epoch = epoch;
        weights::save_varmap(&trainer.varmap, &dir.best())?;
    }
    if trainer.model.config().shape.is_image() {
        let samples = vae_run::sample::sample(
            &eval_model,
            64,
            &eval_model.sampling_temperatures(),
            None,
            &mut sample_rng.clone(),
            &trainer.device,
        )?;
        let v = samples.flatten_all()?.to_vec1::<f32>()?;
        vae_run::image::write_grid(&dir.sample_grid(epoch), &v, trainer.model.config().shape, 8)?;
    }
    // The checkpoint at the end of an epoch starts the next one.
    state.next_epoch(trainer.noise.state(), Some(m.clone()));
    checkpoint::write(
        &dir.checkpoints(),
        &trainer.varmap,
        &trainer.opt,
        state,
        t.keep,
    )?;
    write_json_line(&dir.metrics(), &m)?;
    Ok(m)
}
