//! Synthetic models and images for the coder's tests: images made of flat blocks with noise,
//! a "posterior" read off the block means, and a pixel model centred on the latent's block
//! level. They are crude VAEs, enough to give the coder realistic rates.

#![allow(dead_code)]

use vae_codec::{Gaussian, PixelParams, SingleLatentModel};

/// A small deterministic generator (SplitMix64).
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `count` images of `blocks` flat blocks of `block` pixels each, levels random, noise ±`noise`.
pub fn block_images(count: usize, blocks: usize, block: usize, noise: i32, seed: u64) -> Vec<u8> {
    let mut g = Gen(seed);
    let mut out = Vec::with_capacity(count * blocks * block);
    for _ in 0..count {
        for _ in 0..blocks {
            let level = 20 + (g.next() % 216) as i32;
            for _ in 0..block {
                let n = (g.next() % (2 * noise as u64 + 1)) as i32 - noise;
                out.push((level + n).clamp(0, 255) as u8);
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Logistic { components: usize },
    BetaBinomial,
    Bernoulli,
}

/// One latent per block: posterior N((mean - 127.5) / 50, sigma) from the block's mean; the
/// pixel model centred on 50 z + 127.5.
pub struct BlockModel {
    pub blocks: usize,
    pub block: usize,
    pub kind: Kind,
    pub sigma: f64,
    /// Multiplies every pixel scale (a badly calibrated model for the extreme tests).
    pub scale: f64,
}

impl BlockModel {
    pub fn pixels(&self) -> usize {
        self.blocks * self.block
    }
}

impl SingleLatentModel for BlockModel {
    fn latent_dim(&self) -> usize {
        self.blocks
    }

    fn posteriors(&self, images: &[&[u8]]) -> vae_codec::Result<Vec<Vec<Gaussian>>> {
        Ok(images
            .iter()
            .map(|img| {
                img.chunks(self.block)
                    .map(|b| {
                        let mut m = b.iter().map(|&v| v as f64).sum::<f64>() / b.len() as f64;
                        if matches!(self.kind, Kind::Bernoulli) {
                            m *= 255.0;
                        }
                        Gaussian {
                            mu: (m - 127.5) / 50.0,
                            sigma: self.sigma,
                        }
                    })
                    .collect()
            })
            .collect())
    }

    fn pixel_params(&self, z: &[f32]) -> vae_codec::Result<PixelParams> {
        let d = self.pixels();
        let level = |p: usize| (50.0 * z[p / self.block] as f64 + 127.5) / 255.0;
        Ok(match self.kind {
            Kind::Logistic { components } => {
                let mut weights = Vec::with_capacity(components * d);
                let mut means = Vec::with_capacity(components * d);
                let mut scales = Vec::with_capacity(components * d);
                for k in 0..components {
                    for p in 0..d {
                        weights.push(if k == 0 { 0.8 } else { 0.2 / components as f64 });
                        means.push(level(p) + 0.01 * k as f64);
                        scales.push(self.scale * 0.006 * (1 + k) as f64);
                    }
                }
                // Weights are given unnormalised: the model normalises them.
                PixelParams::Logistic {
                    components,
                    weights,
                    means,
                    scales,
                }
            }
            Kind::BetaBinomial => {
                // Mean 255 m with concentration 300 / scale.
                let c = 300.0 / self.scale;
                let (alpha, beta) = (0..d)
                    .map(|p| {
                        let m = level(p).clamp(0.01, 0.99);
                        (m * c, (1.0 - m) * c)
                    })
                    .unzip();
                PixelParams::BetaBinomial { alpha, beta }
            }
            Kind::Bernoulli => PixelParams::Bernoulli {
                logits: (0..d)
                    .map(|p| (level(p) - 0.5) * 20.0 / self.scale)
                    .collect(),
                one: 1,
            },
        })
    }
}

/// Two latent groups, top-down as the hierarchical VAE's: the top group one value per image
/// (prior N(0, 1), posterior from the image's mean), the lower one a value per block (prior
/// N(top, 0.5), posterior from the block's mean); the pixels centred on the lower group's
/// values, a logistic per pixel.
pub struct TwoGroups {
    pub blocks: usize,
    pub block: usize,
    pub sigma: f64,
}

impl vae_codec::LatentModel for TwoGroups {
    fn group_dims(&self) -> Vec<usize> {
        vec![1, self.blocks]
    }

    fn top_down(
        &self,
        images: Option<&[&[u8]]>,
        rows: usize,
        pixels: bool,
        choose: &mut vae_codec::Choose,
    ) -> vae_codec::Result<Vec<PixelParams>> {
        let level = |v: f64| Gaussian {
            mu: (v - 127.5) / 50.0,
            sigma: self.sigma,
        };
        let mean = |b: &[u8]| b.iter().map(|&v| v as f64).sum::<f64>() / b.len() as f64;
        let top_prior = vec![vec![Gaussian::STANDARD]; rows];
        let top_post = images.map(|im| im.iter().map(|i| vec![level(mean(i))]).collect::<Vec<_>>());
        let top = choose(0, &top_prior, top_post.as_deref())?;
        let priors: Vec<Vec<Gaussian>> = top
            .iter()
            .map(|t| {
                vec![
                    Gaussian {
                        mu: t[0] as f64,
                        sigma: 0.5
                    };
                    self.blocks
                ]
            })
            .collect();
        let posts = images.map(|im| {
            im.iter()
                .map(|i| i.chunks(self.block).map(|b| level(mean(b))).collect())
                .collect::<Vec<Vec<Gaussian>>>()
        });
        let lower = choose(1, &priors, posts.as_deref())?;
        if !pixels {
            return Ok(Vec::new());
        }
        let d = self.blocks * self.block;
        Ok(lower
            .iter()
            .map(|z| PixelParams::Logistic {
                components: 1,
                weights: vec![1.0; d],
                means: (0..d)
                    .map(|p| (50.0 * z[p / self.block] as f64 + 127.5) / 255.0)
                    .collect(),
                scales: vec![0.01; d],
            })
            .collect())
    }
}
