//! The driver: images split into chunks, each chunk one independent stack, for a model with
//! any number of latent groups ([`LatentModel`]; a single-latent model is one through
//! [`SingleLatentModel`]).
//!
//! Encoding an image x with groups z_1 (the top) .. z_L: pop z_1 with q(z_1|x), then each z_l
//! with q(z_l | z_<l, x) (its bins follow the prior p(z_l | z_<l), so they depend on the values
//! popped above); push x with p(x|z); push z_L .. z_1 with their priors. Decoding pops z_1 ..
//! z_L with the priors (each group's values give the next group's prior), pops x, and pushes
//! the groups back with their posteriors, z_L first. The net cost is
//! -log2 p(x|z) - Σ log2 p(z_l | z_<l) + Σ log2 q(z_l | z_<l, x).
//!
//! A chunk's images are coded one after the other on its own stack (BB-ANS is sequential:
//! each image's latents are popped from what the previous image pushed). Chunks are
//! independent: the threads take contiguous groups of chunks and advance the chunks of a group
//! in lockstep, so that every model call covers one image of each chunk of the group (a batch
//! instead of single images). The bytes of a chunk depend only on its images, provided the
//! model's output for an image does not depend on the batch it is in (vae-core's exact mode
//! guarantees this).
//!
//! Each stack starts from fixed pseudo-random seed words ([`seed_words`]); seed words never
//! touched by the coding are not stored (see [`Chunk`]). What a chunk's first images pop off
//! its stack comes from the seed, and the file must carry it: popping every group of the first
//! image would cost some 14 bits per latent value (~99,000 bits for the hierarchical preset's
//! 7,088), more than a hundred images' worth of their own bits. So a chunk warms up along a
//! [`Plan`]: a list of steps, each raising one group's precision (3 bits, then 6, then 10, then
//! `latent_bits`: 2^b bins of equal mass under the prior, the value of a bin its median), all
//! groups top first at each precision. An image takes as many steps as the bits its
//! predecessors pushed can pay for (the first image the first step, its few bits from the
//! seed); a group no step has reached yet is set to its prior mean, a value both sides compute
//! without a bit. The steps taken never fall within a chunk; the image at which each step is
//! first taken is stored with the chunk ([`Chunk::levels`]). Coarse values of every group are
//! worth far more to the decoder than exact values of a few: the hierarchical preset's
//! −ELBO is within 1% with every latent at 4 bits (`examples/coding_levels.rs` in vae-infer),
//! for a third of the pops. This plays the part Bit-Swap (Kingma et al. 2019) plays for models
//! whose posteriors form a Markov chain, which a top-down hierarchy's (each group's posterior
//! depends on the image) do not: there the decoder can push a group back only once it has the
//! image, so every popped group must be paid for before the image is pushed.

use crate::bitsback::{
    bin_values, coder_err, pop_latents, pop_latents_prior, pop_pixels, push_latents_posterior,
    push_latents_prior, push_pixels,
};
pub use crate::chunk::{Chunk, Plan};
use crate::models::{Bins, Coder, Gaussian, PRECISION};
use crate::pixels::PixelParams;
use crate::{CodecError, Result};

/// The callback of [`LatentModel::top_down`]: given group `g` (0 the top), each row's prior
/// Gaussians of the group and (when the pass has images) its posterior Gaussians, it returns
/// each row's latent values of the group.
pub type Choose<'a> =
    dyn FnMut(usize, &[Vec<Gaussian>], Option<&[Vec<Gaussian>]>) -> Result<Vec<Vec<f32>>> + 'a;

/// A VAE with latent groups z_1 (the top) .. z_L as the coder sees it. It is called from
/// several threads at once.
pub trait LatentModel: Sync {
    /// The dimensions of each latent group, the top first.
    fn group_dims(&self) -> Vec<usize>;
    /// One top-down pass over `rows` rows: for each group in order, `choose` gets the rows'
    /// priors p(z_l | z_<l) and, with `images` (8-bit pixels, channel-major, one per row),
    /// their posteriors q(z_l | z_<l, x), and returns the values the pass conditions on.
    /// Returns p(x|z) per row when `pixels` is true (an empty list otherwise).
    fn top_down(
        &self,
        images: Option<&[&[u8]]>,
        rows: usize,
        pixels: bool,
        choose: &mut Choose,
    ) -> Result<Vec<PixelParams>>;

