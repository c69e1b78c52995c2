//! Loading a trained model: a run directory, or a weights file with its config.json.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::candle_nn::{VarBuilder, VarMap};
use vae_core::{weights, ModelConfig, Vae};
use vae_data::{DataConfig, Dataset};

use crate::{InferError, Result};

/// The parts of a run's `config.json` that inference needs (other keys are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct RunFile {
    pub model: ModelConfig,
    #[serde(default)]
    pub data: Option<DataConfig>,
}

/// A model ready to use, with the data description it was trained on.
pub struct Loaded {
    pub model: Vae,
    pub varmap: VarMap,
    pub data: Option<DataConfig>,
    pub device: Device,
}

/// Reads and parses a run's config.json.
pub fn read_config(path: &Path) -> Result<RunFile> {
    let text = std::fs::read_to_string(path).map_err(|e| InferError::File {
        path: path.into(),
        msg: e.to_string(),
    })?;
    let rf: RunFile = serde_json::from_str(&text).map_err(|e| InferError::File {
        path: path.into(),
        msg: format!("not a valid run configuration: {e}"),
    })?;
    rf.model.validate().map_err(|e| InferError::File {
        path: path.into(),
        msg: e.to_string(),
    })?;
    Ok(rf)
}

/// Builds the model of `config` and loads `weights_path` into it (every check first).
pub fn load(weights_path: &Path, config: &Path, device: &Device) -> Result<Loaded> {
    let rf = read_config(config)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = Vae::new(vb, &rf.model)?;
    weights::load_varmap(&varmap, weights_path)?;
    Ok(Loaded {
        model,
        varmap,
        data: rf.data,
        device: device.clone(),
    })
}

/// The weights and config of a run directory: `model.safetensors` (or `best.safetensors` when
/// `best` is set) and `config.json`.
pub fn run_paths(dir: &Path, best: bool) -> Result<(PathBuf, PathBuf)> {
    if !dir.is_dir() {
        return Err(InferError::File {
            path: dir.into(),
            msg: "not a run directory (no such directory)".into(),
        });
    }
    let w = dir.join(if best {
        "best.safetensors"
    } else {
        "model.safetensors"
    });
    let c = dir.join("config.json");
    for p in [&w, &c] {
        if !p.is_file() {
            return Err(InferError::File {
                path: p.clone(),
                msg: "missing: is this a finished run directory of vae-train?".into(),
            });
        }
    }
    Ok((w, c))
}

/// One-hot labels `[n, classes]`.
pub fn one_hot(labels: &[u32], classes: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        let l = l as usize;
        if l >= classes {
            return Err(InferError::Usage(format!(
                "label {l} is out of range for {classes} classes"
            )));
        }
        v[i * classes + l] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?)
}

/// The examples at `indices` as a `[n, dim]` tensor, with one-hot labels for a conditional model.
pub fn batch(
    data: &Dataset,
    indices: &[usize],
    model: &Vae,
    device: &Device,
    buf: &mut Vec<f32>,
) -> Result<(Tensor, Option<Tensor>)> {
    data.gather(indices, buf);
    let x = Tensor::from_slice(buf, (indices.len(), data.shape.dim()), device)?;
    let labels = match model.config().num_classes {
        None => None,
        Some(k) => {
            let l = data.gather_labels(indices).ok_or_else(|| {
                InferError::Usage("a conditional model needs labelled data".into())
            })?;
            Some(one_hot(&l, k, device)?)
        }
    };
    Ok((x, labels))
}
