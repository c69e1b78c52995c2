//! The pieces of the hierarchical model: the memory order of its feature maps, the bottleneck
//! residual block, the diagonal Gaussians of the latent groups with their bounded log-scales,
//! and the 2x pooling and upsampling of feature maps.

use candle_core::{Device, Tensor, D};
use candle_nn::VarBuilder;

use super::super::layers::{Activation, Conv};
use crate::dist::LN_2PI;
use crate::ops::{self, BlockSpec, Kernels, MapLayout};

/// The memory order of the model's feature maps: channels-last on the CPU, where the fused
/// block and convolutions read and write it with no transpose between layers; NCHW on other
/// devices, the order their convolution libraries take. The values are the same either way:
/// the dense layers, the noise and the coder see channel-major (NCHW) values, converted at
/// the model's edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Maps(pub MapLayout);

impl Maps {
    pub(crate) fn for_device(device: &Device) -> Self {
        Maps(if device.is_cpu() {
            MapLayout::Nhwc
        } else {
            MapLayout::Nchw
        })
    }

    fn channel_dim(self) -> usize {
        match self.0 {
            MapLayout::Nchw => 1,
            MapLayout::Nhwc => 3,
        }
    }

    /// Channels `at..at + len` of a map.
    pub(crate) fn narrow(self, t: &Tensor, at: usize, len: usize) -> candle_core::Result<Tensor> {
        t.narrow(self.channel_dim(), at, len)
    }

    /// Two maps side by side along the channels.
    pub(crate) fn cat(self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        Tensor::cat(&[a, b], self.channel_dim())
    }

