//! Pixel models p(x|z) over the values of an 8-bit pixel, as integer CDFs.
//!
//! Parameters come as f64 slices in block-major layout, `[parameter block][pixel]`, after the
//! model's own parameter maps (the same bounds its training likelihood uses).

use crate::detmath::sigmoid;
use crate::models::{quantise, IntCdf, TableCdf};
use crate::{CodecError, Result};

/// The decoder's output for one image, one entry per pixel (channel-major).
#[derive(Debug, Clone, PartialEq)]
pub enum PixelParams {
    /// Binary images: P(pixel = `one`) = sigmoid(logit); the only other allowed value is 0.
    Bernoulli { logits: Vec<f64>, one: u8 },
    /// A mixture of `components` logistics on the [0, 1] scale, discretised into the 256 bins
    /// of half-width 0.5/255 around v/255, the edge bins open-ended. `weights`, `means` and
    /// `scales` are each `[components][pixels]`; weights are non-negative (normalised here),
    /// scales positive.
    Logistic {
        components: usize,
        weights: Vec<f64>,
        means: Vec<f64>,
        scales: Vec<f64>,
    },
    /// Beta-binomial with n = 255 and positive `alpha`, `beta` per pixel.
    BetaBinomial { alpha: Vec<f64>, beta: Vec<f64> },
}

fn bad(msg: String) -> CodecError {
    CodecError::BadParameter(msg)
}

impl PixelParams {
    /// The number of pixels the parameters describe.
    pub fn pixels(&self) -> usize {
        match self {
            PixelParams::Bernoulli { logits, .. } => logits.len(),
            PixelParams::Logistic {
                components, means, ..
            } => means.len() / (*components).max(1),
            PixelParams::BetaBinomial { alpha, .. } => alpha.len(),
        }
    }

    /// Checks the shapes against `pixels` and that every value is finite and in range.
    pub fn validate(&self, pixels: usize) -> Result<()> {
        let finite = |name: &str, v: &[f64], positive: bool| -> Result<()> {
            match v
                .iter()
                .position(|x| !x.is_finite() || (positive && *x <= 0.0))
            {
                Some(i) => Err(bad(format!(
                    "pixel parameter {name}[{i}] = {} is not {}",
                    v[i],
                    if positive {
                        "finite and positive"
                    } else {
                        "finite"
                    }
                ))),
                None => Ok(()),
            }
        };
        let len = |name: &str, got: usize, want: usize| -> Result<()> {
            if got == want {
                Ok(())
            } else {
                Err(bad(format!(
                    "pixel parameter {name} has {got} values for {want}"
                )))
            }
        };
        match self {
            PixelParams::Bernoulli { logits, one } => {
                if *one == 0 {
                    return Err(bad("Bernoulli pixels need a nonzero `one` value".into()));
                }
                len("logits", logits.len(), pixels)?;
                finite("logits", logits, false)
            }
            PixelParams::Logistic {
                components,
                weights,
                means,
                scales,
            } => {
                if *components == 0 {
                    return Err(bad("a logistic mixture needs a component".into()));
                }
                let want = components * pixels;
                len("weights", weights.len(), want)?;
                len("means", means.len(), want)?;
                len("scales", scales.len(), want)?;
                finite("means", means, false)?;
                finite("scales", scales, true)?;
                if let Some(i) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
                    return Err(bad(format!("mixture weight [{i}] = {}", weights[i])));
                }
                for d in 0..pixels {
                    let s: f64 = (0..*components).map(|k| weights[k * pixels + d]).sum();
                    if s.is_nan() || s <= 0.0 || !s.is_finite() {
                        return Err(bad(format!("mixture weights of pixel {d} sum to {s}")));
                    }
                }
                Ok(())
            }
            PixelParams::BetaBinomial { alpha, beta } => {
                len("alpha", alpha.len(), pixels)?;
                len("beta", beta.len(), pixels)?;
                finite("alpha", alpha, true)?;
                finite("beta", beta, true)
            }
        }
    }
}

