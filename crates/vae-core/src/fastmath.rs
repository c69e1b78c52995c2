//! Vectorisable elementary functions and run-time dispatch to the widest SIMD the CPU has.
//!
//! The fused CPU kernels of [`crate::ops`] spend their time in `exp` and `log`. The standard
//! library calls libm one value at a time; the polynomials below (Cephes' `expf` and `logf`,
//! about 1 ulp) are written without branches so that the compiler turns each loop into SIMD code.
//! [`multiversion!`](crate::multiversion) compiles a kernel for AVX-512, AVX2+FMA and the
//! baseline and picks one at run time. No `mul_add` is used, so every version computes the same
//! bits: results do not depend on the CPU.

// The coefficients are quoted as Cephes prints them.
#![allow(clippy::excessive_precision)]

/// Defines a function compiled for several x86-64 feature levels, dispatched at run time.
///
/// ```text
/// multiversion! {
///     pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) { for (y, x) in y.iter_mut().zip(x) { *y += a * x } }
/// }
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                match $crate::fastmath::simd_level() {
                    // SAFETY: the level was detected on this CPU.
                    $crate::fastmath::SimdLevel::V4 => return unsafe { v4($($arg),*) },
                    $crate::fastmath::SimdLevel::V3 => return unsafe { v3($($arg),*) },
                    $crate::fastmath::SimdLevel::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}

/// The SIMD feature level chosen for the fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 (x86-64-v4).
    V4,
    /// AVX2 and FMA (x86-64-v3).
    V3,
    /// Whatever the build targets.
    Baseline,
}

impl SimdLevel {
    fn rank(self) -> u8 {
        match self {
            SimdLevel::Baseline => 1,
            SimdLevel::V3 => 2,
            SimdLevel::V4 => 3,
        }
    }
}

thread_local! {
    /// A cap set by [`with_simd_cap`] on this thread: 0 for none, else a [`SimdLevel::rank`].
    static CAP: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with the [`multiversion!`](crate::multiversion) kernels of this thread capped at
/// `cap` (`None`: no cap), then restores the cap before. A level the CPU lacks is never used:
/// the cap only lowers. The exact passes take it from their [`crate::ops::Kernels`] setting.
pub fn with_simd_cap<R>(cap: Option<SimdLevel>, f: impl FnOnce() -> R) -> R {
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            CAP.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CAP.with(|c| c.replace(cap.map_or(0, SimdLevel::rank))));
    f()
}

/// The level the kernels use on this thread: the detected level, lowered by
/// [`with_simd_cap`].
pub fn simd_level() -> SimdLevel {
    let detected = detected_simd_level();
    match CAP.with(|c| c.get()) {
        0 => detected,
        c if c < detected.rank() => {
            if c == SimdLevel::V3.rank() {
                SimdLevel::V3
            } else {
                SimdLevel::Baseline
            }
        }
        _ => detected,
    }
}

/// Detects the SIMD level once. `VAE_SIMD=baseline|v3|v4` caps it (for testing the fallbacks).
pub fn detected_simd_level() -> SimdLevel {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("VAE_SIMD").ok();
        #[cfg(target_arch = "x86_64")]
        {
            let v4 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq");
            let v3 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            match cap.as_deref() {
                Some("baseline") => SimdLevel::Baseline,
                Some("v3") if v3 => SimdLevel::V3,
                _ if v4 && cap.is_none() => SimdLevel::V4,
                Some("v4") if v4 => SimdLevel::V4,
                _ if v3 && cap.as_deref() != Some("baseline") => SimdLevel::V3,
                _ => SimdLevel::Baseline,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = cap;
            SimdLevel::Baseline
        }
    })
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for x in [-87.3, 88]; inputs outside are clamped (so the result is finite and positive).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // max then min: clamp adds checks that keep this loop from vectorising.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.33).min(88.0);
    // v = MAGIC + n in float: the integer n sits in the low bits of v's mantissa, so it is read
    // back with integer arithmetic (a float-to-int `as` cast saturates, which does not vectorise).
    let v = x * LOG2E + ROUND_MAGIC;
    let n = v - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let ni = v.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    y * scale
}

/// ln(x) for finite x > 0 (normal numbers).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    // Mantissa in [1, 2).
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    // Bring it into [sqrt(1/2), sqrt(2)).
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let e = e as f32;
    let x = m - 1.0;
    let z = x * x;
    let mut y = 7.037_683_6e-2f32;
    y = y * x - 1.151_461e-1;
    y = y * x + 1.167_699_9e-1;
    y = y * x - 1.242_014_1e-1;
    y = y * x + 1.424_932_3e-1;
    y = y * x - 1.666_805_8e-1;
    y = y * x + 2.000_071_4e-1;
    y = y * x - 2.499_999_4e-1;
    y = y * x + 3.333_333_1e-1;
    y = y * x * z;
    y += e * LN2_LO;
    y -= 0.5 * z;
    x + y + e * LN2_HI
}

/// ln(1 + e) for e in [0, 1], accurate for tiny e too.
#[inline(always)]
pub fn log1p_unit(e: f32) -> f32 {
    let u = 1.0 + e;
    let d = u - 1.0;
    // ln(u) * e / (u - 1) corrects the rounding of 1 + e; for d == 0, ln(1 + e) ~ e.
    if d == 0.0 {
        e
    } else {
        ln(u) * (e / d)
    }
}

