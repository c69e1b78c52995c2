//! 2x2 average pooling and nearest 2x upsampling of a channels-last map, in one pass each way
//! (candle's sums over the small pooling axes of a reshaped map, which are also the backward
//! pass of an upsampling broadcast, are strided loops several times slower). The two are
//! adjoint: pooling sums each 2x2 square and scales it, upsampling copies a value to its square
//! and scales it; each is the other's backward pass. A square's sum is ((a + b) + (c + d)) with
//! a, b the top pair and c, d the bottom one, as the composite (`reshape`, `sum`, `sum`,
//! `affine`) computes it.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::storage::slice;

/// The mean of each 2x2 square of `x` `[n, h, w, c]` (h, w even): `[n, h/2, w/2, c]`. Only on
/// the CPU in f32 ([`super::Kernels::fused`]).
pub fn avg_pool2_last(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Pool2 { scale: 0.25 })
}

/// Nearest-neighbour 2x upsampling of `x` `[n, h, w, c]`: `[n, 2h, 2w, c]`; its backward pass
/// sums each 2x2 square of the gradient. Only on the CPU in f32 ([`super::Kernels::fused`]).
pub fn up2_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.contiguous()?.apply_op1(Spread {
        n,
        h: 2 * h,
        w: 2 * w,
        c,
        scale: 1.0,
    })
}

/// The sum of each 2x2 square times `scale` (0.25: the average).
struct Pool2 {
    scale: f32,
}

fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
    match *l.shape().dims() {
        [n, h, w, c] if h % 2 == 0 && w % 2 == 0 => Ok((n, h, w, c)),
        ref d => {
            candle_core::bail!("avg-pool2: expected a [n, h, w, c] map of even sides, got {d:?}")
        }
    }
}

impl CustomOp1 for Pool2 {
    fn name(&self) -> &'static str {
        "pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h, w, c) = dims(l)?;
        let x = slice(s, l)?;
        let (ho, wo) = (h / 2, w / 2);
        let mut y = Vec::with_capacity(n * ho * wo * c);
        for i in 0..n * ho {
            let (b, oy) = (i / ho, i % ho);
            let top = &x[((b * h + 2 * oy) * w) * c..][..w * c];
            let bottom = &x[((b * h + 2 * oy + 1) * w) * c..][..w * c];
            for (t, bt) in top.chunks_exact(2 * c).zip(bottom.chunks_exact(2 * c)) {
                let (t0, t1) = t.split_at(c);
                let (b0, b1) = bt.split_at(c);
                y.extend(
                    t0.iter()
                        .zip(t1)
                        .zip(b0.iter().zip(b1))
                        .map(|((a, b), (c, d))| ((a + b) + (c + d)) * self.scale),
                );
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, ho, wo, c))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n, h, w, c) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Spread {
            h,
            w,
            n,
            c,
            scale: self.scale,
        })?))
    }
}

/// Each value times `scale` to its 2x2 square of an `[n, h, w, c]` map: the backward pass of
/// [`Pool2`] with the same scale, and with scale 1 the nearest upsampling.
struct Spread {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    scale: f32,
}

impl CustomOp1 for Spread {
    fn name(&self) -> &'static str {
        "spread2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s, l)?;
        let (n, h, w, c) = (self.n, self.h, self.w, self.c);
        let (ho, wo) = (h / 2, w / 2);
        if g.len() != n * ho * wo * c {
            candle_core::bail!("spread2: {} values for a map of {n}x{h}x{w}x{c}", g.len());
        }
        let mut x = Vec::with_capacity(n * h * w * c);
        for i in 0..n * h {
            let (b, y) = (i / h, i % h);
            let src = &g[((b * ho + y / 2) * wo) * c..][..wo * c];
            for v in src.chunks_exact(c) {
                for _ in 0..2 {
                    x.extend(v.iter().map(|a| a * self.scale));
                }
            }
        }
        Ok((CpuStorage::F32(x), Shape::from((n, h, w, c))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&Pool2 { scale: self.scale })?,
        ))
    }
}
