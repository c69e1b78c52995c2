//! The VAE: an architecture ([`crate::arch::Net`]), a likelihood and the prior, with the
//! parameters' initialisation.
//!
//! Tensor names (the safetensors keys) are the `vb.pp(..)` prefixes of each architecture's file
//! and are listed in ARCHITECTURE.md. Weights use PyTorch's layouts (`[out, in]`,
//! `[out, in, k, k]`, and `[in, out, k, k]` for transposed convolutions).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::arch::{LatentLayout, Net, Pass};
use crate::config::ModelConfig;
use crate::dist::DiagonalGaussian;
use crate::likelihood::Likelihood;
use crate::ops::{Act, Kernels};
use crate::rng::Rng;
use crate::{Error, Result};

/// A variational autoencoder.
#[derive(Clone)]
pub struct Vae {
    cfg: ModelConfig,
    net: Arc<dyn Net>,
    /// What the layers were built from (to rebuild them with other kernels).
    vb: VarBuilder<'static>,
    kernels: Kernels,
}

impl std::fmt::Debug for Vae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vae")
            .field("cfg", &self.cfg)
            .field("net", &self.net)
            .field("kernels", &self.kernels)
            .finish_non_exhaustive()
    }
}

impl Vae {
    /// Builds the layers through `vb`, with the native kernels; the prefixes are the tensor
    /// names.
    pub fn new(vb: VarBuilder<'static>, cfg: &ModelConfig) -> Result<Self> {
        Self::with_kernels_from(vb, cfg, Kernels::Native)
    }

    fn with_kernels_from(vb: VarBuilder<'static>, cfg: &ModelConfig, k: Kernels) -> Result<Self> {
        cfg.validate()?;
        let net = Arc::from(cfg.arch.build(vb.clone(), cfg, k)?);
        Ok(Self {
            cfg: cfg.clone(),
            net,
            vb,
            kernels: k,
        })
    }

    /// The same model (the same weights, shared) running the kernels `k`: the composite path
    /// everywhere (what a device without kernels of its own runs), or the exact passes of the
    /// lossless coder.
    pub fn with_kernels(&self, k: Kernels) -> Result<Self> {
        if k == self.kernels {
            return Ok(self.clone());
        }
        Self::with_kernels_from(self.vb.clone(), &self.cfg, k)
    }

