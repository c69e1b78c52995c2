//! The VAE: an encoder q(z|x) and a decoder p(x|z), for both architectures.
//!
//! Tensor names (the safetensors keys) come from the `vb.pp(..)` prefixes below and are listed
//! in ARCHITECTURE.md. `mlp`: `encoder.fc{i}`, `encoder.head` (mu and log-variance stacked,
//! `2 * latent` outputs), `decoder.fc{i}`, `decoder.out`. `conv`: `encoder.conv{i}`,
//! `encoder.fc0`, `encoder.head`, `decoder.fc0`, `decoder.fc1`, `decoder.up{i}`. Each has a
//! `.weight` and a `.bias`, in PyTorch's layouts (`[out, in]`, `[out, in, k, k]`, and
//! `[in, out, k, k]` for transposed convolutions).

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{Activation, Arch, Likelihood, ModelConfig, Upsampling};
use crate::dist::DiagonalGaussian;
use crate::ops::{self, Act, ConvOpts, MapLayout};
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

/// Variables are created with zeros here; `reset_parameters` gives them their values.
const SHAPE_ONLY: candle_nn::Init = candle_nn::Init::Const(0.0);

/// A dense layer `x W^T + b` with `weight` `[out, in]` and `bias` `[out]` (PyTorch's layout).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, input: usize, output: usize) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints((output, input), "weight", SHAPE_ONLY)?;
        let bias = vb.get_with_hints(output, "bias", SHAPE_ONLY)?;
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

/// A 2-D convolution with bias.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints((cout, cin, k, k), "weight", SHAPE_ONLY)?;
        let bias = vb.get_with_hints(cout, "bias", SHAPE_ONLY)?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// The convolution followed by `activation` (fused when possible; none for `None`), reading
    /// and writing the memory orders given.
    fn forward_act(
        &self,
        x: &Tensor,
        activation: Option<Activation>,
        (input, output): (MapLayout, MapLayout),
    ) -> candle_core::Result<Tensor> {
        let o = ConvOpts::new(self.stride, self.padding).layouts(input, output);
        let (w, b) = (&self.weight, &self.bias);
        match activation.map(|a| (a, a.fused())) {
            None => ops::conv2d_with(x, w, b, o),
            Some((_, Some(act))) => ops::conv2d_with(x, w, b, o.act(act)),
            Some((a, None)) => a.apply(&ops::conv2d_with(x, w, b, o)?),
        }
    }
}

/// The memory orders of layer `i` of a stack of `n` convolutions: NCHW at the ends of the
/// stack, `inner` between its layers (channels-last spares the fused kernels a transpose on
/// each side of every layer; the maps are the same values either way).
fn stack_layouts(i: usize, n: usize, inner: MapLayout) -> (MapLayout, MapLayout) {
    let input = if i == 0 { MapLayout::Nchw } else { inner };
    let output = if i + 1 == n { MapLayout::Nchw } else { inner };
    (input, output)
}

/// Doubles the height and width of a feature map.
#[derive(Debug, Clone)]
enum Up {
    /// Transposed 4x4 convolution, stride 2, padding 1 (weight `[in, out, 4, 4]`).
    Transposed { weight: Tensor, bias: Tensor },
    /// Nearest-neighbour upsampling, then a 3x3 convolution.
    Nearest(Conv),
}

impl Up {
    fn new(vb: VarBuilder, cin: usize, cout: usize, kind: Upsampling) -> candle_core::Result<Self> {
        Ok(match kind {
            Upsampling::Transposed => Up::Transposed {
                weight: vb.get_with_hints((cin, cout, 4, 4), "weight", SHAPE_ONLY)?,
                bias: vb.get_with_hints(cout, "bias", SHAPE_ONLY)?,
            },
            Upsampling::Nearest => Up::Nearest(Conv::new(vb, cin, cout, 3, 1, 1)?),
        })
    }

