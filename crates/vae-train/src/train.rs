//! The training loop: epochs of shuffled batches, validation, checkpoints and the run directory.
//!
//! A run directory holds `config.json`, `model.safetensors` (end of the last finished epoch),
//! `best.safetensors` (best validation loss), `metrics.jsonl` (one line per epoch, appended),
//! `samples/epoch-NNN.png` and `checkpoints/` (see [`crate::checkpoint`]). Everything random
//! comes from generators whose state is in the checkpoints, so a resumed run computes exactly
//! what the uninterrupted run would have.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vae_core::candle_core::backprop::GradStore;
use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::candle_nn::VarMap;
use vae_core::{par, weights, Rng, Terms, Vae};
use vae_data::{epoch_order, Binarize, Dataset, Splits};
use vae_infer::eval::elbo_stats;
use vae_infer::model::one_hot;

use crate::checkpoint::{self, TrainState, STATE_VERSION};
use crate::config::RunConfig;
use crate::optim::Adam;
use crate::{Result, TrainError};

/// f64 fields that stay in the JSON when they are not finite: written as the strings "NaN",
/// "inf", "-inf" (JSON has no such numbers), read back from either form.
mod finite_or_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(v) => Ok(v),
            Num::S(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!("not a number: {s}"))),
            },
        }
    }
}

/// One line of `metrics.jsonl`. Losses are per-example negative ELBO in nats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    /// Mean negative ELBO of the epoch's training batches (nats per example).
    #[serde(with = "finite_or_string")]
    pub train_loss: f64,
    /// Mean of the objective minimised (differs from train_loss with beta, free bits or IWAE).
    #[serde(with = "finite_or_string")]
    pub train_objective: f64,
    #[serde(with = "finite_or_string")]
    pub val_loss: f64,
    #[serde(with = "finite_or_string")]
    pub val_recon: f64,
    #[serde(with = "finite_or_string")]
    pub val_kl: f64,
    #[serde(with = "finite_or_string")]
    pub beta: f64,
    #[serde(with = "finite_or_string")]
    pub lr: f64,
    /// Training time of the epoch (validation excluded), summed over resumes.
    #[serde(with = "finite_or_string")]
    pub seconds: f64,
    #[serde(with = "finite_or_string")]
    pub examples_per_second: f64,
}

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

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The configuration a run directory was written with.
    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            TrainError::Usage(format!("{}: not a run configuration: {e}", path.display()))
        })
    }
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

/// Model, optimizer and generators: everything that changes while training.
pub struct Trainer {
    pub cfg: RunConfig,
    pub device: Device,
    pub varmap: VarMap,
    pub model: Vae,
    pub opt: Adam,
    /// Noise of the reparameterisation trick and of dynamic binarisation.
    pub noise: Rng,
    pub step: u64,
}

/// The losses of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepLoss {
    /// Summed over the batch: recon + KL (beta 1, one sample).
    pub neg_elbo: f64,
    /// The objective minimised, per example.
    pub objective: f64,
    pub grad_norm: f64,
}

