//! Reconstruction: x -> mean of q(z|x) -> mean of p(x|z), drawn under the originals.

use vae_core::candle_core::Device;
use vae_core::Vae;
use vae_data::Dataset;

use crate::Result;
use vae_run::batch;

/// Originals and their reconstructions, each `[n, dim]` row-major.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub originals: Vec<f32>,
    pub reconstructions: Vec<f32>,
    /// Mean squared error per value between originals and reconstructions.
    pub mse: f64,
}

/// Reconstructs the examples at `indices`: the likelihood's mean with every latent group at its
/// posterior mean (no sampling, so the picture is deterministic).
pub fn reconstruct(
    model: &Vae,
    data: &Dataset,
    indices: &[usize],
    device: &Device,
) -> Result<Reconstruction> {
    let mut buf = Vec::new();
    let (x, labels) = batch(data, indices, model, device, &mut buf)?;
    let r = model.reconstruct_mean(&x, labels.as_ref())?;
    let reconstructions = r.flatten_all()?.to_vec1::<f32>()?;
    let originals = buf;
    let se: f64 = originals
        .iter()
        .zip(&reconstructions)
        .map(|(&a, &b)| f64::from(a - b).powi(2))
        .sum();
    let mse = se / originals.len().max(1) as f64;
    Ok(Reconstruction {
        originals,
        reconstructions,
        mse,
    })
}

/// Interleaves rows of `cols` originals with the rows of their reconstructions, so that each
/// reconstruction sits right under its original; the last row pair may be short and is padded
/// with blank (white) pictures.
pub fn comparison_layout(r: &Reconstruction, dim: usize, cols: usize) -> Vec<f32> {
    let n = r.originals.len() / dim.max(1);
    let cols = cols.max(1);
    let rows = n.div_ceil(cols);
    let mut out = Vec::with_capacity(2 * rows * cols * dim);
    for row in 0..rows {
        for src in [&r.originals, &r.reconstructions] {
            for c in 0..cols {
                let i = row * cols + c;
                if i < n {
                    out.extend_from_slice(&src[i * dim..(i + 1) * dim]);
                } else {
                    out.extend(std::iter::repeat_n(1.0, dim));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_each_reconstruction_under_its_original() {
        // Three one-value "pictures" in rows of two: [o0 o1 / r0 r1 / o2 pad / r2 pad].
        let r = Reconstruction {
            originals: vec![0.0, 0.1, 0.2],
            reconstructions: vec![0.5, 0.6, 0.7],
            mse: 0.0,
        };
        assert_eq!(
            comparison_layout(&r, 1, 2),
            vec![0.0, 0.1, 0.5, 0.6, 0.2, 1.0, 0.7, 1.0]
        );
    }
}
