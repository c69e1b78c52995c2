//! Adam and AdamW with state that can be saved and restored exactly.
//!
//! candle-nn's optimizers keep their moments private, so the update is ours: the state of each
//! variable is keyed by its name (not by the order of a map), and on the CPU the whole update of
//! one variable is two fused passes over memory (moments, then parameter) instead of a dozen
//! tensor operations with their allocations.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use vae_core::candle_core::backprop::GradStore;
use vae_core::candle_core::{self, CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use vae_core::{multiversion, weights};

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
    /// Use the tensor-operation update even on the CPU (to test one against the other).
    composite: bool,
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
            composite: false,
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

    /// Names of the variables, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// The variable called `name`.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.slots.get(name).map(|s| &s.var)
    }

    /// Applies one update. Each variable's gradient is the sum of its entries in `grads` (the
    /// gradients of the shards of a batch); a variable with none is left unchanged. The
    /// variables are split into `threads` groups of about equal size, updated in parallel.
    pub fn step(&mut self, grads: &[GradStore], threads: usize) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let update = AdamUpdate {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            step_size: (c.lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: c.eps as f32,
            decay: (1.0 - c.lr * c.weight_decay) as f32,
        };
        let composite = self.composite;
        let work = |group: &[&Slot]| -> candle_core::Result<()> {
            for slot in group {
                let gs: Vec<&Tensor> = grads
                    .iter()
                    .filter_map(|g| g.get(slot.var.as_tensor()))
                    .collect();
                if gs.is_empty() {
                    continue;
                }
                if composite {
                    update.apply_composite(&slot.var, &slot.moments, &gs)?;
                } else {
                    update.apply(&slot.var, &slot.moments, &gs)?;
                }
            }
            Ok(())
        };
        let groups = balanced_groups(self.slots.values().collect(), threads);
        match groups.as_slice() {
            [] => Ok(()),
            [one] => work(one),
            [first, rest @ ..] => std::thread::scope(|s| {
                let handles: Vec<_> = rest.iter().map(|g| s.spawn(|| work(g))).collect();
                let mut result = work(first);
                for h in handles {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(candle_core::Error::Msg("optimizer thread panicked".into()))
                    });
                    result = result.and(r);
                }
                result
            }),
        }
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
        for (name, slot) in &mut self.slots {
            let m = file.tensors[&format!("m.{name}")].flatten_all()?;
            let v = file.tensors[&format!("v.{name}")].flatten_all()?;
            slot.moments = Tensor::stack(&[m, v], 0)?;
        }
        self.step = step;
        Ok(())
    }
}

/// Splits the slots into at most `n` groups of about equal element count (largest first, each
/// to the lightest group), each group in name order.
fn balanced_groups(mut slots: Vec<&Slot>, n: usize) -> Vec<Vec<&Slot>> {
    let n = n.clamp(1, slots.len().max(1));
    slots.sort_by_key(|s| std::cmp::Reverse(s.var.elem_count()));
    let mut groups: Vec<(usize, Vec<&Slot>)> = vec![(0, Vec::new()); n];
    for slot in slots {
        let g = groups.iter_mut().min_by_key(|g| g.0).expect("n >= 1");
        g.0 += slot.var.elem_count();
        g.1.push(slot);
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|g| g.1)
        .collect()
}

/// One Adam update with the bias corrections folded into two scalars.
#[derive(Debug, Clone, Copy)]
struct AdamUpdate {
    beta1: f32,
    beta2: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
    decay: f32,
}

impl AdamUpdate {
    /// The update with the sum of `grads` as the gradient.
    fn apply(&self, var: &Var, moments: &Tensor, grads: &[&Tensor]) -> candle_core::Result<()> {
        if !(var.device().is_cpu() && var.dtype() == DType::F32) {
            return self.apply_composite(var, moments, grads);
        }
        match grads {
            [g] => moments.inplace_op2(&g.contiguous()?, &MomentsOp(*self))?,
            [a, b] => moments.inplace_op3(&a.contiguous()?, &b.contiguous()?, &MomentsOp(*self))?,
            _ => moments.inplace_op2(&sum(grads)?.contiguous()?, &MomentsOp(*self))?,
        }
        var.as_tensor().inplace_op2(moments, &ParamOp(*self))
    }

