//! The training loop: epochs of shuffled batches, validation, and the run directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use std::sync::{Barrier, Mutex};

use vae_core::candle_core::backprop::GradStore;
use vae_core::candle_core::DType;
use vae_core::candle_core::{Device, Tensor};
use vae_core::candle_nn::VarMap;
use vae_core::par;
use vae_core::{weights, Rng, Vae};
use vae_data::{epoch_order, Binarize, Dataset, Splits};
use vae_infer::eval::elbo_stats;
use vae_infer::model::one_hot;

use crate::config::RunConfig;
use crate::optim::Adam;
use crate::{Result, TrainError};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    /// Mean negative ELBO of the epoch's training batches (nats per example).
    pub train_loss: f64,
    /// Mean of the objective minimised (differs from train_loss with beta, free bits or IWAE).
    pub train_objective: f64,
    pub val_loss: f64,
    pub val_recon: f64,
    pub val_kl: f64,
    pub beta: f64,
    pub lr: f64,
    /// Training time of the epoch (validation excluded).
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// What the loop reports while it runs; the binary turns these into a progress bar and logs.
pub trait Observer {
    /// A step finished: `batch` of `batches` in `epoch`, with its mean negative ELBO.
    fn step(&mut self, _epoch: usize, _batch: usize, _batches: usize, _loss: f64) {}
    /// An epoch finished and its metrics were written.
    fn epoch(&mut self, _m: &EpochMetrics) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// The files of a run directory.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
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
}

/// Summary of a finished run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub last: EpochMetrics,
    pub best_val_loss: f64,
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

    /// One optimizer step on the examples `indices` of `data` with KL weight `beta`; returns
    /// the batch's summed negative ELBO (nats) and its objective (per example).
    ///
    /// On the CPU the batch is split into one shard per thread: each thread runs the forward and
    /// backward pass of its rows (candle's own pool is kept to one thread, see
    /// [`vae_core::device::single_threaded_candle`]), and the gradients are summed inside the
    /// fused optimizer update, which itself runs on all threads. All random draws happen before
    /// the split, so the noise does not depend on the thread count. Free bits need the KL of
    /// the whole batch: the shards meet at a barrier between their forward and backward passes.
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
        let ranges = par::split(n, threads);
        let barrier = Barrier::new(ranges.len());
        let kl_sums = Mutex::new(vec![0f64; l]);
        let (model, device, x) = (&self.model, &self.device, &buf[..]);
        let free_bits = objective.free_bits > 0.0;
        let results = par::map_ranges(n, threads, |r| -> Result<(GradStore, [f64; 3])> {
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
            let kl_dim = t.kl_per_dim.sum(0)?;
            let mask = if free_bits {
                let v = kl_dim.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                if let Ok(mut sums) = kl_sums.lock() {
                    sums.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                }
                barrier.wait();
                let total = kl_sums.lock().map(|s| s.clone()).unwrap_or_default();
                Some(objective.free_bits_mask(
                    &Tensor::from_vec(total, l, device)?.to_dtype(DType::F32)?,
                    n,
                )?)
            } else {
                None
            };
            let loss = objective.shard_loss(&t, n, beta, mask.as_ref())?;
            let grads = loss.backward()?;
            let recon = t.recon.sum_all()?.to_scalar::<f32>()? as f64;
            let kl = kl_dim.sum_all()?.to_scalar::<f32>()? as f64;
            Ok((grads, [recon, kl, loss.to_scalar::<f32>()? as f64]))
        });
        let mut grads = Vec::with_capacity(results.len());
        let (mut recon, mut kl, mut obj) = (0.0, 0.0, 0.0);
        for r in results {
            let (g, [a, b, c]) = r?;
            grads.push(g);
            recon += a;
            kl += b;
            obj += c;
        }
        self.step += 1;
        if free_bits {
            let sums = kl_sums.into_inner().unwrap_or_default();
            obj = recon / n as f64 + objective.kl_term_value(&sums, n, beta);
        }
        let neg_elbo = recon + kl;
        if !neg_elbo.is_finite() || !obj.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                value: if neg_elbo.is_finite() { obj } else { neg_elbo },
            });
        }
        self.opt.step(&grads, threads)?;
        Ok(StepLoss {
            neg_elbo,
            objective: obj,
        })
    }
}

/// The losses of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepLoss {
    /// Summed over the batch: recon + KL (beta 1, one sample).
    pub neg_elbo: f64,
    /// The objective minimised, per example.
    pub objective: f64,
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

/// Trains for the configured epochs, writing the run directory `out` as it goes.
pub fn run(
    cfg: RunConfig,
    splits: &Splits,
    device: Device,
    out: &Path,
    obs: &mut dyn Observer,
) -> Result<Summary> {
    cfg.train.validate().map_err(TrainError::Usage)?;
    cfg.model.validate()?;
    let dir = RunDir {
        root: out.to_path_buf(),
    };
    std::fs::create_dir_all(dir.samples()).map_err(|e| TrainError::io(dir.samples(), e))?;
    let json = serde_json::to_string_pretty(&cfg).map_err(|e| TrainError::Usage(e.to_string()))?;
    weights::atomic_write(&dir.config(), json.as_bytes())?;

    let mut trainer = Trainer::new(cfg, device)?;
    let train = &splits.train;
    let bs = trainer.cfg.train.batch_size;
    let batches = train.len().div_ceil(bs);
    let mut buf = Vec::new();
    let mut best = f64::INFINITY;
    let mut last = None;
    let sample_rng = Rng::stream(trainer.cfg.train.seed, 3);
    for epoch in 1..=trainer.cfg.train.epochs {
        let order = epoch_order(train.len(), trainer.cfg.train.seed, epoch as u64);
        let start = Instant::now();
        let mut total = 0f64;
        let mut total_obj = 0f64;
        let mut beta = 0.0;
        for (b, chunk) in order.chunks(bs).enumerate() {
            let progress = (epoch - 1) as f64 + b as f64 / batches as f64;
            beta = trainer.cfg.train.objective.beta_at(progress);
            let loss = trainer.train_step(train, chunk, beta, &mut buf)?;
            total += loss.neg_elbo;
            total_obj += loss.objective * chunk.len() as f64;
            obs.step(epoch, b + 1, batches, loss.neg_elbo / chunk.len() as f64);
        }
        let seconds = start.elapsed().as_secs_f64();
        let val = elbo_stats(
            &trainer.model,
            &splits.test,
            &trainer.device,
            1000,
            trainer.cfg.train.seed,
            trainer.cfg.train.threads,
        )?;
        let m = EpochMetrics {
            epoch,
            step: trainer.step,
            train_loss: total / train.len() as f64,
            train_objective: total_obj / train.len() as f64,
            val_loss: val.neg_elbo,
            val_recon: val.recon,
            val_kl: val.kl,
            beta,
            lr: trainer.opt.config().lr,
            seconds,
            examples_per_second: train.len() as f64 / seconds,
        };
        weights::save_varmap(&trainer.varmap, &dir.model())?;
        if m.val_loss < best {
            best = m.val_loss;
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
        write_json_line(&dir.metrics(), &m)?;
        obs.epoch(&m);
        last = Some(m);
    }
    Ok(Summary {
        last: last.ok_or_else(|| TrainError::Usage("no epoch was run".into()))?,
        best_val_loss: best,
    })
}
