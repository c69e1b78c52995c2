//! Special functions in f64: ln, ln(1+z), ln Γ, the digamma function ψ, and the differences
//! ln Γ(x+m) - ln Γ(x) and ψ(x+m) - ψ(x) without cancellation for large x.
//!
//! They serve the beta-binomial likelihood, whose log-probability is a sum of such differences
//! at arguments from about 1e-3 to about 1e5 (see [`crate::ops::beta_binomial_log_prob`]).
//! Everything is written without data-dependent branches or library calls (the standard
//! library's `ln` is a call per value), so that a loop over pixels compiles to SIMD code under
//! [`multiversion!`](crate::multiversion); the crates that offer ln Γ and ψ (libm, statrs)
//! evaluate one scalar at a time with branches, and none offers the cancellation-free
//! differences.
//!
//! Method: for y ≥ 8, Stirling's series for ln Γ and the asymptotic series for ψ, each to the
//! Bernoulli number B16, whose truncation error at y = 8 is below 1e-16 (the next terms are
//! 43867/244188 y^-17 and 43867/14364 y^-18). Below 8 the argument is shifted up by 8 with the
//! recurrences Γ(x+1) = x Γ(x), ψ(x+1) = ψ(x) + 1/x, whose eight factors are multiplied
//! (for ln Γ) or summed as one fraction (for ψ), so that a single ln or division remains.

// The series coefficients are exact rationals; they are written as such.
#![allow(clippy::excessive_precision)]

/// ln(2π)/2.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_741_78;
/// The shift below which the recurrences are used.
const SHIFT: f64 = 8.0;

// fdlibm's `log` (e_log.c, as the libm crate ships it): ln 2 split in two and the minimax
// coefficients of (ln(1+s) - ln(1-s) - 2s)/s on [0, 0.1716].
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
const LG1: f64 = 6.666_666_666_666_735_130e-01;
const LG2: f64 = 3.999_999_999_940_941_908e-01;
const LG3: f64 = 2.857_142_874_366_239_149e-01;
const LG4: f64 = 2.222_219_843_214_978_396e-01;
const LG5: f64 = 1.818_357_216_161_805_012e-01;
const LG6: f64 = 1.531_383_769_920_937_332e-01;
const LG7: f64 = 1.479_819_860_511_658_591e-01;

/// ln(x) for finite, positive, normal x (within 1 ulp): fdlibm's algorithm without its
/// branches for zero, negative, subnormal and non-finite input, which give garbage here.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    // Reduce x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)), on the high word as fdlibm.
    let hx = (bits >> 32).wrapping_add(0x3ff0_0000 - 0x3fe6_a09e);
    let kbits = hx >> 20;
    // k as a float without an integer conversion (which has no SIMD form on AVX2):
    // 2^52 + kbits has kbits in its low mantissa bits.
    let k = f64::from_bits(0x4330_0000_0000_0000 | kbits) - (4_503_599_627_370_496.0 + 1023.0);
    let hx = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    let f = f64::from_bits((hx << 32) | (bits & 0xffff_ffff)) - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    s * (hfsq + r) + k * LN2_LO - hfsq + f + k * LN2_HI
}

/// ln(1 + z) for z > -1 with 1 + z normal, accurate for tiny z: Kahan's ln(u) z / (u - 1) with
/// u = 1 + z rounded (the quotient corrects the rounding of u).
#[inline(always)]
pub fn ln_1p(z: f64) -> f64 {
    let u = 1.0 + z;
    let d = u - 1.0;
    let safe = if d == 0.0 { 1.0 } else { d };
    let r = ln(u) * (z / safe);
    if d == 0.0 {
        z
    } else {
        r
    }
}

/// Stirling's correction ln Γ(y) - [(y - 1/2) ln y - y + ln(2π)/2], for y ≥ 8, from r = 1/y.
#[inline(always)]
fn stirling_tail(r: f64) -> f64 {
    let r2 = r * r;
    let mut p = -3617.0 / 122_400.0;
    p = p * r2 + 1.0 / 156.0;
    p = p * r2 - 691.0 / 360_360.0;
    p = p * r2 + 1.0 / 1188.0;
    p = p * r2 - 1.0 / 1680.0;
    p = p * r2 + 1.0 / 1260.0;
    p = p * r2 - 1.0 / 360.0;
    p = p * r2 + 1.0 / 12.0;
    p * r
}

