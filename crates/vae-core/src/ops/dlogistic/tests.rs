use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::ops::{cdf, inverse_cdf, Kernels};
use crate::Rng;

/// Rows of `[batch, P·dim]` parameters and `[batch, dim]` levels/255.
fn tensors(p: Vec<f32>, x: Vec<f32>, b: usize) -> (Tensor, Tensor) {
    let (pd, d) = (p.len() / b, x.len() / b);
    (
        Tensor::from_vec(p, (b, pd), &Device::Cpu).unwrap(),
        Tensor::from_vec(x, (b, d), &Device::Cpu).unwrap(),
    )
}

fn pixel_of(row: &[f32], pp: usize, d: usize, i: usize) -> Vec<f64> {
    (0..pp).map(|blk| f64::from(row[blk * d + i])).collect()
}

/// Random parameters: logits and means spread over and beyond [0, 1], raw log-scales around
/// the middle of their range; levels spread over 0..=255 with both ends present.
fn random(k: usize, b: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let pp = discretized_logistic_params_per_dim(k);
    let mut rng = Rng::new(seed);
    let z = rng.normal_vec(b * pp * d);
    let mut p = vec![0f32; b * pp * d];
    for bi in 0..b {
        for blk in 0..pp {
            for i in 0..d {
                let at = bi * pp * d + blk * d + i;
                let kind = if k == 1 { blk + 1 } else { blk / k };
                p[at] = match kind {
                    0 => 2.0 * z[at],
                    1 => 0.5 + 0.4 * z[at],
                    _ => -3.0 + 1.5 * z[at],
                };
            }
        }
    }
    let x = (0..b * d)
        .map(|i| match i % 7 {
            0 => 0.0,
            1 => 1.0,
            _ => rng.below(256) as f32 / 255.0,
        })
        .collect();
    (p, x)
}

/// What the composite may differ from the f64 tables by at one pixel, beyond rounding relative
/// to the value: it rounds the bin centre v/255 to f32 (within 3e-8), and ln P moves by at most
/// 1/σ per unit of mean.
fn f32_slack(raw: &[f64], k: usize) -> f64 {
    let scales = &raw[raw.len() - k..];
    let s_min = scales
        .iter()
        .map(|&r| LOG_SCALE.apply_f64(r))
        .fold(f64::INFINITY, f64::min);
    6e-8 * (-s_min).exp()
}

/// Log-probability per example from the host f64 tables: the reference for the fused kernel.
/// With it, the f32 slack of each example.
fn host_log_prob(p: &[f32], x: &[f32], k: usize, b: usize) -> Vec<(f64, f64)> {
    let pp = discretized_logistic_params_per_dim(k);
    let d = x.len() / b;
    (0..b)
        .map(|bi| {
            let row = &p[bi * pp * d..(bi + 1) * pp * d];
            (0..d)
                .map(|i| {
                    let raw = pixel_of(row, pp, d, i);
                    let t = discretized_logistic_pixel_log_pmf(&raw, k).unwrap();
                    (
                        t[(x[bi * d + i] * 255.0).round() as usize],
                        f32_slack(&raw, k),
                    )
                })
                .fold((0.0, 0.0), |(a, b), (v, s)| (a + v, b + s))
        })
        .collect()
}

#[test]
fn interior_identity_and_its_derivatives_hold() {
    // ln(σ(a) - σ(b)) against the log-space form, and its partial derivatives (the formulas
    // in the module documentation) against central differences of the direct value, in f64.
    let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
    let direct = |a: f64, b: f64| (sig(a) - sig(b)).ln();
    let log_space = |a: f64, b: f64| {
        let dl = 0.5 * (a - b);
        dl + (-(-2.0 * dl).exp_m1()).ln()
            - 0.5 * (a.abs() + b.abs())
            - (-a.abs()).exp().ln_1p()
            - (-b.abs()).exp().ln_1p()
    };
    for (a, b) in [
        (0.3, -0.2),
        (2.0, 1.9),
        (-1.0, -4.0),
        (5.0, -5.0),
        (0.01, -0.01),
    ] {
        assert!((direct(a, b) - log_space(a, b)).abs() < 1e-12, "{a} {b}");
        let dl = 0.5 * (a - b);
        let coth = 1.0 / dl.tanh();
        let da = 0.5 * (coth - (0.5 * a).tanh());
        let db = -0.5 * (coth + (0.5 * b).tanh());
        let e = 1e-6;
        let fa = (direct(a + e, b) - direct(a - e, b)) / (2.0 * e);
        let fb = (direct(a, b + e) - direct(a, b - e)) / (2.0 * e);
        assert!((da - fa).abs() < 1e-6 * fa.abs().max(1.0), "∂a at {a} {b}");
        assert!((db - fb).abs() < 1e-6 * fb.abs().max(1.0), "∂b at {a} {b}");
    }
    // Far from the mean the direct form underflows to ln 0; the log-space form stays finite
    // and equals the tail's asymptote -b + ln(1 - e^-2δ) + δ... ≈ -b for both a, b ≫ 1.
    let (a, b) = (1000.0 + 5.85, 1000.0 - 5.85);
    assert_eq!(direct(a, b), f64::NEG_INFINITY);
    assert!((log_space(a, b) + b).abs() < 1e-2);
}

