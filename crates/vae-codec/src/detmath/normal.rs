//! erfc (fdlibm's, see the parent module) and the standard normal distribution built on it:
//! Φ, Φ⁻¹ (refined to the last bits) and a rough Φ⁻¹ for searches that only need a start.

// The coefficients are quoted as fdlibm prints them.
#![allow(clippy::excessive_precision)]

use super::{exp, ln};

const ERX: f64 = 8.45062911510467529297e-01;
const PP0: f64 = 1.28379167095512558561e-01;
const PP1: f64 = -3.25042107247001499370e-01;
const PP2: f64 = -2.84817495755985104766e-02;
const PP3: f64 = -5.77027029648944159157e-03;
const PP4: f64 = -2.37630166566501626084e-05;
const QQ1: f64 = 3.97917223959155352819e-01;
const QQ2: f64 = 6.50222499887672944485e-02;
const QQ3: f64 = 5.08130628187576562776e-03;
const QQ4: f64 = 1.32494738004321644526e-04;
const QQ5: f64 = -3.96022827877536812320e-06;
const PA0: f64 = -2.36211856075265944077e-03;
const PA1: f64 = 4.14856118683748331666e-01;
const PA2: f64 = -3.72207876035701323847e-01;
const PA3: f64 = 3.18346619901161753674e-01;
const PA4: f64 = -1.10894694282396677476e-01;
const PA5: f64 = 3.54783043256182359371e-02;
const PA6: f64 = -2.16637559486879084300e-03;
const QA1: f64 = 1.06420880400844228286e-01;
const QA2: f64 = 5.40397917702171048937e-01;
const QA3: f64 = 7.18286544141962662868e-02;
const QA4: f64 = 1.26171219808761642112e-01;
const QA5: f64 = 1.36370839120290507362e-02;
const QA6: f64 = 1.19844998467991074170e-02;
const RA0: f64 = -9.86494403484714822705e-03;
const RA1: f64 = -6.93858572707181764372e-01;
const RA2: f64 = -1.05586262253232909814e+01;
const RA3: f64 = -6.23753324503260060396e+01;
const RA4: f64 = -1.62396669462573470355e+02;
const RA5: f64 = -1.84605092906711035994e+02;
const RA6: f64 = -8.12874355063065934246e+01;
const RA7: f64 = -9.81432934416914548592e+00;
const SA1: f64 = 1.96512716674392571292e+01;
const SA2: f64 = 1.37657754143519042600e+02;
const SA3: f64 = 4.34565877475229228821e+02;
const SA4: f64 = 6.45387271733267880336e+02;
const SA5: f64 = 4.29008140027567833386e+02;
const SA6: f64 = 1.08635005541779435134e+02;
const SA7: f64 = 6.57024977031928170135e+00;
const SA8: f64 = -6.04244152148580987438e-02;
const RB0: f64 = -9.86494292470009928597e-03;
const RB1: f64 = -7.99283237680523006574e-01;
const RB2: f64 = -1.77579549177547519889e+01;
const RB3: f64 = -1.60636384855821916062e+02;
const RB4: f64 = -6.37566443368389627722e+02;
const RB5: f64 = -1.02509513161107724954e+03;
const RB6: f64 = -4.83519191608651397019e+02;
const SB1: f64 = 3.03380607434824582924e+01;
const SB2: f64 = 3.25792512996573918826e+02;
const SB3: f64 = 1.53672958608443695994e+03;
const SB4: f64 = 3.19985821950859553908e+03;
const SB5: f64 = 2.55305040643316442583e+03;
const SB6: f64 = 4.74528541206955367215e+02;
const SB7: f64 = -2.24409524465858183362e+01;

