//! The discretized logistic mixture as plain candle operations (any device), and its
//! host-side probability tables, means and draws.

use candle_core::{Tensor, D};

use super::{check_k, LOG_SCALE};
use crate::fastmath;
use crate::multiversion;
use crate::ops::composite::softplus;
use crate::ops::discrete::{self, level_tensor, LEVELS, TOP};

/// [`super::discretized_logistic_log_prob`] as candle operations, for any device and float
/// type; the fused kernel's reference. The same formulas, with ln(1 - e^-t) from its series
/// ln t - t/2 + t²/24 - t⁴/2880 below t = 0.25 (where 1 - e^-t would lose digits).
pub fn composite_log_prob(
    params: &Tensor,
    x: &Tensor,
    mixtures: usize,
) -> candle_core::Result<Tensor> {
    let pp = check_k(mixtures)?;
    let (b, d) = discrete::check_shapes("discretized-logistic", params, x, pp)?;
    let k = mixtures;
    let v = level_tensor(x)?;
    let p3 = params.reshape((b, pp, d))?;
    let (logits, m, raw) = if k == 1 {
        (None, p3.narrow(1, 0, 1)?, p3.narrow(1, 1, 1)?)
    } else {
        (
            Some(p3.narrow(1, 0, k)?),
            p3.narrow(1, k, k)?,
            p3.narrow(1, 2 * k, k)?,
        )
    };
    let inv = LOG_SCALE.apply_tensor(&raw)?.neg()?.exp()?;
    let c = (&v / f64::from(TOP))?.unsqueeze(1)?;
    let centred = c.broadcast_sub(&m)?;
    // Rounded to the tensors' type by the operations below.
    let h = 0.5 / f64::from(TOP);
    let a = ((&centred + h)? * &inv)?;
    let bb = ((&centred - h)? * &inv)?;
    let delta = (&inv * h)?;
    let (aa, ab) = (a.abs()?, bb.abs()?);
    let ln1p_exp_neg = |t: &Tensor| (t.neg()?.exp()? + 1.0)?.log();
    // δ - |a|/2 - |b|/2 = -max(|c - m| - h, 0)/σ.
    let outside = ((centred.abs()? - h)?.relu()?.broadcast_mul(&inv))?;
    let interior = (((ln_one_minus_exp_neg(&(&delta * 2.0)?)? - outside)? - ln1p_exp_neg(&aa)?)?
        - ln1p_exp_neg(&ab)?)?;
    let left = softplus(&a.neg()?)?.neg()?;
    let right = softplus(&bb)?.neg()?;
    let shape = a.shape().clone();
    let lo = v.eq(0f32)?.unsqueeze(1)?.broadcast_as(&shape)?;
    let hi = v.eq(TOP)?.unsqueeze(1)?.broadcast_as(&shape)?;
    let l = lo.where_cond(&left, &hi.where_cond(&right, &interior)?)?;
    let lp = match logits {
        None => l.squeeze(1)?,
        Some(logits) => (candle_nn::ops::log_softmax(&logits, 1)? + l)?.log_sum_exp(1)?,
    };
    lp.sum(D::Minus1)
}

/// ln(1 - e^-t) for t > 0, each branch evaluated where it is finite (so that neither sends a
/// non-finite gradient through the selection).
fn ln_one_minus_exp_neg(t: &Tensor) -> candle_core::Result<Tensor> {
    const CUT: f64 = 0.25;
    let small = t.lt(CUT)?;
    let ts = t.minimum(CUT)?;
    let tb = t.maximum(CUT)?;
    let t2 = ts.sqr()?;
    let series = (((ts.log()? - (&ts * 0.5)?)? + (&t2 / 24.0)?)? - (t2.sqr()? / 2880.0)?)?;
    let direct = (tb.neg()?.exp()?.neg()? + 1.0)?.log()?;
    small.where_cond(&series, &direct)
}