    /// An NCHW map `[n, c, h, w]` in this order.
    pub(crate) fn order(self, t: &Tensor) -> candle_core::Result<Tensor> {
        match self.0 {
            MapLayout::Nchw => Ok(t.clone()),
            MapLayout::Nhwc => t.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// A map of this order as NCHW `[n, c, h, w]`.
    pub(crate) fn to_nchw(self, t: &Tensor) -> candle_core::Result<Tensor> {
        match self.0 {
            MapLayout::Nchw => Ok(t.clone()),
            MapLayout::Nhwc => t.permute((0, 3, 1, 2))?.contiguous(),
        }
    }

    /// The memory orders a convolution from an NCHW input to a map of this order reads and
    /// writes, and those of one between two maps of this order.
    pub(crate) fn data_in(self) -> (MapLayout, MapLayout) {
        (MapLayout::Nchw, self.0)
    }

    pub(crate) fn inner(self) -> (MapLayout, MapLayout) {
        (self.0, self.0)
    }

    /// 2x2 average pooling (h and w even), as a reshape and two sums (their backward passes
    /// are broadcasts); each output is ((a + b) + (c + d)) / 4 in either order. On the CPU
    /// channels-last maps take the one-pass kernel, in exact mode too (its sums are these,
    /// element by element).
    pub(crate) fn avg_pool2(self, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        let y = match self.0 {
            MapLayout::Nchw => {
                let (n, c, h, w) = x.dims4()?;
                x.reshape((n, c, h / 2, 2, w / 2, 2))?.sum(5)?.sum(3)?
            }
            MapLayout::Nhwc if k.cpu_kernel(&[x]) => return ops::avg_pool2_last(x),
            MapLayout::Nhwc => {
                let (n, h, w, c) = x.dims4()?;
                x.reshape((n, h / 2, 2, w / 2, 2, c))?.sum(4)?.sum(2)?
            }
        };
        y.affine(0.25, 0.0)
    }

    /// Nearest-neighbour 2x upsampling as a broadcast (its backward pass is a sum; candle's
    /// `upsample_nearest2d` backward overwrites, rather than adds to, the gradient of an input
    /// used more than once). On the CPU channels-last maps take the one-pass kernel (a copy
    /// forward, exact too; 2x2 sums backward).
    pub(crate) fn up2(self, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        match self.0 {
            MapLayout::Nhwc if k.cpu_kernel(&[x]) => ops::up2_last(x),
            MapLayout::Nchw => {
                let (n, c, h, w) = x.dims4()?;
                x.reshape((n, c, h, 1, w, 1))?
                    .broadcast_as((n, c, h, 2, w, 2))?
                    .reshape((n, c, 2 * h, 2 * w))
            }
            MapLayout::Nhwc => {
                let (n, h, w, c) = x.dims4()?;
                x.reshape((n, h, 1, w, 1, c))?
                    .broadcast_as((n, h, 2, w, 2, c))?
                    .reshape((n, 2 * h, 2 * w, c))
            }
        }
    }
}

/// log σ of every latent Gaussian is `L · tanh(raw / L)` (the identity to first order near 0,
/// a nonzero gradient everywhere): σ stays in (e^-5, e^5) ≈ (0.0067, 148). A posterior that
/// narrow against a prior of scale 1 already carries 5 nats per dimension, far more than one
/// 8-bit value holds; the bound keeps every KL term, density and gradient finite.
pub const LOG_SCALE_BOUND: f64 = 5.0;

/// The smooth bound of a raw log-scale (see [`LOG_SCALE_BOUND`]).
pub(crate) fn bounded_log_scale(raw: &Tensor) -> candle_core::Result<Tensor> {
    (raw / LOG_SCALE_BOUND)?.tanh()? * LOG_SCALE_BOUND
}

/// VDVAE's block: a 1x1 convolution down to `mid` channels, two 3x3 convolutions, a 1x1
/// convolution to `out` channels, each after the activation; with `residual`, the input is
/// added to the output (then `out` equals the input's channels).
///
/// Tensors: `<prefix>.c1` `[mid, in, 1, 1]`, `.c2` and `.c3` `[mid, mid, 3, 3]`, `.c4`
/// `[out, mid, 1, 1]`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    c1: Conv,
    c2: Conv,
    c3: Conv,
    c4: Conv,
    residual: bool,
    activation: Activation,
}

impl Block {
    pub(crate) fn new(
        vb: VarBuilder,
        (cin, mid, out): (usize, usize, usize),
        residual: bool,
        activation: Activation,
        k: Kernels,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            c1: Conv::new(vb.pp("c1"), (cin, mid, 1), 1, 0, k)?,
            c2: Conv::new(vb.pp("c2"), (mid, mid, 3), 1, 1, k)?,
            c3: Conv::new(vb.pp("c3"), (mid, mid, 3), 1, 1, k)?,
            c4: Conv::new(vb.pp("c4"), (mid, out, 1), 1, 0, k)?,
            residual,
            activation,
        })
    }

    /// The block on a map of order `maps`. On the CPU with relu or tanh it is one fused
    /// operation ([`ops::bottleneck_block`]); otherwise its four convolutions, the activation
    /// before each of `c2`..`c4` fused into the convolution before it where the activation
    /// allows, every map between them in the order `maps`.
    pub(crate) fn forward(&self, x: &Tensor, maps: Maps) -> candle_core::Result<Tensor> {
        let layers = [&self.c1, &self.c2, &self.c3, &self.c4];
        if let (Some(act), MapLayout::Nhwc) = (self.activation.fused(), maps.0) {
            let (ws, bs) = (layers.map(|l| l.params().0), layers.map(|l| l.params().1));
            let mut all = vec![x];
            all.extend(ws);
            all.extend(bs);
            if self.c1.kernels().fused(&all) {
                let (mid, cin) = (ws[0].dim(0)?, ws[0].dim(1)?);
                let spec = BlockSpec {
                    cin,
                    mid,
                    out: ws[3].dim(0)?,
                    residual: self.residual,
                    act,
                };
                return ops::bottleneck_block(x, ws, bs, spec);
            }
        }
        let mut t = self.activation.apply(x, self.c1.kernels())?;
        for (i, layer) in layers.into_iter().enumerate() {
            let act = (i + 1 < layers.len()).then_some(self.activation);
            t = layer.forward_act(&t, act, maps.inner())?;
        }
        if self.residual {
            x + t
        } else {
            Ok(t)
        }
    }
}

