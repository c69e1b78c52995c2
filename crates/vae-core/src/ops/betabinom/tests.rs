use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::ops::{cdf, inverse_cdf, Kernels};
use crate::special::ln_poch;
use crate::Rng;

fn tensors(p: Vec<f32>, x: Vec<f32>, b: usize) -> (Tensor, Tensor) {
    let (pd, d) = (p.len() / b, x.len() / b);
    (
        Tensor::from_vec(p, (b, pd), &Device::Cpu).unwrap(),
        Tensor::from_vec(x, (b, d), &Device::Cpu).unwrap(),
    )
}

/// The kernel's per-pixel log-probability in f64 (closed-form differences), α and β given.
fn kernel_log_pmf(a: f64, b: f64) -> [f64; LEVELS] {
    let mut out = [0f64; LEVELS];
    for (k, o) in out.iter_mut().enumerate() {
        *o = ln_choose()[k] + log_ratio(a, b, k as f64);
    }
    out
}

/// The sizes of the terms an f32 evaluation of ln P(k) adds up: its rounding is relative to
/// these, not to ln P(k).
fn f32_scale(a: f64, b: f64, k: f64) -> f64 {
    let n = 255.0;
    let choose = ln_choose()[k as usize];
    choose + ln_poch(a, k).abs() + ln_poch(b, n - k).abs() + ln_poch(a + b, n).abs() + 1.0
}

/// Raw (α, β) outputs at the extremes: both bounds (±1e4 saturate them), one of each, moderate.
const EXTREMES: &[(f64, f64)] = &[
    (-1e4, -1e4),
    (1e4, 1e4),
    (-1e4, 1e4),
    (1e4, -1e4),
    (-7.0, 11.0),
    (0.0, 0.0),
    (-3.0, 2.0),
    (5.0, 5.5),
    (9.0, -4.0),
    (-1e4, 0.0),
];

#[test]
fn choose_table_is_exact() {
    let t = ln_choose();
    assert_eq!(t[0], 0.0);
    assert!(t[255].abs() < 1e-11 && (t[1] - 255f64.ln()).abs() < 1e-13);
    for k in 0..256 {
        assert!((t[k] - t[255 - k]).abs() < 1e-11, "symmetry at {k}");
    }
    // Σ_k C(255, k) = 2^255.
    let mx = t.iter().copied().fold(f64::MIN, f64::max);
    let lse = mx + t.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
    assert!((lse - 255.0 * std::f64::consts::LN_2).abs() < 1e-11);
}

#[test]
fn alpha_beta_one_is_uniform() -> candle_core::Result<()> {
    // Exactly: C(n, k) B(k+1, n-k+1) / B(1, 1) = 1/(n+1).
    for (k, v) in kernel_log_pmf(1.0, 1.0).iter().enumerate() {
        assert!((v + 256f64.ln()).abs() < 1e-12, "level {k}: {v}");
    }
    // Through the bound: raw = bound^-1(0) gives ln α = 0 to f32 rounding.
    let (mid, half) = (f64::from(LOG_AB.mid), f64::from(LOG_AB.half));
    let raw = (mid + half * (-mid / half).atanh()) as f32;
    let d = 256;
    let p = vec![raw; 2 * d];
    let x: Vec<f32> = (0..d).map(|v| v as f32 / 255.0).collect();
    let (pt, xt) = tensors(p, x, 1);
    let got = beta_binomial_log_prob(&pt, &xt, Kernels::Native)?.to_vec1::<f32>()?[0];
    let want = -256.0 * 256f64.ln();
    assert!((f64::from(got) - want).abs() < 1e-4, "{got} vs {want}");
    Ok(())
}

