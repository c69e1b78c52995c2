//! Observation models p(x|z): each in a file of its own with its type, its log-probability and
//! its mean, behind the [`Observation`] interface.
//!
//! Each takes the decoder's raw output ("params", `[batch, P·D]`, block-major: parameter block
//! p is columns p·D..(p+1)·D) and data `x` (`[batch, D]`), and returns the log-likelihood
//! summed over dimensions, `[batch]`. All are finite for any finite decoder output.
//!
//! A new likelihood is a file here with a type implementing [`Observation`], a variant of
//! [`Likelihood`] (its `config.json` form) and one of [`LikelihoodKind`] (its command-line name).

mod bernoulli;
mod beta_binomial;
mod continuous_bernoulli;
mod discretized_logistic;
mod gaussian;
mod gaussian_learned;

use crate::ops::Kernels;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use bernoulli::Bernoulli;
pub use beta_binomial::BetaBinomial;
pub use continuous_bernoulli::ContinuousBernoulli;
pub use discretized_logistic::{DiscretizedLogistic, MAX_MIXTURES};
pub use gaussian::Gaussian;
pub use gaussian_learned::GaussianLearned;

use crate::Result;

/// What the log-likelihood of a model is a log-probability of, which decides what its
/// bits/dim mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Density {
    /// A distribution over the 256 values of each 8-bit value: log P of the data itself.
    Discrete,
    /// A density on [0, 1]: a bound on log P of 8-bit data through uniform dequantization.
    Continuous,
    /// Bernoulli: a distribution over {0, 1}; on grey levels only a cross-entropy.
    Binary,
}

/// A pixel model of the lossless coder (vae-codec) and how the decoder's raw outputs map to
/// its parameters. The coder implements these families; a likelihood of one of them says
/// which, with its settings, through [`Observation::pixel_coding`].
///
/// The outputs are block-major as everywhere (block p of an image of D values is outputs
/// p·D..(p+1)·D), and a bound (lo, hi) is the smooth map lo..hi of the training likelihood:
/// mid + half · tanh((raw − mid) / half), mid and half the bound's centre and half-width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelCoding {
    /// A mixture of `components` logistics integrated over the bins of the 256 levels: blocks
    /// [means, raw log-scales] for one component, [K logits, K means, K raw log-scales] for
    /// K; the log-scales bounded to `log_scale`, the weights the softmax of the logits.
    LogisticMixture {
        components: usize,
        log_scale: (f32, f32),
    },
    /// A beta-binomial over the 256 levels (n = 255): blocks [raw α, raw β], ln α and ln β
    /// bounded to `log_param`.
    BetaBinomial { log_param: (f32, f32) },
    /// A Bernoulli on logits (one block) over binarised data: the value 1 is the level 255,
    /// and only the levels 0 and 255 can be coded.
    Bernoulli,
}

impl PixelCoding {
    /// Decoder outputs per value (the blocks above).
    pub fn params_per_dim(&self) -> usize {
        match self {
            Self::LogisticMixture { components: 1, .. } | Self::BetaBinomial { .. } => 2,
            Self::LogisticMixture { components, .. } => 3 * components,
            Self::Bernoulli => 1,
        }
    }
}

/// What every likelihood provides.
pub trait Observation: std::fmt::Debug + Send + Sync {
    /// The name used on the command line.
    fn name(&self) -> &'static str;
    /// Decoder outputs per data dimension (P).
    fn params_per_dim(&self) -> usize;
    /// log p(x | decoder output) per example, summed over dimensions: `[batch]`, with the
    /// model's kernels.
    fn log_prob(&self, params: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor>;
    /// The mean of p(x|z) for each example, `[batch, dim]` (what pictures show).
    fn mean(&self, params: &Tensor, k: Kernels) -> candle_core::Result<Tensor>;
    /// What `log_prob` is a log-probability of.
    fn density(&self) -> Density;
    /// Checks the settings; messages name the flag.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// The lossless coder's pixel model of this likelihood, or why it has none (a sentence
    /// naming the flag).
    fn pixel_coding(&self) -> std::result::Result<PixelCoding, String> {
        Err(match self.density() {
            Density::Continuous => format!(
                "the run was trained with --likelihood {}, a density on [0, 1], not a \
                 distribution over 8-bit values",
                self.name()
            ),
            Density::Discrete | Density::Binary => format!(
                "the run was trained with --likelihood {}, which has no pixel model in the \
                 lossless coder",
                self.name()
            ),
        })
    }
}

/// The observation model p(x|z), as `config.json` records it (`"kind": "bernoulli"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Likelihood {
    /// Independent Bernoulli on logits: log p = x*l - softplus(l).
    Bernoulli(Bernoulli),
    /// The seed article's decoder: N(x; sqrt(1-alpha) mu(z), alpha I).
    Gaussian(Gaussian),
    /// A Gaussian with a per-dimension log-variance output by the decoder, bounded.
    GaussianLearned(GaussianLearned),
    /// The continuous Bernoulli of Loaiza-Ganem & Cunningham (2019), on logits.
    ContinuousBernoulli(ContinuousBernoulli),
    /// A mixture of logistics integrated over the bins of 8-bit values (PixelCNN++).
    DiscretizedLogistic(DiscretizedLogistic),
    /// A beta-binomial over the 256 values of an 8-bit pixel (BB-ANS).
    BetaBinomial(BetaBinomial),
}

