//! The beta-binomial as plain candle operations (any device), its mean, and its host-side
//! probability tables and draws.

use candle_core::{DType, Device, Tensor, D};

use super::{ln_choose, LOG_AB, N};
use crate::ops::discrete::{self, block, level_tensor, LEVELS, TOP};
use crate::special;

/// Numerical Recipes' Lanczos series for ln Γ (g = 5, six terms; Press et al., Numerical
/// Recipes, 2nd ed., §6.1, `gammln`), with relative error below 2e-10 for z > 0:
/// ln Γ(z) = (z + 1/2) ln(z + 5.5) - (z + 5.5) + ln(√(2π) ser(z) / z),
/// ser(z) = c0 + Σ_j c_j / (z + j).
const LANCZOS: [f64; 6] = [
    76.180_091_729_471_46,
    -86.505_320_329_416_77,
    24.014_098_240_830_91,
    -1.231_739_572_450_155,
    0.120_865_097_386_617_9e-2,
    -0.539_523_938_495_3e-5,
];
const LANCZOS_C0: f64 = 1.000_000_000_190_015;

fn ln_ser(z: &Tensor) -> candle_core::Result<Tensor> {
    let mut s = (z.zeros_like()? + LANCZOS_C0)?;
    for (j, c) in LANCZOS.iter().enumerate() {
        s = (s + ((z + (j + 1) as f64)?.recip()? * *c)?)?;
    }
    s.log()
}

/// ln(1 + z) for z ≥ 0 by Kahan's ln(u) z / (u - 1), u = 1 + z rounded; both branches finite.
fn ln_1p(z: &Tensor) -> candle_core::Result<Tensor> {
    let u = (z + 1.0)?;
    let d = (&u - 1.0)?;
    let exact = d.eq(0f32)?;
    let safe = exact.where_cond(&d.ones_like()?, &d)?;
    let r = ((u.log()? * z)? / safe)?;
    exact.where_cond(z, &r)
}

/// ln Γ(x+m) - ln Γ(x) from the Lanczos series without taking the difference of two ln Γ:
/// (x + 1/2) ln(1 + m/(x+5.5)) + m ln(x + m + 5.5) - m + ln ser(x+m) - ln ser(x) - ln(1 + m/x).
fn ln_poch(x: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    let xm = (x + m)?;
    let t1 = ((x + 0.5)? * ln_1p(&(m / (x + 5.5)?)?)?)?;
    let t2 = (m * ((&xm + 5.5)?.log()? - 1.0)?)?;
    let t3 = (ln_ser(&xm)? - ln_ser(x)?)?;
    ((t1 + t2)? + t3)? - ln_1p(&(m / x)?)?
}

/// ln C(255, k) for k = 0..=255 on the device and in the type of `like`: built on the host in
/// f64, rounded once to the type (some devices lack f64) and uploaded once per device and type.
fn choose_table(like: &Tensor) -> candle_core::Result<Tensor> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Tables = Mutex<HashMap<(candle_core::DeviceLocation, DType), Tensor>>;
    static TABLES: OnceLock<Tables> = OnceLock::new();
    let key = (like.device().location(), like.dtype());
    let tables = TABLES.get_or_init(Default::default);
    if let Some(t) = tables.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(t);
    }
    let t = Tensor::from_slice(ln_choose(), LEVELS, &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())?;
    if let Ok(mut m) = tables.lock() {
        m.insert(key, t.clone());
    }
    Ok(t)
}

