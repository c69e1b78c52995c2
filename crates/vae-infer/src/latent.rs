//! Latent codes of a dataset (posterior means and log-variances) and the files they go to.
//!
//! Encoding runs on the model's device through candle; the codes come back to the host as
//! plain vectors, which every analysis (clustering, classification, plots) works on.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use vae_core::candle_core::{Device, Tensor};
use vae_core::{DiagonalGaussian, Vae};
use vae_data::Dataset;

use crate::{InferError, Result};
use vae_run::batch;

/// Posterior parameters of every example of a dataset, row-major `[len, dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Latents {
    /// Latent dimension.
    pub dim: usize,
    /// Posterior means mu(x).
    pub mu: Vec<f32>,
    /// Posterior log-variances log sigma^2(x).
    pub logvar: Vec<f32>,
    /// The examples' labels, when the data has them.
    pub labels: Option<Vec<u32>>,
}

impl Latents {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.mu.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.mu.is_empty()
    }

    /// The posterior mean of example `i`.
    pub fn mean(&self, i: usize) -> &[f32] {
        &self.mu[i * self.dim..(i + 1) * self.dim]
    }

    /// The labels, or an error naming the command that needs them.
    pub fn require_labels(&self, what: &str) -> Result<&[u32]> {
        self.labels
            .as_deref()
            .ok_or_else(|| InferError::Unsupported(format!("{what} needs labelled data")))
    }
}

/// q(z|x) for the examples at `indices`.
pub fn posterior(
    model: &Vae,
    data: &Dataset,
    indices: &[usize],
    device: &Device,
) -> Result<DiagonalGaussian> {
    let mut buf = Vec::new();
    let (x, labels) = batch(data, indices, model, device, &mut buf)?;
    Ok(model.encode(&x, labels.as_ref())?)
}

/// Encodes a whole dataset, `batch_size` examples per forward pass: q of the top latent group
/// (the only one of a single-latent model).
pub fn encode_dataset(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    batch_size: usize,
) -> Result<Latents> {
    encode_with(model, data, device, batch_size, false)
}

/// [`encode_dataset`] with, when `all_groups`, every latent group's q side by side in layout
/// order (a hierarchical model's lower groups taken with the groups above at their posterior
/// means): `dim` is then the sum of the groups' dimensions.
pub fn encode_with(
    model: &Vae,
    data: &Dataset,
    device: &Device,
    batch_size: usize,
    all_groups: bool,
) -> Result<Latents> {
    if batch_size == 0 {
        return Err(InferError::Flag("--batch-size must be at least 1".into()));
    }
    let dim = if all_groups {
        model.latent().noise_dim()
    } else {
        model.latent_dim()
    };
    let batch_size = batch_size.min(model.rows_per_pass().unwrap_or(usize::MAX));
    let n = data.len();
    let mut mu = Vec::with_capacity(n * dim);
    let mut logvar = Vec::with_capacity(n * dim);
    let mut buf = Vec::new();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch_size) {
        let (x, labels) = batch(data, chunk, model, device, &mut buf)?;
        let qs = if all_groups {
            model.encode_groups(&x, labels.as_ref())?
        } else {
            vec![model.encode(&x, labels.as_ref())?]
        };
        let cat = |f: fn(&DiagonalGaussian) -> &Tensor| -> Result<Vec<f32>> {
            let parts: Vec<&Tensor> = qs.iter().map(f).collect();
            Ok(Tensor::cat(&parts, 1)?.flatten_all()?.to_vec1::<f32>()?)
        };
        mu.extend(cat(|q| &q.mu)?);
        logvar.extend(cat(|q| &q.logvar)?);
    }
    Ok(Latents {
        dim,
        mu,
        logvar,
        labels: data.labels.clone(),
    })
}

/// The file formats of `encode`, chosen from the extension of the output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatentFormat {
    /// A header line `index,label,mu_0,...,logvar_0,...`; the label is empty for unlabelled data.
    Csv,
    /// One little-endian f32 array `[n, 2 * dim (+ 1)]`: the means, the log-variances, then the
    /// label (as a float) when the data has labels.
    Npy,
    /// Tensors `mu` and `logvar` (F32, `[n, dim]`) and `labels` (I64, `[n]`, when labelled).
    Safetensors,
}

impl LatentFormat {
    /// The format named by `path`'s extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("npy") => Ok(Self::Npy),
            Some("safetensors") => Ok(Self::Safetensors),
            _ => Err(InferError::Flag(format!(
                "--out {}: unknown format (the file name must end in .csv, .npy or .safetensors)",
                path.display()
            ))),
        }
    }
}

/// The CSV text of a set of latents.
pub fn to_csv(l: &Latents) -> String {
    use std::fmt::Write;
    let mut s = String::from("index,label");
    for prefix in ["mu", "logvar"] {
        for j in 0..l.dim {
            let _ = write!(s, ",{prefix}_{j}");
        }
    }
    s.push('\n');
    for i in 0..l.len() {
        let _ = write!(s, "{i},");
        if let Some(labels) = &l.labels {
            let _ = write!(s, "{}", labels[i]);
        }
        // `{}` prints the shortest text that reads back to the same f32.
        for v in l.mean(i) {
            let _ = write!(s, ",{v}");
        }
        for v in &l.logvar[i * l.dim..(i + 1) * l.dim] {
            let _ = write!(s, ",{v}");
        }
        s.push('\n');
    }
    s
}

