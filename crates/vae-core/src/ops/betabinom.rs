//! The beta-binomial over the 256 levels of an 8-bit pixel (n = 255 trials), fused with its sum
//! over dimensions.
//!
//! P(k) = C(n, k) B(k + α, n - k + β) / B(α, β), so with the rising-factorial differences
//! ln_poch(x, m) = ln Γ(x+m) - ln Γ(x) of [`crate::special`]:
//! ln P(k) = ln C(n, k) + ln_poch(α, k) + ln_poch(β, n - k) - ln_poch(α + β, n),
//! ∂/∂α = ψ(k + α) - ψ(α) - [ψ(n + α + β) - ψ(α + β)], ∂/∂β likewise with n - k and β.
//! Both are computed in f64 from the cancellation-free differences: ln Γ of arguments near 1e5
//! is about 1e6, so differences of separate ln Γ values would be off by about 0.1 nats in f32
//! and 1e-10 in f64.
//!
//! Parameters: `[batch, 2·dim]` block-major, [raw α, raw β] (block p in columns
//! p·dim..(p+1)·dim), each mapped to ln α = bound(raw) in ([`BETA_BINOMIAL_LOG_MIN`],
//! [`BETA_BINOMIAL_LOG_MAX`]) (close to the identity for raw outputs of moderate size; raw
//! outputs of 0 give α = β ≈ 1, nearly the uniform distribution).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::discrete::{self, level, Bound, LEVELS, TOP};
use super::storage::{rows_of, slice};
use crate::fastmath;
use crate::multiversion;
use crate::special::{self, digamma_diff, ln_poch_parts};

/// The bound on ln α and ln β. The floor, α ≥ e^-7 ≈ 9.1e-4, lets a pixel put all but about
/// α (ψ(n + β) - ψ(β)) nats on an end level (5.6e-3 nats at β = 1, less for larger β) while
/// ψ(α) ≈ -1/α ≈ -1100 keeps the gradient moderate. The ceiling, α ≤ e^11 ≈ 6.0e4, makes
/// α + β up to 1.2e5, where the variance n p (1-p) (α+β+n)/(α+β+1) is within 0.3 % of the
/// binomial limit (the narrowest a beta-binomial can be): larger values change nothing. The
/// f64 differences of [`crate::special`] are accurate over the whole range.
pub const BETA_BINOMIAL_LOG_MIN: f32 = -7.0;
/// See [`BETA_BINOMIAL_LOG_MIN`].
pub const BETA_BINOMIAL_LOG_MAX: f32 = 11.0;

const LOG_AB: Bound = Bound::new(BETA_BINOMIAL_LOG_MIN, BETA_BINOMIAL_LOG_MAX);
/// The number of trials.
const N: f64 = TOP as f64;

/// ln C(255, k) for k = 0..=255, summed as ln((256 - j)/j) over j ≤ k in f64.
fn ln_choose() -> &'static [f64; LEVELS] {
    static TABLE: OnceLock<[f64; LEVELS]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0f64; LEVELS];
        for k in 1..LEVELS {
            t[k] = t[k - 1] + ((LEVELS - k) as f64).ln() - (k as f64).ln();
        }
        t
    })
}

/// Per-example log-probability of 8-bit data under independent beta-binomials, summed over
/// dimensions, in nats: `params` `[batch, 2·dim]` ([raw α, raw β] blocks), `x` `[batch, dim]`
/// holding v/255 for levels v in 0..=255 (any other value is read as the nearest level,
/// round(255 · clamp(x, 0, 1))); returns `[batch]`. Differentiable with respect to `params`
/// (`x`, discrete, gets no gradient).
pub fn beta_binomial_log_prob(
    params: &Tensor,
    x: &Tensor,
    k: super::Kernels,
) -> candle_core::Result<Tensor> {
    discrete::check_shapes("beta-binomial", params, x, 2)?;
    if k.cpu_kernel(&[params, x]) {
        params
            .contiguous()?
            .apply_op2(&x.contiguous()?, BetaBinomial)
    } else {
        composite_log_prob(params, x)
    }
}