    /// The kernels the model's operations run.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Builds a model with fresh weights drawn from `rng` (PyTorch's default initialisation:
    /// weights and biases uniform in ±1/sqrt(fan_in)), returning the variables and the model.
    pub fn init(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<(VarMap, Self)> {
        Self::init_with_dtype(cfg, device, DType::F32, rng)
    }

    /// [`Vae::init`] with another floating-point type (f64 for gradient checks).
    pub fn init_with_dtype(
        cfg: &ModelConfig,
        device: &Device,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<(VarMap, Self)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let model = Self::new(vb, cfg)?;
        reset_parameters(&varmap, rng)?;
        model.net.adjust_init(&varmap)?;
        Ok((varmap, model))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn likelihood(&self) -> &Likelihood {
        &self.cfg.likelihood
    }

    /// Dimension of the (top) latent code, what `encode` returns and `decode` takes.
    pub fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }

    /// The latent groups, and the size of the noise a pass needs.
    pub fn latent(&self) -> &LatentLayout {
        self.net.latent()
    }

    /// q(z|x) of the top latent group for a batch `x` of shape `[batch, dim]` (values in
    /// [0, 1] for images, channel-major); `labels` are one-hot `[batch, classes]` for a
    /// conditional model.
    pub fn encode(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<DiagonalGaussian> {
        self.net.encode(x, labels)
    }

    /// The likelihood's raw parameters `[batch, params_per_dim * dim]` for codes `z`
    /// `[batch, latent]`.
    pub fn decode(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.net.decode(z, labels, Act::Identity)
    }

    /// The mean of p(x|z), `[batch, dim]`. A Bernoulli mean (a sigmoid) is fused into the
    /// decoder's output layer where the architecture can.
    pub fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.mean_of(|act| self.net.decode(z, labels, act))
    }

    /// The likelihood's mean of what `run` decodes, with the output activation fused where the
    /// architecture can.
    fn mean_of(&self, run: impl Fn(Act) -> Result<Tensor>) -> Result<Tensor> {
        if self.net.fuses_output() && self.cfg.likelihood.is_bernoulli() {
            return run(Act::Sigmoid);
        }
        Ok(self
            .cfg
            .likelihood
            .mean(&run(Act::Identity)?, self.kernels)?)
    }

    /// The mean of p(x|z) for top-group codes `z` `[batch, latent]`, each lower group drawn
    /// from its prior with noise `eps` `[batch, noise_dim − latent]` at `temperatures` (see
    /// [`Net::generate`]); for a single-latent model the same as [`Vae::decode_mean`].
    pub fn generate_mean(
        &self,
        z: &Tensor,
        eps: Option<&Tensor>,
        temperatures: &[f64],
        labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.mean_of(|act| self.net.generate(z, eps, temperatures, labels, act))
    }

    /// The mean of p(x|z) with every latent group at its posterior mean for `x`.
    pub fn reconstruct_mean(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.mean_of(|act| self.net.reconstruct(x, labels, act))
    }

    /// q of every latent group (see [`Net::encode_groups`]).
    pub fn encode_groups(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
    ) -> Result<Vec<DiagonalGaussian>> {
        self.net.encode_groups(x, labels)
    }

    /// The top-down pass of a lossless coder through every latent group ([`Net::coding_pass`]).
    pub fn coding_pass(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut crate::arch::ChooseLatent,
    ) -> Result<Tensor> {
        self.net.coding_pass(x, n, choose)
    }

    /// The coding pass through every latent group without the likelihood's parameters
    /// ([`Net::coding_pass_latents`]).
    pub fn coding_pass_latents(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut crate::arch::ChooseLatent,
    ) -> Result<()> {
        self.net.coding_pass_latents(x, n, choose)
    }

    /// The coding pass without images, keeping the top-down states
    /// ([`Net::coding_pass_keeping`]).
    pub fn coding_pass_keeping(
        &self,
        n: usize,
        choose: &mut crate::arch::ChooseLatent,
        kept: &mut crate::arch::KeptStates,
    ) -> Result<Tensor> {
        self.net.coding_pass_keeping(n, choose, kept)
    }

    /// The posteriors at the kept states' latent values ([`Net::coding_posteriors`]).
    pub fn coding_posteriors(
        &self,
        x: &Tensor,
        n: usize,
        kept: &crate::arch::KeptStates,
        choose: &mut crate::arch::ChooseLatent,
    ) -> Result<()> {
        self.net.coding_posteriors(x, n, kept, choose)
    }

    /// The temperatures of samples unless told otherwise ([`Net::sampling_temperatures`]).
    pub fn sampling_temperatures(&self) -> Vec<f64> {
        self.net.sampling_temperatures()
    }

    /// The most rows one pass should take ([`Net::rows_per_pass`]).
    pub fn rows_per_pass(&self) -> Option<usize> {
        self.net.rows_per_pass()
    }

    /// The same model over detached copies of the weights in `varmap` (sharing their memory):
    /// its passes record no graph for backpropagation, so a pass holds only the buffers it
    /// is using (for evaluation and sampling, where no gradient is wanted).
    pub fn detached(&self, varmap: &VarMap) -> Result<Self> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned variable map".into()))?;
        let mut tensors = std::collections::HashMap::new();
        let (mut dtype, mut device) = (DType::F32, Device::Cpu);
        for (name, var) in vars.iter() {
            dtype = var.dtype();
            device = var.device().clone();
            tensors.insert(name.clone(), var.as_tensor().detach());
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, &device);
        Self::with_kernels_from(vb, &self.cfg, self.kernels)
    }

    /// Encodes, samples with noise `eps` `[K, b, noise_dim]` and decodes (see [`Net::pass`]).
    pub fn pass(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        eps: &Tensor,
        densities: bool,
    ) -> Result<Pass> {
        self.net.pass(x, labels, eps, densities)
    }
}

/// Overwrites every variable with PyTorch's default initialisation, drawn from `rng` in sorted
/// name order (so the same seed gives the same weights whatever the map's order).
pub fn reset_parameters(varmap: &VarMap, rng: &mut Rng) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("poisoned variable map".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let fan_in = if let Some(stem) = name.strip_suffix(".bias") {
            let w = vars
                .get(&format!("{stem}.weight"))
                .ok_or_else(|| Error::Config(format!("bias `{name}` has no matching weight")))?;
            fan_in_of(w.dims())
        } else {
            fan_in_of(var.dims())
        };
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let n = var.elem_count();
        let values: Vec<f32> = (0..n)
            .map(|_| (2.0 * rng.uniform_f32() - 1.0) * bound)
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Fan-in as PyTorch computes it: dims[1] times the receptive field (dims[2..]).
fn fan_in_of(dims: &[usize]) -> usize {
    match dims {
        [] => 1,
        [n] => *n,
        [_, i, rest @ ..] => i * rest.iter().product::<usize>(),
    }
}
