//! Architectures: the networks of q(z|x) and p(x|z), each behind the [`Net`] interface.
//!
//! An architecture is one file: its configuration type (a variant of [`Arch`], as written in
//! `config.json`), its layers, and a `build` function returning a `Box<dyn Net>`. The rest of
//! the crate (bounds, sampling, training) sees only [`Net`].
//!
//! - [`mlp`]: dense layers; [`conv`]: strided convolutions and transposed convolutions. Both
//!   have one latent group with a diagonal Gaussian posterior ([`single::GaussianLatent`]).
//! - [`hierarchical`]: residual blocks bottom-up, latent groups at several resolutions
//!   top-down (VDVAE-like), implementing [`Net`] itself.

pub mod conv;
pub mod hierarchical;
mod layers;
pub mod mlp;
pub mod single;

use candle_core::Tensor;
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

pub use conv::ConvConfig;
pub use hierarchical::HierarchicalConfig;
pub use layers::{Activation, Upsampling};
pub use mlp::MlpConfig;

use crate::config::ModelConfig;
use crate::dist::DiagonalGaussian;
use crate::ops::{Act, Kernels};
use crate::Result;

/// The encoder and decoder networks, as `config.json` records them (`"kind": "mlp"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Arch {
    /// Fully connected layers; the decoder mirrors the encoder's hidden sizes.
    Mlp(MlpConfig),
    /// Strided 4x4 convolutions (stride 2) in the encoder, one dense layer to the latent
    /// parameters; the decoder mirrors it.
    Conv(ConvConfig),
    /// Residual blocks bottom-up, a dense top group and spatial latent groups at several
    /// resolutions top-down.
    Hierarchical(HierarchicalConfig),
}

impl Arch {
    /// The configuration of the variant, behind the interface every architecture implements.
    pub fn get(&self) -> &dyn ArchConfig {
        match self {
            Arch::Mlp(c) => c,
            Arch::Conv(c) => c,
            Arch::Hierarchical(c) => c,
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        self.get().name()
    }

    /// Checks the settings against the rest of the model (the data shape, mostly).
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        self.get().validate(cfg)
    }

    /// Whether the networks have an exact forward pass ([`Kernels::Exact`]: the same bits
    /// on every CPU, whatever the batch and the threads), or the flag that denies it.
    pub fn exact_forward(&self) -> std::result::Result<(), String> {
        match self
            .get()
            .activations()
            .into_iter()
            .find(|a| !a.has_exact())
        {
            None => Ok(()),
            Some(a) => Err(format!(
                "the run was trained with --activation {}, which has no deterministic forward \
                 pass (its erf comes from the platform's libm)",
                a.name()
            )),
        }
    }

    /// Creates the layers through `vb` (the prefixes are the tensor names).
    pub(crate) fn build(
        &self,
        vb: VarBuilder,
        cfg: &ModelConfig,
        k: Kernels,
    ) -> Result<Box<dyn Net>> {
        self.get().build(vb, cfg, k)
    }
}

/// What each architecture's configuration type provides.
pub trait ArchConfig: std::fmt::Debug {
    /// The name used on the command line and in `config.json` (`"kind"`).
    fn name(&self) -> &'static str;
    /// A short description for reports, e.g. `mlp [400]`.
    fn describe(&self) -> String;
    /// Checks the settings against the rest of the model (the data shape, mostly); messages
    /// name the flag.
    fn validate(&self, cfg: &ModelConfig) -> Result<()>;
    /// The layers, created through `vb` (whose prefixes are the tensor names), running the
    /// kernels `k`.
    fn build(&self, vb: VarBuilder, cfg: &ModelConfig, k: Kernels) -> Result<Box<dyn Net>>;
    /// Every non-linearity the networks apply between their layers (what decides whether
    /// they have an exact forward pass, [`Kernels::Exact`]).
    fn activations(&self) -> Vec<Activation>;
}

/// The latent variables of a model, as groups: the noise of one sample of one example is the
/// concatenation of the groups' noise (standard normal, `dim` values each), and the KL term of
/// the bound is reported per unit (`kl_units` per group: its dimensions, or the group as one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatentLayout {
    pub groups: Vec<LatentGroup>,
}

