//! Adam and AdamW with state that can be saved and restored exactly, gradient-norm clipping,
//! and a check that no non-finite gradient reaches the weights.
//!
//! candle-nn's optimizers keep their moments private, so the update is ours: the state of each
//! variable is keyed by its name (not by the order of a map). A step of training is three
//! phases: the shards' forward and backward passes, the reduction ([`crate::reduce`]: the sum
//! of the shards' gradients, in one process or across ranks), and [`Adam::step`] on the
//! reduced gradients (two fused passes over memory per variable on the CPU, moments then
//! parameter, the kernels in `vae_core::ops::adam`). Variables are split into groups of about
//! equal size, the groups over the threads; the gradient norm is summed group by group, so
//! it depends on the number of groups ([`Adam::set_norm_groups`]), never on the threads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use vae_core::candle_core::{self, DType, Tensor, Var};
use vae_core::ops::adam::{sum_squares, AdamUpdate};
use vae_core::ops::Kernels;
use vae_core::{par, weights};

pub use crate::reduce::Gradients;

/// Hyperparameters of Adam(W).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The moments of one variable, `[2, numel]`: first moment in row 0, second in row 1.
struct Slot {
    var: Var,
    moments: Tensor,
}

/// Adam over a set of named variables.
pub struct Adam {
    cfg: AdamConfig,
    slots: BTreeMap<String, Slot>,
    step: u64,
    /// The kernels of the update ([`Kernels::Composite`] runs the tensor-operation update on
    /// the CPU too, as on other devices).
    pub kernels: Kernels,
    /// Groups of variables the gradient norm is summed in (0: one per thread).
    norm_groups: usize,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Euclidean norm of the whole gradient, before clipping.
    pub grad_norm: f64,
    /// False when the gradient was not finite or the update was skipped: the weights were
    /// left unchanged.
    pub applied: bool,
    /// The gradient norm exceeded the skip threshold: the update (and the moments' and the
    /// step count's) was left out.
    pub skipped: bool,
}

