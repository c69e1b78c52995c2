//! The hierarchical model's passes: bottom-up, top-down with inference or generation at each
//! group, and the [`Net`] interface over them.

use candle_core::{Tensor, D};
use candle_nn::VarMap;

use super::blocks::{repeat_first, Block, Gauss, Maps, LOG_SCALE_BOUND};
use super::HierarchicalConfig;
use crate::arch::layers::{Activation, Conv, Linear};
use crate::arch::{ChooseLatent, CodingGaussian, KeptStates, LatentGroup, LatentLayout, Net, Pass};
use crate::config::ModelConfig;
use crate::dist::{DiagonalGaussian, LN_2PI};
use crate::ops::{self, Act, Kernels, MapLayout};
use crate::{Error, Result};

/// The blocks of one spatial latent group.
#[derive(Debug)]
pub(crate) struct GroupBlock {
    /// h to the prior's means and raw log-scales (`z` channels each) and a term added to h.
    pub prior: Block,
    /// [h, bottom-up activation] to the posterior's means and raw log-scales.
    pub post: Block,
    /// z to a term added to h (1x1).
    pub zproj: Conv,
    /// The residual block after the group.
    pub res: Block,
}

/// The groups at one latent resolution.
#[derive(Debug)]
pub(crate) struct Scale {
    pub h: usize,
    pub w: usize,
    pub groups: Vec<GroupBlock>,
}

/// Floats a pass may hold in one buffer per row budget: rows per pass are chosen so that the
/// largest buffer (the im2col matrix of a 3x3 convolution at the input's resolution) stays
/// near 256 MiB.
const FLOATS_PER_PASS: usize = 1 << 26;

#[derive(Debug)]
pub(crate) struct Hierarchical {
    stem: Conv,
    /// Residual blocks of the encoder at the input's resolution, then at each latent
    /// resolution, finest first.
    enc: Vec<Vec<Block>>,
    head: Linear,
    top: Linear,
    /// Coarsest first.
    scales: Vec<Scale>,
    out_blocks: Vec<Block>,
    out: Conv,
    activation: Activation,
    layout: LatentLayout,
    /// Channels, height and width of an input image.
    shape: (usize, usize, usize),
    width: usize,
    z: usize,
    latent: usize,
    /// Residual blocks in the whole model (for the scale of their initial last layers).
    residual_blocks: usize,
    rows_per_pass: usize,
    /// The memory order of the feature maps (chosen from the device).
    maps: Maps,
    /// The kernels the layers run (the net's own operations follow them too).
    k: Kernels,
}

/// The temperature of group `g` from a list whose last value repeats (1 when empty).
pub(crate) fn temperature(temperatures: &[f64], g: usize) -> f64 {
    temperatures
        .get(g)
        .or(temperatures.last())
        .copied()
        .unwrap_or(1.0)
}

