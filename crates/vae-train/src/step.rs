//! One training step in three phases: the forward and backward passes of each shard of the
//! batch (one thread each on the CPU), the reduction of the shards' gradients, and the
//! optimizer's update.
//!
//! The noise of the whole batch is drawn before it is split, the shards are fixed contiguous
//! ranges and their gradients are summed in shard order, so a given thread count always gives
//! the same bytes (exact resume rests on it).

use vae_core::candle_core::backprop::GradStore;
use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::candle_nn::VarMap;
use vae_core::{par, Noise, Rng, Terms, Vae};
use vae_data::{Binarize, Dataset};
use vae_run::batch::rows_to_tensors;

use crate::config::RunConfig;
use crate::optim::Adam;
use crate::{Result, TrainError};

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
    /// The update was skipped (its gradient norm exceeded `--skip-threshold`).
    pub skipped: bool,
}

/// What the shards' passes of one batch computed (phase one).
struct ShardPasses {
    grads: Vec<GradStore>,
    /// Reconstruction term summed over the batch.
    recon: f64,
    /// KL per latent unit, summed over the batch.
    kl_units: Vec<f64>,
    /// The objective, per example.
    objective: f64,
}

impl Trainer {
    /// Fresh weights from the run's seed.
    pub fn new(cfg: RunConfig, device: Device) -> Result<Self> {
        let mut init_rng = Rng::stream(cfg.train.seed, 1);
        let (varmap, model) = Vae::init(&cfg.model, &device, &mut init_rng)?;
        let kernels = cfg.train.kernels.kernels();
        let model = model.with_kernels(kernels)?;
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Internal("poisoned variable map".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut opt = Adam::new(vars, cfg.train.optimizer)?;
        opt.kernels = kernels;
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

    /// One update on the examples `indices` of `data` with KL weight `beta`; `buf` is reused
    /// for the batch's values.
    pub fn train_step(
        &mut self,
        data: &Dataset,
        indices: &[usize],
        beta: f64,
        buf: &mut Vec<f32>,
    ) -> Result<StepLoss> {
        let n = indices.len();
        let k = self.cfg.train.objective.iwae_k;
        data.gather(indices, buf);
        if self.cfg.data.binarize == Binarize::Dynamic {
            Binarize::sample(buf, &mut self.noise);
        }
        if self.cfg.data.dequantize {
            vae_data::dequantize(buf, &mut self.noise);
        }
        let labels = data.gather_labels(indices);
        let eps = Noise::draw(&self.model, k, n, &mut self.noise);
        let threads = par::threads_for(&self.device, self.cfg.train.threads);
        let passes = self.shard_passes(buf, labels.as_deref(), &eps, beta, threads)?;
        let neg_elbo = passes.recon + passes.kl_units.iter().sum::<f64>();
        let grads = self.opt.reduce(&passes.grads, threads)?;
        let t = &self.cfg.train;
        let info = self
            .opt
            .step_or_skip(&grads, threads, t.grad_clip, t.skip_threshold)?;
        if !info.applied && !info.skipped {
            return Err(TrainError::NonFinite {
                what: "gradient norm",
                step: self.step + 1,
                value: info.grad_norm,
            });
        }
        self.step += 1;
        tracing::debug!(
            "batch {}: -ELBO {:.2} nats per example (KL {:.2}), gradient norm {:.0}{}",
            self.step,
            neg_elbo / n as f64,
            passes.kl_units.iter().sum::<f64>() / n as f64,
            info.grad_norm,
            if info.skipped { ", skipped" } else { "" }
        );
        Ok(StepLoss {
            neg_elbo,
            objective: passes.objective,
            grad_norm: info.grad_norm,
            skipped: info.skipped,
        })
    }

    /// Phase one: forward passes of the shards, then (once the free-bits mask of the whole
    /// batch is known) their backward passes. Stops before any gradient is formed when the
    /// loss is not finite.
    fn shard_passes(
        &self,
        x: &[f32],
        labels: Option<&[u32]>,
        eps: &Noise,
        beta: f64,
        threads: usize,
    ) -> Result<ShardPasses> {
        let n = eps.n;
        let d = self.model.config().shape.dim();
        let objective = self.cfg.train.objective;
        let (model, device) = (&self.model, &self.device);
        let forward = par::map_ranges(n, threads, |r| -> Result<(Terms, Vec<f64>, f64)> {
            let (xs, ys) = rows_to_tensors(x, labels, r.clone(), d, model, device)?;
            let es = eps.rows(r, device)?;
            let t = model.terms(&xs, ys.as_ref(), &es, beta)?;
            let kl = t.kl_units.sum(0)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let recon = t
                .recon
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            Ok((t, kl, recon))
        });
        let units = self.model.latent().kl_units();
        let mut shards = Vec::with_capacity(forward.len());
        let (mut recon, mut kl_units) = (0.0, vec![0f64; units]);
        for f in forward {
            let (t, kl, r) = f?;
            recon += r;
            kl_units.iter_mut().zip(&kl).for_each(|(a, b)| *a += b);
            shards.push(t);
        }
        let neg_elbo = recon + kl_units.iter().sum::<f64>();
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
                kl_units.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                units,
                device,
            )?;
            Some(objective.free_bits_mask(&sums, n)?)
        } else {
            None
        };
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
            // The loss of the shards leaves out the floored units; the objective has them.
            obj = recon / n as f64 + objective.kl_term_value(&kl_units, n, beta);
        }
        if !obj.is_finite() {
            return Err(TrainError::NonFinite {
                what: "objective",
                step: self.step + 1,
                value: obj,
            });
        }
        Ok(ShardPasses {
            grads,
            recon,
            kl_units,
            objective: obj,
        })
    }
}