    /// A decoder's first pass: [`LatentModel::top_down`] without images, with p(x|z), keeping
    /// what [`LatentModel::posteriors_kept`] can reuse.
    fn top_down_keeping(
        &self,
        rows: usize,
        choose: &mut Choose,
    ) -> Result<(Vec<PixelParams>, Kept)> {
        Ok((self.top_down(None, rows, true, choose)?, Kept(None)))
    }

    /// A decoder's second pass, once it has the images: `choose` gets the same priors as in
    /// the first pass and the posteriors given the images (its values are taken as in
    /// [`LatentModel::top_down`], or ignored where `kept` holds where they led). By default
    /// the whole top-down pass again.
    fn posteriors_kept(
        &self,
        images: &[&[u8]],
        rows: usize,
        kept: Kept,
        choose: &mut Choose,
    ) -> Result<()> {
        let _ = kept;
        self.top_down(Some(images), rows, false, choose).map(|_| ())
    }
}

/// What a model's pass without images keeps for its pass with them at the same latent values
/// ([`LatentModel::top_down_keeping`], [`LatentModel::posteriors_kept`]): the model's own
/// (its top-down states), or nothing.
pub struct Kept(pub Option<Box<dyn std::any::Any + Send>>);

/// A VAE with one latent group, prior N(0, I), as the coder sees it. It is called from
/// several threads at once.
pub trait SingleLatentModel: Sync {
    /// The number of latent dimensions.
    fn latent_dim(&self) -> usize;
    /// q(z|x) for each image (8-bit pixels, channel-major), `latent_dim` Gaussians each.
    fn posteriors(&self, images: &[&[u8]]) -> Result<Vec<Vec<Gaussian>>>;
    /// p(x|z) for one latent value.
    fn pixel_params(&self, z: &[f32]) -> Result<PixelParams>;
    /// p(x|z) for several latent values (one batched pass where the model can).
    fn pixel_params_batch(&self, zs: &[Vec<f32>]) -> Result<Vec<PixelParams>> {
        zs.iter().map(|z| self.pixel_params(z)).collect()
    }
}

impl<M: SingleLatentModel> LatentModel for M {
    fn group_dims(&self) -> Vec<usize> {
        vec![self.latent_dim()]
    }

    fn top_down(
        &self,
        images: Option<&[&[u8]]>,
        rows: usize,
        pixels: bool,
        choose: &mut Choose,
    ) -> Result<Vec<PixelParams>> {
        let latent = self.latent_dim();
        let posts = images.map(|im| self.posteriors(im)).transpose()?;
        if let Some(p) = &posts {
            if p.len() != rows || p.iter().any(|q| q.len() != latent) {
                return Err(shape_err("posteriors"));
            }
        }
        let priors = vec![vec![Gaussian::STANDARD; latent]; rows];
        let zs = choose(0, &priors, posts.as_deref())?;
        if pixels {
            self.pixel_params_batch(&zs)
        } else {
            Ok(Vec::new())
        }
    }
}

/// The coding parameters recorded in a file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecParams {
    /// Latent bins per dimension: 2^latent_bits.
    pub latent_bits: u32,
    /// Images per independently coded chunk (each with its own stack).
    pub chunk_images: u32,
}

/// 2^14 bins per latent: on the synthetic images of `examples/coding_speed.rs` the rate is
/// lowest at 12 to 14 bits (finer bins give the decoder little, and widen the posterior's
/// window, whose leak costs rate), and the posterior search is shorter than at 16.
impl Default for CodecParams {
    fn default() -> Self {
        CodecParams {
            latent_bits: 14,
            chunk_images: 256,
        }
    }
}

