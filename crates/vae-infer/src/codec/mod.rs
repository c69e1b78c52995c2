//! Lossless compression with a trained VAE: the model as [`vae_codec`] sees it
//! ([`CodecModel`]), whole files coded and decoded in memory ([`file`]), the images that
//! `compress` reads and `decompress` writes back ([`source`]: IDX files, splits, PNG files
//! through [`png`], pictures of any size in tiles through [`tiles`]), and `-` for standard
//! input and output ([`stdio`]).
//!
//! The coder needs the encoder and the decoder to give the same bits when a file is written
//! and when it is read, on any CPU. [`CodecModel`] therefore runs the networks only with the
//! exact kernels ([`Kernels::Exact`]: fixed-order sums, activations from `fastmath`), and maps
//! the decoder's raw outputs to pixel distributions with [`vae_codec::detmath`] alone (no libm),
//! through the same parameter maps as the training likelihoods of vae-core.

pub mod file;
pub mod padding;
pub mod png;
pub mod source;
pub mod stdio;
pub mod tiles;

use clap::ValueEnum;
use vae_codec::detmath;
use vae_codec::{Choose, CodecError, Gaussian, Kept, LatentModel, PixelParams, SingleLatentModel};
use vae_core::arch::{CodingGaussian, KeptStates};
use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::fastmath::{simd_level, with_simd_cap, SimdLevel};
use vae_core::likelihood::LikelihoodSettings;
use vae_core::ops::Kernels;
use vae_core::{Activation, LikelihoodKind, PixelCoding, Vae};

use crate::{InferError, Result};

/// `--simd`: the highest SIMD level the model's kernels may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Simd {
    Baseline,
    V3,
    V4,
}

/// The flag `compress` and `decompress` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimdArgs {
    /// Cap the SIMD level of the model's kernels (the bytes do not depend on it; for checking
    /// that a file written at one level decodes at another). `VAE_SIMD` caps it too.
    #[arg(long, value_enum)]
    pub simd: Option<Simd>,
}

impl SimdArgs {
    /// The cap the model's exact kernels take.
    pub fn cap(&self) -> Option<SimdLevel> {
        self.simd.map(|s| match s {
            Simd::Baseline => SimdLevel::Baseline,
            Simd::V3 => SimdLevel::V3,
            Simd::V4 => SimdLevel::V4,
        })
    }

    /// The name of the level the kernels use under the cap.
    pub fn in_use(&self) -> &'static str {
        match with_simd_cap(self.cap(), simd_level) {
            SimdLevel::Baseline => "baseline",
            SimdLevel::V3 => "v3",
            SimdLevel::V4 => "v4",
        }
    }
}

/// Refuses a device other than the CPU: the coder's arithmetic runs on the host.
pub fn check_cpu(flags: &vae_run::flags::RuntimeFlags) -> Result<Device> {
    match flags.device_name() {
        "auto" | "cpu" => Ok(Device::Cpu),
        other => Err(InferError::Flag(format!(
            "--device {other}: compress and decompress run on the CPU (their arithmetic must \
             give the same bits on every machine)"
        ))),
    }
}

/// The likelihoods that code, by their flag: `--likelihood A or B (8-bit images) or C
/// (binarised images)`, from every likelihood's [`PixelCoding`].
fn codable_likelihoods() -> String {
    let (mut levels, mut binary) = (Vec::new(), Vec::new());
    for kind in LikelihoodKind::value_variants() {
        let l = kind.build(LikelihoodSettings::default());
        match l.pixel_coding() {
            Ok(PixelCoding::Bernoulli) => binary.push(l.name()),
            Ok(_) => levels.push(l.name()),
            Err(_) => {}
        }
    }
    format!(
        "--likelihood {} (8-bit images) or {} (binarised images)",
        levels.join(" or "),
        binary.join(" or ")
    )
}

/// The activations with an exact forward pass, by their flag: `relu or tanh`.
fn exact_activations() -> String {
    let names: Vec<&str> = Activation::value_variants()
        .iter()
        .filter(|a| a.has_exact())
        .map(|a| a.name())
        .collect();
    names.join(" or ")
}

