//! `mlp`: fully connected encoder and decoder, the decoder mirroring the encoder's hidden sizes.
//!
//! Tensors: `encoder.fc{i}` `[hidden_i, in]`, `encoder.head` `[2·latent, last]`,
//! `decoder.fc{i}` (the hidden sizes reversed), `decoder.out` `[P·D, last]`. A conditional model
//! appends the one-hot label to the inputs of `encoder.fc0` and `decoder.fc0`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{with_labels, Activation, Dense, Linear};
use super::single::{Decoder, EncoderBody, GaussianLatent};
use super::{ArchConfig, Net};
use crate::config::ModelConfig;
use crate::ops::{Act, Kernels};
use crate::{Error, Result};

/// The settings of the `mlp` architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Hidden layer sizes of the encoder (the decoder uses them reversed).
    pub hidden: Vec<usize>,
    pub activation: Activation,
}

impl ArchConfig for MlpConfig {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn describe(&self) -> String {
        format!("mlp {:?}", self.hidden)
    }

    fn validate(&self, _cfg: &ModelConfig) -> Result<()> {
        if self.hidden.contains(&0) {
            return Err(Error::Config("--hidden sizes must be at least 1".into()));
        }
        Ok(())
    }

    fn activations(&self) -> Vec<Activation> {
        vec![self.activation]
    }

    fn build(&self, vb: VarBuilder, cfg: &ModelConfig, k: Kernels) -> Result<Box<dyn Net>> {
        let extra = cfg.num_classes.unwrap_or(0);
        let latent = cfg.latent_dim;
        let input = cfg.shape.dim() + extra;
        let body = Dense::new(&vb.pp("encoder"), input, &self.hidden, self.activation, k)?;
        let features = self.hidden.last().copied().unwrap_or(input);
        let rev: Vec<usize> = self.hidden.iter().rev().copied().collect();
        let vdec = vb.pp("decoder");
        let dbody = Dense::new(&vdec, latent + extra, &rev, self.activation, k)?;
        let last = rev.last().copied().unwrap_or(latent + extra);
        let out = Linear::new(vdec.pp("out"), last, cfg.decoder_outputs(), k)?;
        let decoder = MlpDecoder { body: dbody, out };
        Ok(Box::new(GaussianLatent::new(
            &vb,
            Box::new(MlpEncoder(body)),
            features,
            latent,
            Box::new(decoder),
            k,
        )?))
    }
}

#[derive(Debug)]
struct MlpEncoder(Dense);

impl EncoderBody for MlpEncoder {
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.0.forward(with_labels(x, labels)?)?)
    }
}

#[derive(Debug)]
struct MlpDecoder {
    body: Dense,
    out: Linear,
}

impl Decoder for MlpDecoder {
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        let z = with_labels(z, labels)?;
        Ok(self.out.forward(&self.body.forward(z)?, out_act)?)
    }

    fn fuses_output(&self) -> bool {
        true
    }
}