/// The rate of one image in bits, from the quantised models.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImageRate {
    /// -log2 p(x|z).
    pub pixel_bits: f64,
    /// -log2 p(z).
    pub prior_bits: f64,
    /// -log2 q(z|x), the bits got back.
    pub posterior_bits: f64,
}

impl ImageRate {
    /// -log2 p(x|z) - log2 p(z) + log2 q(z|x).
    pub fn net_bits(&self) -> f64 {
        self.pixel_bits + self.prior_bits - self.posterior_bits
    }
}

/// The values of a group an image does not code: each latent at its prior's mean.
fn prior_means(priors: &[Gaussian]) -> Vec<f32> {
    priors.iter().map(|p| p.mu as f32).collect()
}

/// The result of [`encode`].
#[derive(Debug, Clone)]
pub struct Encoded {
    pub chunks: Vec<Chunk>,
    /// Per image, in image order.
    pub rates: Vec<ImageRate>,
}

impl Encoded {
    /// Bits of the chunks as stored (words, levels and per-chunk counts).
    pub fn payload_bits(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| c.stored_bytes() as u64 * 8)
            .sum()
    }

    /// Σ of the images' net bits.
    pub fn net_bits(&self) -> f64 {
        self.rates.iter().map(ImageRate::net_bits).sum()
    }

    /// The payload's bits beyond the images' net bits: per chunk, what was popped from the
    /// seed (which is not stored) and never got back, the coder's final state and the chunk's
    /// counts. A chunk's warm-up (its first images coding fewer groups) is in their net bits.
    pub fn initial_bits(&self) -> f64 {
        self.payload_bits() as f64 - self.net_bits()
    }
}

/// The seed a chunk's stack starts from: enough words for the first image's latents (each
/// pop takes at most PRECISION bits) plus the coder's two state words, from SplitMix64 with
/// a fixed seed.
pub fn seed_words(latent_dim: usize) -> Vec<u32> {
    let n = (latent_dim * PRECISION).div_ceil(32) + 2;
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            // Nonzero words only (a trailing zero word cannot be represented).
            ((z ^ (z >> 31)) as u32) | 1
        })
        .collect()
}

fn seeded(seed: &[u32]) -> Result<Coder> {
    Coder::from_binary(seed.to_vec()).map_err(coder_err)
}

/// The image ranges of the chunks.
fn chunk_ranges(count: usize, chunk: usize) -> Vec<std::ops::Range<usize>> {
    (0..count.div_ceil(chunk))
        .map(|c| c * chunk..((c + 1) * chunk).min(count))
        .collect()
}

/// Runs `f` on `threads` contiguous groups of `0..n` in parallel; the results in order.
fn par_groups<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(std::ops::Range<usize>) -> Result<Vec<T>> + Sync,
) -> Result<Vec<T>> {
    let parts = threads.clamp(1, n.max(1));
    let groups: Vec<_> = (0..parts)
        .map(|p| (p * n / parts)..((p + 1) * n / parts))
        .collect();
    let results: Vec<Result<Vec<T>>> = if parts == 1 {
        groups.into_iter().map(&f).collect()
    } else {
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = groups[1..]
                .iter()
                .map(|g| {
                    let g = g.clone();
                    s.spawn(move || f(g))
                })
                .collect();
            let mut out = vec![f(groups[0].clone())];
            for h in handles {
                out.push(match h.join() {
                    Ok(r) => r,
                    Err(p) => std::panic::resume_unwind(p),
                });
            }
            out
        })
    };
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// What a coding pass needs of a model: the images, the warm-up plan, the seed and the
/// groups' sizes.
struct Setup {
    count: usize,
    plan: Plan,
    seed: Vec<u32>,
    dims: Vec<usize>,
}

/// The bins of each group at the precisions `bits` (None for a group at its prior means).
fn group_bins(bits: &[u32]) -> Result<Vec<Option<&'static Bins>>> {
    bits.iter()
        .map(|&b| (b > 0).then(|| Bins::get(b)).transpose())
        .collect()
}