/// The bytes of a NumPy `.npy` file (format version 1.0) holding the latents as one f32 matrix.
pub fn to_npy(l: &Latents) -> Vec<u8> {
    let cols = 2 * l.dim + usize::from(l.labels.is_some());
    let n = l.len();
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and ended by a
    // newline so that the data starts on a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + n * cols * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // The header is at most a few hundred bytes: it fits the format's u16 length.
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for i in 0..n {
        for v in l
            .mean(i)
            .iter()
            .chain(&l.logvar[i * l.dim..(i + 1) * l.dim])
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(labels) = &l.labels {
            out.extend_from_slice(&(labels[i] as f32).to_le_bytes());
        }
    }
    out
}

/// The bytes of a safetensors file holding the latents, with `metadata`.
pub fn to_safetensors(l: &Latents, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (mu, logvar) = (bytes(&l.mu), bytes(&l.logvar));
    let labels: Option<Vec<u8>> = l.labels.as_ref().map(|ls| {
        ls.iter()
            .flat_map(|&y| i64::from(y).to_le_bytes())
            .collect()
    });
    let n = l.len();
    let bad = |e: safetensors::SafeTensorError| InferError::Safetensors(e.to_string());
    let mut views = vec![
        (
            "mu".to_string(),
            TensorView::new(Dtype::F32, vec![n, l.dim], &mu).map_err(bad)?,
        ),
        (
            "logvar".to_string(),
            TensorView::new(Dtype::F32, vec![n, l.dim], &logvar).map_err(bad)?,
        ),
    ];
    if let Some(b) = &labels {
        views.push((
            "labels".to_string(),
            TensorView::new(Dtype::I64, vec![n], b).map_err(bad)?,
        ));
    }
    safetensors::serialize(views, Some(metadata)).map_err(bad)
}

/// Writes the latents to `path` in the format its extension names, atomically.
pub fn write_latents(
    path: &Path,
    l: &Latents,
    metadata: HashMap<String, String>,
) -> Result<LatentFormat> {
    let format = LatentFormat::from_path(path)?;
    let bytes = match format {
        LatentFormat::Csv => to_csv(l).into_bytes(),
        LatentFormat::Npy => to_npy(l),
        LatentFormat::Safetensors => to_safetensors(l, metadata)?,
    };
    vae_core::weights::atomic_write(path, &bytes)?;
    Ok(format)
}

/// A `[n, dim]` tensor of the codes `z` (row-major) on `device`.
pub fn codes(z: Vec<f32>, dim: usize, device: &Device) -> Result<Tensor> {
    let n = z.len() / dim.max(1);
    Ok(Tensor::from_vec(z, (n, dim), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Latents {
        Latents {
            dim: 2,
            mu: vec![0.5, -1.25, 3.0, 0.1],
            logvar: vec![-0.5, 0.0, 1.5, -2.0],
            labels: Some(vec![7, 2]),
        }
    }

    #[test]
    fn csv_has_a_header_and_one_exact_row_per_example() {
        let text = to_csv(&toy());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "index,label,mu_0,mu_1,logvar_0,logvar_1");
        assert_eq!(lines[1], "0,7,0.5,-1.25,-0.5,0");
        assert_eq!(lines[2], "1,2,3,0.1,1.5,-2");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let b = to_npy(&toy());
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap_or("");
        assert!(header.contains("'shape': (2, 5)"), "{header}");
        assert!(header.ends_with('\n'));
        let data: Vec<f32> = b[10 + hlen..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(
            data,
            vec![0.5, -1.25, -0.5, 0.0, 7.0, 3.0, 0.1, 1.5, -2.0, 2.0]
        );
    }

    #[test]
    fn safetensors_round_trips() -> Result<()> {
        let l = toy();
        let b = to_safetensors(&l, HashMap::new())?;
        let st = safetensors::SafeTensors::deserialize(&b)
            .map_err(|e| InferError::Safetensors(e.to_string()))?;
        let mu = st
            .tensor("mu")
            .map_err(|e| InferError::Safetensors(e.to_string()))?;
        assert_eq!(mu.shape(), &[2, 2]);
        let labels = st
            .tensor("labels")
            .map_err(|e| InferError::Safetensors(e.to_string()))?;
        assert_eq!(labels.dtype(), Dtype::I64);
        assert_eq!(&labels.data()[..8], &7i64.to_le_bytes());
        Ok(())
    }

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(
            LatentFormat::from_path(Path::new("a/b.CSV")).ok(),
            Some(LatentFormat::Csv)
        );
        let e = LatentFormat::from_path(Path::new("z.txt"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--out z.txt"), "{e}");
    }
}