/// One group of latent variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatentGroup {
    /// Standard-normal noise values per example (the group's dimensions).
    pub dim: usize,
    /// Entries of the group in the per-unit KL (free bits floor each unit).
    pub kl_units: usize,
}

impl LatentLayout {
    /// One group of `dim` dimensions, its KL reported per dimension.
    pub fn single(dim: usize) -> Self {
        Self {
            groups: vec![LatentGroup { dim, kl_units: dim }],
        }
    }

    /// Noise values per sample of one example, all groups together.
    pub fn noise_dim(&self) -> usize {
        self.groups.iter().map(|g| g.dim).sum()
    }

    /// Entries of the per-unit KL of one example, all groups together.
    pub fn kl_units(&self) -> usize {
        self.groups.iter().map(|g| g.kl_units).sum()
    }
}

/// What one pass through inference and generative networks gives for a batch of `b` examples
/// and `K` samples of noise each.
#[derive(Debug, Clone)]
pub struct Pass {
    /// The likelihood's raw parameters: `[b, P·D]` for K = 1 without densities, else
    /// `[K·b, P·D]` sample-major.
    pub params: Tensor,
    /// KL(q(z|x) ‖ p(z)) per unit, `[b, units]` (see [`LatentLayout`]), in closed form where
    /// the architecture has one.
    pub kl: Tensor,
    /// log p(z_k) and log q(z_k|x) summed over all groups, `[K, b]` each, when asked for.
    pub log_p: Option<Tensor>,
    pub log_q: Option<Tensor>,
}

/// A latent group's Gaussian as a lossless coder needs it, `[n, group dim]` each: the means,
/// and the raw log-scales before the architecture's smooth bound, so that the coder can apply
/// the bound with its own CPU-independent arithmetic:
/// log σ = `log_sigma_bound` · tanh(raw / `log_sigma_bound`).
#[derive(Debug, Clone)]
pub struct CodingGaussian {
    pub mu: Tensor,
    pub raw_log_sigma: Tensor,
    /// The bound L of the log-scales (the hierarchical architecture's
    /// [`hierarchical::LOG_SCALE_BOUND`]).
    pub log_sigma_bound: f64,
}

/// What [`Net::coding_pass_keeping`] keeps for [`Net::coding_posteriors`]: per latent group
/// below the top, the top-down state its posterior reads and its prior.
#[derive(Debug, Clone, Default)]
pub struct KeptStates {
    pub(crate) groups: Vec<(Tensor, CodingGaussian)>,
}

impl KeptStates {
    /// Whether the pass kept nothing (an architecture without a top-down state).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// The callback of [`Net::coding_pass`]: given group `g` (0 the top), its prior (`None` for
/// N(0, I)) and its posterior (`None` without images), it returns the group's latent values
/// `[n, group dim]`, which the pass then conditions on.
pub type ChooseLatent<'a> =
    dyn FnMut(usize, Option<&CodingGaussian>, Option<&CodingGaussian>) -> Result<Tensor> + 'a;

/// The interface of every architecture.
pub trait Net: std::fmt::Debug + Send + Sync {
    /// The latent groups.
    fn latent(&self) -> &LatentLayout;

