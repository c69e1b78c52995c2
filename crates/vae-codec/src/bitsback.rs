//! Bits-back coding with ANS (BB-ANS, Townsend, Bird & Barber 2019) on constriction's stack.
//!
//! Encoding one image x with a latent z:
//! 1. pop z from the stack with the quantised posterior q(z|x) (this *takes* about
//!    -log2 q(z|x) bits off the stack: the bits we get back),
//! 2. push x with p(x|z),
//! 3. push z with the quantised prior p(z).
//!
//! Decoding runs the three steps backwards: pop z with the prior, pop x with p(x|z), push z
//! back with q(z|x), which restores the stack as it was before the image. The net cost of an
//! image is -log2 p(x|z) - log2 p(z) + log2 q(z|x).
//!
//! The building blocks below work for any number of latent groups: a hierarchical model
//! with groups z_1..z_L, each with a conditional prior p(z_l | z_<l) and posterior
//! q(z_l | z_<l, x), pops the groups top-down with [`pop_latents`] (passing each group's
//! prior so that its bins follow it), pushes x, then pushes the groups bottom-up with
//! [`push_latents_prior`]. Bit-Swap (Kingma et al. 2019) interleaves these steps instead
//! (pop z_1, push x, pop z_2, push z_1, ...) so that fewer initial bits are needed; it uses the
//! same blocks in another order.
//!
//! The stack of each chunk starts from a fixed pseudo-random seed ([`seed_words`]) so that
//! the first image's latent is popped from random-looking bits; the seed words the coding
//! never touched are not stored (see [`Chunk`]).

use constriction::stream::{Decode, Encode};

use crate::detmath::log2;
use crate::models::{Bins, Coder, Gaussian, IntCdf, Model, PosteriorBins, UniformBins, PRECISION};
use crate::pixels::{beta_binomial_table, inverse, BernoulliCdf, LogisticCdf, PixelParams};
use crate::{CodecError, Result};

/// -log2 of a fixed-point probability.
fn bits_of(p: u32) -> f64 {
    PRECISION as f64 - log2(p as f64)
}

fn coder_err(e: impl std::fmt::Debug) -> CodecError {
    CodecError::Corrupt(format!("entropy coder: {e:?}"))
}

fn push<M: IntCdf>(coder: &mut Coder, symbol: u32, m: M) -> Result<f64> {
    let (l, r) = (m.cdf(symbol), m.cdf(symbol + 1));
    coder.encode_symbol(symbol, Model(m)).map_err(coder_err)?;
    Ok(bits_of(r - l))
}

fn pop<M: IntCdf + Copy>(coder: &mut Coder, m: M) -> Result<(u32, f64)> {
    let s = coder.decode_symbol(Model(m)).map_err(coder_err)?;
    Ok((s, bits_of(m.cdf(s + 1) - m.cdf(s))))
}

/// Pops one bin per latent dimension with the posterior (in dimension order); returns the
/// bins and the bits taken off the stack, Σ -log2 q.
pub fn pop_latents(
    coder: &mut Coder,
    bins: &Bins,
    priors: &[Gaussian],
    posteriors: &[Gaussian],
) -> Result<(Vec<u32>, f64)> {
    check_len(priors.len(), posteriors.len())?;
    let mut out = Vec::with_capacity(priors.len());
    let mut bits = 0.0;
    for (p, q) in priors.iter().zip(posteriors) {
        let m = PosteriorBins::new(bins, *p, *q)?;
        let (s, b) = pop(coder, m)?;
        out.push(m.first() + s);
        bits += b;
    }
    Ok((out, bits))
}

/// Pushes the bins back with the posterior (the inverse of [`pop_latents`]); returns the bits.
pub fn push_latents_posterior(
    coder: &mut Coder,
    bins: &Bins,
    priors: &[Gaussian],
    posteriors: &[Gaussian],
    idx: &[u32],
) -> Result<f64> {
    check_len(priors.len(), posteriors.len())?;
    check_len(priors.len(), idx.len())?;
    let mut bits = 0.0;
    for ((p, q), &i) in priors.iter().zip(posteriors).zip(idx).rev() {
        let m = PosteriorBins::new(bins, *p, *q)?;
        let s = i.wrapping_sub(m.first());
        if i >= bins.count() || s >= m.len() {
            return Err(CodecError::Corrupt(format!(
                "latent bin {i} lies outside its posterior's window (bins {}..{})",
                m.first(),
                m.first() + m.len()
            )));
        }
        bits += push(coder, s, m)?;
    }
    Ok(bits)
}