/// Bernoulli over {0, 1}: P(0) = sigmoid(-logit).
#[derive(Debug, Clone, Copy)]
pub struct BernoulliCdf {
    p0: f64,
}

impl BernoulliCdf {
    pub fn new(logit: f64) -> Self {
        BernoulliCdf {
            p0: sigmoid(-logit),
        }
    }
}

impl IntCdf for BernoulliCdf {
    fn len(&self) -> u32 {
        2
    }
    fn cdf(&self, i: u32) -> u32 {
        quantise(self.p0, i, 2)
    }
}

/// The discretised logistic mixture of one pixel.
#[derive(Debug, Clone, Copy)]
pub struct LogisticCdf<'a> {
    pixel: usize,
    pixels: usize,
    components: usize,
    weights: &'a [f64],
    means: &'a [f64],
    inv_scales: &'a [f64],
    inv_total: f64,
}

/// 1 / s for each scale: computed once per image rather than in every CDF evaluation.
pub fn inverse(scales: &[f64]) -> Vec<f64> {
    scales.iter().map(|s| 1.0 / s).collect()
}

impl<'a> LogisticCdf<'a> {
    /// The model of `pixel` from validated mixture parameters; `inv_scales` holds 1 / scale
    /// for each entry of `scales` (see [`inverse`]).
    pub fn new(
        pixel: usize,
        pixels: usize,
        components: usize,
        weights: &'a [f64],
        means: &'a [f64],
        inv_scales: &'a [f64],
    ) -> Self {
        let mut total = 0.0;
        for k in 0..components {
            total += weights[k * pixels + pixel];
        }
        LogisticCdf {
            pixel,
            pixels,
            components,
            weights,
            means,
            inv_scales,
            inv_total: 1.0 / total,
        }
    }

    /// F(v) = Σ_k π_k σ((v/255 - 0.5/255 - m_k) / s_k) / Σ_k π_k, for v in 1..=255.
    #[inline(always)]
    fn float_cdf(&self, v: u32) -> f64 {
        let x = (v as f64 - 0.5) / 255.0;
        let mut f = 0.0;
        for k in 0..self.components {
            let j = k * self.pixels + self.pixel;
            f += self.weights[j] * sigmoid((x - self.means[j]) * self.inv_scales[j]);
        }
        f * self.inv_total
    }
}

impl IntCdf for LogisticCdf<'_> {
    fn len(&self) -> u32 {
        256
    }
    /// The quantile of the heaviest component: m + s logit(u).
    fn guess(&self, quantile: u32) -> Option<u32> {
        let mut best = self.pixel;
        for k in 1..self.components {
            let j = k * self.pixels + self.pixel;
            if self.weights[j] > self.weights[best] {
                best = j;
            }
        }
        let u = (quantile as f64 + 0.5) / crate::models::TOTAL as f64;
        let x = self.means[best] + crate::detmath::ln(u / (1.0 - u)) / self.inv_scales[best];
        let v = (x * 255.0 + 0.5).floor();
        // Also false for NaN.
        if (0.0..=255.0).contains(&v) {
            Some(v as u32)
        } else {
            Some(if v < 0.0 { 0 } else { 255 })
        }
    }
    fn cdf(&self, i: u32) -> u32 {
        if i == 0 || i >= 256 {
            return quantise(0.0, i, 256);
        }
        quantise(self.float_cdf(i), i, 256)
    }
}

/// Rescale the beta-binomial recurrence when a weight leaves [2^-500, 2^500].
const BIG: f64 = 3.273_390_607_896_142e150; // 2^500
const SMALL: f64 = 1.0 / BIG;

