//! Loading a trained model: a run directory, or a weights file with its config.json.

use std::path::Path;

use serde::Deserialize;
use vae_core::candle_core::{DType, Device};
use vae_core::candle_nn::{VarBuilder, VarMap};
use vae_core::{weights, ModelConfig, Vae};
use vae_data::DataConfig;

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
    let rf: RunFile = vae_run::run_dir::read_json(path, "run configuration")?;
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
    // Inference wants no gradient: passes over detached weights record no graph.
    let model = model.detached(&varmap)?;
    Ok(Loaded {
        model,
        varmap,
        data: rf.data,
        device: device.clone(),
    })
}