/// Pushes the bins with the prior, uniform over the bins (the inverse of
/// [`pop_latents_prior`]); returns the bits, `bins.bits()` per dimension.
pub fn push_latents_prior(coder: &mut Coder, bins: &Bins, idx: &[u32]) -> Result<f64> {
    let m = UniformBins { bits: bins.bits() };
    let mut total = 0.0;
    for &i in idx.iter().rev() {
        if i >= bins.count() {
            return Err(CodecError::BadParameter(format!(
                "latent bin {i} of {}",
                bins.count()
            )));
        }
        total += push(coder, i, m)?;
    }
    Ok(total)
}

/// Pops `n` bins with the prior, in dimension order.
pub fn pop_latents_prior(coder: &mut Coder, bins: &Bins, n: usize) -> Result<Vec<u32>> {
    let m = UniformBins { bits: bins.bits() };
    (0..n).map(|_| pop(coder, m).map(|(s, _)| s)).collect()
}

/// The latent values of the bins under their priors, as the decoder network takes them.
pub fn bin_values(bins: &Bins, priors: &[Gaussian], idx: &[u32]) -> Vec<f32> {
    priors
        .iter()
        .zip(idx)
        .map(|(p, &i)| bins.value(*p, i.min(bins.count() - 1)) as f32)
        .collect()
}

fn check_len(a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(CodecError::BadParameter(format!(
            "{a} priors for {b} posteriors or bins"
        )))
    }
}

/// Pushes an image's pixels with p(x|z) (last pixel first, so that they pop in order);
/// returns the bits, -log2 p(x|z).
pub fn push_pixels(coder: &mut Coder, params: &PixelParams, image: &[u8]) -> Result<f64> {
    let d = image.len();
    params.validate(d)?;
    let mut bits = 0.0;
    match params {
        PixelParams::Bernoulli { logits, one } => {
            for (i, (&x, &l)) in image.iter().zip(logits).enumerate().rev() {
                let s = match x {
                    0 => 0,
                    x if x == *one => 1,
                    x => {
                        return Err(CodecError::BadParameter(format!(
                            "pixel {i} is {x}: a Bernoulli model codes only 0 and {one}"
                        )))
                    }
                };
                bits += push(coder, s, BernoulliCdf::new(l))?;
            }
        }
        PixelParams::Logistic {
            components,
            weights,
            means,
            scales,
        } => {
            let inv = inverse(scales);
            for (i, &x) in image.iter().enumerate().rev() {
                let m = LogisticCdf::new(i, d, *components, weights, means, &inv);
                bits += push(coder, x as u32, m)?;
            }
        }
        PixelParams::BetaBinomial { alpha, beta } => {
            for (i, &x) in image.iter().enumerate().rev() {
                let t = beta_binomial_table(alpha[i], beta[i]);
                bits += push(coder, x as u32, &t)?;
            }
        }
    }
    Ok(bits)
}

/// Pops `pixels` pixels with p(x|z), in order.
pub fn pop_pixels(coder: &mut Coder, params: &PixelParams, pixels: usize) -> Result<Vec<u8>> {
    params.validate(pixels)?;
    let mut out = Vec::with_capacity(pixels);
    match params {
        PixelParams::Bernoulli { logits, one } => {
            for &l in logits {
                let (s, _) = pop(coder, BernoulliCdf::new(l))?;
                out.push(if s == 0 { 0 } else { *one });
            }
        }
        PixelParams::Logistic {
            components,
            weights,
            means,
            scales,
        } => {
            let inv = inverse(scales);
            for i in 0..pixels {
                let m = LogisticCdf::new(i, pixels, *components, weights, means, &inv);
                out.push(pop(coder, m)?.0 as u8);
            }
        }
        PixelParams::BetaBinomial { alpha, beta } => {
            for i in 0..pixels {
                let t = beta_binomial_table(alpha[i], beta[i]);
                out.push(pop(coder, &t)?.0 as u8);
            }
        }
    }
    Ok(out)
}

