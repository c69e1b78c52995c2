//! The standard normal noise of the reparameterisation trick, shaped by the model.
//!
//! A pass over `n` examples with `K` samples each needs `[K, n, noise_dim]` values
//! (sample-major), `noise_dim` being the sum of the latent groups' dimensions. Noise is drawn
//! for a whole batch before it is split into shards, so the figures do not depend on the
//! number of threads.

use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::{Result, Rng, Vae};

/// Noise for K samples of n examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    pub k: usize,
    pub n: usize,
    /// Values per sample of one example.
    pub dim: usize,
    values: Vec<f32>,
}

impl Noise {
    /// `k * n * noise_dim` draws from `rng`, sample-major.
    pub fn draw(model: &Vae, k: usize, n: usize, rng: &mut Rng) -> Self {
        let dim = model.latent().noise_dim();
        Self {
            k,
            n,
            dim,
            values: rng.normal_vec(k * n * dim),
        }
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
            values,
        }
    }

    /// The noise of the examples in `rows` (a range of `0..n`), `[K, rows, dim]`.
    pub fn rows(&self, rows: Range<usize>, device: &Device) -> Result<Tensor> {
        let mut v = Vec::with_capacity(self.k * rows.len() * self.dim);
        for s in 0..self.k {
            let at = |i: usize| (s * self.n + i) * self.dim;
            v.extend_from_slice(&self.values[at(rows.start)..at(rows.end)]);
        }
        Ok(Tensor::from_vec(v, (self.k, rows.len(), self.dim), device)?)
    }

    /// All of it, `[K, n, dim]`.
    pub fn tensor(self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.values,
            (self.k, self.n, self.dim),
            device,
        )?)
    }

    /// All of it as `[n, dim]` (K = 1), for the one-sample bound.
    pub fn single(self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.values, (self.n, self.dim), device)?)
    }
}