/// [`super::beta_binomial_log_prob`] as candle operations, for any device and float type; the
/// fused kernel's reference. ln Γ comes from a Lanczos series, in the cancellation-free form
/// above. In f32 the rounding is relative to the terms summed, ln C(n, k) and the three rising
/// factorials (each up to about 3e3 nats), not to their sum: each pixel is within a few 1e-7 of
/// their total size, which can be 1e-4 nats and more where the terms cancel (α, β near the
/// floor, or near the ceiling). The fused kernel, in f64, has no such loss.
pub fn composite_log_prob(params: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, d) = discrete::check_shapes("beta-binomial", params, x, 2)?;
    let k = level_tensor(x)?;
    let a = LOG_AB.apply_tensor(&block(params, 0, d)?)?.exp()?;
    let b = LOG_AB.apply_tensor(&block(params, 1, d)?)?.exp()?;
    let choose = choose_table(x)?
        .index_select(&k.flatten_all()?.to_dtype(DType::U32)?, 0)?
        .reshape(k.shape())?;
    let n = (k.ones_like()? * N)?;
    let nk = (&n - &k)?;
    let lp = ((choose + ln_poch(&a, &k)?)? + ln_poch(&b, &nk)?)? - ln_poch(&(&a + &b)?, &n)?;
    lp?.sum(D::Minus1)
}

/// The mean E(v)/255 = α/(α+β) = sigmoid(ln α - ln β) of every pixel, `[batch, dim]`, on the
/// device of `params`, differentiable.
pub fn beta_binomial_mean(params: &Tensor) -> candle_core::Result<Tensor> {
    let (_, d) = discrete::dims_of("beta-binomial mean", params, 2)?;
    let la = LOG_AB.apply_tensor(&block(params, 0, d)?)?;
    let lb = LOG_AB.apply_tensor(&block(params, 1, d)?)?;
    candle_nn::ops::sigmoid(&(la - lb)?)
}

/// The 256 log-probabilities (nats) of one pixel, in f64, from its raw α and β outputs. The
/// rising factorials are summed term by term here (255 logarithms each), independently of the
/// kernel's closed forms.
pub fn beta_binomial_pixel_log_pmf(raw_alpha: f64, raw_beta: f64) -> [f64; LEVELS] {
    let a = LOG_AB.apply_f64(raw_alpha).exp();
    let b = LOG_AB.apply_f64(raw_beta).exp();
    let prefix = |x: f64| {
        let mut p = [0f64; LEVELS];
        for j in 1..LEVELS {
            p[j] = p[j - 1] + (x + (j - 1) as f64).ln();
        }
        p
    };
    let (pa, pb) = (prefix(a), prefix(b));
    let norm = special::ln_poch(a + b, N);
    let choose = ln_choose();
    let mut out = [0f64; LEVELS];
    for (k, o) in out.iter_mut().enumerate() {
        *o = choose[k] + pa[k] + pb[LEVELS - 1 - k] - norm;
    }
    out
}

/// The probability table of one pixel (see [`beta_binomial_pixel_log_pmf`]);
/// [`crate::ops::cdf`] turns it into a CDF.
pub fn beta_binomial_pixel_pmf(raw_alpha: f64, raw_beta: f64) -> [f64; LEVELS] {
    beta_binomial_pixel_log_pmf(raw_alpha, raw_beta).map(f64::exp)
}

/// A draw v/255 for every pixel, `[batch, dim]`, by inverse CDF from one uniform in [0, 1) per
/// pixel (`uniforms`, row-major like the output): the smallest level whose CDF exceeds u
/// (uniforms outside [0, 1) give the end levels).
/// Computed on the host, returned on the device of `params`; deterministic given the uniforms.
pub fn beta_binomial_sample(params: &Tensor, uniforms: &[f32]) -> candle_core::Result<Tensor> {
    let (p, b, d) = discrete::host_params("beta-binomial sample", params, 2)?;
    discrete::check_uniforms("beta-binomial sample", uniforms, b, d)?;
    let mut out = vec![0f32; b * d];
    for (bi, row) in p.chunks_exact(2 * d).enumerate() {
        for i in 0..d {
            let pmf = beta_binomial_pixel_pmf(f64::from(row[i]), f64::from(row[d + i]));
            let v = discrete::inverse_cdf(&discrete::cdf(&pmf), f64::from(uniforms[bi * d + i]));
            out[bi * d + i] = v as f32 / TOP;
        }
    }
    discrete::to_like(out, b, d, params)
}
