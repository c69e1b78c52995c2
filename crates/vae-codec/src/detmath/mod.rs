//! Deterministic elementary functions in f64: the same bits on every CPU and in every build.
//!
//! The entropy models of the coder must compute bit-identical probabilities when a file is
//! written and when it is read, possibly on another machine. `f64::exp` and friends call the
//! platform's libm, which picks FMA or non-FMA code paths by CPU and may change between
//! releases, so they cannot be used. The functions here use only IEEE-754 operations that are
//! exactly rounded (`+ - * /`, comparisons, bit manipulation) in a fixed order; Rust never
//! contracts `a * b + c` into a fused multiply-add, so every SIMD level computes the same
//! result.
//!
//! [`normal`] holds erfc and the standard normal's CDF and quantile function.
//!
//! `exp`, `expm1`, `ln` and `erfc` are the FreeBSD msun (fdlibm) algorithms as ported by the
//! `libm` crate (Sun's permissive notice: "Permission to use, copy, modify, and distribute
//! this software is freely granted, provided that this notice is preserved"), `tanh` is musl's
//! on that `expm1`; they are copied here rather than called so that the coder's arithmetic
//! cannot change with a dependency update. All are accurate to about one ulp.

// The coefficients are quoted as fdlibm prints them.
#![allow(clippy::excessive_precision)]

mod normal;
pub use normal::{erfc, normal_cdf, normal_quantile, normal_quantile_rough};

/// 2^k for k in [-1022, 1023], built from its bits.
#[inline(always)]
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// x * 2^n, exactly (rounded once where the result is subnormal), for |n| <= 2000.
#[inline(always)]
fn scalbn(mut x: f64, mut n: i32) -> f64 {
    if n > 1023 {
        x *= pow2(1023);
        n -= 1023;
        if n > 1023 {
            x *= pow2(1023);
            n = (n - 1023).min(1023);
        }
    } else if n < -1022 {
        // Two steps, the second with a margin of 53 bits so that rounding happens once.
        x *= pow2(-1022 + 53);
        n += 1022 - 53;
        if n < -1022 {
            x *= pow2(-1022 + 53);
            n = (n + 1022 - 53).max(-1022);
        }
    }
    x * pow2(n)
}

const LN2HI: f64 = 6.93147180369123816490e-01;
const LN2LO: f64 = 1.90821492927058770002e-10;
const INVLN2: f64 = std::f64::consts::LOG2_E;
const P1: f64 = 1.66666666666666019037e-01;
const P2: f64 = -2.77777777770155933842e-03;
const P3: f64 = 6.61375632143793436117e-05;
const P4: f64 = -1.65339022054652515390e-06;
const P5: f64 = 4.13813679705723846039e-08;

/// e^x (fdlibm `e_exp.c`): 0 below -745.13, +inf above 709.78, NaN for NaN.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782712893383973096 {
        return f64::INFINITY;
    }
    if x < -745.13321910194110842 {
        return 0.0;
    }
    let ax = x.abs();
    let (hi, lo, k) = if ax > 0.5 * std::f64::consts::LN_2 {
        let k = if ax >= 1.5 * std::f64::consts::LN_2 {
            (INVLN2 * x + if x < 0.0 { -0.5 } else { 0.5 }) as i32
        } else if x < 0.0 {
            -1
        } else {
            1
        };
        (x - k as f64 * LN2HI, k as f64 * LN2LO, k)
    } else if ax > 3.725290298461914e-9 {
        (x, 0.0, 0)
    } else {
        return 1.0 + x;
    };
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (P1 + rr * (P2 + rr * (P3 + rr * (P4 + rr * P5))));
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    if k == 0 {
        y
    } else {
        scalbn(y, k)
    }
}

