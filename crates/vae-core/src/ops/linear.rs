//! A dense layer with its bias and activation as one operation: `act(x W^T + b)`.
//!
//! Forward, on the CPU: one `gemm` call writes the product into a fresh buffer, then one pass
//! adds the bias and applies the activation in place: one allocation, one extra pass. Backward
//! is one operation, as for the convolutions: the gradient through the activation (from the
//! output) and its column sums (the bias gradient) in one pass into a scratch buffer, then the
//! two products, all three gradients written into one packed buffer; the gradient of the input
//! is skipped when the input is data (PyTorch skips it too; candle's generic matmul backward
//! would compute it).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::conv::layout::{grad_last, with_scratch};
use super::gemm::{matmul_new, matmul_uninit, MatRef};
use super::storage::{output_slice, rows_of, slice, unpack};
use super::{composite, Kernels, Route};
use crate::fastmath;
use crate::multiversion;

/// The activations that can be fused into a dense layer (their derivative is a function of the
/// output alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    Tanh,
    /// The logistic function: the mean of a Bernoulli decoder, fused into its output layer.
    Sigmoid,
}

/// `act(x W^T + b)` for `x` `[batch, in]`, `w` `[out, in]`, `b` `[out]`.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    act: Act,
    k: Kernels,
) -> candle_core::Result<Tensor> {
    match k.route(&[x, w, b]) {
        Route::Exact(simd) => fastmath::with_simd_cap(simd, || super::exact::linear(x, w, b, act)),
        Route::Cpu if x.rank() == 2 => {
            x.contiguous()?
                .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { act })
        }
        _ => composite::linear(x, w, b, act),
    }
}

struct Linear {
    act: Act,
}

multiversion! {
    /// Applies the activation in place.
    pub(super) fn activate(y: &mut [f32], act: Act) {
        match act {
            Act::Identity => {}
            Act::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Tanh => y.iter_mut().for_each(|v| *v = fastmath::tanh(*v)),
            Act::Sigmoid => y.iter_mut().for_each(|v| *v = fastmath::sigmoid(*v)),
        }
    }
}

