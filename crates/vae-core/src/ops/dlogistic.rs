//! The discretized logistic mixture (Salimans et al. 2017, PixelCNN++) over the 256 levels of an
//! 8-bit pixel, fused with its sum over dimensions.
//!
//! A component with mean m and log-scale s (scale σ = e^s) gives level v the mass of a logistic
//! over the bin of v: centre c = v/255, half-width h = 0.5/255, the end bins open to -∞ and +∞.
//! With a = (c + h - m)/σ and b = (c - h - m)/σ:
//! - interior levels: σ(a) - σ(b) = sinh(δ) / (2 cosh(a/2) cosh(b/2)), δ = (a - b)/2 = h/σ, so
//!   ln P = δ + ln(-expm1(-2δ)) - |a|/2 - |b|/2 - ln(1 + e^-|a|) - ln(1 + e^-|b|), where
//!   δ - |a|/2 - |b|/2 = -max(|c - m| - h, 0)/σ (every term finite, no difference of nearly
//!   equal numbers, however far the bin from m);
//!   ∂/∂a = (coth δ - tanh(a/2))/2, ∂/∂b = -(coth δ + tanh(b/2))/2;
//! - level 0: ln σ(a) = -softplus(-a), ∂/∂a = σ(-a);
//! - level 255: ln(1 - σ(b)) = -softplus(b), ∂/∂b = -σ(b).
//!
//! With ∂a/∂m = ∂b/∂m = -1/σ, ∂a/∂s = -a, ∂b/∂s = -b. A mixture of K components adds
//! log-weights ln π = log_softmax(logits) and takes the logsumexp over components; its gradient
//! is r_k - π_k for logit k and r_k times the component's for its mean and log-scale, with
//! responsibilities r_k = π_k P_k / P.
//!
//! Parameters, per pixel and block-major in `[batch, P·dim]` (block p in columns
//! p·dim..(p+1)·dim): K = 1: P = 2, [means, raw log-scales]; K > 1: P = 3K, [K logit blocks,
//! K mean blocks, K raw log-scale blocks]. Means are used as they are (any finite value; the
//! result is finite while |m - c|/σ fits in an f32, that is for |m| up to about 1e34).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::discrete::{self, level, Bound, TOP};
use super::storage::{rows_of, slice};
use crate::fastmath::{self, sum16};
use crate::multiversion;

/// The bound on log-scales (in units of the [0, 1] data range). At the floor, σ = e^-8 ≈ 3.4e-4
/// and δ = h/σ ≈ 5.85, so the most an interior level can hold is σ(δ) - σ(-δ) = tanh(δ/2)
/// ≈ 0.994 (PixelCNN++'s floor of -7 on its [-1, 1] scale is -7.69 here, 0.973), every term
/// of the log-mass stays far inside f32 range (expm1(-2δ) ≈ -1; |a| ≤ 1.5e5 for means within
/// ±50) and gradients, which grow as 1/σ, stay below about 3e3 per unit of mean. A lower
/// floor would add less than 0.006 nats per pixel at the cost of steeper gradients. The
/// ceiling, σ = e^2 ≈ 7.4, is several times the data range: flatter than any image needs, and
/// δ ≥ 2.6e-4 keeps expm1(-2δ) well resolved.
pub const DLOGISTIC_LOG_SCALE_MIN: f32 = -8.0;
/// See [`DLOGISTIC_LOG_SCALE_MIN`].
pub const DLOGISTIC_LOG_SCALE_MAX: f32 = 2.0;

const LOG_SCALE: Bound = Bound::new(DLOGISTIC_LOG_SCALE_MIN, DLOGISTIC_LOG_SCALE_MAX);
/// Half the width of a level's bin in data units.
const H: f32 = 0.5 / TOP;

/// Decoder outputs per data dimension for K mixture components: 2 for K = 1, 3K otherwise.
pub fn discretized_logistic_params_per_dim(mixtures: usize) -> usize {
    if mixtures == 1 {
        2
    } else {
        3 * mixtures
    }
}

fn check_k(mixtures: usize) -> candle_core::Result<usize> {
    if mixtures == 0 {
        candle_core::bail!("discretized-logistic needs at least one mixture component");
    }
    Ok(discretized_logistic_params_per_dim(mixtures))
}