/// The asymptotic tail of ψ: ln y - 1/(2y) - ψ(y) = Σ B_2n / (2n y^2n), for y ≥ 8, from
/// r = 1/y.
#[inline(always)]
fn digamma_tail(r: f64) -> f64 {
    let r2 = r * r;
    let mut p = -3617.0 / 8160.0;
    p = p * r2 + 1.0 / 12.0;
    p = p * r2 - 691.0 / 32_760.0;
    p = p * r2 + 1.0 / 132.0;
    p = p * r2 - 1.0 / 240.0;
    p = p * r2 + 1.0 / 252.0;
    p = p * r2 - 1.0 / 120.0;
    p = p * r2 + 1.0 / 12.0;
    p * r2
}

/// x (x+1) ... (x+7).
#[inline(always)]
fn rising8(x: f64) -> f64 {
    let mut p = 1.0;
    for j in 0..8 {
        p *= x + j as f64;
    }
    p
}

/// Σ_{j<8} 1/(x+j), accumulated as one fraction n/d (positive terms: no cancellation).
#[inline(always)]
fn recip_sum8(x: f64) -> f64 {
    let (mut n, mut d) = (0.0, 1.0);
    for j in 0..8 {
        let t = x + j as f64;
        n = n * t + d;
        d *= t;
    }
    n / d
}

/// The argument moved to at least [`SHIFT`], whether it was moved, and a stand-in argument for
/// the recurrence terms (which are computed either way and then discarded for large x).
#[inline(always)]
fn shifted(x: f64) -> (f64, bool, f64) {
    let small = x < SHIFT;
    (
        if small { x + SHIFT } else { x },
        small,
        if small { x } else { 1.0 },
    )
}

/// ln Γ(x) for x > 0 (absolute error within about 4e-16 · max(16, |ln Γ(x)|)).
#[inline(always)]
pub fn ln_gamma(x: f64) -> f64 {
    let (y, small, xs) = shifted(x);
    let st = (y - 0.5) * ln(y) - y + HALF_LN_2PI + stirling_tail(1.0 / y);
    let shift = ln(rising8(xs));
    if small {
        st - shift
    } else {
        st
    }
}

/// ψ(x) = d ln Γ(x) / dx for x > 0.
#[inline(always)]
pub fn digamma(x: f64) -> f64 {
    let (y, small, xs) = shifted(x);
    let r = 1.0 / y;
    let st = ln(y) - 0.5 * r - digamma_tail(r);
    let shift = recip_sum8(xs);
    if small {
        st - shift
    } else {
        st
    }
}

/// ln Γ(x+m) - ln Γ(x), the log of the rising factorial x (x+1) ... (x+m-1) when m is a whole
/// number, for x > 0 and 0 ≤ m ≤ 1e30. Exact zero at m = 0.
///
/// For large x the two ln Γ are nearly equal (about x ln x each); with y = x (or x + 8):
/// ln Γ(y+m) - ln Γ(y) = (y - 1/2) ln(1 + m/y) + m ln(y+m) - m + tail(y+m) - tail(y),
/// a sum of terms no larger than the result, so the absolute error stays near 1e-16 · m ln(x+m).
#[inline(always)]
pub fn ln_poch(x: f64, m: f64) -> f64 {
    let (big, p, q) = ln_poch_parts(x, m);
    big + ln(p / q)
}

/// [`ln_poch`] as `big + ln(p / q)`, so that a sum of several takes one logarithm of the
/// products: `big` is the shifted difference, p/q the shift's ratio x...(x+7) / ((x+m)...
/// (x+m+7)) (p = q = 1 for x ≥ 8; p ≤ 3e9 and q ≤ 1e24 for m ≤ 1e3).
#[inline(always)]
pub fn ln_poch_parts(x: f64, m: f64) -> (f64, f64, f64) {
    let (y, small, xs) = shifted(x);
    let (ry, rym) = (1.0 / y, 1.0 / (y + m));
    let big =
        (y - 0.5) * ln_1p(m * ry) + m * ln(y + m) - m + stirling_tail(rym) - stirling_tail(ry);
    // Γ(x+m)/Γ(x) = [Γ(y+m)/Γ(y)] · x...(x+7) / ((x+m)...(x+m+7)).
    if small {
        (big, rising8(xs), rising8(xs + m))
    } else {
        (big, 1.0, 1.0)
    }
}

