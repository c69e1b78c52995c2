//! Examples of a dataset as tensors for a model: values `[n, dim]` and, for a conditional
//! model, one-hot labels `[n, classes]`.

use std::ops::Range;

use vae_core::candle_core::{Device, Tensor};
use vae_core::Vae;
use vae_data::Dataset;

use crate::{Result, RunError};

/// One-hot labels `[n, classes]`.
pub fn one_hot(labels: &[u32], classes: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        let l = l as usize;
        if l >= classes {
            return Err(RunError::Mismatch(format!(
                "label {l} is out of range for {classes} classes"
            )));
        }
        v[i * classes + l] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?)
}

/// The rows `rows` of a gathered batch — `values` `[n, dim]` row-major, with the examples'
/// `labels` — as tensors for `model`: the values, and one-hot labels when the model is
/// conditional.
pub fn rows_to_tensors(
    values: &[f32],
    labels: Option<&[u32]>,
    rows: Range<usize>,
    dim: usize,
    model: &Vae,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let x = Tensor::from_slice(
        &values[rows.start * dim..rows.end * dim],
        (rows.len(), dim),
        device,
    )?;
    let y = match (model.config().num_classes, labels) {
        (None, _) => None,
        (Some(c), Some(ls)) => Some(one_hot(&ls[rows], c, device)?),
        (Some(_), None) => {
            return Err(RunError::Mismatch(
                "a conditional model needs labelled data".into(),
            ))
        }
    };
    Ok((x, y))
}

/// The examples at `indices` as a `[n, dim]` tensor, with one-hot labels for a conditional
/// model; `buf` is reused for the values.
pub fn batch(
    data: &Dataset,
    indices: &[usize],
    model: &Vae,
    device: &Device,
    buf: &mut Vec<f32>,
) -> Result<(Tensor, Option<Tensor>)> {
    data.gather(indices, buf);
    let labels = match model.config().num_classes {
        Some(_) => data.gather_labels(indices),
        None => None,
    };
    rows_to_tensors(
        buf,
        labels.as_deref(),
        0..indices.len(),
        data.shape.dim(),
        model,
        device,
    )
}