/// erfc on 0.84375 <= |x| < 28 (fdlibm `s_erf.c`), for the sign of x given by the caller.
fn erfc_tail(ax: f64) -> f64 {
    if ax < 1.25 {
        let s = ax - 1.0;
        let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
        let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
        return 1.0 - ERX - p / q;
    }
    let s = 1.0 / (ax * ax);
    let (r, big_s) = if ax < 1.0 / 0.35 {
        (
            RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
            1.0 + s
                * (SA1
                    + s * (SA2
                        + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
        )
    } else {
        (
            RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
            1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
        )
    };
    // z: ax with the low 32 bits of its mantissa cleared, so that z * z is exact.
    let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
    exp(-z * z - 0.5625) * exp((z - ax) * (z + ax) + r / big_s) / ax
}

/// The complementary error function erfc(x) = 1 - erf(x) (fdlibm `s_erf.c`).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let neg = x < 0.0;
    if ax < 0.84375 {
        if ax < 1.3877787807814457e-17 {
            return 1.0 - x;
        }
        let z = x * x;
        let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
        let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
        let y = r / s;
        if neg || ax < 0.25 {
            return 1.0 - (x + x * y);
        }
        return 0.5 - (x - 0.5 + x * y);
    }
    if ax < 28.0 {
        let t = erfc_tail(ax);
        return if neg { 2.0 - t } else { t };
    }
    if neg {
        2.0
    } else {
        0.0
    }
}

/// The standard normal CDF Φ(x) = erfc(-x / √2) / 2: 0 and 1 at ±inf, monotone in x to within
/// rounding.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// √(2π).
const SQRT_2PI: f64 = 2.506_628_274_631_000_5;

/// Φ⁻¹(p) for p in (0, 1): Acklam's rational approximation (relative error about 1e-9), then
/// two Halley steps on [`normal_cdf`]. -inf at 0, +inf at 1, NaN outside [0, 1].
///
/// Computed for p <= 1/2 and mirrored, so Φ⁻¹(1 - p) = -Φ⁻¹(p) exactly where 1 - p is exact.
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
    if p > 0.5 {
        // 1 - p is exact for p in [1/2, 1].
        return -normal_quantile_lower(1.0 - p);
    }
    normal_quantile_lower(p)
}

/// Φ⁻¹(p) for p in (0, 1) by Acklam's approximation alone (relative error about 1e-9, no
/// refinement): a quick estimate, for searches whose result does not depend on it. Clamped
/// to ±40 at and beyond 0 and 1; 0 for NaN.
pub fn normal_quantile_rough(p: f64) -> f64 {
    if p.is_nan() {
        return 0.0;
    }
    if p <= 0.0 {
        return -40.0;
    }
    if p >= 1.0 {
        return 40.0;
    }
    if p > 0.5 {
        return -acklam(1.0 - p);
    }
    acklam(p)
}

/// Φ⁻¹(p) for 0 < p <= 1/2.
fn normal_quantile_lower(p: f64) -> f64 {
    let mut x = acklam(p);
    for _ in 0..2 {
        // Halley's step on Φ(x) - p, with the error taken relative to p in the tail.
        let e = normal_cdf(x) - p;
        let u = e * SQRT_2PI * exp(0.5 * x * x);
        x -= u / (1.0 + 0.5 * x * u);
    }
    x
}

/// Acklam's rational approximation of Φ⁻¹(p) for 0 < p <= 1/2.
fn acklam(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383577518672690e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    if p < 0.02425 {
        let q = (-2.0 * ln(p)).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{grid, ulps};
    use super::*;

    #[test]
    fn erfc_matches_libm() {
        for x in grid(-30.0, 30.0, 600_000) {
            let (a, b) = (erfc(x), libm::erfc(x));
            assert!(
                ulps(a, b) <= 2 || (a - b).abs() < 1e-300,
                "erfc({x}): {a} vs {b}"
            );
        }
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert_eq!(erfc(0.0), 1.0);
    }

    #[test]
    fn normal_cdf_is_monotone_and_bounded() {
        let mut prev = 0.0;
        for x in grid(-40.0, 40.0, 2_000_000) {
            let f = normal_cdf(x);
            assert!((0.0..=1.0).contains(&f));
            assert!(f >= prev, "Φ decreases at {x}: {f} < {prev}");
            prev = f;
        }
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(0.0), 0.5);
        // Φ(-1.96) = 0.024997895148220435 (standard tables, 16 digits).
        assert!((normal_cdf(-1.96) - 0.024_997_895_148_220_435).abs() < 1e-16);
    }

    #[test]
    fn normal_quantile_inverts_the_cdf() {
        for i in 1..100_000 {
            let p = i as f64 / 100_000.0;
            let x = normal_quantile(p);
            let back = normal_cdf(x);
            assert!(
                ((back - p) / p.min(1.0 - p)).abs() < 1e-13,
                "Φ(Φ⁻¹({p})) = {back}"
            );
        }
        for k in 1..53 {
            // 1 - 2^-k is exact for k < 53.
            let p = (0.5f64).powi(k);
            let x = normal_quantile(p);
            assert!(((normal_cdf(x) - p) / p).abs() < 1e-13, "p = 2^-{k}");
            assert_eq!(normal_quantile(1.0 - p), -x);
        }
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan());
        // Φ⁻¹(0.975) = 1.959963984540054 (standard tables).
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-14);
    }
}
