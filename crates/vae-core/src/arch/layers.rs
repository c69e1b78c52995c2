//! The layers architectures are built from: dense, convolution, upsampling, activations.
//!
//! Each layer creates its tensors through `vb` (the prefix is the safetensors name) with zeros;
//! [`crate::model::reset_parameters`] gives them their initial values.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::ops::{self, Act, ConvOpts, Kernels, MapLayout};

/// The non-linearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
    Gelu,
}

impl Activation {
    /// The name used on the command line and in `config.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
        }
    }

    /// Whether the activation has an exact forward pass ([`Kernels::Exact`]).
    pub fn has_exact(&self) -> bool {
        self.fused().is_some()
    }

    /// The activation of every element of `x`. In exact mode relu and tanh take the exact
    /// path (tanh from [`crate::fastmath`], not libm); gelu, whose erf comes from libm, is
    /// refused there.
    pub fn apply(&self, x: &Tensor, k: Kernels) -> candle_core::Result<Tensor> {
        if k.is_exact() {
            return match self.fused() {
                Some(act) => ops::activate(x, act, k),
                None => candle_core::bail!(
                    "the {} activation has no exact forward pass (relu and tanh have one)",
                    self.name()
                ),
            };
        }
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu_erf(),
        }
    }

    /// The activation fused into a dense layer or a block, if it can be (its derivative must
    /// follow from its output).
    pub(crate) fn fused(&self) -> Option<Act> {
        match self {
            Activation::Relu => Some(Act::Relu),
            Activation::Tanh => Some(Act::Tanh),
            Activation::Gelu => None,
        }
    }
}

/// Variables are created with zeros here; `reset_parameters` gives them their values.
const SHAPE_ONLY: candle_nn::Init = candle_nn::Init::Const(0.0);

/// A dense layer `x W^T + b` with `weight` `[out, in]` and `bias` `[out]` (PyTorch's layout),
/// running the kernels `k`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
    k: Kernels,
}

impl Linear {
    pub(crate) fn new(
        vb: VarBuilder,
        input: usize,
        output: usize,
        k: Kernels,
    ) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints((output, input), "weight", SHAPE_ONLY)?;
        let bias = vb.get_with_hints(output, "bias", SHAPE_ONLY)?;
        Ok(Self { weight, bias, k })
    }

    pub(crate) fn forward(&self, x: &Tensor, act: Act) -> candle_core::Result<Tensor> {
        ops::linear(x, &self.weight, &self.bias, act, self.k)
    }

    /// The layer followed by `activation`, fused when possible.
    pub(crate) fn forward_act(
        &self,
        x: &Tensor,
        activation: Activation,
    ) -> candle_core::Result<Tensor> {
        match activation.fused() {
            Some(act) => self.forward(x, act),
            None => activation.apply(&self.forward(x, Act::Identity)?, self.k),
        }
    }
}

/// A stack of dense layers `fc0, fc1, …` with an activation after each.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    layers: Vec<Linear>,
    activation: Activation,
}

impl Dense {
    pub(crate) fn new(
        vb: &VarBuilder,
        input: usize,
        sizes: &[usize],
        activation: Activation,
        k: Kernels,
    ) -> candle_core::Result<Self> {
        let mut layers = Vec::with_capacity(sizes.len());
        let mut fan_in = input;
        for (i, &n) in sizes.iter().enumerate() {
            layers.push(Linear::new(vb.pp(format!("fc{i}")), fan_in, n, k)?);
            fan_in = n;
        }
        Ok(Self { layers, activation })
    }

    pub(crate) fn forward(&self, mut x: Tensor) -> candle_core::Result<Tensor> {
        for layer in &self.layers {
            x = layer.forward_act(&x, self.activation)?;
        }
        Ok(x)
    }
}

/// A 2-D convolution with bias (weight `[out, in, k, k]`), running the kernels `kernels`.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    kernels: Kernels,
}