impl Trainer {
    /// Fresh weights from the run's seed.
    pub fn new(cfg: RunConfig, device: Device) -> Result<Self> {
        let mut init_rng = Rng::stream(cfg.train.seed, 1);
        let (varmap, model) = Vae::init(&cfg.model, &device, &mut init_rng)?;
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Usage("poisoned variable map".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let opt = Adam::new(vars, cfg.train.optimizer)?;
        let noise = Rng::stream(cfg.train.seed, 2);
        Ok(Self {
            cfg,
            device,
            varmap,
            model,
            opt,
            noise,
            step: 0,
        })
    }

    pub fn train_step(
        &mut self,
        data: &Dataset,
        indices: &[usize],
        beta: f64,
        buf: &mut Vec<f32>,
    ) -> Result<StepLoss> {
        let n = indices.len();
        let d = data.shape.dim();
        let l = self.model.latent_dim();
        let objective = self.cfg.train.objective;
        let k = objective.iwae_k;
        data.gather(indices, buf);
        if self.cfg.data.binarize == Binarize::Dynamic {
            Binarize::sample(buf, &mut self.noise);
        }
        let labels = data.gather_labels(indices);
        // [K, n, L], sample-major.
        let eps = self.noise.normal_vec(k * n * l);
        let threads = if self.device.is_cpu() {
            self.cfg.train.threads
        } else {
            1
        };
        let (model, device, x) = (&self.model, &self.device, &buf[..]);
        // Forward passes, one shard of rows per thread.
        let forward = par::map_ranges(n, threads, |r| -> Result<(Terms, Vec<f64>, f64)> {
            let rows = r.len();
            let xs = Tensor::from_slice(&x[r.start * d..r.end * d], (rows, d), device)?;
            let mut es = Vec::with_capacity(k * rows * l);
            for s in 0..k {
                es.extend_from_slice(&eps[(s * n + r.start) * l..(s * n + r.end) * l]);
            }
            let es = Tensor::from_vec(es, (k, rows, l), device)?;
            let ys = match (model.config().num_classes, &labels) {
                (Some(c), Some(ls)) => Some(one_hot(&ls[r.clone()], c, device)?),
                (Some(_), None) => {
                    return Err(TrainError::Usage(
                        "a conditional model needs labelled data".into(),
                    ))
                }
                _ => None,
            };
            let t = model.terms(&xs, ys.as_ref(), &es, beta)?;
            let kl_dim = t
                .kl_per_dim
                .sum(0)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            let recon = t
                .recon
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            Ok((t, kl_dim, recon))
        });
        let mut shards = Vec::with_capacity(forward.len());
        let (mut recon, mut kl_dim) = (0.0, vec![0f64; l]);
        for f in forward {
            let (t, kd, r) = f?;
            recon += r;
            kl_dim.iter_mut().zip(&kd).for_each(|(a, b)| *a += b);
            shards.push(t);
        }
        let neg_elbo = recon + kl_dim.iter().sum::<f64>();
        if !neg_elbo.is_finite() {
            return Err(TrainError::NonFinite {
                what: "loss",
                step: self.step + 1,
                value: neg_elbo,
            });
        }
        // Free bits need the KL of the whole batch: the mask is known only now.
        let mask = if objective.free_bits > 0.0 {
            let sums = Tensor::from_vec(
                kl_dim.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                l,
                device,
            )?;
            Some(objective.free_bits_mask(&sums, n)?)
        } else {
            None
        };
        // Backward passes, one shard per thread again.
        let backward = par::map_ranges(
            shards.len(),
            shards.len(),
            |r| -> Result<(GradStore, f64)> {
                let t = &shards[r.start];
                let loss = objective.shard_loss(t, n, beta, mask.as_ref())?;
                let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                Ok((loss.backward()?, value))
            },
        );
        let mut grads = Vec::with_capacity(backward.len());
        let mut obj = 0.0;
        for b in backward {
            let (g, v) = b?;
            grads.push(g);
            obj += v;
        }
        if objective.free_bits > 0.0 {
            // The loss of the shards leaves out the floored dimensions; the objective has them.
            obj = recon / n as f64 + objective.kl_term_value(&kl_dim, n, beta);
        }
        if !obj.is_finite() {
            return Err(TrainError::NonFinite {
                what: "objective",
                step: self.step + 1,
                value: obj,
            });
        }
        let info = self.opt.step(&grads, threads, self.cfg.train.grad_clip)?;
        if !info.applied {
            return Err(TrainError::NonFinite {
                what: "gradient norm",
                step: self.step + 1,
                value: info.grad_norm,
            });
        }
        self.step += 1;
        Ok(StepLoss {
            neg_elbo,
            objective: obj,
            grad_norm: info.grad_norm,
        })
    }
}

fn write_json_line(path: &Path, value: &impl Serialize) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| TrainError::Usage(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))?;
    f.sync_data().map_err(|e| TrainError::io(path, e))
}