    /// The memory order between two layers of this kind.
    fn inner_layout(&self) -> MapLayout {
        match self {
            Up::Transposed { .. } => MapLayout::Nhwc,
            Up::Nearest(_) => MapLayout::Nchw,
        }
    }

    /// The layer followed by `activation` (fused when possible).
    fn forward_act(
        &self,
        x: &Tensor,
        activation: Option<Activation>,
        layouts: (MapLayout, MapLayout),
    ) -> candle_core::Result<Tensor> {
        match self {
            Up::Transposed { weight, bias } => {
                let o = ConvOpts::new(2, 1).layouts(layouts.0, layouts.1);
                match activation.map(|a| (a, a.fused())) {
                    None => ops::conv_transpose2d_with(x, weight, bias, o),
                    Some((_, Some(act))) => ops::conv_transpose2d_with(x, weight, bias, o.act(act)),
                    Some((a, None)) => a.apply(&ops::conv_transpose2d_with(x, weight, bias, o)?),
                }
            }
            Up::Nearest(conv) => {
                let (_, _, h, w) = x.dims4()?;
                conv.forward_act(&x.upsample_nearest2d(2 * h, 2 * w)?, activation, layouts)
            }
        }
    }
}

/// The feature extractor of the encoder (everything before the head).
#[derive(Debug, Clone)]
enum EncoderBody {
    Mlp(Dense),
    Conv {
        convs: Vec<Conv>,
        fc: Linear,
        activation: Activation,
        shape: (usize, usize, usize),
    },
}

/// The decoder network: z (and a label) to the likelihood's raw parameters.
#[derive(Debug, Clone)]
enum DecoderNet {
    Mlp {
        body: Dense,
        out: Linear,
    },
    Conv {
        fc0: Linear,
        fc1: Linear,
        ups: Vec<Up>,
        activation: Activation,
        /// Channels, height and width of the map the first upsampling receives.
        start: (usize, usize, usize),
    },
}