/// The beta-binomial CDF table of one pixel (n = 255).
///
/// The pmf follows the recurrence p(k+1)/p(k) = (n-k)(k+α) / ((k+1)(n-k-1+β)), started from
/// the largest of p(0) and p(n) in log space and rescaled by exact powers of two whenever the
/// running weight grows too large, so that no intermediate overflows.
pub fn beta_binomial_table(alpha: f64, beta: f64) -> TableCdf {
    const N: usize = 255;
    let nf = N as f64;
    // The ratios first: independent divisions, which the CPU overlaps.
    let mut ratio = [0f64; N];
    for (k, r) in ratio.iter_mut().enumerate() {
        let kf = k as f64;
        *r = ((nf - kf) * (kf + alpha)) / ((kf + 1.0) * (nf - kf - 1.0 + beta));
    }
    // Weights w[k] ∝ p(k), carried with a power-of-two exponent e[k].
    let mut w = [0f64; N + 1];
    let mut e = [0i32; N + 1];
    let (mut cur, mut ce) = (1.0f64, 0i32);
    let mut rescaled = false;
    w[0] = 1.0;
    for k in 0..N {
        cur *= ratio[k];
        if !(SMALL..=BIG).contains(&cur) {
            while cur > BIG {
                cur *= SMALL;
                ce += 500;
            }
            while cur < SMALL && cur > 0.0 {
                cur *= BIG;
                ce -= 500;
            }
            rescaled = true;
        }
        w[k + 1] = cur;
        e[k + 1] = ce;
    }
    if rescaled {
        let emax = e.iter().copied().max().unwrap_or(0);
        for (w, &e) in w.iter_mut().zip(&e) {
            // 2^(e - emax) is exact down to 2^-1074 and zero below; weights this small are
            // far below the fixed-point resolution, where the leak takes over.
            let shift = e - emax;
            *w = if shift < -1000 {
                0.0
            } else {
                *w * pow2_neg(-shift)
            };
        }
    }
    let mut cum = [0f64; N + 2];
    let mut total = 0.0;
    for k in 0..=N {
        total += w[k];
        cum[k + 1] = total;
    }
    let inv = 1.0 / total;
    let mut table = Vec::with_capacity(N + 2);
    table.push(0);
    for (i, &c) in cum.iter().enumerate().take(N + 1).skip(1) {
        table.push(quantise(c * inv, i as u32, 256));
    }
    table.push(crate::models::TOTAL);
    TableCdf(table)
}

/// 2^-s for 0 <= s <= 1000, exactly.
fn pow2_neg(s: i32) -> f64 {
    let mut r = 1.0;
    let mut s = s;
    while s > 500 {
        r *= SMALL;
        s -= 500;
    }
    r * f64::from_bits(((1023 - s) as u64) << 52)
}