/// A VAE with one latent group, prior N(0, I), as the coder sees it.
pub trait SingleLatentModel: Sync {
    /// The number of latent dimensions.
    fn latent_dim(&self) -> usize;
    /// q(z|x) for each image (8-bit pixels, channel-major), `latent_dim` Gaussians each.
    fn posteriors(&self, images: &[&[u8]]) -> Result<Vec<Vec<Gaussian>>>;
    /// p(x|z) for one latent value.
    fn pixel_params(&self, z: &[f32]) -> Result<PixelParams>;
}

/// The coding parameters recorded in a file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecParams {
    /// Latent bins per dimension: 2^latent_bits.
    pub latent_bits: u32,
    /// Images per independently coded chunk (each with its own stack, coded in parallel).
    pub chunk_images: u32,
}

impl Default for CodecParams {
    fn default() -> Self {
        CodecParams {
            latent_bits: 16,
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

/// One chunk's compressed stack. `seed_prefix` leading words of the seed were never touched
/// and are left out of `words`: the stack is `seed_words(..)[..seed_prefix] ++ words`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seed_prefix: u32,
    pub words: Vec<u32>,
}

/// Bytes a chunk takes in a payload besides its words (two u32 counts).
pub const CHUNK_OVERHEAD_BYTES: usize = 8;

/// The result of [`encode`].
#[derive(Debug, Clone)]
pub struct Encoded {
    pub chunks: Vec<Chunk>,
    /// Per image, in image order.
    pub rates: Vec<ImageRate>,
}

impl Encoded {
    /// Bits of the chunks as stored (words and per-chunk counts).
    pub fn payload_bits(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| (c.words.len() * 4 + CHUNK_OVERHEAD_BYTES) as u64 * 8)
            .sum()
    }

    /// Σ of the images' net bits.
    pub fn net_bits(&self) -> f64 {
        self.rates.iter().map(ImageRate::net_bits).sum()
    }

    /// The payload's bits beyond the images' net bits: what the first image of each chunk
    /// could not get back, the coder's final state and the chunk counts.
    pub fn initial_bits(&self) -> f64 {
        self.payload_bits() as f64 - self.net_bits()
    }
}

/// The seed a chunk's stack starts from: enough words for the first image's latents
/// (each pop takes at most PRECISION bits) plus the coder's two state words, from SplitMix64
/// with a fixed seed.
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

/// Runs `f` on every chunk index on `threads` threads; results in chunk order. The work of a
/// chunk does not depend on which thread runs it.
fn par_chunks<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, n.max(1));
    let work = || {
        let mut mine = Vec::new();
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= n {
                break mine;
            }
            let r = f(c);
            let stop = r.is_err();
            mine.push((c, r));
            if stop {
                next.store(n, Ordering::Relaxed);
                break mine;
            }
        }
    };
    let mut all: Vec<(usize, Result<T>)> = if threads == 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut all = work();
            for h in handles {
                match h.join() {
                    Ok(v) => all.extend(v),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            all
        })
    };
    all.sort_by_key(|(c, _)| *c);
    let mut out = Vec::with_capacity(n);
    for (c, r) in all {
        if c != out.len() {
            break;
        }
        out.push(r?);
    }
    if out.len() != n {
        return Err(CodecError::BadParameter("a chunk was not coded".into()));
    }
    Ok(out)
}

