//! Generating new data from the prior.

use vae_core::candle_core::{Device, Tensor};
use vae_core::{Rng, Vae};

use crate::model::one_hot;
use crate::{InferError, Result};

/// Draws `n` codes z ~ N(0, temperature^2 I) and decodes them to the likelihood's mean,
/// `[n, dim]`. A conditional model needs `label`.
pub fn sample(
    model: &Vae,
    n: usize,
    temperature: f64,
    label: Option<u32>,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    let l = model.latent_dim();
    let z = (Tensor::from_vec(rng.normal_vec(n * l), (n, l), device)? * temperature)?;
    let labels = match (model.config().num_classes, label) {
        (Some(k), Some(y)) => Some(one_hot(&vec![y; n], k, device)?),
        (Some(k), None) => {
            // No label asked for: cycle through the classes so every class shows.
            let ys: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
            Some(one_hot(&ys, k, device)?)
        }
        (None, Some(_)) => {
            return Err(InferError::Usage(
                "--label: this model is not conditional (train it with --conditional)".into(),
            ))
        }
        (None, None) => None,
    };
    Ok(model.decode_mean(&z, labels.as_ref())?)
}
