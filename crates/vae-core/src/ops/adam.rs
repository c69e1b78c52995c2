//! The optimizer's kernels: the sum of the shards' gradients, and Adam's two passes (moments,
//! then parameter), each with a composite twin for other devices and for the tests.
//!
//! On the CPU each pass is one loop over memory: [`sum_gradients`] adds the shards' gradients
//! in a fixed order into a fresh buffer; [`AdamUpdate::moments`] updates both moments and
//! returns the gradient's sum of squares (accumulated in 16 lanes in a fixed order, so the
//! figure does not depend on the SIMD level); [`AdamUpdate::param`] moves the parameter.

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp2, DType, InplaceOp2, Layout, Shape, Tensor, Var};

use super::Kernels;
use crate::multiversion;

/// One Adam(W) update with the bias corrections folded into two scalars, and the clipping
/// factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamUpdate {
    pub beta1: f32,
    pub beta2: f32,
    /// lr / (1 - beta1^t).
    pub step_size: f32,
    /// 1 / sqrt(1 - beta2^t).
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
    /// 1 - lr * weight_decay (decoupled weight decay).
    pub decay: f32,
    /// Multiplies the gradient (clipping).
    pub scale: f32,
}

/// The sum of the shards' gradients of one variable, added in order (`g0 + g1 + …`).
pub fn sum_gradients(grads: &[&Tensor], k: Kernels) -> candle_core::Result<Tensor> {
    match grads {
        [] => candle_core::bail!("adam: no gradient"),
        [g] => Ok((*g).clone()),
        [a, rest @ ..] if k.cpu_kernel(grads) && k.cpu_kernel(&[a]) => {
            let mut acc = a.contiguous()?.apply_op2(&rest[0].contiguous()?, AddOp)?;
            for g in &rest[1..] {
                acc = acc.apply_op2(&g.contiguous()?, AddOp)?;
            }
            Ok(acc)
        }
        _ => composite_sum(grads),
    }
}

/// [`sum_gradients`] as tensor operations.
pub fn composite_sum(grads: &[&Tensor]) -> candle_core::Result<Tensor> {
    let mut acc = grads
        .first()
        .map(|g| (*g).clone())
        .ok_or_else(|| candle_core::Error::Msg("adam: no gradient".into()))?;
    for g in &grads[1..] {
        acc = (acc + *g)?;
    }
    Ok(acc)
}

/// Elementwise `a + b` into a fresh buffer (the shape of `a`).
struct AddOp;