/// The diagonal Gaussian of a spatial latent group, `[n, channels, h, w]` means and bounded
/// log-scales.
#[derive(Debug, Clone)]
pub(crate) struct Gauss {
    pub mu: Tensor,
    pub log_sigma: Tensor,
}

impl Gauss {
    /// From raw outputs, a map of order `maps` with at least `2z` channels: channels
    /// `at..at + z` the means, the next `z` the raw log-scales.
    pub(crate) fn from_raw(
        raw: &Tensor,
        at: usize,
        z: usize,
        maps: Maps,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            mu: maps.narrow(raw, at, z)?,
            log_sigma: bounded_log_scale(&maps.narrow(raw, at + z, z)?)?,
        })
    }

    /// `mu + scale · σ · eps`.
    pub(crate) fn sample(&self, eps: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
        let s = self.log_sigma.exp()?;
        let s = if scale == 1.0 { s } else { (s * scale)? };
        &self.mu + (s * eps)?
    }

    /// KL(self ‖ p) summed over all but the first dimension, `[n]`: with d = log σq − log σp,
    /// 0.5 (e^{2d} + ((μq − μp)/σp)² − 1) − d.
    pub(crate) fn kl(&self, p: &Gauss) -> candle_core::Result<Tensor> {
        let d = (&self.log_sigma - &p.log_sigma)?;
        let m = ((&self.mu - &p.mu)? * p.log_sigma.neg()?.exp()?)?;
        let t = (((d.affine(2.0, 0.0)?.exp()? + m.sqr()?)? - 1.0)? * 0.5)?;
        sum_rows(&(t - d)?)
    }

    /// log N(z; μ, σ²) summed over all but the first dimension, `[n]`.
    pub(crate) fn log_prob(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let u = ((z - &self.mu)? * self.log_sigma.neg()?.exp()?)?;
        let per = ((u.sqr()? + LN_2PI)? * -0.5)?;
        sum_rows(&(per - &self.log_sigma)?)
    }

    /// log N(mu + σ eps; μ, σ²) summed as [`Gauss::log_prob`], from the noise.
    pub(crate) fn log_prob_from_eps(&self, eps: &Tensor) -> candle_core::Result<Tensor> {
        let per = ((eps.sqr()? + LN_2PI)? * -0.5)?;
        sum_rows(&(per - &self.log_sigma)?)
    }
}

/// The sum over every dimension but the first: `[n, ...]` to `[n]`.
pub(crate) fn sum_rows(t: &Tensor) -> candle_core::Result<Tensor> {
    t.flatten_from(1)?.sum(D::Minus1)
}