/// A variational autoencoder.
#[derive(Debug, Clone)]
pub struct Vae {
    cfg: ModelConfig,
    encoder: EncoderBody,
    head: Linear,
    decoder: DecoderNet,
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
        let latent = cfg.latent_dim;
        let venc = vb.pp("encoder");
        let vdec = vb.pp("decoder");
        let (encoder, enc_out, decoder) = match &cfg.arch {
            Arch::Mlp { hidden, activation } => {
                let body = Dense::new(&venc, cfg.shape.dim() + extra, hidden, *activation)?;
                let enc_out = hidden.last().copied().unwrap_or(cfg.shape.dim() + extra);
                let rev: Vec<usize> = hidden.iter().rev().copied().collect();
                let dbody = Dense::new(&vdec, latent + extra, &rev, *activation)?;
                let dlast = rev.last().copied().unwrap_or(latent + extra);
                let out = Linear::new(vdec.pp("out"), dlast, cfg.decoder_outputs())?;
                (
                    EncoderBody::Mlp(body),
                    enc_out,
                    DecoderNet::Mlp { body: dbody, out },
                )
            }
            Arch::Conv {
                channels,
                hidden,
                activation,
                upsampling,
            } => {
                let s = cfg.shape;
                let mut convs = Vec::with_capacity(channels.len());
                let mut cin = s.channels;
                for (i, &c) in channels.iter().enumerate() {
                    convs.push(Conv::new(venc.pp(format!("conv{i}")), cin, c, 4, 2, 1)?);
                    cin = c;
                }
                let f = 1 << channels.len();
                let (h, w) = (s.height / f, s.width / f);
                let last = *channels
                    .last()
                    .ok_or_else(|| Error::Config("conv needs channels".into()))?;
                let flat = last * h * w;
                let fc = Linear::new(venc.pp("fc0"), flat + extra, *hidden)?;
                let fc0 = Linear::new(vdec.pp("fc0"), latent + extra, *hidden)?;
                let fc1 = Linear::new(vdec.pp("fc1"), *hidden, flat)?;
                let mut ups = Vec::with_capacity(channels.len());
                let outs: Vec<usize> = channels
                    .iter()
                    .rev()
                    .skip(1)
                    .copied()
                    .chain([s.channels * cfg.likelihood.params_per_dim()])
                    .collect();
                let mut cin = last;
                for (i, &c) in outs.iter().enumerate() {
                    ups.push(Up::new(vdec.pp(format!("up{i}")), cin, c, *upsampling)?);
                    cin = c;
                }
                (
                    EncoderBody::Conv {
                        convs,
                        fc,
                        activation: *activation,
                        shape: (s.channels, s.height, s.width),
                    },
                    *hidden,
                    DecoderNet::Conv {
                        fc0,
                        fc1,
                        ups,
                        activation: *activation,
                        start: (last, h, w),
                    },
                )
            }
        };
        let head = Linear::new(venc.pp("head"), enc_out, 2 * latent)?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            head,
            decoder,
        })
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

    /// q(z|x) for a batch `x` of shape `[batch, dim]` (values in [0, 1] for images, channel-major);
    /// `labels` are one-hot `[batch, classes]` for a conditional model.
    pub fn encode(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<DiagonalGaussian> {
        let h = match &self.encoder {
            EncoderBody::Mlp(body) => body.forward(with_labels(x, labels)?)?,
            EncoderBody::Conv {
                convs,
                fc,
                activation,
                shape,
            } => {
                let b = x.dim(0)?;
                let mut h = x.reshape((b, shape.0, shape.1, shape.2))?;
                for (i, conv) in convs.iter().enumerate() {
                    let layouts = stack_layouts(i, convs.len(), MapLayout::Nhwc);
                    h = conv.forward_act(&h, Some(*activation), layouts)?;
                }
                let h = with_labels(&h.flatten_from(1)?, labels)?;
                fc.forward_act(&h, *activation)?
            }
        };
        let p = self.head.forward(&h, Act::Identity)?;
        let l = self.cfg.latent_dim;
        Ok(DiagonalGaussian::new(
            p.narrow(1, 0, l)?,
            p.narrow(1, l, l)?,
        ))
    }

    /// The likelihood's raw parameters `[batch, params_per_dim * dim]` for codes `z` `[batch, latent]`.
    pub fn decode(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.decode_with(z, labels, Act::Identity)
    }

    /// The decoder with `out_act` applied to the output of an MLP's last layer (fused there).
    fn decode_with(&self, z: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        let z = with_labels(z, labels)?;
        Ok(match &self.decoder {
            DecoderNet::Mlp { body, out } => out.forward(&body.forward(z)?, out_act)?,
            DecoderNet::Conv {
                fc0,
                fc1,
                ups,
                activation,
                start,
            } => {
                let b = z.dim(0)?;
                let h = fc1.forward_act(&fc0.forward_act(&z, *activation)?, *activation)?;
                let mut h = h.reshape((b, start.0, start.1, start.2))?;
                let last = ups.len().saturating_sub(1);
                for (i, up) in ups.iter().enumerate() {
                    let layouts = stack_layouts(i, ups.len(), up.inner_layout());
                    h = up.forward_act(&h, (i < last).then_some(*activation), layouts)?;
                }
                h.flatten_from(1)?
            }
        })
    }

    /// The mean of p(x|z), `[batch, dim]`. The Bernoulli mean (a sigmoid) of an MLP decoder is
    /// fused into its output layer.
    pub fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        if matches!(self.decoder, DecoderNet::Mlp { .. })
            && self.cfg.likelihood == Likelihood::Bernoulli
        {
            return self.decode_with(z, labels, Act::Sigmoid);
        }
        Ok(self.cfg.likelihood.mean(&self.decode(z, labels)?)?)
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