multiversion! {
    fn add_kernel(a: &[f32], b: &[f32], out: &mut [f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    }
}

impl CustomOp2 for AddOp {
    fn name(&self) -> &'static str {
        "gradient-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        if a.len() != b.len() {
            candle_core::bail!("adam: gradients of different sizes");
        }
        let mut out = vec![0f32; a.len()];
        add_kernel(a, b, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// The sum of squares of `g`, in f64.
pub fn sum_squares(g: &Tensor) -> candle_core::Result<f64> {
    g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

impl AdamUpdate {
    /// Updates the moments `[2, numel]` (first moment in row 0, second in row 1) with the
    /// scaled gradient `g`; returns the sum of squares of the unscaled gradient.
    pub fn moments(&self, moments: &Tensor, g: &Tensor, k: Kernels) -> candle_core::Result<f64> {
        if !k.cpu_kernel(&[moments, g]) {
            return self.moments_composite(moments, g);
        }
        let op = MomentsOp {
            u: *self,
            sumsq: Cell::new(0.0),
        };
        moments.inplace_op2(&g.contiguous()?, &op)?;
        Ok(op.sumsq.get())
    }

    /// Applies the update to the parameter from its moments.
    pub fn param(&self, var: &Var, moments: &Tensor, k: Kernels) -> candle_core::Result<()> {
        if !k.cpu_kernel(&[moments]) {
            return self.param_composite(var, moments);
        }
        var.as_tensor().inplace_op2(moments, &ParamOp(*self))
    }

    /// [`AdamUpdate::moments`] without the sum of squares, so that no value leaves the
    /// gradient's device (the caller knows the norm already).
    pub fn moments_in_place(
        &self,
        moments: &Tensor,
        g: &Tensor,
        k: Kernels,
    ) -> candle_core::Result<()> {
        if k.cpu_kernel(&[moments, g]) {
            self.moments(moments, g, k).map(|_| ())
        } else {
            self.composite_moments_update(moments, g)
        }
    }

    /// [`AdamUpdate::moments`] as tensor operations, for any device.
    pub fn moments_composite(&self, moments: &Tensor, g: &Tensor) -> candle_core::Result<f64> {
        let sq = sum_squares(&g.flatten_all()?)?;
        self.composite_moments_update(moments, g)?;
        Ok(sq)
    }

    /// The moments' update as tensor operations.
    fn composite_moments_update(&self, moments: &Tensor, g: &Tensor) -> candle_core::Result<()> {
        let raw = g.flatten_all()?;
        let grad = (raw * self.scale as f64)?;
        let m = ((moments.get(0)? * self.beta1 as f64)? + (&grad * (1.0 - self.beta1 as f64))?)?;
        let v =
            ((moments.get(1)? * self.beta2 as f64)? + (grad.sqr()? * (1.0 - self.beta2 as f64))?)?;
        moments.slice_set(&Tensor::stack(&[m, v], 0)?, 0, 0)
    }

    /// [`AdamUpdate::param`] as tensor operations, for any device.
    pub fn param_composite(&self, var: &Var, moments: &Tensor) -> candle_core::Result<()> {
        let (m, v) = (moments.get(0)?, moments.get(1)?);
        let denom = ((v.sqrt()? * self.inv_sqrt_bc2 as f64)? + self.eps as f64)?;
        let delta = ((m / denom)? * self.step_size as f64)?.reshape(var.shape())?;
        var.set(&((var.as_tensor() * self.decay as f64)? - delta)?)
    }
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

const LANES: usize = 16;

/// One lane group of the moments update: `raw` is the unscaled gradient.
#[inline(always)]
fn moments_lanes(
    m: &mut [f32],
    v: &mut [f32],
    raw: &[f32; LANES],
    acc: &mut [f32; LANES],
    u: &AdamUpdate,
) {
    let (b1, b2, c1, c2) = (u.beta1, u.beta2, 1.0 - u.beta1, 1.0 - u.beta2);
    for k in 0..LANES {
        acc[k] += raw[k] * raw[k];
        let g = u.scale * raw[k];
        m[k] = b1 * m[k] + c1 * g;
        v[k] = b2 * v[k] + c2 * (g * g);
    }
}

multiversion! {
    /// m, v <- moments of `scale * g`; returns the sum of squares of `g`, accumulated in lanes
    /// in a fixed order.
    fn moments_kernel(m: &mut [f32], v: &mut [f32], g: &[f32], u: AdamUpdate) -> f64 {
        let mut acc = [0f32; LANES];
        let mut raw = [0f32; LANES];
        let n = m.len();
        let full = n / LANES * LANES;
        let mut i = 0;
        while i < full {
            raw.copy_from_slice(&g[i..i + LANES]);
            moments_lanes(&mut m[i..i + LANES], &mut v[i..i + LANES], &raw, &mut acc, &u);
            i += LANES;
        }
        // The tail, padded with zeros (which add nothing to the sum of squares).
        if full < n {
            let rest = n - full;
            raw = [0f32; LANES];
            let (mut mt, mut vt) = ([0f32; LANES], [0f32; LANES]);
            raw[..rest].copy_from_slice(&g[full..]);
            mt[..rest].copy_from_slice(&m[full..]);
            vt[..rest].copy_from_slice(&v[full..]);
            moments_lanes(&mut mt, &mut vt, &raw, &mut acc, &u);
            m[full..].copy_from_slice(&mt[..rest]);
            v[full..].copy_from_slice(&vt[..rest]);
        }
        acc.iter().map(|&a| a as f64).sum()
    }
}

multiversion! {
    fn param_kernel(p: &mut [f32], m: &[f32], v: &[f32], u: AdamUpdate) {
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p = u.decay * *p - u.step_size * m / (v.sqrt() * u.inv_sqrt_bc2 + u.eps);
        }
    }
}

/// The moments pass; records the gradient's sum of squares.
struct MomentsOp {
    u: AdamUpdate,
    sumsq: Cell<f64>,
}

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
        if mv.len() != 2 * g.len() {
            candle_core::bail!("adam: moments and gradient of different sizes");
        }
        let (m, v) = mv.split_at_mut(g.len());
        self.sumsq.set(moments_kernel(m, v, g, self.u));
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
        if mv.len() != 2 * p.len() {
            candle_core::bail!("adam: moments and parameter of different sizes");
        }
        let (m, v) = mv.split_at(p.len());
        param_kernel(p, m, v, self.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use candle_core::Device;

    fn update() -> AdamUpdate {
        AdamUpdate {
            beta1: 0.9,
            beta2: 0.999,
            step_size: 0.01,
            inv_sqrt_bc2: 3.0,
            eps: 1e-8,
            decay: 0.999,
            scale: 0.5,
        }
    }

    /// Each fused pass against its composite twin, on a length that is not a multiple of the
    /// lane count, and the sum of three shards against candle's additions (bit for bit).
    #[test]
    fn fused_passes_match_their_composite_twins() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let n = 37;
        let mut rng = Rng::new(4);
        let t = |rng: &mut Rng| Tensor::from_vec(rng.normal_vec(n), n, &dev);
        let (g0, g1, g2) = (t(&mut rng)?, t(&mut rng)?, t(&mut rng)?);
        let fused = sum_gradients(&[&g0, &g1, &g2], Kernels::Native)?;
        let composite = composite_sum(&[&g0, &g1, &g2])?;
        assert_eq!(fused.to_vec1::<f32>()?, composite.to_vec1::<f32>()?);
        let u = update();
        let start = Tensor::from_vec(rng.normal_vec(2 * n), (2, n), &dev)?.abs()?;
        let (a, b) = (start.copy()?, start.copy()?);
        let sa = u.moments(&a, &fused, Kernels::Native)?;
        let sb = u.moments_composite(&b, &fused)?;
        assert!((sa - sb).abs() < 1e-4 * sb, "{sa} vs {sb}");
        let (a, b) = (a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        for (ra, rb) in a.iter().zip(&b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
            }
        }
        let w0 = rng.normal_vec(n);
        let (wa, wb) = (
            Var::from_vec(w0.clone(), n, &dev)?,
            Var::from_vec(w0, n, &dev)?,
        );
        let mv = Tensor::from_vec(rng.normal_vec(2 * n), (2, n), &dev)?.abs()?;
        u.param(&wa, &mv, Kernels::Native)?;
        u.param_composite(&wb, &mv)?;
        for (x, y) in wa
            .as_tensor()
            .to_vec1::<f32>()?
            .iter()
            .zip(&wb.as_tensor().to_vec1::<f32>()?)
        {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
        }
        Ok(())
    }
}