/// A trained VAE as a model of the coder. With one latent group: q(z|x) from the encoder on
/// x = v/255, p(x|z) from the decoder. With several (the hierarchical architecture): the
/// model's coding pass ([`Vae::coding_pass`]), each group's log-scales bounded here with
/// [`vae_codec::detmath`] as the model bounds them. Build it with [`CodecModel::new`], which
/// refuses what cannot code.
///
/// It holds the model with the exact kernels ([`Kernels::Exact`]): every forward pass through
/// [`CodecModel::vae`], the coder's and any other (such as the negative ELBO reported beside
/// the rate), gives the same bits on every CPU.
pub struct CodecModel {
    vae: Vae,
    coding: PixelCoding,
    pixels: usize,
}

fn model_err(e: impl std::fmt::Display) -> CodecError {
    CodecError::Model(e.to_string())
}

impl CodecModel {
    /// Checks that `vae` can code: a likelihood with a pixel model ([`PixelCoding`]), no
    /// labels, and an architecture with an exact forward pass; its kernels are capped at
    /// `simd`.
    pub fn new(vae: &Vae, simd: Option<SimdLevel>) -> Result<Self> {
        let cfg = vae.config();
        let coding = cfg.likelihood.pixel_coding().map_err(|why| {
            InferError::Unsupported(format!(
                "{why}: compress codes with runs trained with {}",
                codable_likelihoods()
            ))
        })?;
        cfg.arch.exact_forward().map_err(|why| {
            InferError::Unsupported(format!(
                "{why}, so a file could decode differently on another CPU: compress codes with \
                 runs trained with --activation {}",
                exact_activations()
            ))
        })?;
        if cfg.num_classes.is_some() {
            return Err(InferError::Unsupported(
                "compress does not code with a conditional model (its decoder needs the labels)"
                    .into(),
            ));
        }
        Ok(Self {
            vae: vae.with_kernels(Kernels::Exact { simd })?,
            coding,
            pixels: cfg.shape.dim(),
        })
    }

    /// The model with the exact kernels.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// The pixel model the likelihood codes with.
    pub fn coding(&self) -> PixelCoding {
        self.coding
    }

    /// Whether the pixel model codes binarised images (values 0 and 255) only.
    pub fn codes_binarised(&self) -> bool {
        self.coding == PixelCoding::Bernoulli
    }

    /// Values per image.
    pub fn pixels(&self) -> usize {
        self.pixels
    }

    /// Refuses pixel values the pixel model cannot code (a Bernoulli codes only 0 and 255);
    /// `name(i)` names image `i` in the message.
    pub fn check_values(&self, images: &[u8], name: impl Fn(usize) -> String) -> Result<()> {
        if !self.codes_binarised() {
            return Ok(());
        }
        match images.iter().position(|&v| v != 0 && v != 255) {
            None => Ok(()),
            Some(i) => Err(InferError::Unsupported(format!(
                "{}: pixel {} has the value {}, but a bernoulli model codes binarised images \
                 (values 0 and 255 only); grey levels need a discretized-logistic or \
                 beta-binomial model",
                name(i / self.pixels.max(1)),
                i % self.pixels.max(1),
                images[i]
            ))),
        }
    }

    /// `images` as the model's input, x = v/255 exactly as the datasets give it in training.
    fn input(&self, images: &[&[u8]]) -> vae_codec::Result<Tensor> {
        let d = self.pixels;
        if let Some(i) = images.iter().position(|im| im.len() != d) {
            return Err(CodecError::BadParameter(format!(
                "image {i} has {} values for a model of {d}",
                images[i].len()
            )));
        }
        let x: Vec<f32> = images
            .iter()
            .flat_map(|im| im.iter().map(|&v| v as f32 * (1.0 / 255.0)))
            .collect();
        Tensor::from_vec(x, (images.len(), d), &Device::Cpu).map_err(model_err)
    }