    /// q(z|x) of the top latent group (the only one of a single-layer model): means and
    /// log-variances `[b, latent_dim]` for a batch `x` `[b, dim]` (channel-major images), with
    /// one-hot `labels` `[b, classes]` for a conditional model.
    fn encode(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<DiagonalGaussian>;

    /// The likelihood's raw parameters `[b, P·D]` for top-group codes `z` `[b, latent_dim]`,
    /// with `out_act` applied to the output (fused into the last layer where
    /// [`Net::fuses_output`]).
    fn decode(&self, z: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor>;

    /// Whether [`Net::decode`] fuses its output activation into the last layer.
    fn fuses_output(&self) -> bool {
        false
    }

    /// Encodes `x`, draws z = mu + sigma * eps for noise `eps` `[K, b, noise_dim]` (or
    /// `[b, noise_dim]` for K = 1) and decodes. With `densities`, also log p(z) and log q(z|x).
    fn pass(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        eps: &Tensor,
        densities: bool,
    ) -> Result<Pass>;

    /// Generation from top-group codes `z` `[n, latent_dim]`: each lower group drawn from its
    /// prior as mu + t_g sigma eps_g, with `eps` `[n, noise_dim − latent_dim]` (the noise of
    /// the groups below the top, in layout order) and t_g = `temperatures[g]` (the last value
    /// repeating; index 0 is the top group, whose codes the caller draws); without `eps`, or
    /// at temperature 0, a group is at its prior mean. A single-latent model decodes `z`.
    fn generate(
        &self,
        z: &Tensor,
        eps: Option<&Tensor>,
        temperatures: &[f64],
        labels: Option<&Tensor>,
        out_act: Act,
    ) -> Result<Tensor> {
        let _ = (eps, temperatures);
        self.decode(z, labels, out_act)
    }

    /// The likelihood's raw parameters for `x` with every latent group at its posterior mean
    /// (a deterministic reconstruction).
    fn reconstruct(&self, x: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        let q = self.encode(x, labels)?;
        self.decode(&q.mu, labels, out_act)
    }

    /// q of every latent group, in layout order, `[b, group dim]` each; the groups below the
    /// top are taken with the groups above them at their posterior means. A single-latent
    /// model has one.
    fn encode_groups(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Vec<DiagonalGaussian>> {
        Ok(vec![self.encode(x, labels)?])
    }

    /// One top-down pass over `n` rows for bits-back coding through every latent group: at
    /// each group in layout order `choose` gets the group's prior and, when `x` `[n, dim]` is
    /// given, its posterior given `x` and the values chosen for the groups above; returns the
    /// likelihood's raw parameters `[n, P·D]` given all the values chosen. Architectures
    /// whose single latent group codes through [`Net::encode`] and [`Net::decode`] do not
    /// have one.
    fn coding_pass(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut ChooseLatent,
    ) -> Result<Tensor> {
        let _ = (x, n, choose);
        Err(crate::Error::Config(
            "this architecture has no coding pass through latent groups (its one group codes through encode and decode)".into(),
        ))
    }

    /// [`Net::coding_pass`] without the likelihood's parameters (what a decoder that pushes
    /// the groups back with their posteriors needs): `choose` is called as there, and the
    /// pass may stop after the last group.
    fn coding_pass_latents(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut ChooseLatent,
    ) -> Result<()> {
        self.coding_pass(x, n, choose).map(|_| ())
    }

    /// [`Net::coding_pass`] without images, keeping in `kept` what [`Net::coding_posteriors`]
    /// needs to give the posteriors at the same latent values without running the top-down
    /// pass again (a decoder's two passes over each image). Architectures without a
    /// top-down state keep nothing.
    fn coding_pass_keeping(
        &self,
        n: usize,
        choose: &mut ChooseLatent,
        kept: &mut KeptStates,
    ) -> Result<Tensor> {
        let _ = kept;
        self.coding_pass(None, n, choose)
    }

    /// The posteriors given `x` at the latent values of the pass that filled `kept`
    /// ([`Net::coding_pass_keeping`]): `choose` is called as by [`Net::coding_pass_latents`]
    /// with `x`, with the same priors and posteriors, its values unused where `kept` holds the
    /// states they led to.
    fn coding_posteriors(
        &self,
        x: &Tensor,
        n: usize,
        kept: &KeptStates,
        choose: &mut ChooseLatent,
    ) -> Result<()> {
        let _ = kept;
        self.coding_pass_latents(Some(x), n, choose)
    }

    /// The temperatures pictures of samples use unless told otherwise, one per latent group,
    /// top group first, the last repeating (see [`Net::generate`]).
    fn sampling_temperatures(&self) -> Vec<f64> {
        vec![1.0]
    }

    /// The most rows (examples times samples) one pass should take to keep its buffers small;
    /// `None` when any batch fits.
    fn rows_per_pass(&self) -> Option<usize> {
        None
    }

    /// Changes the default initialisation (already drawn into `varmap`) where the
    /// architecture needs another; draws nothing.
    fn adjust_init(&self, varmap: &VarMap) -> Result<()> {
        let _ = varmap;
        Ok(())
    }
}
