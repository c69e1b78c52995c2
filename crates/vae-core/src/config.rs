//! Model configuration: the data shape, the architecture, the likelihood and the presets.
//!
//! A [`ModelConfig`] is written to `config.json` beside the weights and read back before the
//! model is built, so it holds everything needed to rebuild the same tensors.

use serde::{Deserialize, Serialize};

use crate::arch::{Activation, Arch, ConvConfig, HierarchicalConfig, MlpConfig, Upsampling};
use crate::likelihood::{Bernoulli, DiscretizedLogistic, Gaussian, Likelihood};
use crate::{Error, Result};

/// The shape of one example: `channels x height x width`. Tabular data has height 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl DataShape {
    /// An image shape.
    pub fn image(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// A flat vector of `dim` features.
    pub fn tabular(dim: usize) -> Self {
        Self {
            channels: 1,
            height: 1,
            width: dim,
        }
    }

    /// Number of values in one example.
    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether examples are pictures (and so can be drawn as a grid).
    pub fn is_image(&self) -> bool {
        self.height > 1 && self.width > 1 && matches!(self.channels, 1 | 3)
    }
}

/// Everything needed to build a VAE's tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Shape of one example.
    pub shape: DataShape,
    /// Dimension of z (of the top latent group for a hierarchical model).
    pub latent_dim: usize,
    pub arch: Arch,
    pub likelihood: Likelihood,
    /// Number of classes of a conditional VAE (one-hot labels into encoder and decoder).
    #[serde(default)]
    pub num_classes: Option<usize>,
}

impl ModelConfig {
    /// Checks every value a user can set; the message names the offending setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.shape.dim() == 0 {
            return bad("the data has zero dimensions".into());
        }
        if self.latent_dim == 0 {
            return bad("--latent-dim must be at least 1".into());
        }
        self.arch.validate(self)?;
        self.likelihood.validate()?;
        if self.num_classes == Some(0) {
            return bad("a conditional model needs at least one class".into());
        }
        Ok(())
    }

    /// Number of decoder outputs for one example.
    pub fn decoder_outputs(&self) -> usize {
        self.shape.dim() * self.likelihood.params_per_dim()
    }
}

/// Named starting points, matching well-known reference implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// pytorch/examples `vae`: mlp [400] relu, latent 20, Bernoulli; Adam 1e-3, batch 128.
    #[default]
    PytorchExample,
    /// The seed article's network: mlp [128, 64, 32] relu, latent 2, Gaussian with alpha 0.1.
    Seed,
    /// Burda et al. (2015): mlp [200, 200] tanh, latent 50, Bernoulli, dynamic binarisation.
    Iwae,
    /// A convolutional VAE with latent 32.
    Conv,
    /// A hierarchical VAE (VDVAE-like): a top group of 32 and spatial groups at two
    /// resolutions (three for sides divisible by 8 from 32 up), with a discretized logistic
    /// mixture of 5 components.
    Hvae,
}

impl Preset {
    pub const ALL: [Preset; 5] = [
        Preset::PytorchExample,
        Preset::Seed,
        Preset::Iwae,
        Preset::Conv,
        Preset::Hvae,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::PytorchExample => "pytorch-example",
            Self::Seed => "seed",
            Self::Iwae => "iwae",
            Self::Conv => "conv",
            Self::Hvae => "hvae",
        }
    }

    /// The model this preset builds for data of the given shape.
    pub fn model(&self, shape: DataShape) -> ModelConfig {
        let mlp = |hidden: Vec<usize>, activation| Arch::Mlp(MlpConfig { hidden, activation });
        let (latent_dim, arch, likelihood) = match self {
            Self::PytorchExample => (
                20,
                mlp(vec![400], Activation::Relu),
                Likelihood::Bernoulli(Bernoulli {}),
            ),
            Self::Seed => (
                2,
                mlp(vec![128, 64, 32], Activation::Relu),
                Likelihood::Gaussian(Gaussian { alpha: 0.1 }),
            ),
            Self::Iwae => (
                50,
                mlp(vec![200, 200], Activation::Tanh),
                Likelihood::Bernoulli(Bernoulli {}),
            ),
            Self::Conv => (
                32,
                Arch::Conv(ConvConfig {
                    channels: vec![32, 64],
                    hidden: 256,
                    activation: Activation::Relu,
                    upsampling: Upsampling::Transposed,
                }),
                Likelihood::Bernoulli(Bernoulli {}),
            ),
            Self::Hvae => {
                let three = shape.height >= 32
                    && shape.height.is_multiple_of(8)
                    && shape.width.is_multiple_of(8);
                (
                    32,
                    Arch::Hierarchical(HierarchicalConfig {
                        width: 64,
                        bottleneck: 32,
                        z_channels: 8,
                        groups: if three { vec![1, 2, 3] } else { vec![2, 4] },
                        blocks: 1,
                        activation: Activation::Relu,
                    }),
                    Likelihood::DiscretizedLogistic(DiscretizedLogistic { mixtures: 5 }),
                )
            }
        };
        ModelConfig {
            shape,
            latent_dim,
            arch,
            likelihood,
            num_classes: None,
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json() {
        for p in Preset::ALL {
            let cfg = p.model(DataShape::image(1, 28, 28));
            let s = serde_json::to_string(&cfg).unwrap();
            let back: ModelConfig = serde_json::from_str(&s).unwrap();
            assert_eq!(cfg, back);
            cfg.validate().unwrap();
        }
    }

    /// config.json files written before the architectures and likelihoods had types of their
    /// own still load (the JSON did not change).
    #[test]
    fn earlier_config_json_still_loads() {
        let text = r#"{"shape":{"channels":1,"height":28,"width":28},"latent_dim":32,
            "arch":{"kind":"conv","channels":[32,64],"hidden":256,"activation":"relu","upsampling":"transposed"},
            "likelihood":{"kind":"bernoulli"},"num_classes":null}"#;
        let cfg: ModelConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg, Preset::Conv.model(DataShape::image(1, 28, 28)));
        let text = r#"{"shape":{"channels":1,"height":1,"width":4},"latent_dim":2,
            "arch":{"kind":"mlp","hidden":[128,64,32],"activation":"relu"},
            "likelihood":{"kind":"gaussian","alpha":0.1}}"#;
        let cfg: ModelConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg, Preset::Seed.model(DataShape::tabular(4)));
        assert_eq!(
            serde_json::to_value(cfg.likelihood).unwrap(),
            serde_json::json!({"kind": "gaussian", "alpha": 0.1})
        );
    }

    #[test]
    fn validation_names_the_setting() {
        let mut cfg = Preset::PytorchExample.model(DataShape::tabular(10));
        cfg.latent_dim = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--latent-dim"));
        let mut cfg = Preset::Seed.model(DataShape::tabular(10));
        cfg.likelihood = Likelihood::Gaussian(Gaussian { alpha: 1.0 });
        assert!(cfg.validate().unwrap_err().to_string().contains("--alpha"));
        let cfg = Preset::Conv.model(DataShape::tabular(10));
        assert!(cfg.validate().is_err());
    }
}