    /// The negative ELBO of each image (8-bit pixels, channel-major) in nats, with every
    /// latent group at its posterior mean: about what coding it costs, for choices made before
    /// coding (see [`padding`]).
    pub fn cost_at_means(&self, images: &[&[u8]]) -> Result<Vec<f64>> {
        let x = self
            .input(images)
            .map_err(|e| InferError::Input(e.to_string()))?;
        let eps = Tensor::zeros(
            (images.len(), self.vae.latent().noise_dim()),
            DType::F32,
            &Device::Cpu,
        )?;
        let t = self.vae.elbo_terms(&x, None, &eps)?;
        let cost = (&t.recon + &t.kl()?)?;
        Ok(cost.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
    }

    /// The raw decoder outputs for codes `zs`, one row each.
    fn decode_rows(&self, zs: &[Vec<f32>]) -> vae_codec::Result<Vec<Vec<f32>>> {
        let l = self.vae.latent_dim();
        let flat: Vec<f32> = zs.iter().flatten().copied().collect();
        let z = Tensor::from_vec(flat, (zs.len(), l), &Device::Cpu).map_err(model_err)?;
        let raw = self.vae.decode(&z, None).map_err(model_err)?;
        raw.to_vec2::<f32>().map_err(model_err)
    }

    /// The pixel model of one row of raw decoder outputs (see [`params_of`]).
    fn params(&self, raw: &[f32]) -> vae_codec::Result<PixelParams> {
        params_of(self.coding, raw, self.pixels)
    }
}

/// `mid + half · tanh((raw - mid)/half)`: the smooth bound of vae-core's discrete likelihoods
/// into (lo, hi), in f64 with the deterministic tanh.
fn bound(raw: f32, (lo, hi): (f32, f32)) -> f64 {
    let (mid, half) = (
        0.5 * (f64::from(lo) + f64::from(hi)),
        0.5 * (f64::from(hi) - f64::from(lo)),
    );
    mid + half * detmath::tanh((f64::from(raw) - mid) / half)
}

/// exp(bound(raw)) of every raw output: a positive parameter bounded on a log scale.
fn exp_bounded(raw: &[f32], log_bound: (f32, f32)) -> Vec<f64> {
    raw.iter()
        .map(|&v| detmath::exp(bound(v, log_bound)))
        .collect()
}

/// The pixel model of `raw`, one image's decoder outputs (`[P·D]`, block-major), through the
/// parameter maps of the training likelihoods ([`PixelCoding`] has the blocks and bounds):
/// - logistic mixture, K = 1: [means, raw log-scales], σ = exp(bound(raw));
///   K > 1: [K logit blocks, K mean blocks, K raw log-scale blocks], weights softmax(logits);
/// - beta-binomial: [raw α, raw β], ln α = bound(raw), the same for β;
/// - Bernoulli: logits, the value 1 written as 255.
pub fn params_of(coding: PixelCoding, raw: &[f32], d: usize) -> vae_codec::Result<PixelParams> {
    let blocks = coding.params_per_dim();
    if raw.len() != blocks * d {
        return Err(CodecError::Model(format!(
            "the decoder gave {} outputs for {d} pixels ({blocks} per pixel expected)",
            raw.len()
        )));
    }
    let f64s = |r: &[f32]| r.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    Ok(match coding {
        PixelCoding::LogisticMixture {
            components: 1,
            log_scale,
        } => PixelParams::Logistic {
            components: 1,
            weights: vec![1.0; d],
            means: f64s(&raw[..d]),
            scales: exp_bounded(&raw[d..], log_scale),
        },
        PixelCoding::LogisticMixture {
            components: k,
            log_scale,
        } => {
            // softmax over the K logits of each pixel, up to a factor the coder normalises away.
            let logits = &raw[..k * d];
            let mut weights = vec![0f64; k * d];
            for p in 0..d {
                let max = (0..k)
                    .map(|j| f64::from(logits[j * d + p]))
                    .fold(f64::NEG_INFINITY, f64::max);
                for j in 0..k {
                    weights[j * d + p] = detmath::exp(f64::from(logits[j * d + p]) - max);
                }
            }
            PixelParams::Logistic {
                components: k,
                weights,
                means: f64s(&raw[k * d..2 * k * d]),
                scales: exp_bounded(&raw[2 * k * d..], log_scale),
            }
        }
        PixelCoding::BetaBinomial { log_param } => PixelParams::BetaBinomial {
            alpha: exp_bounded(&raw[..d], log_param),
            beta: exp_bounded(&raw[d..], log_param),
        },
        PixelCoding::Bernoulli => PixelParams::Bernoulli {
            logits: f64s(raw),
            one: 255,
        },
    })
}

/// Per row, the Gaussians `gauss(mu, s)` of the means `mu` and scale parameters `s`
/// `[rows, dim]` (both f32 tensors).
fn row_gaussians(
    mu: &Tensor,
    s: &Tensor,
    gauss: impl Fn(f64, f64) -> Gaussian,
) -> vae_codec::Result<Vec<Vec<Gaussian>>> {
    let mu = mu.to_vec2::<f32>().map_err(model_err)?;
    let s = s.to_vec2::<f32>().map_err(model_err)?;
    Ok(mu
        .iter()
        .zip(&s)
        .map(|(m, r)| {
            m.iter()
                .zip(r)
                .map(|(&m, &r)| gauss(f64::from(m), f64::from(r)))
                .collect()
        })
        .collect())
}

/// The Gaussians of a coding pass's group, one list per row: log σ = L tanh(raw / L) with L
/// the group's bound, as the architecture bounds it, here with the deterministic tanh and exp.
fn group_gaussians(g: &CodingGaussian) -> vae_codec::Result<Vec<Vec<Gaussian>>> {
    let l = g.log_sigma_bound;
    row_gaussians(&g.mu, &g.raw_log_sigma, |mu, raw| Gaussian {
        mu,
        sigma: detmath::exp(l * detmath::tanh(raw / l)),
    })
}

/// What a decoder's first pass keeps for its second: the network's top-down states and each
/// group's priors as the coder's Gaussians (so that they are not converted again).
#[derive(Default)]
struct KeptPass {
    states: KeptStates,
    priors: Vec<Vec<Vec<Gaussian>>>,
}

/// Which pass [`CodecModel::pass`] runs.
enum PassKind<'k> {
    /// A whole top-down pass, with images or not, with p(x|z) or not.
    Plain {
        images: Option<&'k [&'k [u8]]>,
        pixels: bool,
    },
    /// Without images, with p(x|z), keeping the top-down states and the priors.
    Keeping(&'k mut KeptPass),
    /// The posteriors given the images at the kept states.
    Posteriors(&'k [&'k [u8]], &'k KeptPass),
}