    /// The same arithmetic as tensor operations, for any device.
    fn apply_composite(
        &self,
        var: &Var,
        moments: &Tensor,
        grads: &[&Tensor],
    ) -> candle_core::Result<()> {
        let grad = sum(grads)?.flatten_all()?;
        let m = ((moments.get(0)? * self.beta1 as f64)? + (&grad * (1.0 - self.beta1 as f64))?)?;
        let v =
            ((moments.get(1)? * self.beta2 as f64)? + (grad.sqr()? * (1.0 - self.beta2 as f64))?)?;
        let denom = ((v.sqrt()? * self.inv_sqrt_bc2 as f64)? + self.eps as f64)?;
        let delta = ((m.clone() / denom)? * self.step_size as f64)?.reshape(var.shape())?;
        let p = ((var.as_tensor() * self.decay as f64)? - delta)?;
        moments.slice_set(&Tensor::stack(&[m, v], 0)?, 0, 0)?;
        var.set(&p)
    }
}

fn sum(grads: &[&Tensor]) -> candle_core::Result<Tensor> {
    let mut acc = grads
        .first()
        .map(|g| (*g).clone())
        .ok_or_else(|| candle_core::Error::Msg("adam: no gradient".into()))?;
    for g in &grads[1..] {
        acc = (acc + *g)?;
    }
    Ok(acc)
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    l.contiguous_offsets()
        .map(|(a, b)| &all[a..b])
        .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous tensor".into()))
}

fn contiguous_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous tensor".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => Err(candle_core::Error::Msg("adam: expected f32".into())),
    }
}

multiversion! {
    fn moments_kernel(m: &mut [f32], v: &mut [f32], g: &[f32], b1: f32, b2: f32) {
        let (c1, c2) = (1.0 - b1, 1.0 - b2);
        for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * (g * g);
        }
    }
}

multiversion! {
    /// The moments for the gradient `g1 + g2` (two shards of one batch).
    fn moments_kernel2(m: &mut [f32], v: &mut [f32], g1: &[f32], g2: &[f32], b1: f32, b2: f32) {
        let (c1, c2) = (1.0 - b1, 1.0 - b2);
        for (((m, v), &g1), &g2) in m.iter_mut().zip(v.iter_mut()).zip(g1).zip(g2) {
            let g = g1 + g2;
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * (g * g);
        }
    }
}

multiversion! {
    fn param_kernel(p: &mut [f32], m: &[f32], v: &[f32], u: AdamUpdate) {
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p = u.decay * *p - u.step_size * m / (v.sqrt() * u.inv_sqrt_bc2 + u.eps);
        }
    }
}

struct MomentsOp(AdamUpdate);

impl InplaceOp2 for MomentsOp {
    fn name(&self) -> &'static str {
        "adam-moments"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = contiguous(g, gl)?;
        let mv = contiguous_mut(s, l)?;
        let (m, v) = mv.split_at_mut(g.len());
        moments_kernel(m, v, g, self.0.beta1, self.0.beta2);
        Ok(())
    }
}

impl InplaceOp3 for MomentsOp {
    fn name(&self) -> &'static str {
        "adam-moments-2"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        g1: &CpuStorage,
        g1l: &Layout,
        g2: &CpuStorage,
        g2l: &Layout,
    ) -> candle_core::Result<()> {
        let (g1, g2) = (contiguous(g1, g1l)?, contiguous(g2, g2l)?);
        if g1.len() != g2.len() {
            candle_core::bail!("adam: gradients of different sizes");
        }
        let mv = contiguous_mut(s, l)?;
        let (m, v) = mv.split_at_mut(g1.len());
        moments_kernel2(m, v, g1, g2, self.0.beta1, self.0.beta2);
        Ok(())
    }
}

struct ParamOp(AdamUpdate);

impl InplaceOp2 for ParamOp {
    fn name(&self) -> &'static str {
        "adam-param"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        mv: &CpuStorage,
        mvl: &Layout,
    ) -> candle_core::Result<()> {
        let p = contiguous_mut(s, l)?;
        let mv = contiguous(mv, mvl)?;
        let (m, v) = mv.split_at(p.len());
        param_kernel(p, m, v, self.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vae_core::candle_core::Device;

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
            opt.composite = composite;
            opt.step(&[grads], 1)?;
        }
        w.as_tensor().to_vec1::<f32>()
    }
}