impl Adam {
    /// An optimizer for `vars` (name, variable), with zero moments.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamConfig) -> candle_core::Result<Self> {
        let mut slots = BTreeMap::new();
        for (name, var) in vars {
            let moments = Tensor::zeros((2, var.elem_count()), DType::F32, var.device())?;
            slots.insert(name, Slot { var, moments });
        }
        Ok(Self {
            cfg,
            slots,
            step: 0,
            kernels: Kernels::Native,
            norm_groups: 0,
        })
    }

    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    /// Sets the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Number of updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The variables by name, in name order.
    pub fn variables(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.slots.iter().map(|(n, s)| (n, &s.var))
    }

    /// Sums the squares of the gradient in `n` groups of variables whatever the threads (0:
    /// one group per thread), so that `R` ranks of `T` threads with `n = R × T` compute the
    /// norm of one process of `R × T` threads to the last bit.
    pub fn set_norm_groups(&mut self, n: usize) {
        self.norm_groups = n;
    }

    /// Phase three of a step: applies one update with the reduced `grads`; a
    /// variable without a gradient is left unchanged. With `max_norm`, the whole gradient is
    /// scaled down to that Euclidean norm when longer (PyTorch's `clip_grad_norm_`). A
    /// non-finite gradient leaves the weights unchanged and is reported in the returned
    /// [`StepInfo`].
    pub fn step(
        &mut self,
        grads: &Gradients,
        threads: usize,
        max_norm: Option<f64>,
    ) -> candle_core::Result<StepInfo> {
        self.step_or_skip(grads, threads, max_norm, None)
    }

    /// [`Adam::step`], leaving out the update entirely (weights, moments and step count) when
    /// the gradient's norm is finite and above `skip_above` (VDVAE's skipping of outlier
    /// updates); the returned [`StepInfo`] says so.
    pub fn step_or_skip(
        &mut self,
        grads: &Gradients,
        threads: usize,
        max_norm: Option<f64>,
        skip_above: Option<f64>,
    ) -> candle_core::Result<StepInfo> {
        let n_groups = if self.norm_groups > 0 {
            self.norm_groups
        } else {
            threads
        };
        let groups = balanced_groups(self.slots.iter().collect(), n_groups);
        let threads = threads.clamp(1, groups.len().max(1));
        // Each group's sum in order, the groups over the threads; then the groups' sums in order.
        let sum_over = |f: &(dyn Fn(&Slot, &Tensor) -> candle_core::Result<f64> + Sync)|
         -> candle_core::Result<f64> {
            let parts = par::map_ranges(
                groups.len(),
                threads,
                |r| -> candle_core::Result<Vec<f64>> {
                    let mut sums = Vec::with_capacity(r.len());
                    for g in &groups[r] {
                        let mut s = 0.0;
                        for (name, slot) in g {
                            if let Some(grad) = grads.get(name) {
                                s += f(slot, grad)?;
                            }
                        }
                        sums.push(s);
                    }
                    Ok(sums)
                },
            );
            let mut sums = Vec::with_capacity(groups.len());
            for p in parts {
                sums.extend(p?);
            }
            Ok(sums.into_iter().sum())
        };
        let t = self.step as i32 + 1;
        let mut update = self.update();
        let k = self.kernels;
        // Clipping and skipping need the norm before the moments change: one read-only pass.
        let clip_norm = if max_norm.is_some() || skip_above.is_some() {
            let norm = sum_over(&|_, g| sum_squares(g))?.sqrt();
            if let Some(max) = max_norm {
                if norm.is_finite() && norm > max {
                    update.scale = (max / (norm + 1e-6)) as f32;
                }
            }
            Some(norm)
        } else {
            None
        };
        if clip_norm.is_some_and(|n| !n.is_finite()) {
            return Ok(StepInfo {
                grad_norm: f64::NAN,
                applied: false,
                skipped: false,
            });
        }
        if let (Some(norm), Some(limit)) = (clip_norm, skip_above) {
            if norm > limit {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(
                        "update {t} skipped: gradient norm {norm:.0}; largest: {}",
                        largest_norms(grads, 4)?
                    );
                }
                return Ok(StepInfo {
                    grad_norm: norm,
                    applied: false,
                    skipped: true,
                });
            }
        }
        let u = update;
        let sq = sum_over(&|slot, g| u.moments(&slot.moments, g, k))?;
        let grad_norm = clip_norm.unwrap_or(sq.sqrt());
        if !grad_norm.is_finite() {
            return Ok(StepInfo {
                grad_norm,
                applied: false,
                skipped: false,
            });
        }
        sum_over(&|slot, _| {
            u.param(&slot.var, &slot.moments, k)?;
            Ok(0.0)
        })?;
        self.step += 1;
        Ok(StepInfo {
            grad_norm,
            applied: true,
            skipped: false,
        })
    }

    /// The next update's constants, unscaled.
    fn update(&self) -> AdamUpdate {
        let t = self.step as i32 + 1;
        let c = self.cfg;
        AdamUpdate {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            step_size: (c.lr / (1.0 - c.beta1.powi(t))) as f32,
            inv_sqrt_bc2: (1.0 / (1.0 - c.beta2.powi(t)).sqrt()) as f32,
            eps: c.eps as f32,
            decay: (1.0 - c.lr * c.weight_decay) as f32,
            scale: 1.0,
        }
    }

    /// The gradient's sum of squares as a tensor on the gradients' device, nothing read: of
    /// the one buffer the gradients are views into where there is one, else variable by
    /// variable in name order.
    pub fn sum_squares_tensor(&self, grads: &Gradients) -> candle_core::Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for (_, g) in grads.iter() {
            let s = g.sqr()?.sum_all()?.to_dtype(DType::F32)?;
            total = Some(match total {
                Some(t) => (t + s)?,
                None => s,
            });
        }
        match total {
            Some(t) => Ok(t),
            None => Tensor::new(0f32, &candle_core::Device::Cpu),
        }
    }

    /// [`Adam::step_or_skip`] with the gradient's norm already known (read by the caller
    /// together with the step's other figures): the same decisions, and no value read from
    /// the gradients' device.
    pub fn step_with_norm(
        &mut self,
        grads: &Gradients,
        norm: f64,
        max_norm: Option<f64>,
        skip_above: Option<f64>,
    ) -> candle_core::Result<StepInfo> {
        let refused = |skipped| StepInfo {
            grad_norm: norm,
            applied: false,
            skipped,
        };
        if !norm.is_finite() {
            return Ok(refused(false));
        }
        if skip_above.is_some_and(|limit| norm > limit) {
            return Ok(refused(true));
        }
        let mut u = self.update();
        if let Some(max) = max_norm.filter(|&m| norm > m) {
            u.scale = (max / (norm + 1e-6)) as f32;
        }
        let k = self.kernels;
        for (name, slot) in &self.slots {
            if let Some(g) = grads.get(name) {
                u.moments_in_place(&slot.moments, g, k)?;
                u.param(&slot.var, &slot.moments, k)?;
            }
        }
        self.step += 1;
        Ok(StepInfo {
            grad_norm: norm,
            applied: true,
            skipped: false,
        })
    }

    /// The state as named tensors (`m.<name>`, `v.<name>`) plus the step count.
    pub fn state_tensors(&self) -> candle_core::Result<(Vec<(String, Tensor)>, u64)> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for (name, slot) in &self.slots {
            let shape = slot.var.shape().clone();
            out.push((format!("m.{name}"), slot.moments.get(0)?.reshape(&shape)?));
            out.push((format!("v.{name}"), slot.moments.get(1)?.reshape(&shape)?));
        }
        Ok((out, self.step))
    }

    /// Writes the state to `path` (atomically).
    pub fn save(&self, path: &Path) -> vae_core::Result<()> {
        let (tensors, step) = self.state_tensors()?;
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), step.to_string());
        meta.insert(
            "config".to_string(),
            serde_json::to_string(&self.cfg).unwrap_or_default(),
        );
        weights::save_tensors(path, &tensors, Some(meta))
    }

    /// Restores the state from `path`; every check passes before anything changes.
    pub fn load(&mut self, path: &Path) -> vae_core::Result<()> {
        let device = self
            .slots
            .values()
            .next()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let file = weights::read_tensors(path, &device)?;
        let expected: Vec<(String, Vec<usize>)> = self
            .slots
            .iter()
            .flat_map(|(n, s)| {
                let d = s.var.dims().to_vec();
                [(format!("m.{n}"), d.clone()), (format!("v.{n}"), d)]
            })
            .collect();
        weights::check_names_and_shapes(path, &expected, &file.tensors)?;
        let step: u64 = file
            .metadata
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| vae_core::Error::Weights {
                path: path.to_path_buf(),
                msg: "missing or malformed `step` in the metadata".into(),
            })?;
        self.set_state(&file.tensors, step)?;
        Ok(())
    }

    /// Sets the state from tensors named as [`Adam::state_tensors`] names them (each present,
    /// with its variable's number of values).
    pub fn set_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        step: u64,
    ) -> candle_core::Result<()> {
        let mut moments = Vec::with_capacity(self.slots.len());
        for (name, slot) in &self.slots {
            let get = |key: String| -> candle_core::Result<Tensor> {
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{key}`")))?;
                if t.elem_count() != slot.var.elem_count() {
                    candle_core::bail!("tensor `{key}` has {} values", t.elem_count());
                }
                t.flatten_all()?.to_device(slot.var.device())
            };
            let (m, v) = (get(format!("m.{name}"))?, get(format!("v.{name}"))?);
            moments.push(Tensor::stack(&[m, v], 0)?);
        }
        for (slot, m) in self.slots.values_mut().zip(moments) {
            slot.moments = m;
        }
        self.step = step;
        Ok(())
    }
}

/// Splits the slots into at most `n` groups of about equal element count (largest first, each
/// to the lightest group), each group in name order.
fn balanced_groups<'a>(
    mut slots: Vec<(&'a String, &'a Slot)>,
    n: usize,
) -> Vec<Vec<(&'a String, &'a Slot)>> {
    let n = n.clamp(1, slots.len().max(1));
    slots.sort_by_key(|s| std::cmp::Reverse(s.1.var.elem_count()));
    let mut groups: Vec<(usize, Vec<(&String, &Slot)>)> = vec![(0, Vec::new()); n];
    for slot in slots {
        let g = groups.iter_mut().min_by_key(|g| g.0).expect("n >= 1");
        g.0 += slot.1.var.elem_count();
        g.1.push(slot);
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|g| g.1)
        .collect()
}

/// The `n` variables with the largest gradient norms, as `name norm` pairs (for the log of a
/// skipped update: which layers' gradients are the outliers).
fn largest_norms(grads: &Gradients, n: usize) -> candle_core::Result<String> {
    let mut norms = Vec::new();
    for (name, g) in grads.iter() {
        norms.push((
            g.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt(),
            name.as_str(),
        ));
    }
    norms.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(norms
        .iter()
        .take(n)
        .map(|(v, name)| format!("{name} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::{Contribution, Layout, Local, Reduce, Shard};
    use vae_core::candle_core::backprop::GradStore;
    use vae_core::candle_core::Device;

    /// The shards' gradients reduced in one process.
    fn reduced(opt: &Adam, stores: Vec<GradStore>) -> candle_core::Result<Gradients> {
        let layout = Layout::new(opt.variables().map(|(n, v)| (n.clone(), v.clone())), 0);
        let shards: Vec<Shard> = stores
            .into_iter()
            .map(|grads| Shard {
                grads,
                recon: 0.0,
                kl_units: Vec::new(),
                objective: 0.0,
            })
            .collect();
        let mine = Contribution {
            shards: &shards,
            stop: 0,
        };
        Local { threads: 2 }
            .reduce(&layout, &mine, &Device::Cpu)
            .map(|r| r.grads)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// The reduction then [`Adam::step`].
    fn step_shards(
        opt: &mut Adam,
        stores: Vec<GradStore>,
        threads: usize,
        max_norm: Option<f64>,
    ) -> candle_core::Result<StepInfo> {
        let grads = reduced(opt, stores)?;
        opt.step(&grads, threads, max_norm)
    }

    /// Three AdamW steps on f(w) = sum(c * w^2) against the update rule of torch.optim.AdamW
    /// (torch/optim/adamw.py: decay, moments, bias-corrected step), evaluated in f64 here.
    #[test]
    fn fused_and_composite_updates_match_the_formula() -> candle_core::Result<()> {
        let w0 = [1.0f64, -2.0, 0.5];
        let c = [1.0f64, 2.0, 3.0];
        let cfg = AdamConfig {
            lr: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        // f64 reference.
        let (mut w, mut m, mut v) = (w0, [0.0; 3], [0.0; 3]);
        for t in 1..=3 {
            for i in 0..3 {
                let g = 2.0 * c[i] * w[i];
                w[i] *= 1.0 - cfg.lr * cfg.weight_decay;
                m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
                v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
                let mhat = m[i] / (1.0 - cfg.beta1.powi(t));
                let vhat = v[i] / (1.0 - cfg.beta2.powi(t));
                w[i] -= cfg.lr * mhat / (vhat.sqrt() + cfg.eps);
            }
        }
        let fused = run(cfg, &w0, &c, false)?;
        let composite = run(cfg, &w0, &c, true)?;
        for i in 0..3 {
            assert!(
                (fused[i] as f64 - w[i]).abs() < 1e-5,
                "fused {fused:?} vs {w:?}"
            );
            assert!(
                (composite[i] as f64 - w[i]).abs() < 1e-5,
                "composite {composite:?} vs {w:?}"
            );
        }
        Ok(())
    }

    fn run(
        cfg: AdamConfig,
        w0: &[f64; 3],
        c: &[f64; 3],
        composite: bool,
    ) -> candle_core::Result<Vec<f32>> {
        let dev = Device::Cpu;
        let w = Var::new(&[w0[0] as f32, w0[1] as f32, w0[2] as f32], &dev)?;
        let cc = Tensor::new(&[c[0] as f32, c[1] as f32, c[2] as f32], &dev)?;
        let mut opt = Adam::new(vec![("w".into(), w.clone())], cfg)?;
        for _ in 0..3 {
            let loss = (w.as_tensor().sqr()? * &cc)?.sum_all()?;
            let grads = loss.backward()?;
            opt.kernels = if composite {
                Kernels::Composite
            } else {
                Kernels::Native
            };
            step_shards(&mut opt, vec![grads], 1, None)?;
        }
        w.as_tensor().to_vec1::<f32>()
    }

    /// Clipping scales the gradient to `max / (norm + 1e-6)` (torch.nn.utils.clip_grad_norm_),
    /// gradients of two shards are summed, and a non-finite gradient changes nothing.
    #[test]
    fn clipping_shards_and_non_finite_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let run = |shards: &[Vec<f32>],
                   clip: Option<f64>,
                   composite: bool|
         -> candle_core::Result<(Vec<f32>, StepInfo)> {
            let w = Var::new(&[1.0f32, -2.0, 0.5, 3.0], &dev)?;
            let mut opt = Adam::new(
                vec![("w".into(), w.clone())],
                AdamConfig {
                    lr: 0.1,
                    ..Default::default()
                },
            )?;
            opt.kernels = if composite {
                Kernels::Composite
            } else {
                Kernels::Native
            };
            let mut stores = Vec::new();
            for g in shards {
                // d/dw sum(w * g) = g.
                let gt = Tensor::new(g.as_slice(), &dev)?;
                stores.push((w.as_tensor() * &gt)?.sum_all()?.backward()?);
            }
            let info = step_shards(&mut opt, stores, 2, clip)?;
            Ok((w.as_tensor().to_vec1::<f32>()?, info))
        };
        let g = vec![3.0f32, 0.0, -4.0, 0.0];
        for composite in [false, true] {
            // One shard or two halves: the same update.
            let (a, ia) = run(std::slice::from_ref(&g), None, composite)?;
            let (b, ib) = run(
                &[vec![1.0, 0.0, -1.0, 0.0], vec![2.0, 0.0, -3.0, 0.0]],
                None,
                composite,
            )?;
            assert_eq!(a, b);
            assert!((ia.grad_norm - 5.0).abs() < 1e-6 && (ib.grad_norm - 5.0).abs() < 1e-6);
            // Adam's first step moves each weight with a non-zero gradient by lr, whatever the
            // scale, so clipping shows in the second moment only: check against the formula.
            let (c, ic) = run(std::slice::from_ref(&g), Some(1.0), composite)?;
            assert!((ic.grad_norm - 5.0).abs() < 1e-6);
            let scale = 1.0 / (5.0 + 1e-6);
            for i in 0..4 {
                let gi = g[i] as f64 * scale;
                let (m, v) = (0.1 * gi, 0.001 * gi * gi);
                let want =
                    [1.0f64, -2.0, 0.5, 3.0][i] - 0.1 * (m / 0.1) / ((v / 0.001).sqrt() + 1e-8);
                assert!((c[i] as f64 - want).abs() < 1e-5, "{c:?}");
            }
            let (d, id) = run(&[vec![1.0, f32::NAN, 0.0, 0.0]], None, composite)?;
            assert!(!id.applied && id.grad_norm.is_nan());
            assert_eq!(d, vec![1.0, -2.0, 0.5, 3.0]);
            let (_, ie) = run(&[vec![1.0, f32::INFINITY, 0.0, 0.0]], Some(1.0), composite)?;
            assert!(!ie.applied);
        }
        Ok(())
    }

    /// An update whose gradient norm exceeds the skip threshold changes nothing (weights,
    /// moments, step count); one below it is the plain update.
    #[test]
    fn updates_above_the_skip_threshold_are_left_out() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0], &dev)?;
        let mut opt = Adam::new(vec![("w".into(), w.clone())], AdamConfig::default())?;
        let grad = |g: [f32; 2]| -> candle_core::Result<GradStore> {
            (w.as_tensor() * Tensor::new(&g, &dev)?)?
                .sum_all()?
                .backward()
        };
        let info = step_shards(&mut opt, vec![grad([3.0, 4.0])?], 1, None)?;
        assert!(info.applied && !info.skipped);
        let after_one = w.as_tensor().to_vec1::<f32>()?;
        let (moments, _) = opt.state_tensors()?;
        // Norm 50 against a threshold of 4 (clipping would have scaled it to 1): skipped.
        let g = reduced(&opt, vec![grad([30.0, 40.0])?])?;
        let info = opt.step_or_skip(&g, 1, Some(1.0), Some(4.0))?;
        assert!(info.skipped && !info.applied);
        assert!((info.grad_norm - 50.0).abs() < 1e-4, "{info:?}");
        assert_eq!(w.as_tensor().to_vec1::<f32>()?, after_one);
        assert_eq!(opt.step_count(), 1);
        let (same, _) = opt.state_tensors()?;
        for ((_, a), (_, b)) in moments.iter().zip(&same) {
            assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        }
        // Below the threshold the update happens; a non-finite gradient is not a skip.
        let g = reduced(&opt, vec![grad([0.3, 0.4])?])?;
        let info = opt.step_or_skip(&g, 1, None, Some(4.0))?;
        assert!(info.applied && !info.skipped && opt.step_count() == 2);
        let g = reduced(&opt, vec![grad([f32::NAN, 0.0])?])?;
        let info = opt.step_or_skip(&g, 1, None, Some(4.0))?;
        assert!(!info.applied && !info.skipped);
        Ok(())
    }

    #[test]
    fn state_round_trips_through_a_file() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("optimizer.safetensors");
        let w = Var::new(&[1.0f32, -2.0], &dev)?;
        let mut opt = Adam::new(vec![("w".into(), w.clone())], AdamConfig::default())?;
        for _ in 0..3 {
            let g = w.as_tensor().sqr()?.sum_all()?.backward()?;
            step_shards(&mut opt, vec![g], 1, None)?;
        }
        opt.save(&path)?;
        let w2 = Var::new(&[1.0f32, -2.0], &dev)?;
        let mut opt2 = Adam::new(vec![("w".into(), w2.clone())], AdamConfig::default())?;
        opt2.load(&path)?;
        assert_eq!(opt2.step_count(), 3);
        let (a, _) = opt.state_tensors()?;
        let (b, _) = opt2.state_tensors()?;
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(ta.to_vec1::<f32>()?, tb.to_vec1::<f32>()?);
        }
        // A file for another model is refused before anything changes.
        let v = Var::new(&[0f32; 3], &dev)?;
        let mut other = Adam::new(vec![("v".into(), v)], AdamConfig::default())?;
        let err = other.load(&path).unwrap_err().to_string();
        assert!(
            err.contains("missing tensor `m.v`") && err.contains("unexpected tensor `m.w`"),
            "{err}"
        );
        assert_eq!(other.step_count(), 0);
        Ok(())
    }
}