/// Per-example log-probability of 8-bit data under a discretized logistic mixture of
/// `mixtures` components, summed over dimensions, in nats: `params` `[batch, P·dim]` (layout in
/// the module documentation; P from [`discretized_logistic_params_per_dim`]), `x`
/// `[batch, dim]` holding v/255 for levels v in 0..=255 (any other value is read as the nearest
/// level, round(255 · clamp(x, 0, 1))); returns `[batch]`. Differentiable with respect to
/// `params` (`x`, discrete, gets no gradient).
pub fn discretized_logistic_log_prob(
    params: &Tensor,
    x: &Tensor,
    mixtures: usize,
    k: super::Kernels,
) -> candle_core::Result<Tensor> {
    let pp = check_k(mixtures)?;
    discrete::check_shapes("discretized-logistic", params, x, pp)?;
    if k.cpu_kernel(&[params, x]) {
        params
            .contiguous()?
            .apply_op2(&x.contiguous()?, DLogistic { k: mixtures })
    } else {
        composite_log_prob(params, x, mixtures)
    }
}

/// One component at one pixel: ln P and its derivatives with respect to m and s.
#[inline(always)]
fn component(v: f32, m: f32, s: f32) -> (f32, f32, f32) {
    let inv = fastmath::exp(-s);
    // z = c - m from the exact centre v/255 (in f64, then rounded once): adjacent bins then
    // meet where they should, up to the rounding of z itself, and the table sums to 1 to f32
    // precision even at the smallest scale (with c rounded to f32 first, the seams between bins
    // would open or overlap by up to 3e-8, which at σ = e^-8 is 2e-5 of probability).
    let z = (f64::from(v) * (1.0 / f64::from(TOP)) - f64::from(m)) as f32;
    let a = (z + H) * inv;
    let b = (z - H) * inv;
    let delta = H * inv;
    // expm1(-2δ): its Taylor series to t^7 where |t| < 0.3 (relative error below 1e-8),
    // e^t - 1 beyond (relative error below 3e-7).
    let t = -2.0 * delta;
    let u = fastmath::exp(t);
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
        p = p * t + c;
    }
    let em1 = if t > -0.3 { p * t } else { u - 1.0 };
    let (ea, eb) = (fastmath::exp(-a.abs()), fastmath::exp(-b.abs()));
    // σ(|a|) = 1/(1 + e^-|a|), and from it σ(±a), tanh(a/2); the same for b.
    let (ra, rb) = (1.0 / (1.0 + ea), 1.0 / (1.0 + eb));
    let (lo, hi) = (v == 0.0, v == TOP);
    // ln P = ln(arg) - off with one logarithm:
    // interior: ln(-expm1(-2δ)) - ln(1 + e^-|a|) - ln(1 + e^-|b|) and, since
    //   δ - |a|/2 - |b|/2 = -max(|z| - h, 0)/σ, off = max(|z| - h, 0)/σ (no cancellation);
    // level 0: ln σ(a) = -max(-a, 0) - ln(1 + e^-|a|); level 255: -max(b, 0) - ln(1 + e^-|b|).
    let (arg, off) = if lo {
        (ra, (-a).max(0.0))
    } else if hi {
        (rb, b.max(0.0))
    } else {
        (-em1 * ra * rb, (z.abs() - H).max(0.0) * inv)
    };
    let l = fastmath::ln(arg) - off;
    let tha = (1.0 - ea) * ra;
    let tha = if a < 0.0 { -tha } else { tha };
    let thb = (1.0 - eb) * rb;
    let thb = if b < 0.0 { -thb } else { thb };
    let coth = -(1.0 + u) / em1;
    let sig_neg_a = if a >= 0.0 { ea * ra } else { ra };
    let sig_b = if b >= 0.0 { rb } else { eb * rb };
    let dm = if lo {
        -sig_neg_a * inv
    } else if hi {
        sig_b * inv
    } else {
        0.5 * (tha + thb) * inv
    };
    let ds = if lo {
        -a * sig_neg_a
    } else if hi {
        b * sig_b
    } else {
        0.5 * (a * tha + b * thb) - delta * coth
    };
    (l, dm, ds)
}

/// Scratch space for one row.
struct Rows {
    k: usize,
    d: usize,
    /// ln π per component (K > 1), then ln π + ln P.
    comp: Vec<f32>,
    /// The log-normaliser of the logits per pixel (K > 1).
    lse: Vec<f32>,
    /// The per-pixel log-probability of the row.
    lp: Vec<f32>,
    mx: Vec<f32>,
    se: Vec<f32>,
}