/// ψ(x+m) - ψ(x) (for a whole number m, Σ_{j<m} 1/(x+j)), for x > 0 and 0 ≤ m ≤ 1e30; without
/// cancellation for large x: ln(1 + m/y) + m / (2 y (y+m)) - tail(y+m) + tail(y).
#[inline(always)]
pub fn digamma_diff(x: f64, m: f64) -> f64 {
    let (y, small, xs) = shifted(x);
    let (ry, rym) = (1.0 / y, 1.0 / (y + m));
    let big = ln_1p(m * ry) + 0.5 * m * ry * rym - digamma_tail(rym) + digamma_tail(ry);
    let shift = recip_sum8(xs) - recip_sum8(xs + m);
    if small {
        big + shift
    } else {
        big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (x, ln Γ(x), ψ(x)), computed with mpmath 1.4.1 at 40 digits (`mp.loggamma`,
    /// `mp.digamma`) at the exact f64 value of x.
    const GAMMA_REF: &[(f64, f64, f64)] = &[
        (0.001, 6.9071788853838536617, -1000.5755719318102797),
        (
            0.0009118819655545162,
            6.9994743310462641583,
            -1097.2088751063748792,
        ),
        (0.01, 4.5994798780420217016, -100.56088545786867242),
        (0.1, 2.252712651734205902, -10.423754940411076232),
        (0.5, 0.57236494292470008707, -1.9635100260214234794),
        (1.0, 0.0, -0.57721566490153286061),
        (1.5, -0.12078223763524522235, 0.036489973978576520559),
        (2.0, 0.0, 0.42278433509846713939),
        (2.5, 0.28468287047291915963, 0.70315664064524318723),
        (3.7, 1.4280723266653881292, 1.1671535393615114409),
        (7.99, 8.5050116060884811057, 2.0143092220462237995),
        (8.0, 8.5251613610654143002, 2.0156414779556099965),
        (8.01, 8.5453244297477329331, 2.0169719639065192858),
        (10.0, 12.801827480081469611, 2.2517525890667211076),
        (33.3, 82.603723581654943008, 3.4904672385202427773),
        (100.0, 359.13420536957539878, 4.6001618527380874002),
        (255.5, 1158.9409791500571123, 5.5412641859358891408),
        (1000.0, 5905.2204232091812118, 6.9072551956488120521),
        (
            59874.14171519782,
            598736.83609190317794,
            10.99999164912635928,
        ),
        (120000.0, 1283424.7139274187326, 11.695242855091729343),
        (120255.0, 1286407.2716023840228, 11.697365609308123961),
    ];

    /// (x, m, ln Γ(x+m) - ln Γ(x), ψ(x+m) - ψ(x)), mpmath 1.4.1 at 40 digits as above.
    const POCH_REF: &[(f64, f64, f64, f64)] = &[
        (0.001, 1.0, -6.9077552789821370312, 999.99999999999997918),
        (0.001, 255.0, 1149.2691979913022907, 1006.1148773403588857),
        (
            0.0009118819655545162,
            128.0,
            484.55839480772963365,
            1102.0570011860156975,
        ),
        (0.5, 17.0, 31.508749953022649399, 4.7968674582501075826),
        (1.0, 255.0, 1161.7121011184006508, 6.1204387128172803689),
        (7.9, 3.0, 6.5454487933516143281, 0.33995193005291140734),
        (8.0, 255.0, 1192.0845274754304919, 3.5546102087608517122),
        (12.5, 1.0, 2.5257286443082554398, 0.08),
        (100000.0, 1.0, 11.51292546497022842, 0.00001),
        (
            100000.0,
            255.0,
            2936.1195691837213957,
            0.0025467669841884257806,
        ),
        (
            59874.14171519782,
            128.0,
            1408.1356551671018982,
            0.0021355536350850050652,
        ),
        (
            119748.28343039563,
            255.0,
            2982.0227819466038446,
            0.0021272116224313207769,
        ),
        (3.0, 0.0, 0.0, 0.0),
    ];

    fn close(got: f64, want: f64, tol: f64, what: &str) {
        assert!(
            (got - want).abs() <= tol * want.abs().max(1.0),
            "{what}: {got:e} vs {want:e} (diff {:e})",
            got - want
        );
    }

    #[test]
    fn ln_matches_std_to_an_ulp() {
        let mut x = 1e-300f64;
        while x < 1e300 {
            for f in [1.0, 1.000_000_1, 1.3, std::f64::consts::SQRT_2, 1.7] {
                let v = x * f;
                let (got, want) = (ln(v), v.ln());
                assert!(
                    (got - want).abs() <= 2.3e-16 * want.abs().max(1e-300),
                    "ln({v}): {got} vs {want}"
                );
            }
            x *= 7.3;
        }
        assert_eq!(ln(1.0), 0.0);
        for v in [0.999_999_999, 1.000_000_001, 0.75, 1.25] {
            assert!((ln(v) - f64::ln(v)).abs() <= 2.3e-16 * f64::ln(v).abs());
        }
    }

    #[test]
    fn ln_1p_is_accurate_for_tiny_and_large_arguments() {
        for z in [
            1e-300, 1e-20, 1e-16, 3e-9, 1e-5, 0.01, 0.5, 3.0, 255.0, 2.55e5, 1e200,
        ] {
            close(ln_1p(z), f64::ln_1p(z), 4e-16, &format!("ln_1p({z})"));
        }
        assert_eq!(ln_1p(0.0), 0.0);
        close(ln_1p(-0.5), f64::ln_1p(-0.5), 4e-16, "ln_1p(-0.5)");
    }

    #[test]
    fn ln_gamma_and_digamma_match_mpmath() {
        for &(x, lg, dg) in GAMMA_REF {
            // Below 8, ln Γ(x) = ln Γ(x+8) - ln(x...(x+7)) has the absolute error of terms
            // near 16.
            let tol = 4e-16 * lg.abs().max(16.0);
            assert!(
                (ln_gamma(x) - lg).abs() <= tol,
                "ln_gamma({x}): {} vs {lg}",
                ln_gamma(x)
            );
            close(digamma(x), dg, 2e-15, &format!("digamma({x})"));
        }
    }

    #[test]
    fn differences_match_mpmath() {
        for &(x, m, lp, dd) in POCH_REF {
            close(ln_poch(x, m), lp, 2e-15, &format!("ln_poch({x}, {m})"));
            // Relative accuracy even where the difference is far below ψ(x) itself.
            assert!(
                (digamma_diff(x, m) - dd).abs() <= 1e-14 * dd.abs() + 1e-300,
                "digamma_diff({x}, {m}): {:e} vs {dd:e}",
                digamma_diff(x, m)
            );
        }
    }

    #[test]
    fn differences_agree_with_sums_of_logs_and_reciprocals() {
        // For whole m the differences are finite sums, summed here directly.
        for x in [1e-3, 0.37, 1.0, 7.999, 8.0, 8.5, 41.0, 1e3, 6e4, 1.2e5] {
            for m in [0usize, 1, 2, 7, 8, 9, 100, 255] {
                let lp: f64 = (0..m).map(|j| (x + j as f64).ln()).sum();
                let dd: f64 = (0..m).map(|j| 1.0 / (x + j as f64)).sum();
                close(
                    ln_poch(x, m as f64),
                    lp,
                    1e-14,
                    &format!("ln_poch({x}, {m})"),
                );
                assert!(
                    (digamma_diff(x, m as f64) - dd).abs() <= 1e-14 * dd + 1e-300,
                    "digamma_diff({x}, {m})"
                );
            }
        }
    }

    #[test]
    fn digamma_is_the_derivative_of_ln_gamma() {
        for x in [2e-3, 0.3, 1.7, 7.5, 8.5, 30.0, 4e3, 7e4] {
            let h = 1e-5 * x;
            let fd = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            close(
                digamma(x),
                fd,
                1e-8,
                &format!("ψ({x}) vs finite difference"),
            );
        }
    }
}
