//! Model configuration: what the network looks like and which likelihood it uses.
//!
//! A [`ModelConfig`] is written to `config.json` beside the weights and read back before the
//! model is built, so it holds everything needed to rebuild the same tensors.

use serde::{Deserialize, Serialize};

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

/// The non-linearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
    Gelu,
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "relu" => Ok(Self::Relu),
            "tanh" => Ok(Self::Tanh),
            "gelu" => Ok(Self::Gelu),
            _ => Err(format!(
                "unknown activation `{s}` (expected relu, tanh or gelu)"
            )),
        }
    }
}

/// How the decoder of a convolutional VAE grows its feature maps back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Upsampling {
    /// Transposed convolutions with stride 2.
    #[default]
    Transposed,
    /// Nearest-neighbour upsampling by 2 followed by a 3x3 convolution.
    Nearest,
}

impl std::str::FromStr for Upsampling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "transposed" => Ok(Self::Transposed),
            "nearest" => Ok(Self::Nearest),
            _ => Err(format!(
                "unknown upsampling `{s}` (expected transposed or nearest)"
            )),
        }
    }
}

/// The encoder and decoder networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Arch {
    /// Fully connected layers; the decoder mirrors the encoder's hidden sizes.
    Mlp {
        hidden: Vec<usize>,
        activation: Activation,
    },
    /// Strided 4x4 convolutions (stride 2) in the encoder, one dense layer to the latent
    /// parameters; the decoder mirrors it.
    Conv {
        channels: Vec<usize>,
        hidden: usize,
        activation: Activation,
        upsampling: Upsampling,
    },
}

/// The observation model p(x|z).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Likelihood {
    /// Independent Bernoulli on logits: log p = x*l - softplus(l).
    Bernoulli,
    /// The seed article's decoder: N(x; sqrt(1-alpha) mu(z), alpha I).
    Gaussian { alpha: f64 },
    /// A Gaussian with a per-dimension log-variance output by the decoder, clamped to
    /// `[min_logvar, max_logvar]`.
    GaussianLearned { min_logvar: f64, max_logvar: f64 },
    /// The continuous Bernoulli of Loaiza-Ganem & Cunningham (2019), on logits.
    ContinuousBernoulli,
}

impl Likelihood {
    /// Decoder outputs per data dimension.
    pub fn params_per_dim(&self) -> usize {
        match self {
            Self::GaussianLearned { .. } => 2,
            _ => 1,
        }
    }

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bernoulli => "bernoulli",
            Self::Gaussian { .. } => "gaussian",
            Self::GaussianLearned { .. } => "gaussian-learned",
            Self::ContinuousBernoulli => "continuous-bernoulli",
        }
    }

    /// Builds a likelihood from its command-line name; `alpha` is used by `gaussian`.
    pub fn from_name(name: &str, alpha: f64) -> Result<Self> {
        Ok(match name {
            "bernoulli" => Self::Bernoulli,
            "gaussian" => Self::Gaussian { alpha },
            "gaussian-learned" => Self::GaussianLearned {
                min_logvar: -9.0,
                max_logvar: 2.0,
            },
            "continuous-bernoulli" => Self::ContinuousBernoulli,
            _ => {
                return Err(Error::Config(format!(
                "unknown likelihood `{name}` (expected bernoulli, gaussian, gaussian-learned or continuous-bernoulli)"
            )))
            }
        })
    }
}

/// Everything needed to build a VAE's tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Shape of one example.
    pub shape: DataShape,
    /// Dimension of z.
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
        match &self.arch {
            Arch::Mlp { hidden, .. } => {
                if hidden.contains(&0) {
                    return bad("--hidden sizes must be at least 1".into());
                }
            }
            Arch::Conv {
                channels, hidden, ..
            } => {
                if channels.is_empty() || channels.contains(&0) || *hidden == 0 {
                    return bad("conv channels and hidden size must be at least 1".into());
                }
                let (h, w) = (self.shape.height, self.shape.width);
                let f = 1usize << channels.len();
                if !self.shape.is_image() || h % f != 0 || w % f != 0 {
                    return bad(format!(
                        "the conv architecture needs images whose sides divide by {f} (got {}x{}x{})",
                        self.shape.channels, h, w
                    ));
                }
            }
        }
        match self.likelihood {
            Likelihood::Gaussian { alpha } if !(alpha > 0.0 && alpha < 1.0) => {
                return bad(format!("--alpha must lie in (0, 1), got {alpha}"));
            }
            Likelihood::GaussianLearned {
                min_logvar,
                max_logvar,
            } if !(min_logvar.is_finite() && max_logvar.is_finite() && min_logvar < max_logvar) => {
                return bad("gaussian-learned needs finite min_logvar < max_logvar".into());
            }
            _ => {}
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::PytorchExample,
        Preset::Seed,
        Preset::Iwae,
        Preset::Conv,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::PytorchExample => "pytorch-example",
            Self::Seed => "seed",
            Self::Iwae => "iwae",
            Self::Conv => "conv",
        }
    }

    /// The model this preset builds for data of the given shape.
    pub fn model(&self, shape: DataShape) -> ModelConfig {
        let (latent_dim, arch, likelihood) = match self {
            Self::PytorchExample => (
                20,
                Arch::Mlp {
                    hidden: vec![400],
                    activation: Activation::Relu,
                },
                Likelihood::Bernoulli,
            ),
            Self::Seed => (
                2,
                Arch::Mlp {
                    hidden: vec![128, 64, 32],
                    activation: Activation::Relu,
                },
                Likelihood::Gaussian { alpha: 0.1 },
            ),
            Self::Iwae => (
                50,
                Arch::Mlp {
                    hidden: vec![200, 200],
                    activation: Activation::Tanh,
                },
                Likelihood::Bernoulli,
            ),
            Self::Conv => (
                32,
                Arch::Conv {
                    channels: vec![32, 64],
                    hidden: 256,
                    activation: Activation::Relu,
                    upsampling: Upsampling::Transposed,
                },
                Likelihood::Bernoulli,
            ),
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

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown preset `{s}` (expected pytorch-example, seed, iwae or conv)")
            })
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
        cfg.likelihood = Likelihood::Gaussian { alpha: 1.0 };
        assert!(cfg.validate().unwrap_err().to_string().contains("--alpha"));
        let cfg = Preset::Conv.model(DataShape::tabular(10));
        assert!(cfg.validate().is_err());
    }
}
