//! Walks through the latent space: interpolation between two codes, traversal of single
//! dimensions, and the decoded manifold over a grid of prior quantiles.
//!
//! The codes are built on the host (they are small) and decoded on the model's device.

use vae_core::candle_core::Device;
use vae_core::Vae;

use crate::latent::codes;
use crate::{InferError, Result};
use vae_run::one_hot;

/// Linear interpolation (1 - t) a + t b.
pub fn lerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((1.0 - t) * f64::from(x) + t * f64::from(y)) as f32)
        .collect()
}

/// Spherical interpolation (Shoemake's slerp, as White 2016 uses for VAE latents): moves along
/// the great circle between the directions of `a` and `b` while the norm changes linearly with
/// the angle's weights. Falls back to [`lerp`] when the two are (nearly) parallel or one is zero.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x * y)).sum();
    let na = a.iter().map(|&x| f64::from(x * x)).sum::<f64>().sqrt();
    let nb = b.iter().map(|&x| f64::from(x * x)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let omega = (dot / (na * nb)).clamp(-1.0, 1.0).acos();
    let so = omega.sin();
    if so.abs() < 1e-6 {
        return lerp(a, b, t);
    }
    let (wa, wb) = (((1.0 - t) * omega).sin() / so, (t * omega).sin() / so);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (wa * f64::from(x) + wb * f64::from(y)) as f32)
        .collect()
}

/// `steps` codes from `a` to `b` inclusive (`steps >= 2`), row-major.
pub fn path(a: &[f32], b: &[f32], steps: usize, spherical: bool) -> Vec<f32> {
    let denom = (steps.max(2) - 1) as f64;
    (0..steps)
        .flat_map(|i| {
            let t = i as f64 / denom;
            if spherical {
                slerp(a, b, t)
            } else {
                lerp(a, b, t)
            }
        })
        .collect()
}

/// `steps` evenly spaced values from `-range` to `range`.
pub fn offsets(range: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![0.0];
    }
    (0..steps)
        .map(|i| -range + 2.0 * range * i as f64 / (steps - 1) as f64)
        .collect()
}

/// One row of `steps` codes per dimension of `dims`: `base` with that dimension moved by each
/// of [`offsets`]`(range, steps)`.
pub fn traversal(base: &[f32], dims: &[usize], range: f64, steps: usize) -> Vec<f32> {
    let offs = offsets(range, steps);
    let mut out = Vec::with_capacity(dims.len() * steps * base.len());
    for &d in dims {
        for &o in &offs {
            let start = out.len();
            out.extend_from_slice(base);
            out[start + d] = (f64::from(base[d]) + o) as f32;
        }
    }
    out
}

/// The quantiles of the manifold grid: Φ⁻¹((i + 0.5) / steps) for i in 0..steps, the midpoints
/// of `steps` equal slices of the prior's probability mass (Kingma & Welling 2014, fig. 4, use
/// the same transformation of a square grid through the inverse Gaussian CDF).
pub fn grid_quantiles(steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|i| normal_quantile((i as f64 + 0.5) / steps as f64))
        .collect()
}

/// A `steps x steps` grid of codes over dimensions `dims.0` (left to right, increasing) and
/// `dims.1` (top to bottom, decreasing, like a plot's vertical axis); other dimensions are 0.
pub fn manifold(latent: usize, dims: (usize, usize), steps: usize) -> Vec<f32> {
    let q = grid_quantiles(steps);
    let mut out = vec![0f32; steps * steps * latent];
    for row in 0..steps {
        for col in 0..steps {
            let z = &mut out[(row * steps + col) * latent..(row * steps + col + 1) * latent];
            z[dims.0] = q[col] as f32;
            z[dims.1] = q[steps - 1 - row] as f32;
        }
    }
    out
}

