//! The continuous Bernoulli's log-normalising constant and mean, on logits.
//!
//! With lambda = sigmoid(l): C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda), and since
//! 1 - 2 lambda = -tanh(l / 2) and 2 artanh(1 - 2 lambda) = -l, C = l / tanh(l / 2), an even
//! function of l with C(0) = 2. So ln C = ln|l| - ln|tanh(l/2)|, with the Taylor series
//! ln(2 + l^2/6 - l^4/360) near 0, where the difference would cancel. Its derivative is
//! 1/l - 1/sinh(l) (series l/6 - 7 l^3/360 near 0). The mean is
//! sigmoid(l) / tanh(l/2) - 1/l (series 1/2 + l/12 - l^3/720 near 0).
//! Everything is computed in f64 per element: these run once per pixel and are not a hot spot.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// Below this |l| the series are used.
const SMALL: f64 = 1e-2;
const SMALL_MEAN: f64 = 0.1;

fn log_norm(l: f64) -> f64 {
    let a = l.abs();
    if a < SMALL {
        let l2 = l * l;
        (2.0 + l2 / 6.0 - l2 * l2 / 360.0).ln()
    } else if a > 40.0 {
        // tanh(a/2) is 1 to double precision.
        a.ln()
    } else {
        a.ln() - (0.5 * a).tanh().ln()
    }
}

fn log_norm_grad(l: f64) -> f64 {
    if l.abs() < SMALL {
        l / 6.0 - 7.0 * l * l * l / 360.0
    } else if l.abs() > 700.0 {
        1.0 / l
    } else {
        1.0 / l - 1.0 / l.sinh()
    }
}

fn mean(l: f64) -> f64 {
    if l.abs() < SMALL_MEAN {
        0.5 + l / 12.0 - l * l * l / 720.0 + l.powi(5) / 30240.0
    } else {
        let s = 1.0 / (1.0 + (-l).exp());
        s / (0.5 * l).tanh() - 1.0 / l
    }
}

fn map(x: &Tensor, f: fn(f64) -> f64, name: &'static str) -> candle_core::Result<Tensor> {
    // Elementwise in f64 on the host: exact enough and device-agnostic (the values are copied to
    // the CPU and back on other devices).
    struct Map(fn(f64) -> f64, &'static str);
    impl CustomOp1 for Map {
        fn name(&self) -> &'static str {
            self.1
        }
        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            let v = super::storage::slice(s, l)?;
            let out: Vec<f32> = v.iter().map(|&x| (self.0)(x as f64) as f32).collect();
            Ok((CpuStorage::F32(out), l.shape().clone()))
        }
    }
    let device = x.device().clone();
    let cpu = x
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?;
    cpu.apply_op1_no_bwd(&Map(f, name))?
        .to_device(&device)?
        .to_dtype(x.dtype())
}

/// ln C(l) per element, differentiable.
pub fn cb_log_norm(logits: &Tensor, k: super::Kernels) -> candle_core::Result<Tensor> {
    if k.cpu_kernel(&[logits]) {
        logits.apply_op1(CbLogNorm)
    } else {
        composite_log_norm(logits)
    }
}

/// The same with tensor operations. Both branches are evaluated at safe arguments, so that
/// neither sends an infinite gradient through the selection.
pub fn composite_log_norm(l: &Tensor) -> candle_core::Result<Tensor> {
    let a = l.abs()?;
    let small = a.lt(SMALL)?;
    let safe = small.where_cond(&a.ones_like()?, &a)?;
    let big = (safe.log()? - (&safe * 0.5)?.tanh()?.log()?)?;
    let l2 = l.sqr()?;
    let series = (((&l2 / 6.0)? - (l2.sqr()? / 360.0)?)? + 2.0)?.log()?;
    small.where_cond(&series, &big)
}

/// The mean of the continuous Bernoulli per element (for pictures): in f64 on the CPU, as
/// [`composite_mean`] elsewhere.
pub fn cb_mean(logits: &Tensor, k: super::Kernels) -> candle_core::Result<Tensor> {
    if k.cpu_kernel(&[logits]) {
        map(logits, mean, "cb-mean")
    } else {
        composite_mean(logits)
    }
}

