//! The Bernoulli log-likelihood on logits, fused with its sum over dimensions.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, D};

use super::storage::{rows_of, slice};

use super::{composite, Kernels};
use crate::fastmath::{self, sum16};
use crate::multiversion;

/// Per-example Bernoulli log-likelihood on logits, summed over dimensions:
/// `sum_d x*l - softplus(l)`, for `logits` and `x` of shape `[batch, dim]`; returns `[batch]`.
/// Finite for any finite logits (no log of a sigmoid is ever taken).
pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
    if k.cpu_kernel(&[logits, x]) {
        let logits = logits.contiguous()?;
        let x = x.contiguous()?;
        logits.apply_op2(&x, BernoulliLogProb)
    } else {
        composite::bernoulli_log_prob(logits, x)
    }
}

/// The logistic sigmoid, elementwise (the mean of a Bernoulli on logits), differentiable.
pub fn sigmoid(x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
    if k.cpu_kernel(&[x]) {
        x.contiguous()?.apply_op1(Sigmoid)
    } else {
        candle_nn::ops::sigmoid(x)
    }
}

multiversion! {
    fn sigmoid_kernel(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = fastmath::sigmoid(v);
        }
    }
}

struct Sigmoid;

impl candle_core::CustomOp1 for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut out = vec![0f32; x.len()];
        sigmoid_kernel(x, &mut out);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d sigmoid = s (1 - s).
        Ok(Some((grad * (res * (1.0 - res)?)?)?))
    }
}

multiversion! {
    fn bernoulli_rows(l: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
        let mut terms = vec![0f32; d];
        for (b, o) in out.iter_mut().enumerate() {
            let l = &l[b * d..(b + 1) * d];
            let x = &x[b * d..(b + 1) * d];
            // An element-wise pass the compiler vectorises, then a fixed-order sum.
            for ((t, &l), &x) in terms.iter_mut().zip(l).zip(x) {
                *t = x * l - fastmath::softplus(l);
            }
            *o = sum16(d, |i| terms[i]);
        }
    }
}

multiversion! {
    fn bernoulli_grad_rows(l: &[f32], x: &[f32], g: &[f32], d: usize, out: &mut [f32]) {
        for (b, &gb) in g.iter().enumerate() {
            let range = b * d..(b + 1) * d;
            let (l, x, o) = (&l[range.clone()], &x[range.clone()], &mut out[range]);
            for i in 0..d {
                o[i] = gb * (x[i] - fastmath::sigmoid(l[i]));
            }
        }
    }
}

struct BernoulliLogProb;

