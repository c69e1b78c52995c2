//! The training loop: epochs of shuffled batches, validation, and the run directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use vae_core::candle_core::backprop::GradStore;
use vae_core::candle_core::{Device, Tensor};
use vae_core::candle_nn::VarMap;
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

    /// One optimizer step on the examples `indices` of `data`; returns the batch's summed
    /// negative ELBO (nats).
    ///
    /// On the CPU the batch is split into one shard per thread: each thread runs the forward and
    /// backward pass of its rows (candle's own pool is kept to one thread, see
    /// [`vae_core::device::single_threaded_candle`]), the gradients are summed inside the fused
    /// optimizer update, which itself runs on all threads. All random draws happen before the
    /// split, so the noise does not depend on the thread count.
    pub fn train_step(
        &mut self,
        data: &Dataset,
        indices: &[usize],
        buf: &mut Vec<f32>,
    ) -> Result<f64> {
        let n = indices.len();
        let d = data.shape.dim();
        let l = self.model.latent_dim();
        data.gather(indices, buf);
        if self.cfg.data.binarize == Binarize::Dynamic {
            Binarize::sample(buf, &mut self.noise);
        }
        let labels = data.gather_labels(indices);
        let eps = self.noise.normal_vec(n * l);
        let shards = if self.device.is_cpu() {
            self.cfg.train.threads.clamp(1, n.max(1))
        } else {
            1
        };
        let beta = self.cfg.train.beta;
        let (model, device, x) = (&self.model, &self.device, &buf[..]);
        let shard = |s: usize| -> Result<(GradStore, f64)> {
            let (lo, hi) = (s * n / shards, (s + 1) * n / shards);
            let rows = hi - lo;
            let xs = Tensor::from_slice(&x[lo * d..hi * d], (rows, d), device)?;
            let es = Tensor::from_slice(&eps[lo * l..hi * l], (rows, l), device)?;
            let ys = match (model.config().num_classes, &labels) {
                (Some(k), Some(ls)) => Some(one_hot(&ls[lo..hi], k, device)?),
                (Some(_), None) => {
                    return Err(TrainError::Usage(
                        "a conditional model needs labelled data".into(),
                    ))
                }
                _ => None,
            };
            let t = model.elbo_terms(&xs, ys.as_ref(), &es)?;
            let recon = t.recon.sum_all()?;
            let kl = t.kl.sum_all()?;
            // Divided by the whole batch size, so that the shards' gradients add up to the batch's.
            let objective = ((&recon + (&kl * beta)?)? / n as f64)?;
            let grads = objective.backward()?;
            let neg_elbo = (recon + kl)?.to_scalar::<f32>()? as f64;
            Ok((grads, neg_elbo))
        };
        let results: Vec<Result<(GradStore, f64)>> = if shards == 1 {
            vec![shard(0)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (1..shards).map(|s| scope.spawn(move || shard(s))).collect();
                let mut out = vec![shard(0)];
                out.extend(handles.into_iter().map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(TrainError::Usage("a training thread panicked".into()))
                    })
                }));
                out
            })
        };
        let mut grads = Vec::with_capacity(shards);
        let mut neg_elbo = 0.0;
        for r in results {
            let (g, v) = r?;
            grads.push(g);
            neg_elbo += v;
        }
        self.step += 1;
        if !neg_elbo.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                value: neg_elbo,
            });
        }
        self.opt.step(&grads, shards)?;
        Ok(neg_elbo)
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
        for (b, chunk) in order.chunks(bs).enumerate() {
            let loss = trainer.train_step(train, chunk, &mut buf)?;
            total += loss;
            obs.step(epoch, b + 1, batches, loss / chunk.len() as f64);
        }
        let seconds = start.elapsed().as_secs_f64();
        let val = elbo_stats(
            &trainer.model,
            &splits.test,
            &trainer.device,
            1000,
            trainer.cfg.train.seed,
        )?;
        let m = EpochMetrics {
            epoch,
            step: trainer.step,
            train_loss: total / train.len() as f64,
            val_loss: val.neg_elbo,
            val_recon: val.recon,
            val_kl: val.kl,
            beta: trainer.cfg.train.beta,
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