impl Rows {
    fn new(k: usize, d: usize) -> Self {
        Rows {
            k,
            d,
            comp: vec![0f32; k * d],
            lse: vec![0f32; d],
            lp: vec![0f32; d],
            mx: vec![0f32; d],
            se: vec![0f32; d],
        }
    }

    /// ln π of one row (K > 1) into `comp`, their log-normaliser into `lse`.
    fn log_weights(&mut self, logits: &[f32]) {
        let (k, d) = (self.k, self.d);
        lse_blocks(logits, k, d, &mut self.mx, &mut self.se, &mut self.lse);
        sub_blocks(logits, &self.lse, &mut self.comp);
    }

    /// lp = logsumexp over components of `comp`.
    fn mix(&mut self) {
        let (k, d) = (self.k, self.d);
        lse_blocks(&self.comp, k, d, &mut self.mx, &mut self.se, &mut self.lp);
    }
}

multiversion! {
    /// Per pixel i, ln Σ_j e^{l[j·d + i]} over the k blocks of `l`, into `out`.
    fn lse_blocks(l: &[f32], k: usize, d: usize, mx: &mut [f32], se: &mut [f32], out: &mut [f32]) {
        mx.copy_from_slice(&l[..d]);
        for j in 1..k {
            for (m, &v) in mx.iter_mut().zip(&l[j * d..(j + 1) * d]) {
                *m = m.max(v);
            }
        }
        se.fill(0.0);
        for j in 0..k {
            for ((s, &v), &m) in se.iter_mut().zip(&l[j * d..(j + 1) * d]).zip(mx.iter()) {
                *s += fastmath::exp(v - m);
            }
        }
        for ((o, &s), &m) in out.iter_mut().zip(se.iter()).zip(mx.iter()) {
            *o = m + fastmath::ln(s);
        }
    }
}

multiversion! {
    /// out[j·d + i] = l[j·d + i] - c[i] for every block j.
    fn sub_blocks(l: &[f32], c: &[f32], out: &mut [f32]) {
        for (o, l) in out.chunks_exact_mut(c.len()).zip(l.chunks_exact(c.len())) {
            for ((o, &l), &c) in o.iter_mut().zip(l).zip(c) {
                *o = l - c;
            }
        }
    }
}

multiversion! {
    fn component_rows(x: &[f32], m: &[f32], raw_s: &[f32], add: &mut [f32]) {
        for (((o, &x), &m), &r) in add.iter_mut().zip(x).zip(m).zip(raw_s) {
            let (s, _) = LOG_SCALE.apply(r);
            *o += component(level(x), m, s).0;
        }
    }
}

multiversion! {
    /// ∂ ln P/∂m and ∂ ln P/∂raw-s into `gm`, `gs`; with `comp` set, also ln P added to it.
    fn component_grads(x: &[f32], m: &[f32], raw_s: &[f32], comp: &mut [f32], gm: &mut [f32], gs: &mut [f32]) {
        for i in 0..x.len().min(m.len()).min(raw_s.len()).min(comp.len()).min(gm.len()).min(gs.len()) {
            let (s, ds_draw) = LOG_SCALE.apply(raw_s[i]);
            let (l, dm, ds) = component(level(x[i]), m[i], s);
            comp[i] += l;
            gm[i] = dm;
            gs[i] = ds * ds_draw;
        }
    }
}

fn forward(p: &[f32], x: &[f32], k: usize, d: usize, out: &mut [f32]) {
    let pp = discretized_logistic_params_per_dim(k);
    let mut rows = Rows::new(k, d);
    for (b, o) in out.iter_mut().enumerate() {
        let row = &p[b * pp * d..(b + 1) * pp * d];
        let xr = &x[b * d..(b + 1) * d];
        if k == 1 {
            rows.lp.fill(0.0);
            component_rows(xr, &row[..d], &row[d..2 * d], &mut rows.lp);
        } else {
            rows.log_weights(&row[..k * d]);
            for j in 0..k {
                let m = &row[(k + j) * d..(k + j + 1) * d];
                let s = &row[(2 * k + j) * d..(2 * k + j + 1) * d];
                component_rows(xr, m, s, &mut rows.comp[j * d..(j + 1) * d]);
            }
            rows.mix();
        }
        *o = sum16(d, |i| rows.lp[i]);
    }
}