impl Hierarchical {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &HierarchicalConfig,
        model: &ModelConfig,
        stem: Conv,
        enc: Vec<Vec<Block>>,
        head: Linear,
        top: Linear,
        scales: Vec<Scale>,
        out_blocks: Vec<Block>,
        out: Conv,
        maps: Maps,
    ) -> Self {
        let s = model.shape;
        let mut groups = vec![LatentGroup {
            dim: model.latent_dim,
            kl_units: 1,
        }];
        for sc in &scales {
            for _ in &sc.groups {
                groups.push(LatentGroup {
                    dim: cfg.z_channels * sc.h * sc.w,
                    kl_units: 1,
                });
            }
        }
        let residual_blocks = enc.iter().map(Vec::len).sum::<usize>()
            + scales.iter().map(|s| s.groups.len()).sum::<usize>()
            + out_blocks.len();
        let per_row = 9 * cfg.bottleneck.max(s.channels).max(cfg.width) * s.height * s.width;
        let k = stem.kernels();
        Self {
            stem,
            enc,
            head,
            top,
            scales,
            out_blocks,
            out,
            activation: cfg.activation,
            layout: LatentLayout { groups },
            shape: (s.channels, s.height, s.width),
            width: cfg.width,
            z: cfg.z_channels,
            latent: model.latent_dim,
            residual_blocks,
            rows_per_pass: (FLOATS_PER_PASS / per_row.max(1)).clamp(16, 16_384),
            maps,
            k,
        }
    }

    /// A convolution between two maps of the model's order, its activation applied apart.
    fn conv(&self, layer: &Conv, x: &Tensor) -> candle_core::Result<Tensor> {
        layer.forward_act(x, None, self.maps.inner())
    }

    /// The bottom-up activations at each latent resolution, coarsest first.
    fn bottom_up(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let b = x.dim(0)?;
        let (c, h, w) = self.shape;
        let x = x.reshape((b, c, h, w))?.affine(2.0, -1.0)?;
        let mut t = self.stem.forward_act(&x, None, self.maps.data_in())?;
        let mut acts = Vec::with_capacity(self.scales.len());
        for (level, blocks) in self.enc.iter().enumerate() {
            if level > 0 {
                t = self.maps.avg_pool2(&t, self.k)?;
            }
            for block in blocks {
                t = block.forward(&t, self.maps)?;
            }
            if level > 0 {
                acts.push(t.clone());
            }
        }
        acts.reverse();
        Ok(acts)
    }

    /// q of the top group from the coarsest activation; log-variances bounded as the groups'
    /// log-scales are (twice).
    fn top_posterior(&self, coarsest: &Tensor) -> Result<DiagonalGaussian> {
        let (mu, raw) = self.top_posterior_raw(coarsest)?;
        let bound = 2.0 * LOG_SCALE_BOUND;
        let logvar = ((raw / bound)?.tanh()? * bound)?;
        Ok(DiagonalGaussian::new(mu, logvar))
    }

    /// The top-down pass from top codes `z_top` `[n, latent]`: at each spatial group (index
    /// `g` in the layout, from 1) `choose(g, scale, h, block, raw prior output)` gives z (the
    /// prior itself is [`Hierarchical::prior`] of that output).
    /// Returns the
    /// likelihood's raw parameters `[n, P·D]`.
    fn top_down(
        &self,
        z_top: &Tensor,
        choose: impl FnMut(usize, usize, &Tensor, &GroupBlock, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let h = self.through_groups(z_top, choose)?;
        self.output(h)
    }

    /// The top-down pass of [`Hierarchical::top_down`] up to the state after the last group.
    fn through_groups(
        &self,
        z_top: &Tensor,
        mut choose: impl FnMut(usize, usize, &Tensor, &GroupBlock, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let n = z_top.dim(0)?;
        let (hc, wc) = self
            .scales
            .first()
            .map(|s| (s.h, s.w))
            .ok_or_else(|| Error::Config("hierarchical: no latent resolution".into()))?;
        let top = self.top.forward(z_top, Act::Identity)?;
        let mut h = self.maps.order(&top.reshape((n, self.width, hc, wc))?)?;
        let mut g = 1;
        for (si, scale) in self.scales.iter().enumerate() {
            if si > 0 {
                h = self.maps.up2(&h, self.k)?;
            }
            for block in &scale.groups {
                let raw = block.prior.forward(&h, self.maps)?;
                let z = choose(g, si, &h, block, &raw)?;
                h = self.add_state(&h, &raw, &self.conv(&block.zproj, &z)?)?;
                h = block.res.forward(&h, self.maps)?;
                g += 1;
            }
        }
        Ok(h)
    }

    /// The state after a group: `h` plus the prior block's term (its channels `2z..2z + width`
    /// of `raw`) plus the projection of the group's values `zp`, `(h + term) + zp`. One
    /// operation on channels-last CPU maps (in exact mode too: the same sums).
    fn add_state(&self, h: &Tensor, raw: &Tensor, zp: &Tensor) -> Result<Tensor> {
        if self.maps.0 == MapLayout::Nhwc && self.k.cpu_kernel(&[h, raw, zp]) {
            return Ok(ops::add_state_last(h, raw, 2 * self.z, zp)?);
        }
        let term = self.maps.narrow(raw, 2 * self.z, self.width)?;
        Ok(((h + term)? + zp)?)
    }

    /// The likelihood's raw parameters `[n, P·D]` from the state after the last group.
    fn output(&self, h: Tensor) -> Result<Tensor> {
        let mut h = self.maps.up2(&h, self.k)?;
        for block in &self.out_blocks {
            h = block.forward(&h, self.maps)?;
        }
        let layouts = (self.maps.0, crate::ops::MapLayout::Nchw);
        let y = self.out.forward_pre(&h, self.activation, layouts)?;
        Ok(y.flatten_from(1)?)
    }

    /// Offsets of each group's noise in a row of `[.., noise_dim]`.
    fn offsets(&self) -> Vec<usize> {
        let mut at = 0;
        self.layout
            .groups
            .iter()
            .map(|g| {
                let o = at;
                at += g.dim;
                o
            })
            .collect()
    }

    /// A group's values at scale `si`, `[n, z·h·w]` channel-major (the noise's and the coder's
    /// order), as a map of the model's order.
    fn group_map(&self, values: &Tensor, si: usize, n: usize) -> Result<Tensor> {
        let s = &self.scales[si];
        Ok(self.maps.order(&values.reshape((n, self.z, s.h, s.w))?)?)
    }

    /// A group's map as `[n, z·h·w]` values, channel-major.
    fn group_values(&self, map: &Tensor) -> Result<Tensor> {
        Ok(self.maps.to_nchw(map)?.flatten_from(1)?)
    }

    /// The raw outputs of a group's posterior from the state and the bottom-up activation.
    fn posterior_raw(&self, block: &GroupBlock, h: &Tensor, act: &Tensor) -> Result<Tensor> {
        Ok(block.post.forward(&self.maps.cat(h, act)?, self.maps)?)
    }

    /// A group's Gaussian from the raw output of its prior or posterior block (means, then raw
    /// log-scales, in its first channels).
    fn gauss(&self, raw: &Tensor) -> Result<Gauss> {
        Ok(Gauss::from_raw(raw, 0, self.z, self.maps)?)
    }

    /// Posterior of a group from the state and the bottom-up activation.
    fn posterior(&self, block: &GroupBlock, h: &Tensor, act: &Tensor) -> Result<Gauss> {
        self.gauss(&self.posterior_raw(block, h, act)?)
    }

    /// The top group's posterior as raw head outputs: means, and log-variances before their
    /// bound (see [`Hierarchical::top_posterior`]).
    fn top_posterior_raw(&self, coarsest: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = self
            .activation
            .apply(&self.maps.to_nchw(coarsest)?.flatten_from(1)?, self.k)?;
        let p = self.head.forward(&a, Act::Identity)?;
        let l = self.latent;
        Ok((p.narrow(1, 0, l)?, p.narrow(1, l, l)?))
    }

    /// The top-down pass with every group at its posterior mean, collecting the posteriors.
    fn posterior_means(&self, x: &Tensor) -> Result<(Tensor, Vec<DiagonalGaussian>)> {
        let acts = self.bottom_up(x)?;
        let q_top = self.top_posterior(&acts[0])?;
        let mut qs = vec![q_top.clone()];
        let params = self.top_down(&q_top.mu, |_, si, h, block, _| {
            let q = self.posterior(block, h, &acts[si])?;
            qs.push(DiagonalGaussian::new(
                self.group_values(&q.mu)?,
                (self.group_values(&q.log_sigma)? * 2.0)?,
            ));
            Ok(q.mu)
        })?;
        Ok((params, qs))
    }
    /// The coding pass ([`Net::coding_pass`]) up to the state after the last group.
    fn coding_groups(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut ChooseLatent,
        mut kept: Option<&mut KeptStates>,
    ) -> Result<Tensor> {
        let acts = x.map(|x| self.bottom_up(x)).transpose()?;
        let z_top = self.choose_top(acts.as_deref(), n, choose)?;
        self.through_groups(&z_top, |g, si, h, block, raw_prior| {
            let prior = self.coding_gaussian(raw_prior)?;
            let post = match &acts {
                Some(a) => Some(self.coding_gaussian(&self.posterior_raw(block, h, &a[si])?)?),
                None => None,
            };
            let z = choose(g, Some(&prior), post.as_ref())?;
            if let Some(k) = kept.as_deref_mut() {
                k.groups.push((h.clone(), prior));
            }
            self.group_map(&z, si, n)
        })
    }

    /// The top group's values from `choose`, given its posterior from the coarsest bottom-up
    /// activation (when there are images).
    fn choose_top(
        &self,
        acts: Option<&[Tensor]>,
        n: usize,
        choose: &mut ChooseLatent,
    ) -> Result<Tensor> {
        let q_top = match acts {
            Some(a) => {
                let (mu, raw) = self.top_posterior_raw(&a[0])?;
                Some(CodingGaussian {
                    mu,
                    raw_log_sigma: (raw * 0.5)?,
                    log_sigma_bound: LOG_SCALE_BOUND,
                })
            }
            None => None,
        };
        let z_top = choose(0, None, q_top.as_ref())?;
        if z_top.dims() != [n, self.latent] {
            return Err(Error::Config(format!(
                "hierarchical: top values of shape {:?} for {n} rows of {}",
                z_top.dims(),
                self.latent
            )));
        }
        Ok(z_top)
    }

    /// A group's coding Gaussian from the raw output of its prior or posterior block.
    fn coding_gaussian(&self, raw: &Tensor) -> Result<CodingGaussian> {
        Ok(CodingGaussian {
            mu: self.group_values(&self.maps.narrow(raw, 0, self.z)?)?,
            raw_log_sigma: self.group_values(&self.maps.narrow(raw, self.z, self.z)?)?,
            log_sigma_bound: LOG_SCALE_BOUND,
        })
    }
}

impl Net for Hierarchical {
    fn latent(&self) -> &LatentLayout {
        &self.layout
    }

    fn encode(&self, x: &Tensor, _labels: Option<&Tensor>) -> Result<DiagonalGaussian> {
        let acts = self.bottom_up(x)?;
        self.top_posterior(&acts[0])
    }

    /// Top codes decoded with every lower group at its prior mean.
    fn decode(&self, z: &Tensor, _labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        self.generate(z, None, &[0.0], None, out_act)
    }

    fn pass(
        &self,
        x: &Tensor,
        _labels: Option<&Tensor>,
        eps: &Tensor,
        densities: bool,
    ) -> Result<Pass> {
        let eps = if eps.rank() == 2 {
            eps.unsqueeze(0)?
        } else {
            eps.clone()
        };
        let (k, b, nd) = eps.dims3()?;
        if nd != self.layout.noise_dim() {
            return Err(Error::Config(format!(
                "hierarchical: noise of {nd} values per sample for a model with {}",
                self.layout.noise_dim()
            )));
        }
        let eps = eps.reshape((k * b, nd))?;
        let offsets = self.offsets();
        let acts = self.bottom_up(x)?;
        let q_top = self.top_posterior(&acts[0])?;
        let acts: Vec<Tensor> = acts
            .iter()
            .map(|a| repeat_first(a, k))
            .collect::<candle_core::Result<_>>()?;
        let (mu, logvar) = (repeat_first(&q_top.mu, k)?, repeat_first(&q_top.logvar, k)?);
        let e_top = eps.narrow(1, 0, self.latent)?;
        let z_top = (&mu + ((&logvar * 0.5)?.exp()? * &e_top)?)?;
        let mut kl = vec![q_top.kl_std_normal()?];
        let (mut log_p, mut log_q) = (Vec::new(), Vec::new());
        if densities {
            let half = |t: Tensor| t * -0.5;
            let l2pi = LN_2PI * self.latent as f64;
            log_p.push(half((z_top.sqr()?.sum(D::Minus1)? + l2pi)?)?);
            log_q.push(half(((e_top.sqr()? + &logvar)?.sum(D::Minus1)? + l2pi)?)?);
        }
        let params = self.top_down(&z_top, |g, si, h, block, raw_prior| {
            let e = eps.narrow(1, offsets[g], self.layout.groups[g].dim)?;
            let e = self.group_map(&e, si, k * b)?;
            let raw_post = self.posterior_raw(block, h, &acts[si])?;
            let fused = !densities
                && self.maps.0 == MapLayout::Nhwc
                && self.k.fused(&[raw_prior, &raw_post, &e]);
            let (z, kl_g) = if fused {
                let bound = LOG_SCALE_BOUND as f32;
                ops::gaussian_sample_kl(raw_prior, &raw_post, &e, bound)?
            } else {
                let (q, prior) = (self.gauss(&raw_post)?, self.gauss(raw_prior)?);
                let z = q.sample(&e, 1.0)?;
                if densities {
                    log_p.push(prior.log_prob(&z)?);
                    log_q.push(q.log_prob_from_eps(&e)?);
                }
                let kl_g = q.kl(&prior)?;
                (z, kl_g)
            };
            kl.push(if k == 1 {
                kl_g
            } else {
                kl_g.reshape((k, b))?.mean(0)?
            });
            Ok(z)
        })?;
        let kl = Tensor::stack(&kl, 1)?;
        let total = |parts: Vec<Tensor>| -> Result<Option<Tensor>> {
            if parts.is_empty() {
                return Ok(None);
            }
            Ok(Some(Tensor::stack(&parts, 1)?.sum(1)?.reshape((k, b))?))
        };
        Ok(Pass {
            params,
            kl,
            log_p: total(log_p)?,
            log_q: total(log_q)?,
        })
    }

    fn generate(
        &self,
        z: &Tensor,
        eps: Option<&Tensor>,
        temperatures: &[f64],
        _labels: Option<&Tensor>,
        out_act: Act,
    ) -> Result<Tensor> {
        let n = z.dim(0)?;
        let below = self.layout.noise_dim() - self.latent;
        if let Some(e) = eps {
            if e.dims() != [n, below] {
                return Err(Error::Config(format!(
                    "hierarchical: noise of shape {:?} for {n} samples of {below} values below the top group",
                    e.dims()
                )));
            }
        }
        let offsets = self.offsets();
        let params = self.top_down(z, |g, si, _, _, raw_prior| {
            let prior = self.gauss(raw_prior)?;
            let t = temperature(temperatures, g);
            match eps {
                Some(e) if t > 0.0 => {
                    let e = e.narrow(1, offsets[g] - self.latent, self.layout.groups[g].dim)?;
                    Ok(prior.sample(&self.group_map(&e, si, n)?, t)?)
                }
                _ => Ok(prior.mu.clone()),
            }
        })?;
        Ok(ops::activate(&params, out_act, self.k)?)
    }

    fn reconstruct(&self, x: &Tensor, _labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        let (params, _) = self.posterior_means(x)?;
        Ok(ops::activate(&params, out_act, self.k)?)
    }

    fn encode_groups(&self, x: &Tensor, _labels: Option<&Tensor>) -> Result<Vec<DiagonalGaussian>> {
        Ok(self.posterior_means(x)?.1)
    }

    fn rows_per_pass(&self) -> Option<usize> {
        Some(self.rows_per_pass)
    }

    /// The top group at temperature 1 and every group below it at 0.5: the lower groups' noise
    /// at full temperature breaks shapes apart, while the top group's keeps the variety of
    /// the classes (docs/RESULTS.md shows the grids it was chosen from).
    fn sampling_temperatures(&self) -> Vec<f64> {
        vec![1.0, 0.5]
    }

    /// The top group's raw log-scale is half its raw log-variance (log σ = L tanh(r / 2L)
    /// with r that raw log-variance, as [`Hierarchical::top_posterior`] bounds it); each
    /// spatial group's are its blocks' raw outputs. The callback's values go in as the
    /// samples of [`Net::pass`] do.
    fn coding_pass(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut ChooseLatent,
    ) -> Result<Tensor> {
        let h = self.coding_groups(x, n, choose, None)?;
        self.output(h)
    }

    /// Stops after the last group: the output blocks at the image's resolution are skipped.
    fn coding_pass_latents(
        &self,
        x: Option<&Tensor>,
        n: usize,
        choose: &mut ChooseLatent,
    ) -> Result<()> {
        self.coding_groups(x, n, choose, None).map(|_| ())
    }

    fn coding_pass_keeping(
        &self,
        n: usize,
        choose: &mut ChooseLatent,
        kept: &mut KeptStates,
    ) -> Result<Tensor> {
        kept.groups.clear();
        let h = self.coding_groups(None, n, choose, Some(kept))?;
        self.output(h)
    }

    /// The bottom-up pass and each group's posterior block on the kept states: the top-down
    /// blocks are not run again.
    fn coding_posteriors(
        &self,
        x: &Tensor,
        n: usize,
        kept: &KeptStates,
        choose: &mut ChooseLatent,
    ) -> Result<()> {
        let groups: usize = self.scales.iter().map(|s| s.groups.len()).sum();
        if kept.groups.len() != groups {
            return self.coding_pass_latents(Some(x), n, choose);
        }
        let acts = self.bottom_up(x)?;
        self.choose_top(Some(&acts), n, choose)?;
        let mut states = kept.groups.iter();
        let mut g = 1;
        for (si, scale) in self.scales.iter().enumerate() {
            for block in &scale.groups {
                let (h, prior) = states
                    .next()
                    .ok_or_else(|| Error::Config("hierarchical: kept states run out".into()))?;
                if h.dim(0)? != n {
                    return Err(Error::Config(format!(
                        "hierarchical: states kept for {} rows, posteriors asked for {n}",
                        h.dim(0)?
                    )));
                }
                let post = self.coding_gaussian(&self.posterior_raw(block, h, &acts[si])?)?;
                choose(g, Some(prior), Some(&post))?;
                g += 1;
            }
        }
        Ok(())
    }

    /// VDVAE's initialisation on top of the default: every bias zero, the last layer of each
    /// prior zero (priors start as N(0, I) and add nothing to h), and the last layer of each
    /// residual block and each z projection scaled by 1/sqrt(residual blocks), so that the
    /// residual stream does not grow with depth.
    fn adjust_init(&self, varmap: &VarMap) -> Result<()> {
        let scale = (1.0 / self.residual_blocks.max(1) as f64).sqrt();
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned variable map".into()))?;
        for (name, var) in vars.iter() {
            let t = var.as_tensor();
            if name.ends_with(".bias") || name.ends_with(".prior.c4.weight") {
                var.set(&t.zeros_like()?)?;
            } else if name.ends_with(".zproj.weight")
                || (name.ends_with(".c4.weight") && !name.contains(".post."))
            {
                var.set(&(t * scale)?)?;
            }
        }
        Ok(())
    }
}