/// The likelihoods by command-line name (`--likelihood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LikelihoodKind {
    Bernoulli,
    Gaussian,
    GaussianLearned,
    ContinuousBernoulli,
    DiscretizedLogistic,
    BetaBinomial,
}

/// The settings of a likelihood that come from their own flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LikelihoodSettings {
    /// `--alpha` of `gaussian`.
    pub alpha: f64,
    /// `--mixtures` of `discretized-logistic`.
    pub mixtures: usize,
}

impl Default for LikelihoodSettings {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            mixtures: 1,
        }
    }
}

impl LikelihoodKind {
    /// The likelihood of this kind with `settings`.
    pub fn build(self, settings: LikelihoodSettings) -> Likelihood {
        match self {
            Self::Bernoulli => Likelihood::Bernoulli(Bernoulli {}),
            Self::Gaussian => Likelihood::Gaussian(Gaussian {
                alpha: settings.alpha,
            }),
            Self::GaussianLearned => Likelihood::GaussianLearned(GaussianLearned::default()),
            Self::ContinuousBernoulli => Likelihood::ContinuousBernoulli(ContinuousBernoulli {}),
            Self::DiscretizedLogistic => Likelihood::DiscretizedLogistic(DiscretizedLogistic {
                mixtures: settings.mixtures,
            }),
            Self::BetaBinomial => Likelihood::BetaBinomial(BetaBinomial {}),
        }
    }
}

impl Likelihood {
    /// The variant behind the interface every likelihood implements.
    pub fn get(&self) -> &dyn Observation {
        match self {
            Self::Bernoulli(l) => l,
            Self::Gaussian(l) => l,
            Self::GaussianLearned(l) => l,
            Self::ContinuousBernoulli(l) => l,
            Self::DiscretizedLogistic(l) => l,
            Self::BetaBinomial(l) => l,
        }
    }

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        self.get().name()
    }

    /// Decoder outputs per data dimension.
    pub fn params_per_dim(&self) -> usize {
        self.get().params_per_dim()
    }

    /// log p(x | decoder output) per example, summed over dimensions: `[batch]`.
    pub fn log_prob(&self, params: &Tensor, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        self.get().log_prob(params, x, k)
    }

    /// The mean of p(x|z) for each example, `[batch, dim]` (what pictures show).
    pub fn mean(&self, params: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        self.get().mean(params, k)
    }

    /// What the log-likelihood is a log-probability of.
    pub fn density(&self) -> Density {
        self.get().density()
    }

    /// Checks the settings; messages name the flag.
    pub fn validate(&self) -> Result<()> {
        self.get().validate()
    }

    /// The lossless coder's pixel model, or why there is none.
    pub fn pixel_coding(&self) -> std::result::Result<PixelCoding, String> {
        self.get().pixel_coding()
    }

    /// Whether this is the Bernoulli likelihood (whose mean can be fused into a decoder).
    pub fn is_bernoulli(&self) -> bool {
        matches!(self, Self::Bernoulli(_))
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Tensor};

    pub fn t(v: &[f32], n: usize) -> Tensor {
        Tensor::from_slice(v, (n, v.len() / n), &Device::Cpu).unwrap()
    }

    pub fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// Every likelihood with a pixel model gives the coder as many outputs per value as it
    /// takes itself; the discrete ones and the Bernoulli code, the densities do not.
    #[test]
    fn pixel_models_take_the_likelihoods_outputs() {
        for kind in LikelihoodKind::value_variants() {
            for mixtures in [1, 5] {
                let l = kind.build(LikelihoodSettings {
                    mixtures,
                    ..LikelihoodSettings::default()
                });
                match l.pixel_coding() {
                    Ok(c) => {
                        assert_ne!(l.density(), Density::Continuous, "{}", l.name());
                        assert_eq!(c.params_per_dim(), l.params_per_dim(), "{}", l.name());
                    }
                    Err(why) => {
                        assert_eq!(l.density(), Density::Continuous, "{}", l.name());
                        assert!(why.contains(&format!("--likelihood {}", l.name())), "{why}");
                    }
                }
            }
        }
        let l = LikelihoodKind::DiscretizedLogistic.build(LikelihoodSettings {
            mixtures: 3,
            ..LikelihoodSettings::default()
        });
        assert_eq!(
            l.pixel_coding(),
            Ok(PixelCoding::LogisticMixture {
                components: 3,
                log_scale: (-8.0, 2.0)
            })
        );
    }
}