/// The mean with tensor operations on the device of `l`: λ/tanh(l/2) − 1/l with λ = σ(l),
/// its Taylor series where |l| is small (both branches at safe arguments, as
/// [`composite_log_norm`]).
pub fn composite_mean(l: &Tensor) -> candle_core::Result<Tensor> {
    let small = l.abs()?.lt(SMALL_MEAN)?;
    let safe = small.where_cond(&l.ones_like()?, l)?;
    let big = ((candle_nn::ops::sigmoid(&safe)? / (&safe * 0.5)?.tanh()?)? - safe.recip()?)?;
    let l2 = l.sqr()?;
    let l3 = (l * &l2)?;
    let l5 = (&l3 * &l2)?;
    let series = ((((l / 12.0)? + 0.5)? - (l3 / 720.0)?)? + (l5 / 30240.0)?)?;
    small.where_cond(&series, &big)
}

struct CbLogNorm;

impl CustomOp1 for CbLogNorm {
    fn name(&self) -> &'static str {
        "cb-log-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let v = super::storage::slice(s, l)?;
        let out: Vec<f32> = v.iter().map(|&x| log_norm(x as f64) as f32).collect();
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some((map(arg, log_norm_grad, "cb-log-norm-grad")? * grad)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Kernels;

    /// ln(lambda) and ln(1 - lambda) for lambda = sigmoid(l), without cancellation.
    fn ln_lambdas(l: f64) -> (f64, f64) {
        let softplus = |v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p();
        (-softplus(-l), -softplus(l))
    }

    /// 1 / C(lambda) = integral over [0, 1] of lambda^x (1 - lambda)^(1 - x) dx, by Simpson's rule.
    #[test]
    fn normaliser_matches_numerical_integration() {
        for l in [
            -30.0f64, -5.0, -1.0, -0.3, -0.005, 0.0, 1e-4, 0.02, 0.7, 2.0, 9.0, 25.0,
        ] {
            let (ln_lam, ln_1m) = ln_lambdas(l);
            let n = 20_000;
            let h = 1.0 / n as f64;
            let f = |x: f64| (x * ln_lam + (1.0 - x) * ln_1m).exp();
            let mut s = f(0.0) + f(1.0);
            for i in 1..n {
                s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            let integral = s * h / 3.0;
            let want = -integral.ln();
            assert!(
                (log_norm(l) - want).abs() < 1e-9 * want.abs().max(1.0),
                "l={l}: {} vs {want}",
                log_norm(l)
            );
        }
    }

    #[test]
    fn fused_and_composite_agree_in_value_and_gradient() -> candle_core::Result<()> {
        let v = [-50.0f32, -3.0, -0.2, -0.004, 0.0, 0.003, 0.3, 4.0, 80.0];
        let var = candle_core::Var::new(&v, &candle_core::Device::Cpu)?;
        let f = cb_log_norm(var.as_tensor(), Kernels::Native)?;
        let c = composite_log_norm(var.as_tensor())?;
        let (fv, cv) = (f.to_vec1::<f32>()?, c.to_vec1::<f32>()?);
        let gf = f
            .sum_all()?
            .backward()?
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()?;
        let gc = c
            .sum_all()?
            .backward()?
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()?;
        for i in 0..v.len() {
            assert!(
                (fv[i] - cv[i]).abs() < 1e-5,
                "value at {}: {} vs {}",
                v[i],
                fv[i],
                cv[i]
            );
            assert!(
                (gf[i] - gc[i]).abs() < 1e-4,
                "grad at {}: {} vs {}",
                v[i],
                gf[i],
                gc[i]
            );
            assert!(gf[i].is_finite());
        }
        Ok(())
    }

    #[test]
    fn derivative_and_mean_match_finite_differences_and_integration() {
        for l in [
            -12.0f64, -2.0, -0.05, -0.003, 0.0, 0.004, 0.08, 0.5, 3.0, 30.0,
        ] {
            let h = 1e-5;
            let fd = (log_norm(l + h) - log_norm(l - h)) / (2.0 * h);
            assert!(
                (log_norm_grad(l) - fd).abs() < 1e-6,
                "grad at {l}: {} vs {fd}",
                log_norm_grad(l)
            );
            // E[x] = C * integral of x lambda^x (1-lambda)^(1-x).
            let (ln_lam, ln_1m) = ln_lambdas(l);
            let n = 20_000;
            let dx = 1.0 / n as f64;
            let f = |x: f64| x * (x * ln_lam + (1.0 - x) * ln_1m).exp();
            let mut s = f(0.0) + f(1.0);
            for i in 1..n {
                s += f(i as f64 * dx) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            let want = log_norm(l).exp() * s * dx / 3.0;
            assert!(
                (mean(l) - want).abs() < 1e-8,
                "mean at {l}: {} vs {want}",
                mean(l)
            );
        }
    }
}
