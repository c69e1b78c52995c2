//! One training step in three phases: the forward and backward passes of each shard of the
//! batch (one thread each on the CPU), the reduction of the shards' gradients and loss terms
//! ([`crate::reduce`]: in one process, or across the ranks of a run under MPI), and the
//! optimizer's update, which sees only the reduced gradients.
//!
//! The noise of the whole batch is drawn before it is split (by every rank, from the same
//! generator), the shards are fixed contiguous ranges and their gradients are summed in shard
//! order, so a given number of shards always gives the same bytes, however they are spread
//! over ranks and threads (exact resume rests on it).

use std::ops::Range;

use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::candle_nn::VarMap;
use vae_core::ops::Kernels;
use vae_core::{par, Noise, Rng, Terms, Vae};
use vae_data::{Binarize, Dataset};
use vae_run::batch::rows_to_tensors;

use crate::config::RunConfig;
use crate::optim::{Adam, StepInfo};
use crate::reduce::{shards_of, Contribution, Layout, Local, Reduce, Shard};
use crate::{Result, TrainError};

/// The stream of the generator whose draws seed each step's noise on a device other than the
/// CPU (streams 1 to 3 are the initial weights, the CPU's training noise and the sample
/// grids); step `s` uses stream `NOISE_STREAM + s`.
const NOISE_STREAM: u64 = 1 << 32;

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
    /// Where each value lives in a step's reduced buffer.
    pub layout: Layout,
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
    /// The signals seen by any rank before the reduction ([`crate::reduce::STOP_INTERRUPT`],
    /// [`crate::reduce::STOP_TERMINATE`]).
    pub stop: u8,
    /// Seconds spent in collectives (the reduction; free bits' KL), waiting included.
    pub reduce_seconds: f64,
}