impl CodecModel {
    /// One coding pass of a model of several groups: `choose` gets each group's priors and
    /// posteriors as the coder's Gaussians and gives back its values.
    fn pass(
        &self,
        kind: PassKind,
        rows: usize,
        choose: &mut Choose,
    ) -> vae_codec::Result<Vec<PixelParams>> {
        let dims = self.group_dims();
        let (plain, keeping, posteriors) = match kind {
            PassKind::Plain { images, pixels } => (Some((images, pixels)), None, None),
            PassKind::Keeping(k) => (None, Some(k), None),
            PassKind::Posteriors(images, k) => (None, None, Some((images, k))),
        };
        // The first pass keeps the priors it converted; the second takes them.
        let mut keep_priors = keeping.is_some().then(Vec::new);
        let kept_priors = posteriors.map(|(_, k)| &k.priors);
        // The callback's own error, kept whole: the model's error type cannot carry it.
        let mut failed: Option<CodecError> = None;
        let mut step = |g: usize, prior: Option<&CodingGaussian>, post: Option<&CodingGaussian>| {
            let mut run = || -> vae_codec::Result<Tensor> {
                let dim = dims.get(g).copied().unwrap_or(0);
                let converted;
                let priors = match (kept_priors.and_then(|k| k.get(g)), prior) {
                    (Some(k), _) => k,
                    (None, Some(p)) => {
                        converted = group_gaussians(p)?;
                        &converted
                    }
                    (None, None) => {
                        converted = vec![vec![Gaussian::STANDARD; dim]; rows];
                        &converted
                    }
                };
                let posts = post.map(group_gaussians).transpose()?;
                let values = choose(g, priors, posts.as_deref())?;
                if let Some(keep) = keep_priors.as_mut() {
                    keep.push(priors.clone());
                }
                if values.len() != rows || values.iter().any(|v| v.len() != dim) {
                    return Err(CodecError::BadParameter(format!(
                        "latent values of the wrong shape for group {g}"
                    )));
                }
                let flat: Vec<f32> = values.into_iter().flatten().collect();
                Tensor::from_vec(flat, (rows, dim), &Device::Cpu).map_err(model_err)
            };
            run().map_err(|e| {
                let m = e.to_string();
                failed = Some(e);
                vae_core::Error::Config(m)
            })
        };
        let raw = match (plain, keeping, posteriors) {
            (Some((images, pixels)), ..) => {
                let x = images.map(|im| self.input(im)).transpose()?;
                // Without pixels the pass stops after the last group.
                if pixels {
                    self.vae.coding_pass(x.as_ref(), rows, &mut step).map(Some)
                } else {
                    self.vae
                        .coding_pass_latents(x.as_ref(), rows, &mut step)
                        .map(|()| None)
                }
            }
            (_, Some(kept), _) => {
                let raw = self
                    .vae
                    .coding_pass_keeping(rows, &mut step, &mut kept.states)
                    .map(Some);
                kept.priors = keep_priors.take().unwrap_or_default();
                raw
            }
            (.., Some((images, kept))) => {
                let x = self.input(images)?;
                self.vae
                    .coding_posteriors(&x, rows, &kept.states, &mut step)
                    .map(|()| None)
            }
            (None, None, None) => Err(vae_core::Error::Config("a pass of no kind".into())),
        };
        let raw = match (raw, failed) {
            (_, Some(e)) => return Err(e),
            (r, None) => r.map_err(model_err)?,
        };
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        raw.to_vec2::<f32>()
            .map_err(model_err)?
            .iter()
            .map(|r| self.params(r))
            .collect()
    }