#[test]
fn one_component_matches_the_direct_bin_mass() -> candle_core::Result<()> {
    // m = v/255 exactly: P(v) = σ(h/σ) - σ(-h/σ) for interior v, σ(h/σ) for v = 0.
    let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
    let d = 5;
    let levels = [0usize, 1, 77, 128, 254];
    for raw_s in [-9.0f32, -5.0, -2.0, 0.0, 1.5] {
        let mut p = vec![0f32; 2 * d];
        let mut x = vec![0f32; d];
        for (i, &v) in levels.iter().enumerate() {
            p[i] = v as f32 / 255.0;
            p[d + i] = raw_s;
            x[i] = v as f32 / 255.0;
        }
        let (pt, xt) = tensors(p.clone(), x, 1);
        let got = discretized_logistic_log_prob(&pt, &xt, 1, Kernels::Native)?.to_vec1::<f32>()?[0];
        let s = LOG_SCALE.apply_f64(f64::from(raw_s));
        let h = 0.5 / 255.0;
        let want: f64 = levels
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let m = f64::from(p[i]);
                let c = v as f64 / 255.0;
                let (a, b) = ((c + h - m) / s.exp(), (c - h - m) / s.exp());
                if v == 0 {
                    sig(a).ln()
                } else {
                    (sig(a) - sig(b)).ln()
                }
            })
            .sum();
        assert!(
            (f64::from(got) - want).abs() < 2e-5 * want.abs().max(1.0),
            "raw_s={raw_s}: {got} vs {want}"
        );
    }
    Ok(())
}

/// Pixels at the extremes: every scale bound (raw ±1e4 saturate it), means far outside the
/// data range and between levels, one dominant and equal mixture weights.
fn extreme_pixels() -> Vec<(usize, Vec<f64>)> {
    let mut px = vec![];
    for m in [-50.0, -1.0, 0.0, 0.5, 0.5 + 0.3 / 255.0, 1.0, 2.0, 50.0] {
        for s in [-1e4, -8.0, -3.0, 0.0, 2.0, 1e4] {
            px.push((1, vec![m, s]));
        }
    }
    let means = [-50.0, 0.0, 0.5, 1.0, 50.0];
    let scales = [-1e4, -6.0, -2.0, 1.0, 1e4];
    for logits in [
        [0.0; 5],
        [40.0, -40.0, 0.0, -1e4, 3.0],
        [-1e4, -1e4, 1e4, 0.0, 0.0],
    ] {
        let mut raw = logits.to_vec();
        raw.extend(means);
        raw.extend(scales);
        px.push((5, raw.clone()));
        // The same components with means and scales paired differently.
        raw[5..10].rotate_left(2);
        px.push((5, raw));
    }
    px
}

#[test]
fn probabilities_sum_to_one_and_are_finite_at_extremes() -> candle_core::Result<()> {
    for (k, raw) in extreme_pixels() {
        // The values the f32 kernel sees.
        let raw: Vec<f64> = raw.iter().map(|&r| f64::from(r as f32)).collect();
        let lp = discretized_logistic_pixel_log_pmf(&raw, k)?;
        assert!(lp.iter().all(|v| v.is_finite()), "{raw:?}: {lp:?}");
        let total: f64 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{raw:?}: sums to {total}");
        // The fused kernel on all 256 levels of this pixel: finite, and the same table.
        let p: Vec<f32> = (0..256)
            .flat_map(|_| raw.iter().map(|&r| r as f32))
            .collect();
        let x: Vec<f32> = (0..256).map(|v| v as f32 / 255.0).collect();
        let (pt, xt) = tensors(p, x, 256);
        let fused =
            discretized_logistic_log_prob(&pt, &xt, k, Kernels::Native)?.to_vec1::<f32>()?;
        let mut total = 0.0;
        for (v, &f) in fused.iter().enumerate() {
            assert!(f.is_finite(), "{raw:?} level {v}: {f}");
            let want = lp[v];
            assert!(
                (f64::from(f) - want).abs() < 3e-6 * want.abs().max(1.0),
                "{raw:?} level {v}: {f} vs {want}"
            );
            total += f64::from(f).exp();
        }
        assert!((total - 1.0).abs() < 2e-6, "{raw:?}: fused sums to {total}");
        // The composite: the same values to its precision; both gradients finite.
        let var = Var::from_tensor(&pt)?;
        let comp = composite_log_prob(var.as_tensor(), &xt, k)?;
        for (v, &c) in comp.to_vec1::<f32>()?.iter().enumerate() {
            let want = lp[v];
            let tol = 3e-6 * want.abs().max(1.0) + f32_slack(&raw, k);
            assert!(
                (f64::from(c) - want).abs() < tol,
                "{raw:?} level {v}: {c} vs {want}"
            );
        }
        for lp in [
            comp,
            discretized_logistic_log_prob(var.as_tensor(), &xt, k, Kernels::Native)?,
        ] {
            let g = lp.sum_all()?.backward()?;
            let g = g
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert!(g.iter().all(|g| g.is_finite()), "{raw:?}: gradient {g:?}");
        }
    }
    Ok(())
}

