//! The standard normal noise of the reparameterisation trick, shaped by the model.
//!
//! A pass over `n` examples with `K` samples each needs `[K, n, noise_dim]` values
//! (sample-major), `noise_dim` being the sum of the latent groups' dimensions. Noise is drawn
//! for a whole batch before it is split into shards, so the figures do not depend on the
//! number of threads. On the CPU it comes from our [`Rng`], whose state checkpoints save; on
//! another device from the device's own generator, seeded for each step
//! ([`Noise::draw_on_device`]), so that nothing crosses from the host in a step.

use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::{Result, Rng, Vae};

/// Noise for K samples of n examples.
#[derive(Debug, Clone)]
pub struct Noise {
    pub k: usize,
    pub n: usize,
    /// Values per sample of one example.
    pub dim: usize,
    values: Values,
}

#[derive(Debug, Clone)]
enum Values {
    Host(Vec<f32>),
    /// `[K, n, dim]` on a device.
    Device(Tensor),
}

impl PartialEq for Noise {
    fn eq(&self, other: &Self) -> bool {
        let host = |v: &Values| match v {
            Values::Host(h) => Some(h.clone()),
            Values::Device(t) => t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok(),
        };
        (self.k, self.n, self.dim) == (other.k, other.n, other.dim)
            && host(&self.values) == host(&other.values)
    }
}

impl Noise {
    /// `k * n * noise_dim` draws from `rng`, sample-major, the transform over `threads`
    /// ([`Rng::fill_normal_threads`]: the same values for any number).
    pub fn draw(model: &Vae, k: usize, n: usize, threads: usize, rng: &mut Rng) -> Self {
        let dim = model.latent().noise_dim();
        let mut values = vec![0f32; k * n * dim];
        rng.fill_normal_threads(&mut values, threads);
        Self {
            k,
            n,
            dim,
            values: Values::Host(values),
        }
    }

    /// `k * n * noise_dim` draws on `device` (not the CPU, whose generator candle cannot seed)
    /// from its generator seeded with `seed`: the same seed gives the same noise on the same
    /// device and driver, so a run resumed at a step draws what an uninterrupted one drew.
    pub fn draw_on_device(
        model: &Vae,
        k: usize,
        n: usize,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let dim = model.latent().noise_dim();
        device.set_seed(seed)?;
        let t = Tensor::randn(0f32, 1f32, (k, n, dim), device)?;
        Ok(Self {
            k,
            n,
            dim,
            values: Values::Device(t),
        })
    }

    /// One sample for each example of `rows`, each from its own generator `(seed, row)`: the
    /// noise of an example does not depend on which batch it is in.
    pub fn per_example(model: &Vae, rows: &[usize], seed: u64) -> Self {
        let dim = model.latent().noise_dim();
        let mut values = vec![0f32; rows.len() * dim];
        for (e, &i) in values.chunks_exact_mut(dim.max(1)).zip(rows) {
            Rng::stream(seed, i as u64).fill_normal(e);
        }
        Self {
            k: 1,
            n: rows.len(),
            dim,
            values: Values::Host(values),
        }
    }

    /// The noise of the examples in `rows` (a range of `0..n`), `[K, rows, dim]`.
    pub fn rows(&self, rows: Range<usize>, device: &Device) -> Result<Tensor> {
        let values = match &self.values {
            Values::Device(t) => {
                return Ok(t.narrow(1, rows.start, rows.len())?.to_device(device)?)
            }
            Values::Host(v) => v,
        };
        let mut v = Vec::with_capacity(self.k * rows.len() * self.dim);
        for s in 0..self.k {
            let at = |i: usize| (s * self.n + i) * self.dim;
            v.extend_from_slice(&values[at(rows.start)..at(rows.end)]);
        }
        Ok(Tensor::from_vec(v, (self.k, rows.len(), self.dim), device)?)
    }

    /// All of it, `[K, n, dim]`.
    pub fn tensor(self, device: &Device) -> Result<Tensor> {
        match self.values {
            Values::Host(v) => Ok(Tensor::from_vec(v, (self.k, self.n, self.dim), device)?),
            Values::Device(t) => Ok(t.to_device(device)?),
        }
    }

    /// All of it as `[n, dim]` (K = 1), for the one-sample bound.
    pub fn single(self, device: &Device) -> Result<Tensor> {
        let (n, dim) = (self.n, self.dim);
        Ok(self.tensor(device)?.reshape((n, dim))?)
    }
}