/// Decodes row-major codes to the likelihood's mean, `[n, data dim]` on the host.
pub fn decode(model: &Vae, z: Vec<f32>, label: Option<u32>, device: &Device) -> Result<Vec<f32>> {
    let dim = model.latent_dim();
    let n = z.len() / dim.max(1);
    let labels = condition(model, n, label, device)?;
    let t = codes(z, dim, device)?;
    Ok(model
        .decode_mean(&t, labels.as_ref())?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// One-hot labels for decoding `n` codes with a conditional model; none for a plain model.
pub fn condition(
    model: &Vae,
    n: usize,
    label: Option<u32>,
    device: &Device,
) -> Result<Option<vae_core::candle_core::Tensor>> {
    match (model.config().num_classes, label) {
        (Some(k), Some(y)) => Ok(Some(one_hot(&vec![y; n], k, device)?)),
        (Some(k), None) => Err(InferError::Flag(format!(
            "--label: this model is conditional; give the class (0..{k}) to decode"
        ))),
        (None, Some(_)) => Err(InferError::Flag(
            "--label: this model is not conditional (train it with --conditional)".into(),
        )),
        (None, None) => Ok(None),
    }
}

// The coefficients of AS 241 as published, lowest power first: rational approximations
// a(r)/b(r) in the centre, c(r)/d(r) in the tails, e(r)/f(r) in the far tails.
#[allow(clippy::excessive_precision)]
const AS241: [[f64; 8]; 6] = [
    [
        3.387132872796366608,
        133.14166789178437745,
        1971.5909503065514427,
        13731.693765509461125,
        45921.953931549871457,
        67265.770927008700853,
        33430.575583588128105,
        2509.0809287301226727,
    ],
    [
        1.0,
        42.313330701600911252,
        687.1870074920579083,
        5394.1960214247511077,
        21213.794301586595867,
        39307.89580009271061,
        28729.085735721942674,
        5226.495278852545925,
    ],
    [
        1.42343711074968357734,
        4.6303378461565452959,
        5.7694972214606914055,
        3.64784832476320460504,
        1.27045825245236838258,
        0.24178072517745061177,
        0.0227238449892691845833,
        7.7454501427834140764e-4,
    ],
    [
        1.0,
        2.05319162663775882187,
        1.6763848301838038494,
        0.68976733498510000455,
        0.14810397642748007459,
        0.0151986665636164571966,
        5.475938084995344946e-4,
        1.05075007164441684324e-9,
    ],
    [
        6.6579046435011037772,
        5.4637849111641143699,
        1.7848265399172913358,
        0.29656057182850489123,
        0.026532189526576123093,
        0.0012426609473880784386,
        2.71155556874348757815e-5,
        2.01033439929228813265e-7,
    ],
    [
        1.0,
        0.59983220655588793769,
        0.13692988092273580531,
        0.0148753612908506148525,
        7.868691311456132591e-4,
        1.8463183175100546818e-5,
        1.4215117583164458887e-7,
        2.04426310338993978564e-15,
    ],
];

/// The polynomial with coefficients `c` (lowest power first) at `x`, by Horner's rule.
fn horner(c: &[f64; 8], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

/// The standard normal quantile function Φ⁻¹(p) for p in (0, 1): Wichura's algorithm AS 241
/// (PPND16, Applied Statistics 37, 1988), accurate to about 1e-16; ±infinity at 0 and 1.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&AS241[0], r) / horner(&AS241[1], r);
    }
    let r = (-(if q < 0.0 { p } else { 1.0 - p }).ln()).sqrt();
    let val = if r <= 5.0 {
        horner(&AS241[2], r - 1.6) / horner(&AS241[3], r - 1.6)
    } else {
        horner(&AS241[4], r - 5.0) / horner(&AS241[5], r - 5.0)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(Z > a) by Simpson's rule on the density over [a, a + 16] (the mass beyond is below
    /// 1e-57): an independent check of AS 241, accurate to about 1e-11 relative.
    fn upper_tail(a: f64) -> f64 {
        let n = 40_000;
        let h = 16.0 / n as f64;
        let f = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = f(a) + f(a + 16.0);
        for i in 1..n {
            s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    }

    #[test]
    fn quantile_inverts_the_normal_cdf() {
        // Tabulated values (any statistics table; R's qnorm prints the same digits).
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-13);
        assert!((normal_quantile(0.05) + 1.644_853_626_951_472_2).abs() < 1e-13);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert!(normal_quantile(1.5).is_nan());
        // All three branches of the algorithm (central, tail r <= 5, far tail r > 5).
        for p in [1e-15, 1e-9, 0.001, 0.02, 0.3, 0.5, 0.7, 0.9, 0.999] {
            let x = normal_quantile(p);
            // The smaller of p and 1 - p, compared relatively: P(Z < x) = P(Z > -x).
            let (tail, want) = if p < 0.5 {
                (upper_tail(-x), p)
            } else {
                (upper_tail(x), 1.0 - p)
            };
            assert!(
                (tail - want).abs() <= 1e-9 * want,
                "p {p}: quantile {x}, tail {tail} vs {want}"
            );
            if p > 1e-6 {
                // Symmetry (1 - p is exact enough in f64 only away from the far tails).
                assert!((normal_quantile(1.0 - p) + x).abs() < 1e-9 * x.abs().max(1.0));
            }
        }
    }

    #[test]
    fn lerp_and_slerp_hit_their_ends_and_slerp_keeps_the_norm_on_a_circle() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let p = path(&a, &b, 3, false);
        assert_eq!(p, vec![1.0, 0.0, 0.5, 0.5, 0.0, 1.0]);
        let s = path(&a, &b, 3, true);
        assert!((s[0] - 1.0).abs() < 1e-6 && s[1].abs() < 1e-6);
        assert!(s[4].abs() < 1e-6 && (s[5] - 1.0).abs() < 1e-6);
        // Halfway on the unit circle: (cos 45°, sin 45°), norm 1 where lerp's is 0.707.
        let half = std::f32::consts::FRAC_1_SQRT_2;
        assert!((s[2] - half).abs() < 1e-6 && (s[3] - half).abs() < 1e-6);
        // Parallel vectors fall back to lerp.
        assert_eq!(slerp(&[1.0, 1.0], &[2.0, 2.0], 0.5), vec![1.5, 1.5]);
    }

    #[test]
    fn traversal_moves_one_dimension_per_row() {
        let z = traversal(&[0.5, -1.0, 2.0], &[1, 2], 3.0, 3);
        assert_eq!(
            z,
            vec![
                0.5, -4.0, 2.0, 0.5, -1.0, 2.0, 0.5, 2.0, 2.0, //
                0.5, -1.0, -1.0, 0.5, -1.0, 2.0, 0.5, -1.0, 5.0
            ]
        );
        assert_eq!(offsets(3.0, 1), vec![0.0]);
    }

    #[test]
    fn manifold_grid_is_symmetric_and_oriented() {
        let z = manifold(3, (0, 2), 4);
        assert_eq!(z.len(), 4 * 4 * 3);
        let q = grid_quantiles(4);
        // Top-left: lowest value of dim 0, highest of dim 2; dim 1 stays 0.
        assert_eq!(z[0], q[0] as f32);
        assert_eq!(z[1], 0.0);
        assert_eq!(z[2], q[3] as f32);
        assert!((q[0] + q[3]).abs() < 1e-12 && q[0] < q[1]);
        // Φ⁻¹(0.125) = -1.1503493803760079 (tables).
        assert!((q[0] + 1.150_349_380_376_008).abs() < 1e-12);
    }
}