impl CustomOp2 for BernoulliLogProb {
    fn name(&self) -> &'static str {
        "bernoulli-log-prob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, d) = rows_of(l1)?;
        if l2.shape() != l1.shape() {
            candle_core::bail!(
                "bernoulli-log-prob: shapes {:?} and {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let mut out = vec![0f32; b];
        bernoulli_rows(slice(s1, l1)?, slice(s2, l2)?, d, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(b)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.contiguous()?;
        let grad_logits = logits.apply_op3_no_bwd(x, &g, &BernoulliGrad)?;
        // d/dx (x*l - softplus(l)) = l; x is data almost always, but keep the maths whole.
        let grad_x = if x.track_op() || x.is_variable() {
            Some(logits.broadcast_mul(&grad_res.unsqueeze(D::Minus1)?)?)
        } else {
            None
        };
        Ok((Some(grad_logits), grad_x))
    }
}

struct BernoulliGrad;

impl CustomOp3 for BernoulliGrad {
    fn name(&self) -> &'static str {
        "bernoulli-log-prob-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, d) = rows_of(l1)?;
        let mut out = vec![0f32; b * d];
        bernoulli_grad_rows(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?, d, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn logits_and_x() -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let l: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 7919) % 200) as f32 / 10.0 - 10.0)
            .collect();
        let x: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 104_729) % 11) as f32 / 10.0)
            .collect();
        (
            Tensor::from_vec(l, (3, 37), &dev).unwrap(),
            Tensor::from_vec(x, (3, 37), &dev).unwrap(),
        )
    }

    #[test]
    fn bernoulli_matches_direct_formula() -> candle_core::Result<()> {
        let (l, x) = logits_and_x();
        let fused = bernoulli_log_prob(&l, &x, Kernels::Native)?.to_vec1::<f32>()?;
        let (lv, xv) = (l.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        for b in 0..3 {
            // Direct formula in f64: x ln(sigmoid(l)) + (1-x) ln(1 - sigmoid(l)).
            let want: f64 = (0..37)
                .map(|i| {
                    let (l, x) = (lv[b][i] as f64, xv[b][i] as f64);
                    let p = 1.0 / (1.0 + (-l).exp());
                    x * p.ln() + (1.0 - x) * (1.0 - p).ln()
                })
                .sum();
            assert!(
                (fused[b] as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
                "{b}: {} vs {want}",
                fused[b]
            );
        }
        let comp = composite::bernoulli_log_prob(&l, &x)?.to_vec1::<f32>()?;
        for (a, b) in fused.iter().zip(&comp) {
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0));
        }
        Ok(())
    }

    #[test]
    fn sigmoid_matches_candle_in_value_and_gradient() -> candle_core::Result<()> {
        let (l, _) = logits_and_x();
        let v = Var::from_tensor(&l)?;
        let ours = sigmoid(v.as_tensor(), Kernels::Native)?;
        let theirs = candle_nn::ops::sigmoid(v.as_tensor())?;
        let d = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        let g1 = ours.sqr()?.sum_all()?.backward()?;
        let g2 = theirs.sqr()?.sum_all()?.backward()?;
        let d = (g1.get(v.as_tensor()).unwrap() - g2.get(v.as_tensor()).unwrap())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        Ok(())
    }

    #[test]
    fn bernoulli_is_finite_at_extreme_logits() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let l = Tensor::new(&[[1000f32, -1000.0, 1000.0, -1000.0]], &dev)?;
        let x = Tensor::new(&[[1f32, 0.0, 0.0, 1.0]], &dev)?;
        let v = bernoulli_log_prob(&l, &x, Kernels::Native)?.to_vec1::<f32>()?;
        // Confident and right: 0 nats each; confident and wrong: -1000 nats each.
        assert_eq!(v, vec![-2000.0]);
        let var = Var::from_tensor(&l)?;
        let g = bernoulli_log_prob(var.as_tensor(), &x, Kernels::Native)?
            .sum_all()?
            .backward()?;
        let g = g.get(var.as_tensor()).unwrap().to_vec2::<f32>()?;
        let want = [0.0f32, 0.0, -1.0, 1.0];
        for (a, b) in g[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-30, "{g:?}");
        }
        Ok(())
    }

    #[test]
    fn bernoulli_gradient_matches_finite_differences() -> candle_core::Result<()> {
        let (l, x) = logits_and_x();
        let l = (l * 0.3)?; // keep the curvature moderate for the f64 check below
        let var = Var::from_tensor(&l)?;
        let w = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu)?;
        let loss = bernoulli_log_prob(var.as_tensor(), &x, Kernels::Native)?
            .mul(&w)?
            .sum_all()?;
        let grads = loss.backward()?;
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        let lv = l.flatten_all()?.to_vec1::<f32>()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let f = |lv: &[f64]| -> f64 {
            (0..lv.len())
                .map(|i| {
                    let wb = [0.5, -1.0, 2.0][i / 37];
                    let l = lv[i];
                    wb * (xv[i] as f64 * l - (l.max(0.0) + (-l.abs()).exp().ln_1p()))
                })
                .sum()
        };
        let base: Vec<f64> = lv.iter().map(|&v| v as f64).collect();
        for i in (0..base.len()).step_by(5) {
            let h = 1e-5;
            let (mut p, mut m) = (base.clone(), base.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (f(&p) - f(&m)) / (2.0 * h);
            assert!((g[i] as f64 - fd).abs() < 1e-5, "{i}: {} vs {fd}", g[i]);
        }
        Ok(())
    }
}