/// Compresses `images` (`count * pixels` bytes, image after image) with `model`.
pub fn encode<M: SingleLatentModel>(
    model: &M,
    images: &[u8],
    pixels: usize,
    params: CodecParams,
    threads: usize,
) -> Result<Encoded> {
    let (count, bins, seed, latent) = setup(model, images.len(), pixels, params)?;
    let ranges = chunk_ranges(count, params.chunk_images as usize);
    let priors = vec![Gaussian::STANDARD; latent];
    let coded = par_chunks(ranges.len(), threads, |c| {
        let r = ranges[c].clone();
        let imgs: Vec<&[u8]> = r.clone().map(|i| &images[i * pixels..][..pixels]).collect();
        let posts = model.posteriors(&imgs)?;
        if posts.len() != imgs.len() || posts.iter().any(|p| p.len() != latent) {
            return Err(CodecError::BadParameter(format!(
                "the model gave posteriors of the wrong shape for {} images of {latent} latents",
                imgs.len()
            )));
        }
        let mut coder = seeded(&seed)?;
        let mut rates = Vec::with_capacity(imgs.len());
        for (img, post) in imgs.iter().zip(&posts) {
            let (idx, posterior_bits) = pop_latents(&mut coder, bins, &priors, post)?;
            let z = bin_values(bins, &priors, &idx);
            let px = model.pixel_params(&z)?;
            let pixel_bits = push_pixels(&mut coder, &px, img)?;
            let prior_bits = push_latents_prior(&mut coder, bins, &idx)?;
            rates.push(ImageRate {
                pixel_bits,
                prior_bits,
                posterior_bits,
            });
        }
        let words = coder.into_compressed().map_err(coder_err)?;
        let prefix = words.iter().zip(&seed).take_while(|(a, b)| a == b).count();
        let chunk = Chunk {
            seed_prefix: prefix as u32,
            words: words[prefix..].to_vec(),
        };
        Ok((chunk, rates))
    })?;
    let mut chunks = Vec::with_capacity(coded.len());
    let mut rates = Vec::with_capacity(count);
    for (c, r) in coded {
        chunks.push(c);
        rates.extend(r);
    }
    Ok(Encoded { chunks, rates })
}

fn setup<M: SingleLatentModel>(
    model: &M,
    bytes: usize,
    pixels: usize,
    params: CodecParams,
) -> Result<(usize, &'static Bins, Vec<u32>, usize)> {
    if pixels == 0 || !bytes.is_multiple_of(pixels) {
        return Err(CodecError::BadParameter(format!(
            "{bytes} bytes are not a whole number of {pixels}-pixel images"
        )));
    }
    if params.chunk_images == 0 {
        return Err(CodecError::BadParameter("chunks of 0 images".into()));
    }
    let latent = model.latent_dim();
    if latent == 0 {
        return Err(CodecError::BadParameter("a model with no latent".into()));
    }
    let bins = Bins::get(params.latent_bits)?;
    Ok((bytes / pixels, bins, seed_words(latent), latent))
}

/// Decompresses `count` images of `pixels` pixels from `chunks` (the inverse of [`encode`]).
pub fn decode<M: SingleLatentModel>(
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
    let (_, bins, seed, latent) = setup(model, bytes, pixels, params)?;
    let ranges = chunk_ranges(count, params.chunk_images as usize);
    if ranges.len() != chunks.len() {
        return Err(CodecError::Corrupt(format!(
            "{} chunks for {count} images in chunks of {}",
            chunks.len(),
            params.chunk_images
        )));
    }
    let priors = vec![Gaussian::STANDARD; latent];
    let parts = par_chunks(ranges.len(), threads, |c| {
        let chunk = &chunks[c];
        let prefix = chunk.seed_prefix as usize;
        if prefix > seed.len() {
            return Err(CodecError::Corrupt(format!(
                "chunk {c} claims a seed prefix of {prefix} words (the seed has {})",
                seed.len()
            )));
        }
        let mut words = seed[..prefix].to_vec();
        words.extend_from_slice(&chunk.words);
        let mut coder = Coder::from_compressed(words)
            .map_err(|_| CodecError::Corrupt(format!("chunk {c} ends in a zero word")))?;
        let n = ranges[c].len();
        let mut out = vec![0u8; n * pixels];
        for i in (0..n).rev() {
            let idx = pop_latents_prior(&mut coder, bins, latent)?;
            let z = bin_values(bins, &priors, &idx);
            let px = model.pixel_params(&z)?;
            let img = pop_pixels(&mut coder, &px, pixels)?;
            let post = model.posteriors(&[&img])?;
            let post = post.first().filter(|p| p.len() == latent).ok_or_else(|| {
                CodecError::BadParameter("the model gave a posterior of the wrong shape".into())
            })?;
            push_latents_posterior(&mut coder, bins, &priors, post, &idx)?;
            out[i * pixels..][..pixels].copy_from_slice(&img);
        }
        if coder.into_raw_parts() != seeded(&seed)?.into_raw_parts() {
            return Err(CodecError::Corrupt(format!(
                "chunk {c} does not decode back to its seed"
            )));
        }
        Ok(out)
    })?;
    Ok(parts.concat())
}
