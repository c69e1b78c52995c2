//! The hierarchical model's state update after a latent group, `h + raw[.., at..at + c] + zp`
//! on channels-last maps, as one operation: `h` and `zp` `[n, hh, ww, c]`, `raw`
//! `[n, hh, ww, craw]` (the prior block's output, whose channels `at..at + c` are the term
//! added to the state). As candle operations this is a narrow and two additions: the narrow's
//! backward pass builds a zero map of `raw`'s size and concatenates along the channels, and
//! each addition adds its inputs' gradients into zeroed buffers; here the backward pass writes
//! the three gradients in one pass. Each value is `(h + r) + zp`, the order of the composite,
//! so the result is the same in exact mode.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

use super::storage::slice;

/// `(h + raw[.., at..at + c]) + zp` (see the module's comment). Only on the CPU in f32
/// ([`super::Kernels::fused`]).
pub fn add_state_last(
    h: &Tensor,
    raw: &Tensor,
    at: usize,
    zp: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, hh, ww, c) = h.dims4()?;
    let craw = raw.dim(3)?;
    if raw.dims4()? != (n, hh, ww, craw) || zp.dims4()? != (n, hh, ww, c) || at + c > craw {
        candle_core::bail!(
            "add-state: state {:?}, raw {:?} from channel {at}, term {:?}",
            h.dims(),
            raw.dims(),
            zp.dims()
        );
    }
    h.contiguous()?.apply_op3(
        &raw.contiguous()?,
        &zp.contiguous()?,
        AddState { at, c, craw },
    )
}

struct AddState {
    at: usize,
    c: usize,
    craw: usize,
}

impl CustomOp3 for AddState {
    fn name(&self) -> &'static str {
        "add-state"
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
        let (h, raw, zp) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (at, c, craw) = (self.at, self.c, self.craw);
        let mut y = Vec::with_capacity(h.len());
        for ((hp, rp), zpp) in h
            .chunks_exact(c)
            .zip(raw.chunks_exact(craw))
            .zip(zp.chunks_exact(c))
        {
            let r = &rp[at..at + c];
            y.extend(hp.iter().zip(r).zip(zpp).map(|((a, b), d)| (a + b) + d));
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _h: &Tensor,
        raw: &Tensor,
        _zp: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let graw = grad.apply_op1_no_bwd(&ToChannels {
            at: self.at,
            c: self.c,
            craw: self.craw,
            shape: raw.shape().clone(),
        })?;
        Ok((Some(grad.clone()), Some(graw), Some(grad)))
    }
}

/// The gradient of `raw`: the output gradient in channels `at..at + c`, zeros elsewhere.
struct ToChannels {
    at: usize,
    c: usize,
    craw: usize,
    shape: Shape,
}

impl CustomOp1 for ToChannels {
    fn name(&self) -> &'static str {
        "add-state-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s, l)?;
        let (at, c, craw) = (self.at, self.c, self.craw);
        if g.len() / c * craw != self.shape.elem_count() {
            candle_core::bail!(
                "add-state backward: {} values for {:?}",
                g.len(),
                self.shape
            );
        }
        let mut graw = vec![0f32; self.shape.elem_count()];
        for (dst, src) in graw.chunks_exact_mut(craw).zip(g.chunks_exact(c)) {
            dst[at..at + c].copy_from_slice(src);
        }
        Ok((CpuStorage::F32(graw), self.shape.clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// The one-pass update against the narrow and two additions it replaces: the same values,
    /// and the same gradients for all three inputs (the raw map's outside the added channels
    /// zero), with every input also used elsewhere so that gradients add.
    #[test]
    fn matches_the_composite() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (n, hh, ww, c, craw, at) = (2, 3, 5, 4, 11, 6);
        let var = |len: usize, shape: (usize, usize, usize, usize), f: f64| {
            let t = Tensor::arange(0f32, len as f32, &dev)?
                .affine(f, 0.3)?
                .sin()?;
            Var::from_tensor(&t.reshape(shape)?)
        };
        let h = var(n * hh * ww * c, (n, hh, ww, c), 0.7)?;
        let raw = var(n * hh * ww * craw, (n, hh, ww, craw), 1.3)?;
        let zp = var(n * hh * ww * c, (n, hh, ww, c), 0.4)?;
        let w = Tensor::arange(0f32, (n * hh * ww * c) as f32, &dev)?
            .cos()?
            .reshape((n, hh, ww, c))?;
        let mut results = vec![];
        for fused in [true, false] {
            let (ht, rt, zt) = (h.as_tensor(), raw.as_tensor(), zp.as_tensor());
            let y = if fused {
                super::add_state_last(ht, rt, at, zt)?
            } else {
                ((ht + rt.narrow(3, at, c)?)? + zt)?
            };
            let loss = ((&y * &w)?.sum_all()?
                + (ht.sqr()?.sum_all()? + rt.sqr()?.sum_all()?)?
                + zt.sqr()?.sum_all()?)?;
            let g = loss.backward()?;
            let mut all = y.flatten_all()?.to_vec1::<f32>()?;
            for t in [ht, rt, zt] {
                all.extend(g.get(t).unwrap().flatten_all()?.to_vec1::<f32>()?);
            }
            results.push(all);
        }
        assert_eq!(results[0], results[1]);
        assert!(super::add_state_last(h.as_tensor(), raw.as_tensor(), 8, zp.as_tensor()).is_err());
        Ok(())
    }
}
