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
//! [`crate::driver`] runs these blocks over many images, in the first of these orders.

use constriction::stream::model::EncoderModel;
use constriction::stream::{Decode, Encode};

use crate::detmath::log2;
use crate::models::{
    Bins, Coder, Gaussian, IntCdf, Interval, Model, PosteriorBins, Recording, UniformBins,
    PRECISION,
};
use crate::pixels::{beta_binomial_table, inverse, BernoulliCdf, LogisticCdf, PixelParams};
use crate::{CodecError, Result};

/// -log2 of a fixed-point probability.
fn bits_of(p: u32) -> f64 {
    PRECISION as f64 - log2(p as f64)
}

pub(crate) fn coder_err(e: impl std::fmt::Debug) -> CodecError {
    CodecError::Corrupt(format!("entropy coder: {e:?}"))
}

/// Pushes `symbol` with `m`, evaluating its CDF once (for the interval and its bits).
fn push<M: IntCdf>(coder: &mut Coder, symbol: u32, m: M) -> Result<f64> {
    let n = m.len();
    let (left, prob) = Model(m)
        .left_cumulative_and_probability(symbol)
        .ok_or_else(|| CodecError::BadParameter(format!("symbol {symbol} of a model of {n}")))?;
    coder
        .encode_symbol(symbol, Interval { left, prob })
        .map_err(coder_err)?;
    Ok(bits_of(prob.get()))
}

/// Pops a symbol with `m`; returns it and its bits (from the search's own interval).
fn pop<M: IntCdf>(coder: &mut Coder, m: M) -> Result<(u32, f64)> {
    let r = Recording {
        model: Model(m),
        last: std::cell::Cell::new(0),
    };
    let s = coder.decode_symbol(&r).map_err(coder_err)?;
    Ok((s, bits_of(r.last.get())))
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
