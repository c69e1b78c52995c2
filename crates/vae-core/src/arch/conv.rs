//! `conv`: strided 4x4 convolutions (stride 2, padding 1) and one dense layer in the encoder;
//! the decoder mirrors it with a dense layer back to the smallest feature map and transposed
//! convolutions (or nearest-neighbour upsampling and 3x3 convolutions).
//!
//! Tensors: `encoder.conv{i}` `[c_i, c_{i-1}, 4, 4]`, `encoder.fc0`, `encoder.head`,
//! `decoder.fc0`, `decoder.fc1`, `decoder.up{i}` (`[c_in, c_out, 4, 4]` transposed, or
//! `[c_out, c_in, 3, 3]` after nearest upsampling). The last `up` outputs `P·C` channels,
//! parameter-major, so the flattened output is block-major `[P, C·H·W]`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{stack_layouts, with_labels, Activation, Conv, Linear, Up, Upsampling};
use super::single::{Decoder, EncoderBody, GaussianLatent};
use super::{ArchConfig, Net};
use crate::config::ModelConfig;
use crate::ops::{Act, Kernels, MapLayout};
use crate::{Error, Result};

/// The settings of the `conv` architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvConfig {
    /// Output channels of each strided convolution (each halves height and width).
    pub channels: Vec<usize>,
    /// Width of the dense layer between the feature maps and the latent parameters.
    pub hidden: usize,
    pub activation: Activation,
    pub upsampling: Upsampling,
}

impl ArchConfig for ConvConfig {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn describe(&self) -> String {
        format!("conv {:?}", self.channels)
    }

    fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        if self.channels.is_empty() || self.channels.contains(&0) || self.hidden == 0 {
            return Err(Error::Config(
                "conv channels and hidden size must be at least 1".into(),
            ));
        }
        let s = cfg.shape;
        let f = 1usize << self.channels.len();
        if !s.is_image() || !s.height.is_multiple_of(f) || !s.width.is_multiple_of(f) {
            return Err(Error::Config(format!(
                "the conv architecture needs images whose sides divide by {f} (got {}x{}x{})",
                s.channels, s.height, s.width
            )));
        }
        Ok(())
    }

    fn activations(&self) -> Vec<Activation> {
        vec![self.activation]
    }

    fn build(&self, vb: VarBuilder, cfg: &ModelConfig, k: Kernels) -> Result<Box<dyn Net>> {
        let s = cfg.shape;
        let extra = cfg.num_classes.unwrap_or(0);
        let venc = vb.pp("encoder");
        let vdec = vb.pp("decoder");
        let mut convs = Vec::with_capacity(self.channels.len());
        let mut cin = s.channels;
        for (i, &c) in self.channels.iter().enumerate() {
            convs.push(Conv::new(
                venc.pp(format!("conv{i}")),
                (cin, c, 4),
                2,
                1,
                k,
            )?);
            cin = c;
        }
        let f = 1 << self.channels.len();
        let (h, w) = (s.height / f, s.width / f);
        let last = *self
            .channels
            .last()
            .ok_or_else(|| Error::Config("conv needs channels".into()))?;
        let flat = last * h * w;
        let fc = Linear::new(venc.pp("fc0"), flat + extra, self.hidden, k)?;
        let fc0 = Linear::new(vdec.pp("fc0"), cfg.latent_dim + extra, self.hidden, k)?;
        let fc1 = Linear::new(vdec.pp("fc1"), self.hidden, flat, k)?;
        let outs: Vec<usize> = self
            .channels
            .iter()
            .rev()
            .skip(1)
            .copied()
            .chain([s.channels * cfg.likelihood.params_per_dim()])
            .collect();
        let mut ups = Vec::with_capacity(outs.len());
        let mut cin = last;
        for (i, &c) in outs.iter().enumerate() {
            ups.push(Up::new(
                vdec.pp(format!("up{i}")),
                cin,
                c,
                self.upsampling,
                k,
            )?);
            cin = c;
        }
        // Channels-last between the layers on the CPU, where the fused convolutions read and
        // write it without transposes; NCHW elsewhere, the order convolution libraries take.
        let inner = if vb.device().is_cpu() {
            MapLayout::Nhwc
        } else {
            MapLayout::Nchw
        };
        let body = ConvEncoder {
            convs,
            fc,
            activation: self.activation,
            shape: (s.channels, s.height, s.width),
            inner,
        };
        let decoder = ConvDecoder {
            fc0,
            fc1,
            ups,
            activation: self.activation,
            start: (last, h, w),
            inner,
            k,
        };
        Ok(Box::new(GaussianLatent::new(
            &vb,
            Box::new(body),
            self.hidden,
            cfg.latent_dim,
            Box::new(decoder),
            k,
        )?))
    }
}

#[derive(Debug)]
struct ConvEncoder {
    convs: Vec<Conv>,
    fc: Linear,
    activation: Activation,
    /// Channels, height and width of an input image.
    shape: (usize, usize, usize),
    /// The memory order between the convolutions.
    inner: MapLayout,
}

impl EncoderBody for ConvEncoder {
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let b = x.dim(0)?;
        let (c, h, w) = self.shape;
        let mut t = x.reshape((b, c, h, w))?;
        let n = self.convs.len();
        for (i, conv) in self.convs.iter().enumerate() {
            let layouts = stack_layouts(i, n, self.inner);
            t = conv.forward_act(&t, Some(self.activation), layouts)?;
        }
        let t = with_labels(&t.flatten_from(1)?, labels)?;
        Ok(self.fc.forward_act(&t, self.activation)?)
    }
}

#[derive(Debug)]
struct ConvDecoder {
    fc0: Linear,
    fc1: Linear,
    ups: Vec<Up>,
    activation: Activation,
    /// Channels, height and width of the map the first upsampling receives.
    start: (usize, usize, usize),
    /// The memory order between transposed convolutions.
    inner: MapLayout,
    k: Kernels,
}

impl Decoder for ConvDecoder {
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        let z = with_labels(z, labels)?;
        let b = z.dim(0)?;
        let h = self
            .fc1
            .forward_act(&self.fc0.forward_act(&z, self.activation)?, self.activation)?;
        let (c, hh, ww) = self.start;
        let mut h = h.reshape((b, c, hh, ww))?;
        let last = self.ups.len().saturating_sub(1);
        for (i, up) in self.ups.iter().enumerate() {
            let layouts = stack_layouts(i, self.ups.len(), up.inner_layout(self.inner));
            h = up.forward_act(&h, (i < last).then_some(self.activation), layouts)?;
        }
        let out = h.flatten_from(1)?;
        Ok(match out_act {
            Act::Identity => out,
            act => crate::ops::activate(&out, act, self.k)?,
        })
    }
}
