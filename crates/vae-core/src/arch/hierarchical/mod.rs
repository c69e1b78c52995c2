//! `hierarchical`: a hierarchical VAE in the manner of VDVAE (Child 2021) and NVAE (Vahdat &
//! Kautz 2020), for images.
//!
//! - Bottom-up (the encoder): a 3x3 stem, then at the input's resolution and at each latent
//!   resolution (each half the one before, by 2x2 average pooling) `blocks` residual blocks;
//!   the activation at each latent resolution is kept for the top-down pass.
//! - The top group is a vector of `latent_dim` values with prior N(0, I) and posterior
//!   N(mu, diag sigma²) from a dense head on the coarsest activation (`encoder.head`): what
//!   `encode`, `decode`, interpolation, traversal and the manifold work on.
//! - Top-down (shared by inference and generation): the top code, through a dense layer
//!   (`decoder.top`), starts the state h at the coarsest resolution; each spatial group then
//!   takes the prior p(z_l | z_<l) from h (`prior`: means, log-scales and a term added to h),
//!   the posterior q(z_l | z_<l, x) from h and the bottom-up activation of its resolution
//!   (`post`), draws z_l (from q when inferring, from p when generating), adds its projection
//!   (`zproj`) to h and refines h by a residual block (`res`). Between resolutions h is
//!   upsampled 2x (nearest); at the input's resolution `blocks` residual blocks and a 1x1
//!   convolution (`decoder.out`) give the likelihood's parameters, `P·C` channels, block-major.
//! - Every group is a diagonal Gaussian with bounded log-scales ([`blocks::LOG_SCALE_BOUND`]);
//!   its KL is analytic given the groups above it and is one KL unit (free bits apply per
//!   group); log p(z) and log q(z|x) are summed over all groups for importance sampling.
//!
//! Tensor names (`r{h}` is a resolution by its height): `encoder.stem`, `encoder.r{h}.b{j}`,
//! `encoder.head`, `decoder.top`, `decoder.r{h}.g{g}.{prior,post,zproj,res}`,
//! `decoder.r{H}.b{j}`, `decoder.out`; a block has `c1`..`c4` (see [`blocks::Block`]).

mod blocks;
mod net;

use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{Activation, Conv, Linear};
use super::{ArchConfig, Net};
use crate::config::ModelConfig;
use crate::ops::Kernels;
use crate::{Error, Result};

use blocks::Block;
use blocks::Maps;
pub use blocks::LOG_SCALE_BOUND;
use net::{GroupBlock, Hierarchical, Scale};

/// The most latent resolutions accepted (each halves the one before).
pub const MAX_SCALES: usize = 5;

/// The settings of the `hierarchical` architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HierarchicalConfig {
    /// Channels of the bottom-up and top-down feature maps.
    pub width: usize,
    /// Channels inside each block (between its 1x1 convolutions).
    pub bottleneck: usize,
    /// Channels of each spatial latent group.
    pub z_channels: usize,
    /// Spatial latent groups at each resolution, coarsest first: with n entries, entry i is at
    /// the input's resolution divided by 2^(n − i).
    pub groups: Vec<usize>,
    /// Residual blocks of the encoder at each resolution, and of the decoder at the input's.
    pub blocks: usize,
    pub activation: Activation,
}

impl HierarchicalConfig {
    /// Height and width of latent resolution `i` (coarsest first) for an input of `h` x `w`.
    fn resolution(&self, i: usize, h: usize, w: usize) -> (usize, usize) {
        let f = 1usize << (self.groups.len() - i);
        (h / f, w / f)
    }
}

impl ArchConfig for HierarchicalConfig {
    fn name(&self) -> &'static str {
        "hierarchical"
    }

    fn describe(&self) -> String {
        format!(
            "hierarchical width {} groups {:?} x {} channels",
            self.width, self.groups, self.z_channels
        )
    }

    fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.width == 0 || self.bottleneck == 0 || self.z_channels == 0 {
            return bad("the hierarchical architecture's width, bottleneck and latent channels must be at least 1".into());
        }
        if self.groups.is_empty() || self.groups.len() > MAX_SCALES || self.groups.contains(&0) {
            return bad(format!(
                "the hierarchical architecture needs 1 to {MAX_SCALES} latent resolutions of at least one group each (got {:?})",
                self.groups
            ));
        }
        if cfg.num_classes.is_some() {
            return bad(
                "--conditional: the hierarchical architecture has no conditional form (train it without --conditional)"
                    .into(),
            );
        }
        let s = cfg.shape;
        let f = 1usize << self.groups.len();
        if !s.is_image() || !s.height.is_multiple_of(f) || !s.width.is_multiple_of(f) {
            return bad(format!(
                "the hierarchical architecture with {} latent resolutions needs images whose sides divide by {f} (got {}x{}x{})",
                self.groups.len(),
                s.channels,
                s.height,
                s.width
            ));
        }
        Ok(())
    }

    fn activations(&self) -> Vec<Activation> {
        vec![self.activation]
    }

    fn build(&self, vb: VarBuilder, cfg: &ModelConfig, k: Kernels) -> Result<Box<dyn Net>> {
        let s = cfg.shape;
        let (c, m, zc, act) = (
            self.width,
            self.bottleneck,
            self.z_channels,
            self.activation,
        );
        let venc = vb.pp("encoder");
        let vdec = vb.pp("decoder");
        let stem = Conv::new(venc.pp("stem"), (s.channels, c, 3), 1, 1, k)?;
        let n = self.groups.len();
        // Encoder levels: the input's resolution, then each latent resolution, finest first.
        let mut enc = Vec::with_capacity(n + 1);
        for level in 0..=n {
            let h = s.height >> level;
            let blocks = (0..self.blocks)
                .map(|j| Block::new(venc.pp(format!("r{h}.b{j}")), (c, m, c), true, act, k))
                .collect::<candle_core::Result<Vec<_>>>()?;
            enc.push(blocks);
        }
        let (hc, wc) = self.resolution(0, s.height, s.width);
        let head = Linear::new(venc.pp("head"), c * hc * wc, 2 * cfg.latent_dim, k)?;
        let top = Linear::new(vdec.pp("top"), cfg.latent_dim, c * hc * wc, k)?;
        let mut scales = Vec::with_capacity(n);
        for (i, &count) in self.groups.iter().enumerate() {
            let (h, w) = self.resolution(i, s.height, s.width);
            let mut groups = Vec::with_capacity(count);
            for g in 0..count {
                let v = vdec.pp(format!("r{h}.g{g}"));
                groups.push(GroupBlock {
                    prior: Block::new(v.pp("prior"), (c, m, 2 * zc + c), false, act, k)?,
                    post: Block::new(v.pp("post"), (2 * c, m, 2 * zc), false, act, k)?,
                    zproj: Conv::new(v.pp("zproj"), (zc, c, 1), 1, 0, k)?,
                    res: Block::new(v.pp("res"), (c, m, c), true, act, k)?,
                });
            }
            scales.push(Scale { h, w, groups });
        }
        let out_blocks = (0..self.blocks)
            .map(|j| {
                Block::new(
                    vdec.pp(format!("r{}.b{j}", s.height)),
                    (c, m, c),
                    true,
                    act,
                    k,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let p = cfg.likelihood.params_per_dim();
        let out = Conv::new(vdec.pp("out"), (c, s.channels * p, 1), 1, 0, k)?;
        let maps = Maps::for_device(vb.device());
        Ok(Box::new(Hierarchical::new(
            self, cfg, stem, enc, head, top, scales, out_blocks, out, maps,
        )))
    }
}