const LN2_HI: f64 = 6.93147180369123816490e-01;
const LN2_LO: f64 = 1.90821492927058770002e-10;
const LG1: f64 = 6.666666666666735130e-01;
const LG2: f64 = 3.999999999940941908e-01;
const LG3: f64 = 2.857142874366239149e-01;
const LG4: f64 = 2.222219843214978396e-01;
const LG5: f64 = 1.818357216161805012e-01;
const LG6: f64 = 1.531383769920937332e-01;
const LG7: f64 = 1.479819860511658591e-01;

/// The natural logarithm (fdlibm `e_log.c`): -inf at 0, NaN below 0, +inf at +inf.
pub fn ln(mut x: f64) -> f64 {
    let mut ui = x.to_bits();
    let mut hx = (ui >> 32) as u32;
    let mut k: i32 = 0;
    if hx < 0x0010_0000 || (hx >> 31) != 0 {
        if ui << 1 == 0 {
            return f64::NEG_INFINITY;
        }
        if hx >> 31 != 0 {
            return f64::NAN;
        }
        // Subnormal: scale up by 2^54.
        k -= 54;
        x *= pow2(54);
        ui = x.to_bits();
        hx = (ui >> 32) as u32;
    } else if hx >= 0x7ff0_0000 {
        return x;
    } else if hx == 0x3ff0_0000 && ui << 32 == 0 {
        return 0.0;
    }
    // Reduce x into [sqrt(2)/2, sqrt(2)].
    hx += 0x3ff0_0000 - 0x3fe6_a09e;
    k += ((hx >> 20) as i32) - 0x3ff;
    hx = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    ui = ((hx as u64) << 32) | (ui & 0xffff_ffff);
    let x = f64::from_bits(ui);
    let f = x - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let dk = k as f64;
    s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

const Q1: f64 = -3.33333333333331316428e-02;
const Q2: f64 = 1.58730158725481460165e-03;
const Q3: f64 = -7.93650757867487942473e-05;
const Q4: f64 = 4.00821782732936239552e-06;
const Q5: f64 = -2.01099218183624371326e-07;

/// e^x - 1, accurate near 0 (fdlibm `s_expm1.c`): -1 below -38.8, +inf above 709.78, NaN for
/// NaN.
pub fn expm1(x: f64) -> f64 {
    let bits = x.to_bits();
    let hx = ((bits >> 32) & 0x7fff_ffff) as u32;
    let neg = (bits >> 63) != 0;
    // |x| >= 56 ln 2: the result is -1, or e^x (which overflows where exp does).
    if hx >= 0x4043_687a {
        if x.is_nan() {
            return x;
        }
        if neg {
            return -1.0;
        }
        if x > 709.782712893383973096 {
            return f64::INFINITY;
        }
    }
    // Argument reduction: x = k ln 2 + r, |r| <= 0.5 ln 2, with c the rounding error of r.
    let (x, c, k) = if hx > 0x3fd6_2e42 {
        let (hi, lo, k) = if hx < 0x3ff0_a2b2 {
            if neg {
                (x + LN2HI, -LN2LO, -1)
            } else {
                (x - LN2HI, LN2LO, 1)
            }
        } else {
            let k = (INVLN2 * x + if neg { -0.5 } else { 0.5 }) as i32;
            let t = k as f64;
            (x - t * LN2HI, t * LN2LO, k)
        };
        let r = hi - lo;
        (r, (hi - r) - lo, k)
    } else if hx < 0x3c90_0000 {
        // |x| < 2^-54: e^x - 1 rounds to x.
        return x;
    } else {
        (x, 0.0, 0)
    };
    let hfx = 0.5 * x;
    let hxs = x * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let mut e = hxs * ((r1 - t) / (6.0 - x * t));
    if k == 0 {
        return x - (x * e - hxs);
    }
    e = x * (e - c) - c;
    e -= hxs;
    if k == -1 {
        return 0.5 * (x - e) - 0.5;
    }
    if k == 1 {
        if x < -0.25 {
            return -2.0 * (e - (x + 0.5));
        }
        return 1.0 + 2.0 * (x - e);
    }
    let twopk = pow2(k.min(1023));
    if !(0..=56).contains(&k) {
        let y = x - e + 1.0;
        let y = if k == 1024 {
            y * 2.0 * pow2(1023)
        } else {
            y * twopk
        };
        return y - 1.0;
    }
    let uf = pow2(-k);
    if k < 20 {
        (x - e + (1.0 - uf)) * twopk
    } else {
        (x - (e + uf) + 1.0) * twopk
    }
}

/// tanh(x) (musl's `tanh.c`, on [`expm1`]): ±1 beyond |x| = 20, NaN for NaN; odd exactly.
pub fn tanh(x: f64) -> f64 {
    let neg = x.is_sign_negative();
    let a = x.abs();
    let w = (a.to_bits() >> 32) as u32;
    let t = if w > 0x3fe1_93ea {
        // |x| > ln(3)/2, or NaN.
        if w > 0x4034_0000 {
            // |x| > 20 or NaN (0/NaN is NaN).
            1.0 - 0.0 / a
        } else {
            1.0 - 2.0 / (expm1(2.0 * a) + 2.0)
        }
    } else if w > 0x3fd0_58ae {
        // |x| > ln(5/3)/2.
        let t = expm1(2.0 * a);
        t / (t + 2.0)
    } else if w >= 0x0010_0000 {
        let t = expm1(-2.0 * a);
        -t / (t + 2.0)
    } else {
        // Subnormal: tanh(x) rounds to x.
        a
    };
    if neg {
        -t
    } else {
        t
    }
}

/// log2(x) = ln(x) / ln 2 (for rate accounting; not used by the entropy models).
pub fn log2(x: f64) -> f64 {
    ln(x) * std::f64::consts::LOG2_E
}

/// The logistic sigmoid 1 / (1 + e^-x), stable for any x (0 and 1 at the extremes).
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// softplus(x) = ln(1 + e^x), stable for any finite x.
pub fn softplus(x: f64) -> f64 {
    if x > 36.0 {
        return x + exp(-x);
    }
    let e = exp(-x.abs());
    let u = 1.0 + e;
    // ln(u) * e / (u - 1) corrects the rounding of 1 + e.
    let l1p = if u == 1.0 { e } else { ln(u) * (e / (u - 1.0)) };
    x.max(0.0) + l1p
}

/// `log_softmax` of one row, written into `out` (for mixture weights): x - max - ln Σ e^(x - max).
pub fn log_softmax(x: &[f64], out: &mut [f64]) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for &v in x {
        s += exp(v - m);
    }
    let l = m + ln(s);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v - l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    pub(super) fn ulps(a: f64, b: f64) -> u64 {
        if a == b {
            return 0;
        }
        let (ia, ib) = (a.to_bits() as i64, b.to_bits() as i64);
        if (ia < 0) != (ib < 0) {
            return u64::MAX;
        }
        ia.abs_diff(ib)
    }

    /// A grid from `lo` to `hi` with irrational-ish steps, endpoints included.
    pub(super) fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..=n).map(move |i| lo + (hi - lo) * (i as f64 / n as f64))
    }

    // Reference values: the `libm` crate (a pure-Rust port of musl, itself from fdlibm) and
    // the platform's libm through std, each within one or two ulps of the true value.

    #[test]
    fn exp_matches_libm_within_an_ulp() {
        for x in grid(-745.0, 709.7, 400_000).chain(grid(-1.0, 1.0, 100_000)) {
            assert!(
                ulps(exp(x), libm::exp(x)) <= 1,
                "exp({x}): {} vs {}",
                exp(x),
                libm::exp(x)
            );
            assert!(ulps(exp(x), x.exp()) <= 2, "exp({x}) vs std");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(800.0), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert!(exp(-744.0) > 0.0, "subnormal results are kept");
    }

    #[test]
    fn ln_matches_libm_within_an_ulp() {
        for x in grid(1e-300, 1e300, 100_000)
            .chain(grid(0.5, 2.0, 100_000))
            .chain(grid(1e-12, 1e-3, 10_000))
            .chain([5e-324, 1e-310, f64::MAX])
        {
            assert!(ulps(ln(x), libm::log(x)) <= 1, "ln({x})");
            assert!(ulps(ln(x), x.ln()) <= 2, "ln({x}) vs std");
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
    }

    #[test]
    fn expm1_matches_libm_within_an_ulp() {
        for x in grid(-40.0, 709.7, 400_000)
            .chain(grid(-1.0, 1.0, 100_000))
            .chain(grid(-1e-6, 1e-6, 10_000))
            .chain([
                1e-300, -1e-300, 5e-324, 1e-17, -1e-17, 0.3466, 1.0397, -0.3466,
            ])
        {
            assert!(
                ulps(expm1(x), libm::expm1(x)) <= 1,
                "expm1({x}): {} vs {}",
                expm1(x),
                libm::expm1(x)
            );
            assert!(ulps(expm1(x), x.exp_m1()) <= 2, "expm1({x}) vs std");
        }
        assert_eq!(expm1(0.0), 0.0);
        assert_eq!(expm1(-100.0), -1.0);
        assert_eq!(expm1(800.0), f64::INFINITY);
        assert_eq!(expm1(f64::NEG_INFINITY), -1.0);
        assert!(expm1(f64::NAN).is_nan());
    }

    #[test]
    fn tanh_matches_libm_within_an_ulp_and_is_odd() {
        for x in grid(-25.0, 25.0, 500_000)
            .chain(grid(-0.6, 0.6, 100_000))
            .chain(grid(-1e-8, 1e-8, 10_000))
            .chain([5e-324, 1e-310, 0.2554, 0.5493, 19.99, 20.01, 1e300])
        {
            let t = tanh(x);
            assert!(
                ulps(t, libm::tanh(x)) <= 1,
                "tanh({x}): {t} vs {}",
                libm::tanh(x)
            );
            // The platform's tanh (glibc's manual lists up to 2 ulps for it) may sit on the
            // other side: tanh(0.35136) is 0.33758111011270703 (mpmath, 200 bits), glibc gives
            // 0.33758111011270714.
            assert!(ulps(t, x.tanh()) <= 3, "tanh({x}) vs std");
            assert_eq!(tanh(-x).to_bits(), (-t).to_bits(), "tanh(-{x})");
            assert!(t.abs() <= 1.0);
        }
        assert_eq!(tanh(0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(tanh(f64::INFINITY), 1.0);
        assert_eq!(tanh(f64::NEG_INFINITY), -1.0);
        assert!(tanh(f64::NAN).is_nan());
        // tanh(0.5) = 0.46211715726000974 (standard tables, 17 digits).
        assert!((tanh(0.5) - 0.462_117_157_260_009_74).abs() < 1e-16);
    }

    #[test]
    fn sigmoid_and_softplus_match_std() {
        for x in grid(-700.0, 700.0, 200_000) {
            let want = 1.0 / (1.0 + (-x).exp());
            assert!(
                (sigmoid(x) - want).abs() <= 1e-15 * want.max(1e-300),
                "sigmoid({x})"
            );
            let want = x.exp().ln_1p();
            if want.is_finite() {
                assert!(
                    (softplus(x) - want).abs() <= 1e-15 * want.max(1e-300),
                    "softplus({x})"
                );
            }
        }
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(softplus(1000.0), 1000.0);
    }

    #[test]
    fn log_softmax_normalises() {
        let x = [0.3, -2.0, 5.0, 1e-3];
        let mut o = [0.0; 4];
        log_softmax(&x, &mut o);
        let s: f64 = o.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-15);
    }
}