fn softplus64(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// ln P of level `v` under one component with mean `m` and bounded log-scale `s`, in f64 (the
/// fused kernel's formulas, with the standard library's functions).
fn component64(v: usize, m: f64, s: f64) -> f64 {
    // The exact half-width (the f32 constant is rounded; in f64 the bins would not tile).
    let h = 0.5 / f64::from(TOP);
    let z = v as f64 / f64::from(TOP) - m;
    let inv = (-s).exp();
    let (a, b) = ((z + h) * inv, (z - h) * inv);
    if v == 0 {
        -softplus64(-a)
    } else if v == LEVELS - 1 {
        -softplus64(b)
    } else {
        (-(-2.0 * h * inv).exp_m1()).ln()
            - (z.abs() - h).max(0.0) * inv
            - (-a.abs()).exp().ln_1p()
            - (-b.abs()).exp().ln_1p()
    }
}

/// ln π (all zero for one component) from the logits.
fn log_weights64(logits: &[f64]) -> Vec<f64> {
    let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
    logits.iter().map(|l| l - lse).collect()
}

/// (ln π, means, bounded log-scales) of one pixel's raw parameters.
type Pixel = (Vec<f64>, Vec<f64>, Vec<f64>);

fn split_pixel(raw: &[f64], mixtures: usize) -> candle_core::Result<Pixel> {
    let pp = check_k(mixtures)?;
    if raw.len() != pp {
        candle_core::bail!(
            "discretized-logistic: {} parameters for a pixel of {mixtures} components (expected {pp})",
            raw.len()
        );
    }
    let k = mixtures;
    let (lw, rest) = if k == 1 {
        (vec![0.0], raw)
    } else {
        (log_weights64(&raw[..k]), &raw[k..])
    };
    let s = rest[k..].iter().map(|&r| LOG_SCALE.apply_f64(r)).collect();
    Ok((lw, rest[..k].to_vec(), s))
}

/// The 256 log-probabilities (nats) of one pixel, in f64, from its `P` raw parameters in block
/// order ([mean, raw log-scale] for one component; [K logits, K means, K raw log-scales]).
pub fn discretized_logistic_pixel_log_pmf(
    raw: &[f64],
    mixtures: usize,
) -> candle_core::Result<[f64; LEVELS]> {
    let (lw, m, s) = split_pixel(raw, mixtures)?;
    let mut out = [0f64; LEVELS];
    for (v, o) in out.iter_mut().enumerate() {
        let terms: Vec<f64> = (0..lw.len())
            .map(|j| lw[j] + component64(v, m[j], s[j]))
            .collect();
        let mx = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        *o = mx + terms.iter().map(|t| (t - mx).exp()).sum::<f64>().ln();
    }
    Ok(out)
}

/// The probability table of one pixel (see [`discretized_logistic_pixel_log_pmf`]);
/// [`crate::ops::cdf`] turns it into a CDF.
pub fn discretized_logistic_pixel_pmf(
    raw: &[f64],
    mixtures: usize,
) -> candle_core::Result<[f64; LEVELS]> {
    Ok(discretized_logistic_pixel_log_pmf(raw, mixtures)?.map(f64::exp))
}

/// The lower edges (v - 1/2)/255 of levels 1..=255, padded with one edge far above the data
/// (whose term vanishes) to a multiple of 16 lanes.
fn edges() -> [f32; LEVELS] {
    let mut e = [1e30f32; LEVELS];
    for (v, e) in e.iter_mut().enumerate().take(LEVELS - 1) {
        *e = (v as f32 + 0.5) / TOP;
    }
    e
}

multiversion! {
    /// Σ over levels v ≥ 1 of P(V ≥ v) = σ((m - edge_v)/σ): E(v) of one component.
    fn tail_sum(m: f32, inv: f32, edges: &[f32; LEVELS]) -> f32 {
        let mut acc = [0f32; 16];
        for chunk in edges.chunks_exact(16) {
            for (a, &t) in acc.iter_mut().zip(chunk) {
                *a += fastmath::sigmoid((m - t) * inv);
            }
        }
        let mut w = 16;
        while w > 1 {
            w /= 2;
            for i in 0..w {
                acc[i] += acc[i + w];
            }
        }
        acc[0]
    }
}

/// The mean E(v)/255 of every pixel, `[batch, dim]` in [0, 1], exact for the discrete
/// distribution (E(v) = Σ_{v≥1} P(V ≥ v), summed over the 255 bin edges in f32), for pictures;
/// not differentiable. On the CPU a vectorised pass; elsewhere [`composite_mean`] on the
/// device of `params`.
pub fn discretized_logistic_mean(
    params: &Tensor,
    mixtures: usize,
    kernels: crate::ops::Kernels,
) -> candle_core::Result<Tensor> {
    let pp = check_k(mixtures)?;
    if !kernels.cpu_kernel(&[params]) {
        return composite_mean(params, mixtures);
    }
    let (p, b, d) = discrete::host_params("discretized-logistic mean", params, pp)?;
    let k = mixtures;
    let e = edges();
    let mut out = vec![0f32; b * d];
    for (bi, row) in p.chunks_exact(pp * d).enumerate() {
        for i in 0..d {
            let at = |blk: usize| f64::from(row[blk * d + i]);
            let raw: Vec<f64> = (0..pp).map(at).collect();
            let (lw, m, s) = split_pixel(&raw, k)?;
            let mean: f64 = (0..k)
                .map(|j| {
                    let inv = (-s[j]).exp() as f32;
                    lw[j].exp() * f64::from(tail_sum(m[j] as f32, inv, &e))
                })
                .sum();
            out[bi * d + i] = (mean / f64::from(TOP)).clamp(0.0, 1.0) as f32;
        }
    }
    discrete::to_like(out, b, d, params)
}

/// [`discretized_logistic_mean`] as tensor operations, on the device of `params`: the mixture's
/// weights by softmax, and Σ_e σ((m − edge_e)/σ) over the 255 bin edges one edge at a time.
pub fn composite_mean(params: &Tensor, mixtures: usize) -> candle_core::Result<Tensor> {
    let pp = check_k(mixtures)?;
    let (b, d) = discrete::dims_of("discretized-logistic mean", params, pp)?;
    let blocks = |from: usize, n: usize| -> candle_core::Result<Tensor> {
        let parts = (from..from + n)
            .map(|i| params.narrow(1, i * d, d))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::stack(&parts, 1)
    };
    let k = mixtures;
    let (w, m, s) = if k == 1 {
        (None, blocks(0, 1)?, blocks(1, 1)?)
    } else {
        let w = candle_nn::ops::softmax(&blocks(0, k)?, 1)?;
        (Some(w), blocks(k, k)?, blocks(2 * k, k)?)
    };
    let inv = LOG_SCALE.apply_tensor(&s)?.neg()?.exp()?;
    let mut acc = m.zeros_like()?;
    for e in 0..LEVELS - 1 {
        let t = (e as f64 + 0.5) / f64::from(TOP);
        acc = (acc + candle_nn::ops::sigmoid(&((&m - t)? * &inv)?)?)?;
    }
    let per = match w {
        Some(w) => (acc * w)?.sum(1)?,
        None => acc.squeeze(1)?,
    };
    (per / f64::from(TOP))?.clamp(0f32, 1f32)?.reshape((b, d))
}

/// A draw v/255 for every pixel, `[batch, dim]`, by inverse CDF from one uniform in [0, 1) per
/// pixel (`uniforms`, row-major like the output): the smallest level v whose CDF exceeds u,
/// found by bisection on the mixture's CDF at the bin edges (uniforms outside [0, 1) give the
/// end levels). Deterministic given the uniforms.
pub fn discretized_logistic_sample(
    params: &Tensor,
    mixtures: usize,
    uniforms: &[f32],
) -> candle_core::Result<Tensor> {
    let pp = check_k(mixtures)?;
    let (p, b, d) = discrete::host_params("discretized-logistic sample", params, pp)?;
    discrete::check_uniforms("discretized-logistic sample", uniforms, b, d)?;
    let mut out = vec![0f32; b * d];
    for (bi, row) in p.chunks_exact(pp * d).enumerate() {
        for i in 0..d {
            let raw: Vec<f64> = (0..pp).map(|blk| f64::from(row[blk * d + i])).collect();
            let (lw, m, s) = split_pixel(&raw, mixtures)?;
            let w: Vec<f64> = lw.iter().map(|l| l.exp()).collect();
            let inv: Vec<f64> = s.iter().map(|s| (-s).exp()).collect();
            // F(edge of level e) = P(V < e) = Σ π_j σ((edge - m_j)/σ_j), increasing in e.
            let cdf_below = |e: usize| -> f64 {
                let t = (e as f64 - 0.5) / f64::from(TOP);
                (0..w.len())
                    .map(|j| {
                        // σ((t - m)/σ) without overflow on either side.
                        let z = (t - m[j]) * inv[j];
                        let e = (-z.abs()).exp();
                        w[j] * if z >= 0.0 {
                            1.0 / (1.0 + e)
                        } else {
                            e / (1.0 + e)
                        }
                    })
                    .sum()
            };
            let u = f64::from(uniforms[bi * d + i]);
            // The number of levels e in 1..=255 with P(V < e) ≤ u.
            let (mut lo, mut hi) = (0usize, LEVELS - 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if cdf_below(mid + 1) <= u {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            out[bi * d + i] = lo as f32 / TOP;
        }
    }
    discrete::to_like(out, b, d, params)
}