/// The epoch numbers already in metrics.jsonl.
fn logged_epochs(path: &Path) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("epoch").and_then(|e| e.as_u64()).map(|e| e as usize))
        .collect()
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
    cfg.train.validate().map_err(TrainError::Usage)?;
    cfg.model.validate()?;
    let dir = RunDir::new(out);
    if start == Start::Fresh && dir.config().exists() {
        return Err(TrainError::Usage(format!(
            "{} already holds a run; continue it with --resume {}, or choose another --out",
            out.display(),
            out.display()
        )));
    }
    std::fs::create_dir_all(dir.samples()).map_err(|e| TrainError::io(dir.samples(), e))?;
    let json = serde_json::to_string_pretty(&cfg).map_err(|e| TrainError::Usage(e.to_string()))?;
    weights::atomic_write(&dir.config(), json.as_bytes())?;

    let hash = cfg.hash();
    let mut trainer = Trainer::new(cfg, device)?;
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
        last_metrics: None,
        config_hash: hash.clone(),
    };
    if start == Start::Resume {
        match checkpoint::resume(&dir.checkpoints(), &trainer.varmap, &mut trainer.opt, &hash)? {
            Some((path, s)) => {
                obs.note(&format!(
                    "resuming from {} (epoch {}, step {})",
                    path.display(),
                    s.epoch,
                    s.step
                ));
                state = s;
                trainer.noise = Rng::from_state(state.rng);
                trainer.step = state.step;
                // A line lost between the checkpoint and metrics.jsonl is written now.
                if let Some(m) = &state.last_metrics {
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
    }
    let t = trainer.cfg.train.clone();
    let train = &splits.train;
    let batches = train.len().div_ceil(t.batch_size);
    let total_steps = (t.epochs * batches) as u64;
    let mut buf = Vec::new();
    let sample_rng = Rng::stream(t.seed, 3);
    let mut last = state.last_metrics.clone();
    let mut outcome = Outcome::Finished;
    let mut beta = t.objective.beta_at((state.epoch - 1) as f64);

    'epochs: while state.epoch <= t.epochs {
        let epoch = state.epoch;
        let order = epoch_order(train.len(), t.seed, epoch as u64);
        let mut started = Instant::now();
        for (b, chunk) in order.chunks(t.batch_size).enumerate().skip(state.batch) {
            beta = t
                .objective
                .beta_at((epoch - 1) as f64 + b as f64 / batches as f64);
            trainer
                .opt
                .set_lr(t.lr_schedule.lr(t.optimizer.lr, trainer.step, total_steps));
            let loss = trainer
                .train_step(train, chunk, beta, &mut buf)
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
            state.batch = b + 1;
            state.cursor = ((b + 1) * t.batch_size).min(train.len());
            state.step = trainer.step;
            obs.step(epoch, b + 1, batches, loss.neg_elbo / chunk.len() as f64);
            let interrupted = stop.load(Ordering::SeqCst);
            let periodic =
                t.checkpoint_every.is_some_and(|k| trainer.step % k == 0) && state.batch < batches;
            if interrupted || periodic {
                state.epoch_seconds += started.elapsed().as_secs_f64();
                started = Instant::now();
                state.rng = trainer.noise.state();
                let path = checkpoint::write(
                    &dir.checkpoints(),
                    &trainer.varmap,
                    &trainer.opt,
                    &state,
                    t.keep,
                )?;
                if interrupted {
                    obs.note(&format!(
                        "stopped after step {}; checkpoint written to {}",
                        trainer.step,
                        path.display()
                    ));
                    outcome = Outcome::Interrupted;
                    break 'epochs;
                }
            }
        }
        let seconds = state.epoch_seconds + started.elapsed().as_secs_f64();
        let val = elbo_stats(
            &trainer.model,
            &splits.test,
            &trainer.device,
            VAL_BATCH,
            t.seed,
            t.threads,
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
            let samples = vae_infer::sample::sample(
                &trainer.model,
                64,
                1.0,
                None,
                &mut sample_rng.clone(),
                &trainer.device,
            )?;
            let v = samples.flatten_all()?.to_vec1::<f32>()?;
            vae_infer::image::write_grid(
                &dir.samples().join(format!("epoch-{epoch:03}.png")),
                &v,
                trainer.model.config().shape,
                8,
            )?;
        }
        // The checkpoint at the end of an epoch starts the next one.
        state.epoch = epoch + 1;
        state.batch = 0;
        state.cursor = 0;
        state.epoch_neg_elbo = 0.0;
        state.epoch_objective = 0.0;
        state.epoch_seconds = 0.0;
        state.rng = trainer.noise.state();
        state.last_metrics = Some(m.clone());
        checkpoint::write(
            &dir.checkpoints(),
            &trainer.varmap,
            &trainer.opt,
            &state,
            t.keep,
        )?;
        write_json_line(&dir.metrics(), &m)?;
        obs.epoch(&m);
        last = Some(m);
        if t.early_stop.is_some_and(|p| epoch >= state.best_epoch + p) {
            obs.note(&format!(
                "no improvement for {} epochs (best {:.3} at epoch {}): stopping",
                epoch - state.best_epoch,
                state.best_val_loss.unwrap_or(f64::NAN),
                state.best_epoch
            ));
            outcome = Outcome::EarlyStopped;
            break;
        }
        if stop.load(Ordering::SeqCst) {
            outcome = Outcome::Interrupted;
            break;
        }
    }
    Ok(Summary {
        outcome,
        last,
        best_val_loss: state.best_val_loss,
        step: trainer.step,
    })
}