multiversion! {
    /// Adds the bias to every row and applies the activation, in one pass.
    pub(super) fn bias_activate(y: &mut [f32], b: &[f32], act: Act) {
        for row in y.chunks_exact_mut(b.len()) {
            match act {
                Act::Identity => {
                    for (v, &b) in row.iter_mut().zip(b) {
                        *v += b;
                    }
                }
                Act::Relu => {
                    for (v, &b) in row.iter_mut().zip(b) {
                        *v = (*v + b).max(0.0);
                    }
                }
                Act::Tanh => {
                    for (v, &b) in row.iter_mut().zip(b) {
                        *v = fastmath::tanh(*v + b);
                    }
                }
                Act::Sigmoid => {
                    for (v, &b) in row.iter_mut().zip(b) {
                        *v = fastmath::sigmoid(*v + b);
                    }
                }
            }
        }
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, input) = rows_of(xl)?;
        let (out, w_in) = rows_of(wl)?;
        if w_in != input || bl.shape().dims() != [out] {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {:?} do not fit",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let (x, w, b) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let mut y = matmul_new(
            MatRef::row_major(x, batch, input),
            MatRef::row_major(w, out, input).t(),
        );
        bias_activate(&mut y, b, self.act);
        Ok((CpuStorage::F32(y), Shape::from((batch, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let op = LinearBackward {
            act: self.act,
            y: y.clone(),
            need_dx,
        };
        let packed =
            x.contiguous()?
                .apply_op3_no_bwd(&w.contiguous()?, &grad.contiguous()?, &op)?;
        unpack(&packed, need_dx.then_some(x), w, b)
    }
}

/// All gradients of [`Linear`] from `(x, w, dy)` and the forward output: `[dx | dw | db]`
/// (`dx` only when `need_dx`).
struct LinearBackward {
    act: Act,
    y: Tensor,
    need_dx: bool,
}

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "linear-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, input) = rows_of(xl)?;
        let (out, _) = rows_of(wl)?;
        let (x, w, dy) = (slice(xs, xl)?, slice(ws, wl)?, slice(dys, dyl)?);
        let (ys, yl) = self.y.storage_and_layout();
        let y = output_slice(&ys, yl)?;
        if y.len() != batch * out || dy.len() != y.len() {
            candle_core::bail!("linear backward: gradient {:?} does not fit", dyl.shape());
        }
        let nx = if self.need_dx { batch * input } else { 0 };
        let n = nx + out * input + out;
        // Every part is written whole below, so the buffer is not zeroed first.
        let mut packed: Vec<f32> = Vec::with_capacity(n);
        let (dx, rest) = packed.spare_capacity_mut()[..n].split_at_mut(nx);
        let (dw, db) = rest.split_at_mut(out * input);
        with_scratch(batch * out + out, |s| {
            let (g, sums) = s.split_at_mut(batch * out);
            grad_last(y, dy, self.act, g, sums);
            let gm = MatRef::row_major(g, batch, out);
            if self.need_dx {
                matmul_uninit(dx, gm, MatRef::row_major(w, out, input));
            }
            matmul_uninit(dw, gm.t(), MatRef::row_major(x, batch, input));
            for (d, &v) in db.iter_mut().zip(sums.iter()) {
                d.write(v);
            }
        });
        // SAFETY: the two products wrote all of dx (when it has a part) and dw, and the copy
        // all of db: the first n elements are initialised.
        unsafe { packed.set_len(n) };
        Ok((CpuStorage::F32(packed), Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data(n: usize, scale: f32, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 1000) as f32 / 500.0 - 1.0) * scale)
            .collect()
    }

    /// The fused layer against the composite one: same values, same gradients, for every
    /// activation, with a tracked input (so dx is computed) and with a data input (so it is not).
    #[test]
    fn fused_linear_matches_composite_values_and_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for act in [Act::Identity, Act::Relu, Act::Tanh, Act::Sigmoid] {
            let x = Var::from_vec(data(4 * 6, 1.0, 1), (4, 6), &dev)?;
            let w = Var::from_vec(data(5 * 6, 0.5, 2), (5, 6), &dev)?;
            let b = Var::from_vec(data(5, 0.3, 3), 5, &dev)?;
            let up = Tensor::new(data(4 * 5, 1.0, 4), &dev)?.reshape((4, 5))?;
            let f = linear(
                x.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                act,
                Kernels::Native,
            )?;
            let c = composite::linear(x.as_tensor(), w.as_tensor(), b.as_tensor(), act)?;
            let diff = (&f - &c)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{act:?}: values differ by {diff}");
            let gf = (f * &up)?.sum_all()?.backward()?;
            let gc = (c * &up)?.sum_all()?.backward()?;
            for v in [&x, &w, &b] {
                let a = gf.get(v.as_tensor()).expect("fused grad");
                let e = gc.get(v.as_tensor()).expect("composite grad");
                let diff = (a - e)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{act:?}: gradients differ by {diff}");
            }
            // A data input gets no gradient computed.
            let xd = Tensor::from_vec(data(4 * 6, 1.0, 1), (4, 6), &dev)?;
            let g = linear(&xd, w.as_tensor(), b.as_tensor(), act, Kernels::Native)?
                .sum_all()?
                .backward()?;
            assert!(g.get(&xd).is_none());
            assert!(g.get(w.as_tensor()).is_some());
        }
        Ok(())
    }

    /// Finite differences on the weights through the tanh layer (f64 reference).
    #[test]
    fn fused_linear_gradient_matches_finite_differences() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (n, i, o) = (3, 4, 2);
        let xv = data(n * i, 1.0, 5);
        let wv = data(o * i, 0.7, 6);
        let bv = data(o, 0.2, 7);
        let w = Var::from_vec(wv.clone(), (o, i), &dev)?;
        let x = Tensor::from_vec(xv.clone(), (n, i), &dev)?;
        let b = Tensor::from_vec(bv.clone(), o, &dev)?;
        let g = linear(&x, w.as_tensor(), &b, Act::Tanh, Kernels::Native)?
            .sqr()?
            .sum_all()?
            .backward()?;
        let g = g
            .get(w.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let f = |wv: &[f64]| -> f64 {
            let mut s = 0.0;
            for r in 0..n {
                for c in 0..o {
                    let mut a = bv[c] as f64;
                    for k in 0..i {
                        a += xv[r * i + k] as f64 * wv[c * i + k];
                    }
                    s += a.tanh().powi(2);
                }
            }
            s
        };
        let base: Vec<f64> = wv.iter().map(|&v| v as f64).collect();
        for k in 0..base.len() {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[k] += 1e-6;
            m[k] -= 1e-6;
            let fd = (f(&p) - f(&m)) / 2e-6;
            assert!((g[k] as f64 - fd).abs() < 1e-4, "w[{k}]: {} vs {fd}", g[k]);
        }
        Ok(())
    }
}