#[test]
fn probabilities_sum_to_one_and_are_finite_at_extremes() -> candle_core::Result<()> {
    for &(ra, rb) in EXTREMES {
        let host = beta_binomial_pixel_log_pmf(ra, rb);
        let (a, b) = (positive(ra as f32).0, positive(rb as f32).0);
        let kernel = kernel_log_pmf(a, b);
        for t in [&host, &kernel] {
            assert!(t.iter().all(|v| v.is_finite()), "({ra}, {rb}): {t:?}");
            let total: f64 = t.iter().map(|v| v.exp()).sum();
            assert!((total - 1.0).abs() < 1e-9, "({ra}, {rb}): sums to {total}");
        }
        // The host table sums the rising factorials term by term at the f64 α; the kernel
        // takes α from the f32 bound and the closed forms.
        let ha = LOG_AB.apply_f64(ra).exp();
        let hb = LOG_AB.apply_f64(rb).exp();
        let exact = kernel_log_pmf(ha, hb);
        for k in 0..LEVELS {
            assert!(
                (host[k] - exact[k]).abs() < 1e-10 * exact[k].abs().max(1.0),
                "({ra}, {rb}) level {k}: {} vs {}",
                host[k],
                exact[k]
            );
        }
        // The fused op on all 256 levels of this pixel.
        let p: Vec<f32> = (0..256).flat_map(|_| [ra as f32, rb as f32]).collect();
        let x: Vec<f32> = (0..256).map(|v| v as f32 / 255.0).collect();
        let (pt, xt) = tensors(p, x, 256);
        let fused = beta_binomial_log_prob(&pt, &xt, Kernels::Native)?.to_vec1::<f32>()?;
        let mut total = 0.0;
        for (k, &f) in fused.iter().enumerate() {
            assert!(f.is_finite());
            let want = kernel[k];
            assert!(
                (f64::from(f) - want).abs() < 1e-6 * want.abs().max(1.0),
                "({ra}, {rb}) level {k}: {f} vs {want}"
            );
            total += f64::from(f).exp();
        }
        assert!(
            (total - 1.0).abs() < 1e-5,
            "({ra}, {rb}): fused sums to {total}"
        );
        // The composite: the same values to its precision; both gradients finite.
        let var = Var::from_tensor(&pt)?;
        let comp = composite_log_prob(var.as_tensor(), &xt)?;
        for (k, &c) in comp.to_vec1::<f32>()?.iter().enumerate() {
            let want = kernel[k];
            let tol = 4e-7 * f32_scale(a, b, k as f64);
            assert!(
                (f64::from(c) - want).abs() < tol,
                "({ra}, {rb}) level {k}: composite {c} vs {want}"
            );
        }
        for lp in [
            comp,
            beta_binomial_log_prob(var.as_tensor(), &xt, Kernels::Native)?,
        ] {
            let g = lp.sum_all()?.backward()?;
            let g = g
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert!(
                g.iter().all(|g| g.is_finite()),
                "({ra}, {rb}): gradient {g:?}"
            );
        }
    }
    Ok(())
}

fn random(b: usize, d: usize, spread: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let p: Vec<f32> = rng
        .normal_vec(b * 2 * d)
        .into_iter()
        .map(|z| 1.0 + spread * z)
        .collect();
    let x = (0..b * d)
        .map(|i| match i % 9 {
            0 => 0.0,
            1 => 1.0,
            _ => rng.below(256) as f32 / 255.0,
        })
        .collect();
    (p, x)
}