/// The beta-binomial pmf from the same recurrence summed in log space (a reference for the
/// tests, free of the rescaling logic).
#[cfg(test)]
fn beta_binomial_pmf_reference(alpha: f64, beta: f64) -> Vec<f64> {
    use crate::detmath::{exp, ln};
    let mut lw = vec![0.0f64; 256];
    for k in 0..255 {
        let kf = k as f64;
        lw[k + 1] = lw[k] + ln(255.0 - kf) + ln(kf + alpha) - ln(kf + 1.0) - ln(254.0 - kf + beta);
    }
    let m = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = lw.iter().map(|l| exp(l - m)).sum();
    lw.iter().map(|l| exp(l - m) / s).collect()
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // pmf index = pixel value
mod tests {
    use super::*;

    fn check(m: impl IntCdf) -> Vec<f64> {
        let n = m.len();
        assert_eq!(m.cdf(0), 0);
        assert_eq!(m.cdf(n), crate::models::TOTAL);
        (0..n)
            .map(|i| {
                let (a, b) = (m.cdf(i), m.cdf(i + 1));
                assert!(b > a, "C({}) = {b} <= C({i}) = {a}", i + 1);
                (b - a) as f64 / crate::models::TOTAL as f64
            })
            .collect()
    }

    #[test]
    fn bernoulli_extremes_stay_leaky() {
        for l in [-1e300, -800.0, -3.0, 0.0, 2.0, 800.0, 1e300] {
            let p = check(BernoulliCdf::new(l));
            let want0 = 1.0 / (1.0 + l.exp());
            assert!((p[0] - want0).abs() < 1e-6, "logit {l}: {p:?}");
        }
    }

    #[test]
    fn logistic_masses_match_the_closed_form() {
        let (k, d) = (3, 4);
        let weights = vec![0.2, 0.5, 0.1, 1.0, 0.3, 0.5, 0.0, 0.0, 0.5, 0.0, 0.9, 0.0];
        let means = vec![0.1, 0.5, -0.2, 1.3, 0.9, 0.0, 0.5, 0.5, 0.4, 0.6, 0.05, 0.7];
        let scales = vec![
            0.01, 0.2, 1e-6, 0.05, 0.1, 3.0, 1.0, 1.0, 1e-3, 0.02, 0.3, 0.5,
        ];
        PixelParams::Logistic {
            components: k,
            weights: weights.clone(),
            means: means.clone(),
            scales: scales.clone(),
        }
        .validate(d)
        .unwrap();
        for px in 0..d {
            let inv = inverse(&scales);
            let m = LogisticCdf::new(px, d, k, &weights, &means, &inv);
            let p = check(m);
            let s: f64 = (0..k).map(|c| weights[c * d + px]).sum();
            let f = |v: f64| -> f64 {
                (0..k)
                    .map(|c| {
                        let j = c * d + px;
                        weights[j] / (1.0 + (-(v - means[j]) / scales[j]).exp())
                    })
                    .sum::<f64>()
                    / s
            };
            for v in 0..256 {
                let lo = if v == 0 {
                    0.0
                } else {
                    f((v as f64 - 0.5) / 255.0)
                };
                let hi = if v == 255 {
                    1.0
                } else {
                    f((v as f64 + 0.5) / 255.0)
                };
                // The leak moves each mass by at most 2^-21 plus a relative 2^-15.
                assert!(
                    (p[v] - (hi - lo)).abs() < 1e-6 + 4e-5 * (hi - lo),
                    "pixel {px} value {v}"
                );
            }
        }
    }

    #[test]
    fn beta_binomial_matches_log_space_reference() {
        for (a, b) in [
            (1.0, 1.0),
            (0.01, 0.02),
            (0.5, 3.0),
            (40.0, 2.0),
            (1e4, 1e4),
            (1e-8, 1e6),
            (300.0, 1e-3),
        ] {
            let t = beta_binomial_table(a, b);
            let p = check(&t);
            let want = beta_binomial_pmf_reference(a, b);
            for v in 0..256 {
                assert!(
                    (p[v] - want[v]).abs() < 1e-6 + 4e-5 * want[v],
                    "α={a} β={b} v={v}: {} vs {}",
                    p[v],
                    want[v]
                );
            }
        }
        // α = β = 1 is uniform.
        let p = check(&beta_binomial_table(1.0, 1.0));
        assert!(p.iter().all(|v| (v - 1.0 / 256.0).abs() < 1e-6));
    }

    #[test]
    fn validation_names_the_bad_parameter() {
        let e = PixelParams::BetaBinomial {
            alpha: vec![1.0, -1.0],
            beta: vec![1.0, 1.0],
        }
        .validate(2)
        .unwrap_err();
        assert!(e.to_string().contains("alpha[1]"), "{e}");
        let e = PixelParams::Bernoulli {
            logits: vec![f64::NAN],
            one: 1,
        }
        .validate(1)
        .unwrap_err();
        assert!(e.to_string().contains("logits[0]"), "{e}");
        assert!(PixelParams::Bernoulli {
            logits: vec![0.0; 3],
            one: 1
        }
        .validate(2)
        .is_err());
    }
}