/// softplus(l) = ln(1 + e^l), stable for any finite l.
#[inline(always)]
pub fn softplus(l: f32) -> f32 {
    l.max(0.0) + log1p_unit(exp(-l.abs()))
}

/// The logistic sigmoid, stable for any finite l.
#[inline(always)]
pub fn sigmoid(l: f32) -> f32 {
    let e = exp(-l.abs());
    let r = 1.0 / (1.0 + e);
    if l >= 0.0 {
        r
    } else {
        e * r
    }
}

/// tanh(x), Cephes' `tanhf`: a polynomial near zero, `1 - 2 / (e^2|x| + 1)` elsewhere.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut p = -5.704_988_7e-3f32;
    p = p * z + 2.063_908_9e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328_2e-1;
    let small = p * z * x + x;
    let big = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let big = if x < 0.0 { -big } else { big };
    if a < 0.625 {
        small
    } else {
        big
    }
}

/// (cos 2πu, sin 2πu) for u in [0, 1): reduction to an eighth of a turn, then Cephes' `cosf`
/// and `sinf` polynomials (about 1e-7 absolute error).
#[inline(always)]
pub fn sincos_turn(u: f32) -> (f32, f32) {
    let v = u * 4.0 + ROUND_MAGIC;
    let qf = v - ROUND_MAGIC;
    let q = v.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let r = (u - qf * 0.25) * std::f32::consts::TAU;
    let z = r * r;
    let mut sp = -1.951_529_6e-4f32;
    sp = sp * z + 8.332_161e-3;
    sp = sp * z - 1.666_665_5e-1;
    let sin = sp * z * r + r;
    let mut cp = 2.443_315_7e-5f32;
    cp = cp * z - 1.388_731_6e-3;
    cp = cp * z + 4.166_664_6e-2;
    let cos = cp * z * z - 0.5 * z + 1.0;
    match q & 3 {
        0 => (cos, sin),
        1 => (-sin, cos),
        2 => (-cos, -sin),
        _ => (sin, -cos),
    }
}

/// Sums `f(i)` for i in 0..n with 16 independent accumulators (a fixed order, so that every
/// SIMD level gives the same bits) and the result in f64-free f32 arithmetic.
#[inline(always)]
pub fn sum16(n: usize, mut f: impl FnMut(usize) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f(i + k);
        }
        i += 16;
    }
    let mut tail = 0f32;
    for j in full..n {
        tail += f(j);
    }
    // Pairwise reduction of the lanes.
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            acc[k] += acc[k + w];
        }
    }
    acc[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b.abs().max(1e-30)).abs()
    }

    #[test]
    fn exp_matches_std() {
        let mut x = -87.0f32;
        while x < 88.0 {
            assert!(rel(exp(x), (x as f64).exp()) < 3e-7, "exp({x})");
            x += 0.0137;
        }
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn ln_and_log1p_match_std() {
        for i in 1..100_000 {
            let x = i as f32 * 0.001_37;
            assert!(
                (ln(x) as f64 - (x as f64).ln()).abs() < 2e-7 * (x as f64).ln().abs().max(1.0),
                "ln({x})"
            );
        }
        for e in [0.0f32, 1e-30, 1e-12, 1e-8, 3e-7, 1e-4, 0.3, 0.999, 1.0] {
            let want = (e as f64).ln_1p();
            assert!(
                rel(log1p_unit(e), want.max(1e-300)) < 3e-7 || e == 0.0,
                "log1p({e})"
            );
        }
        assert_eq!(log1p_unit(0.0), 0.0);
    }

    #[test]
    fn softplus_and_sigmoid_are_stable_at_extremes() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-37);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-37);
        for l in [-30.0f32, -5.0, -0.1, 0.0, 0.1, 5.0, 30.0] {
            let want = 1.0 / (1.0 + (-(l as f64)).exp());
            assert!(rel(sigmoid(l), want) < 5e-7, "sigmoid({l})");
            let want = (l as f64).exp().ln_1p();
            assert!(rel(softplus(l), want) < 5e-7, "softplus({l})");
        }
    }

    #[test]
    fn tanh_matches_std() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let want = (x as f64).tanh();
            assert!(
                (tanh(x) as f64 - want).abs() < 2e-7 * want.abs().max(1e-3) + 1e-9,
                "tanh({x})"
            );
            x += 0.00731;
        }
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn sincos_turn_matches_std() {
        for i in 0..100_000 {
            let u = i as f32 / 100_000.0;
            let (c, s) = sincos_turn(u);
            let a = std::f64::consts::TAU * u as f64;
            assert!(
                (c as f64 - a.cos()).abs() < 3e-7 && (s as f64 - a.sin()).abs() < 3e-7,
                "u={u}: {c} {s}"
            );
        }
    }

    #[test]
    fn sum16_is_exact_on_integers() {
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            assert_eq!(sum16(n, |i| i as f32), (n * n.saturating_sub(1) / 2) as f32);
        }
    }
}