#[test]
fn fused_matches_composite_in_value_and_gradient() -> candle_core::Result<()> {
    // Raw values N(1, 4²): α and β from near the floor to near the ceiling.
    let (b, d) = (3, 41);
    let (p, x) = random(b, d, 4.0, 3);
    let (pt, xt) = tensors(p.clone(), x.clone(), b);
    let var = Var::from_tensor(&pt)?;
    let w = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu)?;
    let fused = beta_binomial_log_prob(var.as_tensor(), &xt, Kernels::Native)?;
    let comp = composite_log_prob(var.as_tensor(), &xt)?;
    let (fv, cv) = (fused.to_vec1::<f32>()?, comp.to_vec1::<f32>()?);
    for bi in 0..b {
        // The f64 reference: the host tables at the f32 α, β the kernel sees.
        let want: f64 = (0..d)
            .map(|i| {
                let (a, bb) = (
                    positive(p[bi * 2 * d + i]).0,
                    positive(p[bi * 2 * d + d + i]).0,
                );
                kernel_log_pmf(a, bb)[(x[bi * d + i] * 255.0).round() as usize]
            })
            .sum();
        assert!(
            (f64::from(fv[bi]) - want).abs() < 1e-6 * want.abs(),
            "{fv:?} vs {want}"
        );
        assert!(
            (f64::from(cv[bi]) - want).abs() < 1e-4 * want.abs(),
            "{cv:?} vs {want}"
        );
    }
    let gf = fused.mul(&w)?.sum_all()?.backward()?;
    let gc = comp.mul(&w)?.sum_all()?.backward()?;
    let gf = gf
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f32>()?;
    let gc = gc
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f32>()?;
    for (i, (a, c)) in gf.iter().zip(&gc).enumerate() {
        assert!(a.is_finite());
        assert!(
            (a - c).abs() < 1e-3 * c.abs().max(1.0),
            "grad {i}: {a} vs {c}"
        );
    }
    Ok(())
}

#[test]
fn fused_gradient_matches_finite_differences() -> candle_core::Result<()> {
    let (b, d) = (2, 23);
    let (p, x) = random(b, d, 3.0, 9);
    let (pt, xt) = tensors(p.clone(), x.clone(), b);
    let var = Var::from_tensor(&pt)?;
    let w = [0.7f64, -1.3];
    let wt = Tensor::new(&[w[0] as f32, w[1] as f32], &Device::Cpu)?;
    let g = beta_binomial_log_prob(var.as_tensor(), &xt, Kernels::Native)?
        .mul(&wt)?
        .sum_all()?
        .backward()?;
    let g = g
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f32>()?;
    for (at, &gv) in g.iter().enumerate() {
        let (bi, col) = (at / (2 * d), at % (2 * d));
        let i = col % d;
        let k = (x[bi * d + i] * 255.0).round() as usize;
        let (ra, rb) = (
            f64::from(p[bi * 2 * d + i]),
            f64::from(p[bi * 2 * d + d + i]),
        );
        let f = |ra: f64, rb: f64| w[bi] * beta_binomial_pixel_log_pmf(ra, rb)[k];
        let e = 1e-4;
        let fd = if col < d {
            (f(ra + e, rb) - f(ra - e, rb)) / (2.0 * e)
        } else {
            (f(ra, rb + e) - f(ra, rb - e)) / (2.0 * e)
        };
        assert!(
            (f64::from(gv) - fd).abs() < 1e-4 * fd.abs().max(1.0),
            "param {at} (raw {ra}, {rb}, level {k}): {gv} vs {fd}"
        );
    }
    Ok(())
}