#[test]
fn fused_matches_composite_and_f64_tables_in_value_and_gradient() -> candle_core::Result<()> {
    for k in [1usize, 3] {
        let (b, d) = (3, 37);
        let (p, x) = random(k, b, d, 11 + k as u64);
        let (pt, xt) = tensors(p.clone(), x.clone(), b);
        let var = Var::from_tensor(&pt)?;
        let w = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu)?;
        let fused = discretized_logistic_log_prob(var.as_tensor(), &xt, k, Kernels::Native)?;
        let comp = composite_log_prob(var.as_tensor(), &xt, k)?;
        let host = host_log_prob(&p, &x, k, b);
        let (fv, cv) = (fused.to_vec1::<f32>()?, comp.to_vec1::<f32>()?);
        for (i, &(want, slack)) in host.iter().enumerate() {
            let tol = 2e-6 * want.abs().max(1.0);
            assert!(
                (f64::from(fv[i]) - want).abs() < tol,
                "k={k} fused {fv:?} vs {host:?}"
            );
            // The composite rounds the bin centre v/255 to f32 before subtracting the mean.
            let tol = tol + slack;
            assert!(
                (f64::from(cv[i]) - want).abs() < tol,
                "k={k} composite {cv:?} vs {host:?}"
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
                (a - c).abs() < 2e-4 * c.abs().max(1.0),
                "k={k} grad {i}: {a} vs {c}"
            );
        }
    }
    Ok(())
}

#[test]
fn fused_gradient_matches_finite_differences() -> candle_core::Result<()> {
    for k in [1usize, 2] {
        let (b, d) = (2, 13);
        let (p, x) = random(k, b, d, 5 + k as u64);
        let (pt, xt) = tensors(p.clone(), x.clone(), b);
        let var = Var::from_tensor(&pt)?;
        let w = [0.7f64, -1.3];
        let wt = Tensor::new(&[w[0] as f32, w[1] as f32], &Device::Cpu)?;
        let g = discretized_logistic_log_prob(var.as_tensor(), &xt, k, Kernels::Native)?
            .mul(&wt)?
            .sum_all()?
            .backward()?;
        let g = g
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Central differences of the f64 tables, parameter by parameter.
        let pp = discretized_logistic_params_per_dim(k);
        let f = |p: &[f64], bi: usize, i: usize| -> f64 {
            let raw: Vec<f64> = (0..pp).map(|blk| p[bi * pp * d + blk * d + i]).collect();
            let v = (x[bi * d + i] * 255.0).round() as usize;
            w[bi] * discretized_logistic_pixel_log_pmf(&raw, k).unwrap()[v]
        };
        let base: Vec<f64> = p.iter().map(|&v| f64::from(v)).collect();
        for (at, &gv) in g.iter().enumerate() {
            let (bi, col) = (at / (pp * d), at % (pp * d));
            let i = col % d;
            let e = 1e-5;
            let (mut hi, mut lo) = (base.clone(), base.clone());
            hi[at] += e;
            lo[at] -= e;
            let fd = (f(&hi, bi, i) - f(&lo, bi, i)) / (2.0 * e);
            assert!(
                (f64::from(gv) - fd).abs() < 1e-4 * fd.abs().max(1.0),
                "k={k} param {at}: {gv} vs {fd}"
            );
        }
    }
    Ok(())
}