impl Conv {
    pub(crate) fn new(
        vb: VarBuilder,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        padding: usize,
        kernels: Kernels,
    ) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints((cout, cin, k, k), "weight", SHAPE_ONLY)?;
        let bias = vb.get_with_hints(cout, "bias", SHAPE_ONLY)?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            kernels,
        })
    }

    /// The kernels the layer runs.
    pub(crate) fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The kernel `[out, in, k, k]` and the bias `[out]`.
    pub(crate) fn params(&self) -> (&Tensor, &Tensor) {
        (&self.weight, &self.bias)
    }

    /// The convolution followed by `activation` (fused when possible; none for `None`), reading
    /// and writing the memory orders given.
    pub(crate) fn forward_act(
        &self,
        x: &Tensor,
        activation: Option<Activation>,
        layouts: (MapLayout, MapLayout),
    ) -> candle_core::Result<Tensor> {
        let o = self.opts(layouts);
        let (w, b) = (&self.weight, &self.bias);
        match activation.map(|a| (a, a.fused())) {
            None => ops::conv2d_with(x, w, b, o),
            Some((_, Some(act))) => ops::conv2d_with(x, w, b, o.act(act)),
            Some((a, None)) => a.apply(&ops::conv2d_with(x, w, b, o)?, self.kernels),
        }
    }

    /// The convolution of `activation(x)`, with no activation after it: on the CPU a 1x1
    /// convolution takes relu or tanh into its product (see [`ConvOpts::pre`]), the activated
    /// map never stored; otherwise the activation is a pass of its own.
    pub(crate) fn forward_pre(
        &self,
        x: &Tensor,
        activation: Activation,
        layouts: (MapLayout, MapLayout),
    ) -> candle_core::Result<Tensor> {
        let o = self.opts(layouts);
        let (w, b) = (&self.weight, &self.bias);
        match activation.fused() {
            Some(pre) => ops::conv2d_with(x, w, b, o.pre(pre)),
            None => ops::conv2d_with(&activation.apply(x, self.kernels)?, w, b, o),
        }
    }

    /// The layer's stride, padding and kernels, reading and writing the memory orders given.
    fn opts(&self, (input, output): (MapLayout, MapLayout)) -> ConvOpts {
        ConvOpts::new(self.stride, self.padding)
            .layouts(input, output)
            .kernels(self.kernels)
    }
}

/// The memory orders of layer `i` of a stack of `n` convolutions: NCHW at the ends of the
/// stack, `inner` between its layers (channels-last spares the fused kernels a transpose on
/// each side of every layer; the maps are the same values either way).
pub(crate) fn stack_layouts(i: usize, n: usize, inner: MapLayout) -> (MapLayout, MapLayout) {
    let input = if i == 0 { MapLayout::Nchw } else { inner };
    let output = if i + 1 == n { MapLayout::Nchw } else { inner };
    (input, output)
}

/// How a decoder doubles the height and width of its feature maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Upsampling {
    /// Transposed convolutions with stride 2.
    #[default]
    Transposed,
    /// Nearest-neighbour upsampling by 2 followed by a 3x3 convolution.
    Nearest,
}

/// Doubles the height and width of a feature map.
#[derive(Debug, Clone)]
pub(crate) enum Up {
    /// Transposed 4x4 convolution, stride 2, padding 1 (weight `[in, out, 4, 4]`).
    Transposed {
        weight: Tensor,
        bias: Tensor,
        k: Kernels,
    },
    /// Nearest-neighbour upsampling, then a 3x3 convolution.
    Nearest(Conv),
}

impl Up {
    pub(crate) fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kind: Upsampling,
        k: Kernels,
    ) -> candle_core::Result<Self> {
        Ok(match kind {
            Upsampling::Transposed => Up::Transposed {
                weight: vb.get_with_hints((cin, cout, 4, 4), "weight", SHAPE_ONLY)?,
                bias: vb.get_with_hints(cout, "bias", SHAPE_ONLY)?,
                k,
            },
            Upsampling::Nearest => Up::Nearest(Conv::new(vb, (cin, cout, 3), 1, 1, k)?),
        })
    }

    /// The memory order between two layers of this kind: `inner` (nearest upsampling reads
    /// NCHW).
    pub(crate) fn inner_layout(&self, inner: MapLayout) -> MapLayout {
        match self {
            Up::Transposed { .. } => inner,
            Up::Nearest(_) => MapLayout::Nchw,
        }
    }

    /// The layer followed by `activation` (fused when possible; none for `None`), reading and
    /// writing the memory orders given.
    pub(crate) fn forward_act(
        &self,
        x: &Tensor,
        activation: Option<Activation>,
        layouts: (MapLayout, MapLayout),
    ) -> candle_core::Result<Tensor> {
        match self {
            Up::Transposed { weight, bias, k } => {
                let o = ConvOpts::new(2, 1)
                    .layouts(layouts.0, layouts.1)
                    .kernels(*k);
                match activation.map(|a| (a, a.fused())) {
                    None => ops::conv_transpose2d_with(x, weight, bias, o),
                    Some((_, Some(act))) => ops::conv_transpose2d_with(x, weight, bias, o.act(act)),
                    Some((a, None)) => {
                        a.apply(&ops::conv_transpose2d_with(x, weight, bias, o)?, *k)
                    }
                }
            }
            Up::Nearest(conv) => {
                let (_, _, h, w) = x.dims4()?;
                conv.forward_act(&x.upsample_nearest2d(2 * h, 2 * w)?, activation, layouts)
            }
        }
    }
}

/// `x` with the one-hot `labels` of a conditional model appended to its last dimension.
pub(crate) fn with_labels(x: &Tensor, labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match labels {
        Some(y) => Tensor::cat(&[x, y], D::Minus1),
        None => Ok(x.clone()),
    }
}