/// α (or β) and its derivative with respect to the raw output, from the bound in f32.
#[inline(always)]
fn positive(raw: f32) -> (f64, f64) {
    let (l, dl) = LOG_AB.apply(raw);
    let a = fastmath::exp(l);
    (f64::from(a), f64::from(a * dl))
}

/// ln P(k) - ln C(n, k) = ln_poch(α, k) + ln_poch(β, n - k) - ln_poch(α + β, n), with the
/// three shift ratios in one logarithm.
#[inline(always)]
fn log_ratio(a: f64, b: f64, k: f64) -> f64 {
    let (s1, p1, q1) = ln_poch_parts(a, k);
    let (s2, p2, q2) = ln_poch_parts(b, N - k);
    let (s3, p3, q3) = ln_poch_parts(a + b, N);
    s1 + s2 - s3 + special::ln((p1 * p2 * q3) / (q1 * q2 * p3))
}

multiversion! {
    fn terms(ra: &[f32], rb: &[f32], x: &[f32], out: &mut [f64]) {
        for (((o, &ra), &rb), &x) in out.iter_mut().zip(ra).zip(rb).zip(x) {
            let (a, _) = positive(ra);
            let (b, _) = positive(rb);
            *o = log_ratio(a, b, f64::from(level(x)));
        }
    }
}

multiversion! {
    fn grads(ra: &[f32], rb: &[f32], x: &[f32], g: f64, ga: &mut [f32], gb: &mut [f32]) {
        for i in 0..ra.len().min(rb.len()).min(x.len()).min(ga.len()).min(gb.len()) {
            let (a, da) = positive(ra[i]);
            let (b, db) = positive(rb[i]);
            let k = f64::from(level(x[i]));
            let t = digamma_diff(a + b, N);
            ga[i] = (g * da * (digamma_diff(a, k) - t)) as f32;
            gb[i] = (g * db * (digamma_diff(b, N - k) - t)) as f32;
        }
    }
}

fn forward(p: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    let table = ln_choose();
    let mut t = vec![0f64; d];
    for (bi, o) in out.iter_mut().enumerate() {
        let row = &p[bi * 2 * d..(bi + 1) * 2 * d];
        let xr = &x[bi * d..(bi + 1) * d];
        terms(&row[..d], &row[d..], xr, &mut t);
        let choose: f64 = xr
            .iter()
            .map(|&x| table[(level(x) as usize).min(LEVELS - 1)])
            .sum();
        *o = (t.iter().sum::<f64>() + choose) as f32;
    }
}

struct BetaBinomial;

impl CustomOp2 for BetaBinomial {
    fn name(&self) -> &'static str {
        "beta-binomial-log-prob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, d) = rows_of(l2)?;
        if rows_of(l1)? != (b, 2 * d) {
            candle_core::bail!(
                "{}: shapes {:?} and {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let mut out = vec![0f32; b];
        forward(slice(s1, l1)?, slice(s2, l2)?, d, &mut out);
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
        Ok((
            Some(params.apply_op3_no_bwd(x, &g, &BetaBinomialGrad)?),
            None,
        ))
    }
}

struct BetaBinomialGrad;

impl CustomOp3 for BetaBinomialGrad {
    fn name(&self) -> &'static str {
        "beta-binomial-log-prob-grad"
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
        if rows_of(l2)? != (b, pd / 2) || pd % 2 != 0 || l3.shape().elem_count() != b {
            candle_core::bail!(
                "{}: shapes {:?}, {:?}, {:?}",
                self.name(),
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (p, x, g) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let mut out = vec![0f32; b * pd];
        for (bi, (o, &gb)) in out.chunks_exact_mut(2 * d).zip(g).enumerate() {
            let row = &p[bi * 2 * d..(bi + 1) * 2 * d];
            let (ga, gbeta) = o.split_at_mut(d);
            let xr = &x[bi * d..(bi + 1) * d];
            grads(&row[..d], &row[d..], xr, f64::from(gb), ga, gbeta);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

mod host;
#[cfg(test)]
mod tests;

pub use host::{
    beta_binomial_mean, beta_binomial_pixel_log_pmf, beta_binomial_pixel_pmf, beta_binomial_sample,
    composite_log_prob,
};
