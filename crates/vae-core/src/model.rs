//! The VAE: an encoder q(z|x), a decoder p(x|z) and the bounds built from them.
//!
//! Tensor names (the safetensors keys) come from the `vb.pp(..)` prefixes below and are listed
//! in ARCHITECTURE.md: `encoder.fc{i}.{weight,bias}`, `encoder.head.{weight,bias}` (mu and
//! log-variance stacked, `2 * latent` outputs), `decoder.fc{i}.{weight,bias}`,
//! `decoder.out.{weight,bias}`.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{Activation, Arch, Likelihood, ModelConfig};
use crate::dist::DiagonalGaussian;
use crate::ops::{self, Act};
use crate::rng::Rng;
use crate::{Error, Result};

impl Activation {
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu_erf(),
        }
    }

    /// The activation fused into a dense layer, if it can be (its derivative must follow from
    /// the layer's output).
    fn fused(&self) -> Option<Act> {
        match self {
            Activation::Relu => Some(Act::Relu),
            Activation::Tanh => Some(Act::Tanh),
            Activation::Gelu => None,
        }
    }
}

/// A dense layer `x W^T + b` with `weight` `[out, in]` and `bias` `[out]` (PyTorch's layout).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, input: usize, output: usize) -> candle_core::Result<Self> {
        // Values come from `reset_parameters`; the init here only shapes the variables.
        let weight = vb.get_with_hints((output, input), "weight", candle_nn::Init::Const(0.0))?;
        let bias = vb.get_with_hints(output, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor, act: Act) -> candle_core::Result<Tensor> {
        ops::linear(x, &self.weight, &self.bias, act)
    }

    /// The layer followed by `activation`, fused when possible.
    fn forward_act(&self, x: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
        match activation.fused() {
            Some(act) => self.forward(x, act),
            None => activation.apply(&self.forward(x, Act::Identity)?),
        }
    }
}

/// A stack of dense layers with an activation after each.
#[derive(Debug, Clone)]
struct Dense {
    layers: Vec<Linear>,
    activation: Activation,
}

impl Dense {
    fn new(
        vb: &VarBuilder,
        input: usize,
        sizes: &[usize],
        activation: Activation,
    ) -> candle_core::Result<Self> {
        let mut layers = Vec::with_capacity(sizes.len());
        let mut fan_in = input;
        for (i, &n) in sizes.iter().enumerate() {
            layers.push(Linear::new(vb.pp(format!("fc{i}")), fan_in, n)?);
            fan_in = n;
        }
        Ok(Self { layers, activation })
    }

    fn forward(&self, mut x: Tensor) -> candle_core::Result<Tensor> {
        for layer in &self.layers {
            x = layer.forward_act(&x, self.activation)?;
        }
        Ok(x)
    }
}

/// q(z|x) = N(mu(x), diag sigma^2(x)).
#[derive(Debug, Clone)]
pub struct Encoder {
    body: Dense,
    head: Linear,
    latent_dim: usize,
}

/// The decoder network: z (and a label) to the likelihood's parameters.
#[derive(Debug, Clone)]
pub struct Decoder {
    body: Dense,
    out: Linear,
}

/// A variational autoencoder.
#[derive(Debug, Clone)]
pub struct Vae {
    cfg: ModelConfig,
    encoder: Encoder,
    decoder: Decoder,
}

fn with_labels(x: &Tensor, labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match labels {
        Some(y) => Tensor::cat(&[x, y], D::Minus1),
        None => Ok(x.clone()),
    }
}

impl Vae {
    /// Builds the layers through `vb`; the prefixes are the tensor names.
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let extra = cfg.num_classes.unwrap_or(0);
        let (encoder, decoder) = match &cfg.arch {
            Arch::Mlp { hidden, activation } => {
                let venc = vb.pp("encoder");
                let body = Dense::new(&venc, cfg.shape.dim() + extra, hidden, *activation)?;
                let last = hidden.last().copied().unwrap_or(cfg.shape.dim() + extra);
                let head = Linear::new(venc.pp("head"), last, 2 * cfg.latent_dim)?;
                let vdec = vb.pp("decoder");
                let rev: Vec<usize> = hidden.iter().rev().copied().collect();
                let dbody = Dense::new(&vdec, cfg.latent_dim + extra, &rev, *activation)?;
                let dlast = rev.last().copied().unwrap_or(cfg.latent_dim + extra);
                let out = Linear::new(vdec.pp("out"), dlast, cfg.decoder_outputs())?;
                (
                    Encoder {
                        body,
                        head,
                        latent_dim: cfg.latent_dim,
                    },
                    Decoder { body: dbody, out },
                )
            }
            Arch::Conv { .. } => {
                return Err(Error::Config(
                    "the conv architecture is not available in this build".into(),
                ))
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            decoder,
        })
    }

    /// Builds a model with fresh weights drawn from `rng` (PyTorch's default initialisation:
    /// weights and biases uniform in ±1/sqrt(fan_in)), returning the variables and the model.
    pub fn init(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<(VarMap, Self)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = Self::new(vb, cfg)?;
        reset_parameters(&varmap, rng)?;
        Ok((varmap, model))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn likelihood(&self) -> &Likelihood {
        &self.cfg.likelihood
    }

    pub fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }

    /// q(z|x) for a batch `x` of shape `[batch, dim]` (values in [0, 1] for images);
    /// `labels` are one-hot `[batch, classes]` for a conditional model.
    pub fn encode(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<DiagonalGaussian> {
        let h = self.encoder.body.forward(with_labels(x, labels)?)?;
        let p = self.encoder.head.forward(&h, Act::Identity)?;
        let l = self.encoder.latent_dim;
        Ok(DiagonalGaussian::new(
            p.narrow(1, 0, l)?,
            p.narrow(1, l, l)?,
        ))
    }

    /// The likelihood's raw parameters for latent codes `z` of shape `[batch, latent]`.
    pub fn decode(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let h = self.decoder.body.forward(with_labels(z, labels)?)?;
        Ok(self.decoder.out.forward(&h, Act::Identity)?)
    }

    /// The mean of p(x|z), `[batch, dim]`.
    pub fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.cfg.likelihood.mean(&self.decode(z, labels)?)?)
    }

    /// One-sample ELBO terms for a batch: reconstruction `-log p(x|z)` and `KL(q(z|x)||p(z))`,
    /// each per example (`[batch]`, nats). `eps` is standard normal noise `[batch, latent]`.
    pub fn elbo_terms(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        eps: &Tensor,
    ) -> Result<ElboTerms> {
        let q = self.encode(x, labels)?;
        let z = q.rsample(eps)?;
        let params = self.decode(&z, labels)?;
        let recon = self.cfg.likelihood.log_prob(&params, x)?.neg()?;
        let kl_per_dim = q.kl_std_normal_per_dim()?;
        let kl = kl_per_dim.sum(D::Minus1)?;
        Ok(ElboTerms {
            recon,
            kl,
            kl_per_dim,
        })
    }
}

/// The parts of the negative ELBO of a batch, per example.
#[derive(Debug, Clone)]
pub struct ElboTerms {
    /// -log p(x|z), `[batch]`.
    pub recon: Tensor,
    /// KL(q(z|x) || p(z)), `[batch]`.
    pub kl: Tensor,
    /// The KL split over latent dimensions, `[batch, latent]`.
    pub kl_per_dim: Tensor,
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
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
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