#[test]
fn mean_and_samples_follow_the_table() -> candle_core::Result<()> {
    let pixels = extreme_pixels();
    for k in [1usize, 5] {
        let px: Vec<&Vec<f64>> = pixels.iter().filter(|p| p.0 == k).map(|p| &p.1).collect();
        let (pp, d) = (discretized_logistic_params_per_dim(k), px.len());
        // One row holding every pixel, block-major.
        let mut row = vec![0f32; pp * d];
        for (i, raw) in px.iter().enumerate() {
            for blk in 0..pp {
                row[blk * d + i] = raw[blk] as f32;
            }
        }
        let pt = Tensor::from_vec(row.clone(), (1, pp * d), &Device::Cpu)?;
        let mean = discretized_logistic_mean(&pt, k, Kernels::Native)?.to_vec2::<f32>()?;
        let tables: Vec<[f64; 256]> = (0..d)
            .map(|i| discretized_logistic_pixel_pmf(&pixel_of(&row, pp, d, i), k).unwrap())
            .collect();
        for i in 0..d {
            let want: f64 = (0..256).map(|v| v as f64 * tables[i][v]).sum::<f64>() / 255.0;
            assert!(
                (f64::from(mean[0][i]) - want).abs() < 2e-6,
                "k={k} pixel {i}: mean {} vs {want}",
                mean[0][i]
            );
        }
        // Uniforms in the middle of each pixel's probable bins and at the ends of [0, 1).
        for pick in [1e-9f64, 0.25, 0.5, 0.75, 0.999_999] {
            let mut u = vec![0f32; d];
            let mut want = vec![0usize; d];
            for i in 0..d {
                let c = cdf(&tables[i]);
                let target = inverse_cdf(&c, pick);
                let below = if target == 0 { 0.0 } else { c[target - 1] };
                // A uniform inside the target bin, away from its edges where rounding decides.
                let mid = 0.5 * (below + c[target].min(1.0));
                u[i] = mid as f32;
                want[i] = inverse_cdf(&c, f64::from(u[i]));
            }
            let got = discretized_logistic_sample(&pt, k, &u)?.to_vec2::<f32>()?;
            for i in 0..d {
                assert_eq!(
                    (got[0][i] * 255.0).round() as usize,
                    want[i],
                    "k={k} pixel {i} u={}",
                    u[i]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn bad_shapes_and_mixture_counts_are_errors() {
    // 12 parameter columns for 2 dimensions: 6 per dimension, which is K = 2.
    let (p, x) = tensors(vec![0f32; 12], vec![0f32; 2], 1);
    assert!(discretized_logistic_log_prob(&p, &x, 2, Kernels::Native).is_ok());
    for k in [0usize, 1, 3] {
        assert!(
            discretized_logistic_log_prob(&p, &x, k, Kernels::Native).is_err(),
            "k={k}"
        );
        assert!(composite_log_prob(&p, &x, k).is_err(), "k={k}");
    }
    assert!(discretized_logistic_sample(&p, 2, &[0.5]).is_err());
    assert!(discretized_logistic_sample(&p, 2, &[0.5, 0.5]).is_ok());
    assert!(discretized_logistic_mean(&p, 5, Kernels::Native).is_err());
    assert!(discretized_logistic_pixel_log_pmf(&[0.0; 5], 2).is_err());
}

#[test]
fn composite_in_f64_matches_the_tables() -> candle_core::Result<()> {
    // In f64 the composite has no f32 rounding: it must agree with the tables to the accuracy
    // of its series for ln(1 - e^-t) (t^6/181440 at the cut, about 1e-9).
    for k in [1usize, 4] {
        let (b, d) = (2, 29);
        let (p, x) = random(k, b, d, 21 + k as u64);
        let (pt, xt) = tensors(p.clone(), x.clone(), b);
        let (pt, xt) = (pt.to_dtype(DType::F64)?, xt.to_dtype(DType::F64)?);
        let got = composite_log_prob(&pt, &xt, k)?.to_vec1::<f64>()?;
        for (g, (want, _)) in got.iter().zip(host_log_prob(&p, &x, k, b)) {
            assert!(
                (g - want).abs() < 1e-8 * want.abs().max(1.0),
                "k={k}: {g} vs {want}"
            );
        }
    }
    Ok(())
}

#[test]
fn scale_bounds_have_the_documented_consequences() -> candle_core::Result<()> {
    // At the floor an interior level centred on the mean holds tanh(δ/2), δ = h e^8.
    let centre = 100.0 / 255.0;
    let at_floor = discretized_logistic_pixel_pmf(&[centre, -1e4], 1)?[100];
    let delta = 0.5 / 255.0 * 8f64.exp();
    assert!((at_floor - (0.5 * delta).tanh()).abs() < 1e-12);
    assert!(at_floor > 0.994 && -at_floor.ln() < 0.006, "{at_floor}");
    // PixelCNN++'s floor, ln σ = -7 on a [-1, 1] scale, is -7 - ln 2 here and holds 0.973.
    let pcnn = (0.5 * 0.5 / 255.0 * (7.0 + std::f64::consts::LN_2).exp()).tanh();
    assert!((pcnn - 0.973).abs() < 5e-4, "{pcnn}");
    // At the ceiling δ = h e^-2 ≥ 2.6e-4.
    assert!(0.5 / 255.0 * (-2f64).exp() > 2.6e-4);
    Ok(())
}