impl Trainer {
    /// An update that was neither applied nor skipped had a gradient norm that is not finite:
    /// the run stops there (both steps, native and generic, end this way).
    fn check_update(&self, info: &StepInfo) -> Result<()> {
        if !info.applied && !info.skipped {
            return Err(TrainError::NonFinite {
                what: "gradient norm",
                step: self.step + 1,
                value: info.grad_norm,
            });
        }
        Ok(())
    }

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
        let layout = Layout::new(
            opt.variables().map(|(n, v)| (n.clone(), v.clone())),
            model.latent().kl_units(),
        );
        let noise = Rng::stream(cfg.train.seed, 2);
        Ok(Self {
            cfg,
            device,
            varmap,
            model,
            opt,
            noise,
            step: 0,
            layout,
        })
    }

    /// One update on the examples `indices` of `data` with KL weight `beta`, in this process;
    /// `buf` is reused for the batch's values.
    pub fn train_step(
        &mut self,
        data: &Dataset,
        indices: &[usize],
        beta: f64,
        buf: &mut Vec<f32>,
    ) -> Result<StepLoss> {
        self.train_step_in(&mut Local::default(), data, indices, beta, buf, 0)
    }

    /// [`Trainer::train_step`] as one of `group.ranks()` processes: this rank reads and runs
    /// only its own shards of the batch; `stop` (the signals this rank has seen) goes into the
    /// reduction, and every rank gets the union back in [`StepLoss::stop`].
    pub fn train_step_in(
        &mut self,
        group: &mut dyn Reduce,
        data: &Dataset,
        indices: &[usize],
        beta: f64,
        buf: &mut Vec<f32>,
        stop: u8,
    ) -> Result<StepLoss> {
        let n = indices.len();
        let k = self.cfg.train.objective.iwae_k;
        let threads = par::threads_for(&self.device, self.cfg.train.threads);
        let (shards, mine) = shards_of(n, group.ranks(), group.rank(), threads);
        let mine = &shards[mine];
        if group.ranks() == 1 {
            data.gather(indices, buf);
        } else {
            // Only this rank's rows are read; the others' stay as they were (the generators
            // below draw for every row, whatever its value).
            let d = data.shape.dim();
            buf.resize(n * d, 0.0);
            if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                let rows = first.start..last.end;
                let mut own = Vec::new();
                data.gather(&indices[rows.clone()], &mut own);
                buf[rows.start * d..rows.end * d].copy_from_slice(&own);
            }
        }
        if self.cfg.data.binarize == Binarize::Dynamic {
            Binarize::sample(buf, &mut self.noise);
        }
        if self.cfg.data.dequantize {
            vae_data::dequantize(buf, &mut self.noise);
        }
        let labels = data.gather_labels(indices);
        let eps = if self.device.is_cpu() {
            Noise::draw(&self.model, k, n, threads, &mut self.noise)
        } else {
            // Seeded for this step: a resumed run draws the noise an uninterrupted one drew.
            let seed = Rng::stream(self.cfg.train.seed, NOISE_STREAM + self.step).next_u64();
            Noise::draw_on_device(&self.model, k, n, &self.device, seed)?
        };
        if group.ranks() == 1 && self.generic() {
            return self.generic_step(buf, labels.as_deref(), &eps, beta, threads, stop);
        }
        let mut waited = 0.0;
        let passes =
            self.shard_passes(group, buf, labels.as_deref(), &eps, beta, mine, &mut waited)?;
        group.set_threads(threads);
        let started = std::time::Instant::now();
        let reduced = group.reduce(
            &self.layout,
            &Contribution {
                shards: &passes,
                stop,
            },
            &self.device,
        )?;
        drop(passes);
        waited += started.elapsed().as_secs_f64();
        let neg_elbo = reduced.recon + reduced.kl_units.iter().sum::<f64>();
        if !neg_elbo.is_finite() {
            return Err(TrainError::NonFinite {
                what: "loss",
                step: self.step + 1,
                value: neg_elbo,
            });
        }
        let objective = self.cfg.train.objective;
        let obj = if objective.free_bits > 0.0 {
            // The loss of the shards leaves out the floored units; the objective has them.
            reduced.recon / n as f64 + objective.kl_term_value(&reduced.kl_units, n, beta)
        } else {
            reduced.objective
        };
        if !obj.is_finite() {
            return Err(TrainError::NonFinite {
                what: "objective",
                step: self.step + 1,
                value: obj,
            });
        }
        let t = &self.cfg.train;
        self.opt.set_norm_groups(group.ranks() * threads);
        let info = self
            .opt
            .step_or_skip(&reduced.grads, threads, t.grad_clip, t.skip_threshold)?;
        self.check_update(&info)?;
        self.step += 1;
        tracing::debug!(
            "batch {}: -ELBO {:.2} nats per example (KL {:.2}), gradient norm {:.0}{}",
            self.step,
            neg_elbo / n as f64,
            reduced.kl_units.iter().sum::<f64>() / n as f64,
            info.grad_norm,
            if info.skipped { ", skipped" } else { "" }
        );
        Ok(StepLoss {
            neg_elbo,
            objective: obj,
            grad_norm: info.grad_norm,
            skipped: info.skipped,
            stop: reduced.stop,
            reduce_seconds: waited,
        })
    }

    /// Whether the step takes the generic path: another device than the CPU, or the composite
    /// kernels (which run that path on the CPU, where the tests compare it with the native one).
    fn generic(&self) -> bool {
        !self.device.is_cpu() || self.model.kernels() == Kernels::Composite
    }

    /// One step of the generic path in one process: the phases of [`Trainer::train_step_in`]
    /// with every figure left on the device until a single read at the end, the
    /// reconstruction term, the KL of each unit, the objective and the gradient's sum of
    /// squares together (the native path reads them on the host as they come, where reading
    /// costs nothing). A non-finite loss stops the run there, before the weights change.
    fn generic_step(
        &mut self,
        x: &[f32],
        labels: Option<&[u32]>,
        eps: &Noise,
        beta: f64,
        threads: usize,
        stop: u8,
    ) -> Result<StepLoss> {
        let n = eps.n;
        let d = self.model.config().shape.dim();
        let objective = self.cfg.train.objective;
        let (model, device) = (&self.model, &self.device);
        let (shards, _) = shards_of(n, 1, 0, threads);
        let each = shards.len();
        let terms = par::map_ranges(each, each, |i| -> Result<Terms> {
            let r = shards[i.start].clone();
            let (xs, ys) = rows_to_tensors(x, labels, r.clone(), d, model, device)?;
            Ok(model.terms(&xs, ys.as_ref(), &eps.rows(r, device)?, beta)?)
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let total = |parts: Vec<Tensor>| -> Result<Tensor> {
            let mut it = parts.into_iter();
            let first = it
                .next()
                .ok_or(TrainError::Internal("an empty batch".into()))?;
            Ok(it.try_fold(first, |a, b| a + b)?)
        };
        let kl = total(
            terms
                .iter()
                .map(|t| t.kl_units.sum(0))
                .collect::<vae_core::candle_core::Result<_>>()?,
        )?;
        let recon = total(
            terms
                .iter()
                .map(|t| t.recon.sum_all())
                .collect::<vae_core::candle_core::Result<_>>()?,
        )?;
        let mask = (objective.free_bits > 0.0)
            .then(|| objective.free_bits_mask(&kl, n))
            .transpose()?;
        let passes = par::map_ranges(each, each, |i| -> Result<(Shard, Tensor)> {
            let loss = objective.shard_loss(&terms[i.start], n, beta, mask.as_ref())?;
            let shard = Shard {
                grads: loss.backward()?,
                recon: 0.0,
                kl_units: vec![0.0; kl.elem_count()],
                objective: 0.0,
            };
            Ok((shard, loss))
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let (shards, losses): (Vec<Shard>, Vec<Tensor>) = passes.into_iter().unzip();
        let mut local = Local { threads };
        let reduced = local.reduce(
            &self.layout,
            &Contribution {
                shards: &shards,
                stop,
            },
            device,
        )?;
        drop(shards);
        let sumsq = self.opt.sum_squares_tensor(&reduced.grads)?;
        let one = |t: Tensor| -> Result<Tensor> {
            Ok(t.to_dtype(DType::F32)?.to_device(device)?.reshape(1)?)
        };
        let figures = Tensor::cat(
            &[
                one(recon)?,
                kl.to_dtype(DType::F32)?,
                one(total(losses)?)?,
                one(sumsq)?,
            ],
            0,
        )?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
        let units = figures.len() - 3;
        let (recon, kl_units) = (figures[0], &figures[1..1 + units]);
        let neg_elbo = recon + kl_units.iter().sum::<f64>();
        let obj = if objective.free_bits > 0.0 {
            recon / n as f64 + objective.kl_term_value(kl_units, n, beta)
        } else {
            figures[1 + units]
        };
        for (what, value) in [("loss", neg_elbo), ("objective", obj)] {
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    what,
                    step: self.step + 1,
                    value,
                });
            }
        }
        let t = &self.cfg.train;
        let norm = figures[2 + units].sqrt();
        let info = self
            .opt
            .step_with_norm(&reduced.grads, norm, t.grad_clip, t.skip_threshold)?;
        self.check_update(&info)?;
        self.step += 1;
        Ok(StepLoss {
            neg_elbo,
            objective: obj,
            grad_norm: info.grad_norm,
            skipped: info.skipped,
            stop: reduced.stop,
            reduce_seconds: 0.0,
        })
    }

    /// Phase one: forward passes of this rank's shards `mine` (row ranges of the batch), then
    /// (once the free-bits mask of the whole batch is known) their backward passes. In one
    /// process, stops before any gradient is formed when the loss is not finite.
    #[allow(clippy::too_many_arguments)]
    fn shard_passes(
        &self,
        group: &mut dyn Reduce,
        x: &[f32],
        labels: Option<&[u32]>,
        eps: &Noise,
        beta: f64,
        mine: &[Range<usize>],
        waited: &mut f64,
    ) -> Result<Vec<Shard>> {
        let n = eps.n;
        let d = self.model.config().shape.dim();
        let objective = self.cfg.train.objective;
        let (model, device) = (&self.model, &self.device);
        let each = mine.len();
        let forward = if each == 0 {
            Vec::new()
        } else {
            par::map_ranges(each, each, |i| -> Result<(Terms, Vec<f64>, f64)> {
                let r = mine[i.start].clone();
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
            })
        };
        let units = self.model.latent().kl_units();
        let mut terms = Vec::with_capacity(forward.len());
        let mut sums = Vec::with_capacity(forward.len());
        for f in forward {
            let (t, kl, r) = f?;
            // Per shard: the reconstruction term, then the KL of each unit.
            let mut v = Vec::with_capacity(units + 1);
            v.push(r);
            v.extend(kl);
            sums.push(v);
            terms.push(t);
        }
        // Free bits need the KL of the whole batch: the mask is known only now, after a
        // collective of its own across ranks. In one process the loss is checked here, before
        // any backward pass; across ranks, on the reduced terms after the step's reduction.
        let batch = if objective.free_bits > 0.0 {
            let started = std::time::Instant::now();
            let b = group.sum_shards(&sums, units + 1)?;
            *waited += started.elapsed().as_secs_f64();
            Some(b)
        } else if group.ranks() == 1 {
            Some(Local::default().sum_shards(&sums, units + 1)?)
        } else {
            None
        };
        if let Some(b) = &batch {
            let neg_elbo = b[0] + b[1..].iter().sum::<f64>();
            if !neg_elbo.is_finite() {
                return Err(TrainError::NonFinite {
                    what: "loss",
                    step: self.step + 1,
                    value: neg_elbo,
                });
            }
        }
        let mask = match &batch {
            Some(b) if objective.free_bits > 0.0 => {
                let kl: Vec<f32> = b[1..].iter().map(|&v| v as f32).collect();
                let sums = Tensor::from_vec(kl, units, device)?;
                Some(objective.free_bits_mask(&sums, n)?)
            }
            _ => None,
        };
        let backward = if terms.is_empty() {
            Vec::new()
        } else {
            par::map_ranges(terms.len(), terms.len(), |r| -> Result<Shard> {
                let t = &terms[r.start];
                let loss = objective.shard_loss(t, n, beta, mask.as_ref())?;
                let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                Ok(Shard {
                    grads: loss.backward()?,
                    recon: 0.0,
                    kl_units: Vec::new(),
                    objective: value,
                })
            })
        };
        let mut out = Vec::with_capacity(backward.len());
        for (b, s) in backward.into_iter().zip(sums) {
            let mut shard = b?;
            shard.recon = s[0];
            shard.kl_units = s[1..].to_vec();
            out.push(shard);
        }
        Ok(out)
    }
}
