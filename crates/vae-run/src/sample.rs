//! Generating new data: codes from the prior (or from the aggregate posterior), decoded to the
//! likelihood's mean.

use vae_core::candle_core::{Device, Tensor};
use vae_core::{Rng, Vae};
use vae_data::Dataset;

use crate::batch::{batch, one_hot};
use crate::{Result, RunError};

/// A diagonal Gaussian over the latent space to draw codes from.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentGaussian {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl LatentGaussian {
    /// The prior N(0, I) of the model's (top) latent code.
    pub fn prior(model: &Vae) -> Self {
        let l = model.latent_dim();
        Self {
            mean: vec![0.0; l],
            std: vec![1.0; l],
        }
    }

    /// `n` codes `mean + temperature * std * eps`, `[n, latent]`.
    pub fn draw(
        &self,
        n: usize,
        temperature: f64,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let l = self.mean.len();
        let t = temperature as f32;
        let mut z = rng.normal_vec(n * l);
        for row in z.chunks_exact_mut(l) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = m + t * s * *v;
            }
        }
        Ok(Tensor::from_vec(z, (n, l), device)?)
    }
}

/// The aggregate posterior of `data` (only the examples of class `label`, if given), moment
/// matched by a diagonal Gaussian: mean = average of the posterior means, variance = variance of
/// the posterior means plus the average posterior variance. Sampling from it instead of the
/// prior ("ex-post density estimation", Ghosh et al. 2020) avoids regions of the prior that no
/// training example occupies, and for a conditional model keeps the class that the codes carry.
pub fn aggregate_posterior(
    model: &Vae,
    data: &Dataset,
    label: Option<u32>,
    device: &Device,
) -> Result<LatentGaussian> {
    let idx: Vec<usize> = match (label, &data.labels) {
        (None, _) => (0..data.len()).collect(),
        (Some(y), Some(ls)) => (0..data.len()).filter(|&i| ls[i] == y).collect(),
        (Some(_), None) => {
            return Err(RunError::Mismatch("--label: the data has no labels".into()))
        }
    };
    if idx.is_empty() {
        return Err(RunError::Mismatch(format!(
            "no training example has label {}",
            label.unwrap_or(0)
        )));
    }
    let l = model.latent_dim();
    let (mut s1, mut s2, mut var) = (vec![0f64; l], vec![0f64; l], vec![0f64; l]);
    let mut buf = Vec::new();
    for chunk in idx.chunks(1000) {
        let (x, labels) = batch(data, chunk, model, device, &mut buf)?;
        let q = model.encode(&x, labels.as_ref())?;
        let mu = q.mu.to_vec2::<f32>()?;
        let lv = q.logvar.to_vec2::<f32>()?;
        for (m, v) in mu.iter().zip(&lv) {
            for j in 0..l {
                s1[j] += m[j] as f64;
                s2[j] += (m[j] as f64).powi(2);
                var[j] += (v[j] as f64).exp();
            }
        }
    }
    let n = idx.len() as f64;
    let mean: Vec<f32> = s1.iter().map(|s| (s / n) as f32).collect();
    let std = (0..l)
        .map(|j| {
            let m = s1[j] / n;
            ((s2[j] / n - m * m).max(0.0) + var[j] / n).sqrt() as f32
        })
        .collect();
    Ok(LatentGaussian { mean, std })
}

/// Decodes codes drawn from `source` (z = mean + t_0 * std * eps, t_0 = `temperatures[0]`) to
/// the likelihood's mean, `[n, dim]`; a hierarchical model draws each lower group g from its
/// prior at temperature `temperatures[g]` (the last value repeating), its noise drawn after
/// the top codes. A conditional model uses `label` for every sample, or cycles through the
/// classes when none is given.
pub fn sample_from(
    model: &Vae,
    source: &LatentGaussian,
    n: usize,
    temperatures: &[f64],
    label: Option<u32>,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    let top = temperatures.first().copied().unwrap_or(1.0);
    let z = source.draw(n, top, rng, device)?;
    let below = model.latent().noise_dim() - model.latent_dim();
    let eps = if below > 0 {
        Some(Tensor::from_vec(
            rng.normal_vec(n * below),
            (n, below),
            device,
        )?)
    } else {
        None
    };
    let labels = match (model.config().num_classes, label) {
        (Some(k), Some(y)) => Some(one_hot(&vec![y; n], k, device)?),
        (Some(k), None) => {
            let ys: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
            Some(one_hot(&ys, k, device)?)
        }
        (None, Some(_)) => {
            return Err(RunError::Mismatch(
                "--label: this model is not conditional (train it with --conditional)".into(),
            ))
        }
        (None, None) => None,
    };
    Ok(model.generate_mean(&z, eps.as_ref(), temperatures, labels.as_ref())?)
}

/// [`sample_from`] the prior N(0, t_0^2 I) of the top group.
pub fn sample(
    model: &Vae,
    n: usize,
    temperatures: &[f64],
    label: Option<u32>,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    sample_from(
        model,
        &LatentGaussian::prior(model),
        n,
        temperatures,
        label,
        rng,
        device,
    )
}