fn setup<M: LatentModel>(
    model: &M,
    bytes: usize,
    pixels: usize,
    params: CodecParams,
) -> Result<Setup> {
    if pixels == 0 || !bytes.is_multiple_of(pixels) {
        return Err(CodecError::BadParameter(format!(
            "{bytes} bytes are not a whole number of {pixels}-pixel images"
        )));
    }
    if params.chunk_images == 0 {
        return Err(CodecError::BadParameter("chunks of 0 images".into()));
    }
    let dims = model.group_dims();
    if dims.is_empty() || dims.contains(&0) {
        return Err(CodecError::BadParameter(format!(
            "a model with latent groups of {dims:?} dimensions"
        )));
    }
    if !crate::models::LATENT_BITS.contains(&params.latent_bits) {
        return Err(CodecError::BadParameter(format!(
            "latent bin precision {} is outside {}..={}",
            params.latent_bits,
            crate::models::LATENT_BITS.start(),
            crate::models::LATENT_BITS.end()
        )));
    }
    Ok(Setup {
        count: bytes / pixels,
        plan: Plan::new(&dims, params.latent_bits),
        seed: seed_words(dims.iter().sum()),
        dims,
    })
}

fn shape_err(what: &str) -> CodecError {
    CodecError::BadParameter(format!("the model gave {what} of the wrong shape"))
}

/// Checks what a model gave for group `g`: `rows` rows of `dim` values each.
fn check_rows<T>(rows: &[Vec<T>], n: usize, dim: usize, what: &str) -> Result<()> {
    if rows.len() != n || rows.iter().any(|r| r.len() != dim) {
        return Err(shape_err(what));
    }
    Ok(())
}

/// Compresses `images` (`count * pixels` bytes, image after image) with `model` on
/// `threads` threads. The result does not depend on `threads`.
pub fn encode<M: LatentModel>(
    model: &M,
    images: &[u8],
    pixels: usize,
    params: CodecParams,
    threads: usize,
) -> Result<Encoded> {
    let Setup {
        count,
        plan,
        seed,
        dims,
    } = setup(model, images.len(), pixels, params)?;
    let ranges = chunk_ranges(count, params.chunk_images as usize);
    let image = |i: usize| &images[i * pixels..][..pixels];
    let coded = par_groups(ranges.len(), threads, |group| {
        let ranges = &ranges[group];
        let mut coders = ranges
            .iter()
            .map(|_| seeded(&seed))
            .collect::<Result<Vec<_>>>()?;
        let mut rates = vec![Vec::new(); ranges.len()];
        // Per chunk: the steps of the plan its last image took, the bits its images left on
        // the stack, and where each step was first taken.
        let mut taken = vec![0usize; ranges.len()];
        let mut avail = vec![0.0f64; ranges.len()];
        let mut levels: Vec<Vec<u32>> = ranges
            .iter()
            .map(|r| vec![r.len() as u32; plan.len()])
            .collect();
        let longest = ranges.iter().map(|r| r.len()).max().unwrap_or(0);
        for step in 0..longest {
            let active: Vec<usize> = (0..ranges.len())
                .filter(|&c| step < ranges[c].len())
                .collect();
            for &c in &active {
                let k = plan.affordable(avail[c], taken[c]);
                for level in &mut levels[c][taken[c]..k] {
                    *level = step as u32;
                }
                taken[c] = k;
            }
            // Per row, each group's bins (None: at its prior means).
            let bins: Vec<Vec<Option<&Bins>>> = active
                .iter()
                .map(|&c| group_bins(&plan.precisions(taken[c])))
                .collect::<Result<_>>()?;
            let imgs: Vec<&[u8]> = active
                .iter()
                .map(|&c| image(ranges[c].start + step))
                .collect();
            let n = active.len();
            // Per row: the bins popped for each group it codes, and the bits they took.
            let mut popped: Vec<Vec<(&Bins, Vec<u32>)>> = vec![Vec::new(); n];
            let mut posterior_bits = vec![0.0; n];
            let px = model.top_down(Some(&imgs), n, true, &mut |g, priors, posts| {
                let posts = posts.ok_or_else(|| shape_err("no posteriors"))?;
                let dim = *dims.get(g).ok_or_else(|| shape_err("too many groups"))?;
                check_rows(priors, n, dim, "priors")?;
                check_rows(posts, n, dim, "posteriors")?;
                let mut values = Vec::with_capacity(n);
                for (r, &c) in active.iter().enumerate() {
                    let Some(bins) = bins[r][g] else {
                        values.push(prior_means(&priors[r]));
                        continue;
                    };
                    let (i, bits) = pop_latents(&mut coders[c], bins, &priors[r], &posts[r])?;
                    values.push(bin_values(bins, &priors[r], &i));
                    popped[r].push((bins, i));
                    posterior_bits[r] += bits;
                }
                Ok(values)
            })?;
            if px.len() != n
                || bins
                    .iter()
                    .zip(&popped)
                    .any(|(b, p)| p.len() != b.iter().flatten().count())
            {
                return Err(shape_err("pixel parameters or groups"));
            }
            for (r, &c) in active.iter().enumerate() {
                let pixel_bits = push_pixels(&mut coders[c], &px[r], imgs[r])?;
                let mut prior_bits = 0.0;
                for (bins, i) in popped[r].iter().rev() {
                    prior_bits += push_latents_prior(&mut coders[c], bins, i)?;
                }
                let rate = ImageRate {
                    pixel_bits,
                    prior_bits,
                    posterior_bits: posterior_bits[r],
                };
                avail[c] += rate.net_bits();
                rates[c].push(rate);
            }
        }
        coders
            .into_iter()
            .zip(rates)
            .zip(levels)
            .map(|((coder, rates), levels)| {
                let words = coder.into_compressed().map_err(coder_err)?;
                let prefix = words.iter().zip(&seed).take_while(|(a, b)| a == b).count();
                let chunk = Chunk {
                    seed_prefix: prefix as u32,
                    levels,
                    words: words[prefix..].to_vec(),
                };
                Ok((chunk, rates))
            })
            .collect()
    })?;
    let mut chunks = Vec::with_capacity(coded.len());
    let mut rates = Vec::with_capacity(count);
    for (c, r) in coded {
        chunks.push(c);
        rates.extend(r);
    }
    Ok(Encoded { chunks, rates })
}

