//! A spatial latent group's draw and KL in one operation: from the raw outputs of its prior and
//! posterior blocks (channels-last maps whose first `2z` channels are means and raw
//! log-scales, log σ = L tanh(raw / L)) and the noise ε, the sample z = μq + σq ε and the KL
//! divergence KL(q ‖ p) summed per example:
//!
//! ```text
//! KL = Σ 0.5 (e^{2d} + ((μq − μp)/σp)² − 1) − d,   d = log σq − log σp.
//! ```
//!
//! As candle operations this is two dozen graph nodes per group, each with its own buffers in
//! the backward pass; here it is one forward and one backward pass over the maps. Gradients,
//! with m = (μq − μp)/σp and the bound's derivative 1 − (log σ / L)²:
//! ∂z/∂μq = 1, ∂z/∂log σq = σq ε; ∂KL/∂μq = m/σp = −∂KL/∂μp; ∂KL/∂log σq = e^{2d} − 1;
//! ∂KL/∂log σp = 1 − e^{2d} − m². The composite twin is `Gauss::sample` and `Gauss::kl` in the
//! hierarchical model, which the tests compare with this.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::storage::slice;
use crate::fastmath;
use crate::multiversion;

/// `(z, kl)` of a group: `prior` `[n, h, w, ≥ 2z]`, `post` `[n, h, w, ≥ 2z]` (raw outputs,
/// means then raw log-scales in their first `2z` channels), `eps` `[n, h, w, z]`; returns z
/// `[n, h, w, z]` and the KL `[n]`. Log-scales are bounded to ±`bound` as `bound · tanh(raw /
/// bound)`. Only on the CPU in f32 ([`super::Kernels::fused`]); the caller keeps the composite
/// path for other cases.
pub fn gaussian_sample_kl(
    prior: &Tensor,
    post: &Tensor,
    eps: &Tensor,
    bound: f32,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (n, h, w, z) = eps.dims4()?;
    let op = SampleKl { z, n, bound };
    let packed = prior
        .contiguous()?
        .apply_op3(&post.contiguous()?, &eps.contiguous()?, op)?;
    let nz = n * h * w * z;
    Ok((
        packed.narrow(0, 0, nz)?.reshape((n, h, w, z))?,
        packed.narrow(0, nz, n)?,
    ))
}

struct SampleKl {
    z: usize,
    n: usize,
    bound: f32,
}

/// Channels of a channels-last map, after checking its pixel count.
fn channels(l: &Layout, pixels: usize, z: usize) -> candle_core::Result<usize> {
    let dims = l.shape().dims();
    let c = dims.last().copied().unwrap_or(0);
    if dims.len() != 4 || c < 2 * z || l.shape().elem_count() != pixels * c {
        candle_core::bail!("gaussian group: a map {dims:?} for {pixels} pixels of {z} channels");
    }
    Ok(c)
}

/// The first `2z` channels of a channels-last map `[pixels, c]` as two contiguous arrays
/// `[pixels, z]`: means and raw log-scales.
fn split_channels(m: &[f32], c: usize, z: usize) -> (Vec<f32>, Vec<f32>) {
    let pixels = m.len() / c;
    let (mut mu, mut raw) = (vec![0f32; pixels * z], vec![0f32; pixels * z]);
    for ((px, mu), raw) in m
        .chunks_exact(c)
        .zip(mu.chunks_exact_mut(z))
        .zip(raw.chunks_exact_mut(z))
    {
        mu.copy_from_slice(&px[..z]);
        raw.copy_from_slice(&px[z..2 * z]);
    }
    (mu, raw)
}

/// The inverse of [`split_channels`] into a zeroed map of `c` channels.
fn join_channels(mu: &[f32], raw: &[f32], c: usize, z: usize, out: &mut [f32]) {
    for ((px, mu), raw) in out
        .chunks_exact_mut(c)
        .zip(mu.chunks_exact(z))
        .zip(raw.chunks_exact(z))
    {
        px[..z].copy_from_slice(mu);
        px[z..2 * z].copy_from_slice(raw);
    }
}

multiversion! {
    /// Elementwise over `[pixels · z]`: the draw into `zs` and the KL terms into `term`.
    #[allow(clippy::too_many_arguments)]
    fn sample_kl_kernel(
        mp: &[f32], rp: &[f32], mq: &[f32], rq: &[f32], e: &[f32], bound: f32,
        zs: &mut [f32], term: &mut [f32],
    ) {
        let inv = 1.0 / bound;
        for i in 0..e.len() {
            let lq = bound * fastmath::tanh(rq[i] * inv);
            let lp = bound * fastmath::tanh(rp[i] * inv);
            zs[i] = mq[i] + fastmath::exp(lq) * e[i];
            let d = lq - lp;
            let m = (mq[i] - mp[i]) * fastmath::exp(-lp);
            term[i] = 0.5 * (fastmath::exp(2.0 * d) + m * m - 1.0) - d;
        }
    }
}