/// `t` `[b, ...]` repeated `k` times along the first dimension: `[k·b, ...]`, sample-major.
pub(crate) fn repeat_first(t: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    if k == 1 {
        return Ok(t.clone());
    }
    let dims = t.dims().to_vec();
    let mut big = vec![k];
    big.extend_from_slice(&dims);
    let mut flat = dims.clone();
    flat[0] *= k;
    t.unsqueeze(0)?.broadcast_as(big)?.reshape(flat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use candle_core::{DType, Device};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    }

    /// The analytic KL against the Monte-Carlo mean of log q − log p, and log_prob from the
    /// noise against log_prob of the sample.
    #[test]
    fn gaussian_kl_and_densities_follow_their_definitions() -> candle_core::Result<()> {
        let q = Gauss {
            mu: rand(&[2, 1, 1, 3], 1),
            log_sigma: (rand(&[2, 1, 1, 3], 2) * 0.5)?,
        };
        let p = Gauss {
            mu: rand(&[2, 1, 1, 3], 3),
            log_sigma: (rand(&[2, 1, 1, 3], 4) * 0.5)?,
        };
        let kl = q.kl(&p)?.to_vec1::<f64>()?;
        let n = 200_000;
        let eps = rand(&[n, 2, 1, 1, 3], 5);
        let rep = |t: &Tensor| t.unsqueeze(0)?.broadcast_as((n, 2, 1, 1, 3))?.contiguous();
        let qn = Gauss {
            mu: rep(&q.mu)?.reshape((2 * n, 1, 1, 3))?,
            log_sigma: rep(&q.log_sigma)?.reshape((2 * n, 1, 1, 3))?,
        };
        let pn = Gauss {
            mu: rep(&p.mu)?.reshape((2 * n, 1, 1, 3))?,
            log_sigma: rep(&p.log_sigma)?.reshape((2 * n, 1, 1, 3))?,
        };
        let e = eps.reshape((2 * n, 1, 1, 3))?;
        let z = qn.sample(&e, 1.0)?;
        let lq = qn.log_prob_from_eps(&e)?;
        let lq2 = qn.log_prob(&z)?;
        let diff = (&lq - &lq2)?.abs()?.max(0)?.to_scalar::<f64>()?;
        assert!(diff < 1e-9, "log q from the noise differs by {diff}");
        let mc = (lq - pn.log_prob(&z)?)?
            .reshape((n, 2))?
            .mean(0)?
            .to_vec1::<f64>()?;
        for i in 0..2 {
            // Standard error of the mean at n = 200k is below 0.01 for these scales.
            assert!((kl[i] - mc[i]).abs() < 0.03, "{kl:?} vs {mc:?}");
        }
        // Equal Gaussians: zero.
        let same = q.kl(&q)?.to_vec1::<f64>()?;
        assert!(same.iter().all(|v| v.abs() < 1e-12));
        Ok(())
    }

    /// The fused draw and KL of a group against `Gauss::sample` and `Gauss::kl`: values, and
    /// the gradients of both raw outputs (the prior's extra channels included, which get none).
    #[test]
    fn fused_group_draw_and_kl_match_the_composite() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (n, h, w, z, extra) = (3, 4, 5, 6, 7);
        let var = |shape: &[usize], seed: u64, scale: f32| {
            let k = shape.iter().product();
            let v: Vec<f32> = Rng::new(seed)
                .normal_vec(k)
                .iter()
                .map(|x| x * scale)
                .collect();
            candle_core::Var::from_vec(v, shape, &dev)
        };
        let p = var(&[n, h, w, 2 * z + extra], 1, 2.0)?;
        let q = var(&[n, h, w, 2 * z], 2, 2.0)?;
        let e = var(&[n, h, w, z], 3, 1.0)?.as_tensor().detach();
        let maps = Maps(MapLayout::Nhwc);
        let bound = LOG_SCALE_BOUND as f32;
        let (zf, klf) = ops::gaussian_sample_kl(p.as_tensor(), q.as_tensor(), &e, bound)?;
        let (gp, gq) = (
            Gauss::from_raw(p.as_tensor(), 0, z, maps)?,
            Gauss::from_raw(q.as_tensor(), 0, z, maps)?,
        );
        let (zc, klc) = (gq.sample(&e, 1.0)?, gq.kl(&gp)?);
        let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? / scale)
        };
        assert!(diff(&zf, &zc)? < 1e-5 && diff(&klf, &klc)? < 1e-5);
        let u = var(&[n, h, w, z], 4, 1.0)?.as_tensor().detach();
        let v = var(&[n], 5, 1.0)?.as_tensor().detach();
        let loss = |z: &Tensor, kl: &Tensor| (z * &u)?.sum_all()? + (kl * &v)?.sum_all()?;
        let g1 = loss(&zf, &klf)?.backward()?;
        let g2 = loss(&zc, &klc)?.backward()?;
        for t in [p.as_tensor(), q.as_tensor()] {
            let (a, b) = (g1.get(t).unwrap(), g2.get(t).unwrap());
            let d = diff(a, b)?;
            assert!(d < 1e-4, "gradient of {:?} differs by {d}", t.dims());
        }
        Ok(())
    }

    /// Pooling averages each 2x2 square; upsampling copies each value into one; the gradient of
    /// a map used twice through `up2` is the sum of both uses.
    #[test]
    fn pooling_and_upsampling() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 16.0, &dev)?.reshape((1, 1, 4, 4))?;
        let nchw = Maps(MapLayout::Nchw);
        let p = nchw
            .avg_pool2(&x, Kernels::Native)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(p, vec![2.5, 4.5, 10.5, 12.5]);
        let s = Tensor::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &dev)?;
        let u = nchw
            .up2(&s, Kernels::Native)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(
            u,
            vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
        // Channels-last: the same values, each in its own order.
        let nhwc = Maps(MapLayout::Nhwc);
        let x2 = Tensor::arange(0f32, 32.0, &dev)?.reshape((1, 2, 4, 4))?;
        let pool = |m: Maps, t: &Tensor| m.avg_pool2(t, Kernels::Native);
        let up = |m: Maps, t: &Tensor| m.up2(t, Kernels::Native);
        for f in [
            &pool as &dyn Fn(Maps, &Tensor) -> candle_core::Result<Tensor>,
            &up,
        ] {
            let a = f(nchw, &x2)?;
            let b = nhwc.to_nchw(&f(nhwc, &nhwc.order(&x2)?)?)?;
            assert_eq!(
                a.flatten_all()?.to_vec1::<f32>()?,
                b.flatten_all()?.to_vec1::<f32>()?
            );
        }
        // The fused channels-last pooling's gradient against the composite's.
        let xv = candle_core::Var::from_tensor(&nhwc.order(&x2)?)?;
        let up = Tensor::arange(0f32, 8.0, &dev)?.reshape((1, 2, 2, 2))?;
        let fused = nhwc.avg_pool2(xv.as_tensor(), Kernels::Native)?;
        let composite = nhwc.avg_pool2(xv.as_tensor(), Kernels::Composite)?;
        let g1 = (fused * &up)?.sum_all()?.backward()?;
        let g2 = (composite * &up)?.sum_all()?.backward()?;
        let (a, b) = (
            g1.get(xv.as_tensor()).unwrap(),
            g2.get(xv.as_tensor()).unwrap(),
        );
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );
        // The fused channels-last upsampling against the composite broadcast, forward and
        // backward, on a map that is also used a second time (its gradients add).
        let sv = candle_core::Var::from_tensor(
            &nhwc.order(&Tensor::arange(1f32, 17.0, &dev)?.reshape((2, 2, 2, 2))?)?,
        )?;
        let weights = Tensor::arange(0f32, 64.0, &dev)?
            .reshape((2, 4, 4, 2))?
            .sin()?;
        let mut grads = vec![];
        for k in [Kernels::Native, Kernels::Composite] {
            let u = nhwc.up2(sv.as_tensor(), k)?;
            let y = ((u.clone() * &weights)?.sum_all()? + sv.as_tensor().sqr()?.sum_all()?)?;
            let g = y.backward()?;
            grads.push((
                u.flatten_all()?.to_vec1::<f32>()?,
                g.get(sv.as_tensor())
                    .unwrap()
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ));
        }
        assert_eq!(grads[0].0, grads[1].0);
        for (a, b) in grads[0].1.iter().zip(&grads[1].1) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        let v = candle_core::Var::from_tensor(&s)?;
        let y = (nchw.up2(v.as_tensor(), Kernels::Native)?.sum_all()?
            + (v.as_tensor() * 3.0)?.sum_all()?)?;
        let g = y.backward()?;
        let g = g
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(g, vec![7.0; 4]);
        let r = repeat_first(&s, 3)?;
        assert_eq!(r.dims(), &[3, 1, 2, 2]);
        Ok(())
    }
}