    fn one_group(&self) -> bool {
        self.vae.latent().groups.len() == 1
    }
}

impl LatentModel for CodecModel {
    fn group_dims(&self) -> Vec<usize> {
        self.vae.latent().groups.iter().map(|g| g.dim).collect()
    }

    fn top_down(
        &self,
        images: Option<&[&[u8]]>,
        rows: usize,
        pixels: bool,
        choose: &mut Choose,
    ) -> vae_codec::Result<Vec<PixelParams>> {
        if self.one_group() {
            return LatentModel::top_down(&OneGroup(self), images, rows, pixels, choose);
        }
        self.pass(PassKind::Plain { images, pixels }, rows, choose)
    }

    /// A model of several groups keeps its top-down states for the second pass.
    fn top_down_keeping(
        &self,
        rows: usize,
        choose: &mut Choose,
    ) -> vae_codec::Result<(Vec<PixelParams>, Kept)> {
        if self.one_group() {
            return Ok((self.top_down(None, rows, true, choose)?, Kept(None)));
        }
        let mut kept = KeptPass::default();
        let px = self.pass(PassKind::Keeping(&mut kept), rows, choose)?;
        Ok((px, Kept(Some(Box::new(kept)))))
    }

    fn posteriors_kept(
        &self,
        images: &[&[u8]],
        rows: usize,
        kept: Kept,
        choose: &mut Choose,
    ) -> vae_codec::Result<()> {
        match kept.0.and_then(|k| k.downcast::<KeptPass>().ok()) {
            Some(k) if !self.one_group() => self
                .pass(PassKind::Posteriors(images, &k), rows, choose)
                .map(|_| ()),
            _ => self.top_down(Some(images), rows, false, choose).map(|_| ()),
        }
    }
}

/// A single-latent model's view of a [`CodecModel`] (the driver's [`SingleLatentModel`]).
struct OneGroup<'b>(&'b CodecModel);

impl SingleLatentModel for OneGroup<'_> {
    fn latent_dim(&self) -> usize {
        self.0.vae.latent_dim()
    }

    fn posteriors(&self, images: &[&[u8]]) -> vae_codec::Result<Vec<Vec<Gaussian>>> {
        let x = self.0.input(images)?;
        let q = self.0.vae.encode(&x, None).map_err(model_err)?;
        row_gaussians(&q.mu, &q.logvar, Gaussian::from_mu_logvar)
    }

    fn pixel_params(&self, z: &[f32]) -> vae_codec::Result<PixelParams> {
        let mut p = self.pixel_params_batch(&[z.to_vec()])?;
        p.pop()
            .ok_or_else(|| model_err("the decoder gave no output"))
    }

    fn pixel_params_batch(&self, zs: &[Vec<f32>]) -> vae_codec::Result<Vec<PixelParams>> {
        self.0
            .decode_rows(zs)?
            .iter()
            .map(|r| self.0.params(r))
            .collect()
    }
}

/// The model fingerprint recorded in a file: SHA-256 of the model's configuration (as JSON) and
/// of every weight (in name order: the name, the shape, the f32 values), so that a file is
/// decoded only with the weights that wrote it.
pub fn fingerprint(vae: &Vae, varmap: &vae_core::candle_nn::VarMap) -> Result<[u8; 32]> {
    let cfg = serde_json::to_vec(vae.config())?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| InferError::Input("the model's variables are poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut bytes = Vec::new();
    for name in names {
        let t = vars[name].as_tensor();
        bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(t.dims().len() as u64).to_le_bytes());
        for &d in t.dims() {
            bytes.extend_from_slice(&(d as u64).to_le_bytes());
        }
        for v in t.flatten_all()?.to_vec1::<f32>()? {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(vae_codec::format::fingerprint(&cfg, &bytes))
}

#[cfg(test)]
mod tests;
