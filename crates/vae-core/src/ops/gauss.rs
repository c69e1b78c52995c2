//! A spatial latent group's draw and KL in one operation: from the raw outputs of its prior and
//! posterior blocks (channels-last maps whose first `2z` channels are means and raw
//! log-scales, log σ = L tanh(raw / L)) and the noise ε, the sample z = μq + σq ε and the KL
//! divergence KL(q ‖ p) summed per example:
//!
//!     KL = Σ 0.5 (e^{2d} + ((μq − μp)/σp)² − 1) − d,   d = log σq − log σp.
//!
//! As candle operations this is two dozen graph nodes per group, each with its own buffers in
//! the backward pass; here it is one forward and one backward pass over the maps. Gradients,
//! with m = (μq − μp)/σp and the bound's derivative 1 − (log σ / L)²:
//! ∂z/∂μq = 1, ∂z/∂log σq = σq ε; ∂KL/∂μq = m/σp = −∂KL/∂μp; ∂KL/∂log σq = e^{2d} − 1;
//! ∂KL/∂log σp = 1 − e^{2d} − m². The composite twin is `Gauss::sample` and `Gauss::kl` in the
//! hierarchical model, which the tests compare with this.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::bernoulli::slice;
use crate::fastmath;
use crate::multiversion;

/// `(z, kl)` of a group: `prior` `[n, h, w, ≥ 2z]`, `post` `[n, h, w, ≥ 2z]` (raw outputs,
/// means then raw log-scales in their first `2z` channels), `eps` `[n, h, w, z]`; returns z
/// `[n, h, w, z]` and the KL `[n]`. Log-scales are bounded to ±`bound` as `bound · tanh(raw /
/// bound)`. Only on the CPU in f32 (see [`super::use_fused`]); the caller keeps the composite
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

#[inline(always)]
fn bounded(raw: f32, bound: f32) -> (f32, f32) {
    let t = fastmath::tanh(raw / bound);
    (bound * t, 1.0 - t * t)
}

multiversion! {
    /// z and the KL per example; `kl` holds `n` sums over `pixels / n` pixels each.
    fn sample_kl_kernel(
        p: &[f32], cp: usize, q: &[f32], cq: usize, e: &[f32], z: usize, bound: f32,
        zs: &mut [f32], kl: &mut [f32],
    ) {
        let per = e.len() / z / kl.len().max(1);
        let mut term = vec![0f32; z];
        for (ex, k) in kl.iter_mut().enumerate() {
            let mut acc = 0f32;
            for px in ex * per..(ex + 1) * per {
                let (pp, qq) = (&p[px * cp..][..2 * z], &q[px * cq..][..2 * z]);
                let (ee, zz) = (&e[px * z..][..z], &mut zs[px * z..][..z]);
                for j in 0..z {
                    let (lq, _) = bounded(qq[z + j], bound);
                    let (lp, _) = bounded(pp[z + j], bound);
                    zz[j] = qq[j] + fastmath::exp(lq) * ee[j];
                    let d = lq - lp;
                    let m = (qq[j] - pp[j]) * fastmath::exp(-lp);
                    term[j] = 0.5 * (fastmath::exp(2.0 * d) + m * m - 1.0) - d;
                }
                acc += term.iter().sum::<f32>();
            }
            *k = acc;
        }
    }
}

multiversion! {
    /// The gradients of the prior's and the posterior's raw outputs (their first `2z`
    /// channels; the others are left as they are: zero).
    #[allow(clippy::too_many_arguments)]
    fn sample_kl_grad(
        p: &[f32], cp: usize, q: &[f32], cq: usize, e: &[f32], z: usize, bound: f32,
        dz: &[f32], dkl: &[f32], gp: &mut [f32], gq: &mut [f32],
    ) {
        let per = e.len() / z / dkl.len().max(1);
        for (ex, &dk) in dkl.iter().enumerate() {
            for px in ex * per..(ex + 1) * per {
                let (pp, qq) = (&p[px * cp..][..2 * z], &q[px * cq..][..2 * z]);
                let (ee, dd) = (&e[px * z..][..z], &dz[px * z..][..z]);
                let (gpp, gqq) = (&mut gp[px * cp..][..2 * z], &mut gq[px * cq..][..2 * z]);
                for j in 0..z {
                    let (lq, sq) = bounded(qq[z + j], bound);
                    let (lp, sp) = bounded(pp[z + j], bound);
                    let inv_p = fastmath::exp(-lp);
                    let m = (qq[j] - pp[j]) * inv_p;
                    let e2d = fastmath::exp(2.0 * (lq - lp));
                    let dmu = dk * m * inv_p;
                    gqq[j] = dd[j] + dmu;
                    gqq[z + j] = (dd[j] * fastmath::exp(lq) * ee[j] + dk * (e2d - 1.0)) * sq;
                    gpp[j] = -dmu;
                    gpp[z + j] = dk * (1.0 - e2d - m * m) * sp;
                }
            }
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
        let mut out = vec![0f32; e.len() + self.n];
        let (zs, kl) = out.split_at_mut(e.len());
        sample_kl_kernel(p, cp, q, cq, e, self.z, self.bound, zs, kl);
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
        let mut out = vec![0f32; p.len() + q.len()];
        let (gp, gq) = out.split_at_mut(p.len());
        sample_kl_grad(p, cp, q, cq, e, self.z, self.bound, dz, dkl, gp, gq);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