/// What a decoder pushes back for one group of one image: its bins, its priors, its
/// posteriors and the bins it popped.
type Pushback<'a> = (&'a Bins, Vec<Gaussian>, Vec<Gaussian>, &'a [u32]);

/// Decompresses `count` images of `pixels` pixels from `chunks` (the inverse of [`encode`]).
pub fn decode<M: LatentModel>(
    model: &M,
    chunks: &[Chunk],
    count: usize,
    pixels: usize,
    params: CodecParams,
    threads: usize,
) -> Result<Vec<u8>> {
    let bytes = count
        .checked_mul(pixels)
        .ok_or_else(|| CodecError::BadParameter(format!("{count} images of {pixels} pixels")))?;
    let Setup {
        plan, seed, dims, ..
    } = setup(model, bytes, pixels, params)?;
    let ranges = chunk_ranges(count, params.chunk_images as usize);
    if ranges.len() != chunks.len() {
        return Err(CodecError::Corrupt(format!(
            "{} chunks for {count} images in chunks of {}",
            chunks.len(),
            params.chunk_images
        )));
    }
    let parts = par_groups(ranges.len(), threads, |group| {
        let first = group.start;
        let ranges = &ranges[group];
        let mut coders = Vec::with_capacity(ranges.len());
        let mine = &chunks[first..first + ranges.len()];
        for (k, (chunk, range)) in mine.iter().zip(ranges).enumerate() {
            let ordered = chunk.levels.windows(2).all(|w| w[0] <= w[1]);
            if chunk.levels.len() != plan.len()
                || !ordered
                || chunk.levels.iter().any(|&l| l as usize > range.len())
            {
                return Err(CodecError::Corrupt(format!(
                    "chunk {} gives {:?} as the images where the {} steps of its warm-up start",
                    first + k,
                    chunk.levels,
                    plan.len()
                )));
            }
            let prefix = chunk.seed_prefix as usize;
            if prefix > seed.len() {
                return Err(CodecError::Corrupt(format!(
                    "chunk {} claims a seed prefix of {prefix} words (the seed has {})",
                    first + k,
                    seed.len()
                )));
            }
            let mut words = seed[..prefix].to_vec();
            words.extend_from_slice(&chunk.words);
            coders.push(Coder::from_compressed(words).map_err(|_| {
                CodecError::Corrupt(format!("chunk {} ends in a zero word", first + k))
            })?);
        }
        let mut outs: Vec<Vec<u8>> = ranges.iter().map(|r| vec![0u8; r.len() * pixels]).collect();
        let longest = ranges.iter().map(|r| r.len()).max().unwrap_or(0);
        for step in 0..longest {
            // Images come off each stack last first.
            let active: Vec<usize> = (0..ranges.len())
                .filter(|&c| step < ranges[c].len())
                .collect();
            let n = active.len();
            // Each image's groups' bins, at the steps its chunk recorded.
            let bins: Vec<Vec<Option<&Bins>>> = active
                .iter()
                .map(|&c| {
                    group_bins(&plan.precisions(mine[c].steps_of(ranges[c].len() - 1 - step)))
                })
                .collect::<Result<_>>()?;
            // The groups top first, each group's bins with its prior.
            let mut idx: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); dims.len()]; n];
            let (px, kept) = model.top_down_keeping(n, &mut |g, priors, _| {
                let dim = *dims.get(g).ok_or_else(|| shape_err("too many groups"))?;
                check_rows(priors, n, dim, "priors")?;
                let mut values = Vec::with_capacity(n);
                for (r, &c) in active.iter().enumerate() {
                    let Some(bins) = bins[r][g] else {
                        values.push(prior_means(&priors[r]));
                        continue;
                    };
                    let i = pop_latents_prior(&mut coders[c], bins, dim)?;
                    values.push(bin_values(bins, &priors[r], &i));
                    idx[r][g] = i;
                }
                Ok(values)
            })?;
            if px.len() != n {
                return Err(shape_err("pixel parameters"));
            }
            let mut imgs = Vec::with_capacity(n);
            for (&c, p) in active.iter().zip(&px) {
                imgs.push(pop_pixels(&mut coders[c], p, pixels)?);
            }
            // The posteriors given the images and the same values, to push the bins back.
            let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
            let mut models: Vec<Vec<Pushback>> = vec![Vec::with_capacity(dims.len()); n];
            model.posteriors_kept(&refs, n, kept, &mut |g, priors, posts| {
                let posts = posts.ok_or_else(|| shape_err("no posteriors"))?;
                let dim = *dims.get(g).ok_or_else(|| shape_err("too many groups"))?;
                check_rows(priors, n, dim, "priors")?;
                check_rows(posts, n, dim, "posteriors")?;
                let mut values = Vec::with_capacity(n);
                for r in 0..n {
                    let Some(bins) = bins[r][g] else {
                        values.push(prior_means(&priors[r]));
                        continue;
                    };
                    values.push(bin_values(bins, &priors[r], &idx[r][g]));
                    models[r].push((bins, priors[r].clone(), posts[r].clone(), &idx[r][g]));
                }
                Ok(values)
            })?;
            for (r, &c) in active.iter().enumerate() {
                if models[r].len() != bins[r].iter().flatten().count() {
                    return Err(shape_err("groups"));
                }
                for (bins, p, q, i) in models[r].iter().rev() {
                    push_latents_posterior(&mut coders[c], bins, p, q, i)?;
                }
                let at = ranges[c].len() - 1 - step;
                outs[c][at * pixels..][..pixels].copy_from_slice(&imgs[r]);
            }
        }
        for (k, coder) in coders.into_iter().enumerate() {
            if coder.into_raw_parts() != seeded(&seed)?.into_raw_parts() {
                return Err(CodecError::Corrupt(format!(
                    "chunk {} does not decode back to its seed",
                    first + k
                )));
            }
        }
        Ok(outs)
    })?;
    Ok(parts.concat())
}