multiversion! {
    /// With `gl` holding π: scales the component gradients by g·r and sets the logit
    /// gradients to g·(r - π).
    fn mixture_grads(comp: &[f32], lp: &[f32], g: f32, gl: &mut [f32], gm: &mut [f32], gs: &mut [f32]) {
        for i in 0..comp.len().min(lp.len()).min(gl.len()).min(gm.len()).min(gs.len()) {
            let r = fastmath::exp(comp[i] - lp[i]);
            gl[i] = g * (r - gl[i]);
            gm[i] *= g * r;
            gs[i] *= g * r;
        }
    }
}

multiversion! {
    fn exp_into(x: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = fastmath::exp(x);
        }
    }
}

fn backward(p: &[f32], x: &[f32], g: &[f32], k: usize, d: usize, out: &mut [f32]) {
    let pp = discretized_logistic_params_per_dim(k);
    let mut rows = Rows::new(k, d);
    for (b, &gb) in g.iter().enumerate() {
        let row = &p[b * pp * d..(b + 1) * pp * d];
        let xr = &x[b * d..(b + 1) * d];
        let o = &mut out[b * pp * d..(b + 1) * pp * d];
        if k == 1 {
            let (gm, gs) = o.split_at_mut(d);
            rows.lp.fill(0.0);
            component_grads(xr, &row[..d], &row[d..], &mut rows.lp, gm, gs);
            for v in o.iter_mut() {
                *v *= gb;
            }
            continue;
        }
        rows.log_weights(&row[..k * d]);
        let (gl, rest) = o.split_at_mut(k * d);
        let (gm, gs) = rest.split_at_mut(k * d);
        exp_into(&rows.comp, gl);
        for j in 0..k {
            let r = j * d..(j + 1) * d;
            let m = &row[(k + j) * d..(k + j + 1) * d];
            let s = &row[(2 * k + j) * d..(2 * k + j + 1) * d];
            component_grads(
                xr,
                m,
                s,
                &mut rows.comp[r.clone()],
                &mut gm[r.clone()],
                &mut gs[r],
            );
        }
        rows.mix();
        for j in 0..k {
            let r = j * d..(j + 1) * d;
            mixture_grads(
                &rows.comp[r.clone()],
                &rows.lp,
                gb,
                &mut gl[r.clone()],
                &mut gm[r.clone()],
                &mut gs[r],
            );
        }
    }
}

struct DLogistic {
    k: usize,
}

impl CustomOp2 for DLogistic {
    fn name(&self) -> &'static str {
        "discretized-logistic-log-prob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, d) = rows_of(l2)?;
        if rows_of(l1)? != (b, discretized_logistic_params_per_dim(self.k) * d) {
            candle_core::bail!(
                "{}: shapes {:?} and {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let mut out = vec![0f32; b];
        forward(slice(s1, l1)?, slice(s2, l2)?, self.k, d, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(b)))
    }

    fn bwd(
        &self,
        params: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // x holds discrete levels: it gets no gradient.
        let g = grad_res.contiguous()?;
        let grad = params.apply_op3_no_bwd(x, &g, &DLogisticGrad { k: self.k })?;
        Ok((Some(grad), None))
    }
}

struct DLogisticGrad {
    k: usize,
}

impl CustomOp3 for DLogisticGrad {
    fn name(&self) -> &'static str {
        "discretized-logistic-log-prob-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, pd) = rows_of(l1)?;
        let (_, d) = rows_of(l2)?;
        let pp = discretized_logistic_params_per_dim(self.k);
        if rows_of(l2)? != (b, pd / pp) || pd % pp != 0 || l3.shape().elem_count() != b {
            candle_core::bail!(
                "{}: shapes {:?}, {:?}, {:?}",
                self.name(),
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let mut out = vec![0f32; b * pd];
        backward(
            slice(s1, l1)?,
            slice(s2, l2)?,
            slice(s3, l3)?,
            self.k,
            d,
            &mut out,
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

mod host;
#[cfg(test)]
mod tests;

pub use host::{
    composite_log_prob, discretized_logistic_mean, discretized_logistic_pixel_log_pmf,
    discretized_logistic_pixel_pmf, discretized_logistic_sample,
};