#[test]
fn mean_and_samples_follow_the_table() -> candle_core::Result<()> {
    let d = EXTREMES.len();
    let mut row = vec![0f32; 2 * d];
    for (i, &(ra, rb)) in EXTREMES.iter().enumerate() {
        row[i] = ra as f32;
        row[d + i] = rb as f32;
    }
    let pt = Tensor::from_vec(row.clone(), (1, 2 * d), &Device::Cpu)?;
    let mean = beta_binomial_mean(&pt)?.to_vec2::<f32>()?;
    let tables: Vec<[f64; 256]> = (0..d)
        .map(|i| beta_binomial_pixel_pmf(f64::from(row[i]), f64::from(row[d + i])))
        .collect();
    for i in 0..d {
        let want: f64 = (0..256).map(|v| v as f64 * tables[i][v]).sum::<f64>() / 255.0;
        assert!(
            (f64::from(mean[0][i]) - want).abs() < 1e-6,
            "pixel {i}: {} vs {want}",
            mean[0][i]
        );
    }
    for pick in [1e-9f64, 0.1, 0.5, 0.9, 0.999_999] {
        let mut u = vec![0f32; d];
        let mut want = vec![0usize; d];
        for i in 0..d {
            let c = cdf(&tables[i]);
            let target = inverse_cdf(&c, pick);
            let below = if target == 0 { 0.0 } else { c[target - 1] };
            u[i] = (0.5 * (below + c[target].min(1.0))) as f32;
            want[i] = inverse_cdf(&c, f64::from(u[i]));
        }
        let got = beta_binomial_sample(&pt, &u)?.to_vec2::<f32>()?;
        for i in 0..d {
            assert_eq!(
                (got[0][i] * 255.0).round() as usize,
                want[i],
                "pixel {i} u={}",
                u[i]
            );
        }
    }
    Ok(())
}

#[test]
fn bad_shapes_are_errors() {
    let (p, x) = tensors(vec![0f32; 6], vec![0f32; 2], 1);
    assert!(beta_binomial_log_prob(&p, &x, Kernels::Native).is_err());
    assert!(composite_log_prob(&p, &x).is_err());
    let (p, x) = tensors(vec![0f32; 4], vec![0f32; 2], 1);
    assert!(beta_binomial_log_prob(&p, &x, Kernels::Native).is_ok());
    assert!(beta_binomial_sample(&p, &[0.1]).is_err());
    assert!(beta_binomial_mean(&Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
}

#[test]
fn composite_in_f64_matches_the_kernel() -> candle_core::Result<()> {
    // In f64 the composite keeps the Lanczos series' own accuracy (relative error below 2e-10
    // in ln Γ), far from the f32 rounding of the terms.
    let (b, d) = (2, 37);
    let (p, x) = random(b, d, 4.0, 17);
    let (pt, xt) = tensors(p.clone(), x.clone(), b);
    let got = composite_log_prob(&pt.to_dtype(DType::F64)?, &xt.to_dtype(DType::F64)?)?
        .to_vec1::<f64>()?;
    for (bi, g) in got.iter().enumerate() {
        // The composite's α, β come from the f64 bound here.
        let want: f64 = (0..d)
            .map(|i| {
                let t = beta_binomial_pixel_log_pmf(
                    f64::from(p[bi * 2 * d + i]),
                    f64::from(p[bi * 2 * d + d + i]),
                );
                t[(x[bi * d + i] * 255.0).round() as usize]
            })
            .sum();
        assert!((g - want).abs() < 1e-8 * want.abs(), "{g} vs {want}");
    }
    Ok(())
}

#[test]
fn parameter_bounds_have_the_documented_consequences() {
    // Floor: α = e^-7 ≈ 9.1e-4 and β = 1 leave about α (ψ(256) - ψ(1)) ≈ 5.6e-3 nats off level 0.
    let (mid, half) = (f64::from(LOG_AB.mid), f64::from(LOG_AB.half));
    let beta_one = mid + half * (-mid / half).atanh();
    let p0 = beta_binomial_pixel_log_pmf(-1e4, beta_one)[0];
    assert!((-p0 - 5.6e-3).abs() < 1e-4, "{p0}");
    assert!((-7f64).exp() > 9.1e-4 && (-7f64).exp() < 9.2e-4);
    // Ceiling: α = β = e^11 gives a variance within 0.3 % of the binomial's n/4.
    let t = beta_binomial_pixel_pmf(1e4, 1e4);
    let mean: f64 = (0..256).map(|k| k as f64 * t[k]).sum();
    let var: f64 = (0..256).map(|k| (k as f64 - mean).powi(2) * t[k]).sum();
    let ratio = var / (255.0 / 4.0);
    assert!(ratio > 1.0 && ratio < 1.003, "{ratio}");
}