multiversion! {
    /// Elementwise over `[pixels · z]`: the gradients of the means and raw log-scales from those
    /// of the draw (`dz`) and of each value's KL term (`dk`, the example's KL gradient).
    #[allow(clippy::too_many_arguments)]
    fn sample_kl_grad(
        mp: &[f32], rp: &[f32], mq: &[f32], rq: &[f32], e: &[f32], bound: f32,
        dz: &[f32], dk: &[f32], gmp: &mut [f32], grp: &mut [f32], gmq: &mut [f32], grq: &mut [f32],
    ) {
        let inv = 1.0 / bound;
        for i in 0..e.len() {
            let tq = fastmath::tanh(rq[i] * inv);
            let tp = fastmath::tanh(rp[i] * inv);
            let (lq, lp) = (bound * tq, bound * tp);
            let inv_p = fastmath::exp(-lp);
            let m = (mq[i] - mp[i]) * inv_p;
            let e2d = fastmath::exp(2.0 * (lq - lp));
            let dmu = dk[i] * m * inv_p;
            gmq[i] = dz[i] + dmu;
            grq[i] = (dz[i] * fastmath::exp(lq) * e[i] + dk[i] * (e2d - 1.0)) * (1.0 - tq * tq);
            gmp[i] = -dmu;
            grp[i] = dk[i] * (1.0 - e2d - m * m) * (1.0 - tp * tp);
        }
    }
}

impl CustomOp3 for SampleKl {
    fn name(&self) -> &'static str {
        "gaussian-sample-kl"
    }

    fn cpu_fwd(
        &self,
        ps: &CpuStorage,
        pl: &Layout,
        qs: &CpuStorage,
        ql: &Layout,
        es: &CpuStorage,
        el: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, q, e) = (slice(ps, pl)?, slice(qs, ql)?, slice(es, el)?);
        let pixels = e.len() / self.z.max(1);
        let (cp, cq) = (channels(pl, pixels, self.z)?, channels(ql, pixels, self.z)?);
        if self.n == 0 || !pixels.is_multiple_of(self.n) {
            candle_core::bail!("gaussian group: {pixels} pixels for {} examples", self.n);
        }
        let (mp, rp) = split_channels(p, cp, self.z);
        let (mq, rq) = split_channels(q, cq, self.z);
        let mut out = vec![0f32; e.len() + self.n];
        let (zs, kl) = out.split_at_mut(e.len());
        let mut term = vec![0f32; e.len()];
        sample_kl_kernel(&mp, &rp, &mq, &rq, e, self.bound, zs, &mut term);
        for (k, t) in kl.iter_mut().zip(term.chunks_exact(e.len() / self.n)) {
            *k = t.iter().sum();
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    fn bwd(
        &self,
        p: &Tensor,
        q: &Tensor,
        e: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = SampleKlGrad {
            z: self.z,
            n: self.n,
            bound: self.bound,
            grad: grad.contiguous()?,
        };
        let packed = p.apply_op3_no_bwd(q, e, &op)?;
        let np = p.elem_count();
        let gp = packed.narrow(0, 0, np)?.reshape(p.shape())?;
        let gq = packed.narrow(0, np, q.elem_count())?.reshape(q.shape())?;
        Ok((Some(gp), Some(gq), None))
    }
}

/// `[d prior | d post]` of [`SampleKl`] from the gradient of its packed output.
struct SampleKlGrad {
    z: usize,
    n: usize,
    bound: f32,
    grad: Tensor,
}

impl CustomOp3 for SampleKlGrad {
    fn name(&self) -> &'static str {
        "gaussian-sample-kl-backward"
    }

    fn cpu_fwd(
        &self,
        ps: &CpuStorage,
        pl: &Layout,
        qs: &CpuStorage,
        ql: &Layout,
        es: &CpuStorage,
        el: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, q, e) = (slice(ps, pl)?, slice(qs, ql)?, slice(es, el)?);
        let pixels = e.len() / self.z.max(1);
        let (cp, cq) = (channels(pl, pixels, self.z)?, channels(ql, pixels, self.z)?);
        let (gs, gl) = self.grad.storage_and_layout();
        let g = match &*gs {
            candle_core::Storage::Cpu(s) => slice(s, gl)?,
            _ => candle_core::bail!("gaussian group: the gradient is not on the CPU"),
        };
        if g.len() != e.len() + self.n {
            candle_core::bail!("gaussian group: a gradient of {} values", g.len());
        }
        let (dz, dkl) = g.split_at(e.len());
        let per = e.len() / self.n;
        let dk: Vec<f32> = dkl
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d, per))
            .collect();
        let (mp, rp) = split_channels(p, cp, self.z);
        let (mq, rq) = split_channels(q, cq, self.z);
        let mut grads = vec![0f32; 4 * e.len()];
        let (gp, gq) = grads.split_at_mut(2 * e.len());
        let (gmp, grp) = gp.split_at_mut(e.len());
        let (gmq, grq) = gq.split_at_mut(e.len());
        sample_kl_grad(
            &mp, &rp, &mq, &rq, e, self.bound, dz, &dk, gmp, grp, gmq, grq,
        );
        let mut out = vec![0f32; p.len() + q.len()];
        let (op, oq) = out.split_at_mut(p.len());
        join_channels(gmp, grp, cp, self.z, op);
        join_channels(gmq, grq, cq, self.z, oq);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
