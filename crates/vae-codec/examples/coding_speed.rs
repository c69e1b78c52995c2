//! Speed of the bits-back coding itself on Fashion-MNIST-sized images (784 pixels, 20
//! latents) with a model whose networks cost nothing: the parameters are simple functions of
//! the latent. Prints encode and decode images per second for each pixel model and thread count.
//!
//! `cargo run --release -p vae-codec --example coding_speed [-- IMAGES]`

use std::time::Instant;

use vae_codec::{decode, encode, CodecParams, Gaussian, PixelParams, SingleLatentModel};

const D: usize = 784;
const L: usize = 20;

struct Synthetic {
    kind: usize,
    components: usize,
}

impl SingleLatentModel for Synthetic {
    fn latent_dim(&self) -> usize {
        L
    }
    fn posteriors(&self, images: &[&[u8]]) -> vae_codec::Result<Vec<Vec<Gaussian>>> {
        Ok(images
            .iter()
            .map(|img| {
                img.chunks(D.div_ceil(L))
                    .map(|b| Gaussian {
                        mu: (b.iter().map(|&v| v as f64).sum::<f64>() / b.len() as f64 - 127.5)
                            / 60.0,
                        sigma: 0.05,
                    })
                    .collect()
            })
            .collect())
    }
    fn pixel_params(&self, z: &[f32]) -> vae_codec::Result<PixelParams> {
        let level =
            |p: usize| ((60.0 * z[p / D.div_ceil(L)] as f64 + 127.5) / 255.0).clamp(0.01, 0.99);
        Ok(match self.kind {
            0 => {
                let k = self.components;
                PixelParams::Logistic {
                    components: k,
                    weights: vec![1.0 / k as f64; k * D],
                    means: (0..k * D)
                        .map(|i| level(i % D) + 0.002 * (i / D) as f64)
                        .collect(),
                    scales: vec![0.02; k * D],
                }
            }
            1 => PixelParams::BetaBinomial {
                alpha: (0..D).map(|p| 50.0 * level(p)).collect(),
                beta: (0..D).map(|p| 50.0 * (1.0 - level(p))).collect(),
            },
            _ => PixelParams::Bernoulli {
                logits: (0..D).map(|p| 8.0 * (level(p) - 0.5)).collect(),
                one: 1,
            },
        })
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    // Images of 20 flat blocks with a little noise.
    let mut s = 1u64;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let mut images = Vec::with_capacity(n * D);
    for _ in 0..n {
        let levels: Vec<u32> = (0..L).map(|_| 30 + rnd() % 190).collect();
        for p in 0..D {
            images.push((levels[p / D.div_ceil(L)] + rnd() % 9) as u8);
        }
    }
    // Rate and speed against the latent bin precision (logistic K=1, 2 threads).
    let model = Synthetic {
        kind: 0,
        components: 1,
    };
    for latent_bits in [8, 10, 12, 14, 16, 18] {
        let params = CodecParams {
            latent_bits,
            chunk_images: 256,
        };
        let t = Instant::now();
        let enc = encode(&model, &images, D, params, 2).expect("encode");
        let te = t.elapsed().as_secs_f64();
        println!(
            "latent bits {latent_bits:2}: {:.4} bits/dim ({:.4} net), initial bits {:.0} ({} chunks), encode {:5.0} images/s",
            enc.payload_bits() as f64 / (n * D) as f64,
            enc.net_bits() / (n * D) as f64,
            enc.initial_bits(),
            enc.chunks.len(),
            n as f64 / te
        );
    }
    let params = CodecParams::default();
    for (name, model) in [
        (
            "logistic K=1",
            Synthetic {
                kind: 0,
                components: 1,
            },
        ),
        (
            "logistic K=5",
            Synthetic {
                kind: 0,
                components: 5,
            },
        ),
        (
            "beta-binomial",
            Synthetic {
                kind: 1,
                components: 0,
            },
        ),
        (
            "bernoulli",
            Synthetic {
                kind: 2,
                components: 0,
            },
        ),
    ] {
        let imgs: Vec<u8> = if model.kind == 2 {
            images.iter().map(|&v| (v > 127) as u8).collect()
        } else {
            images.clone()
        };
        for threads in [1, 2] {
            let t = Instant::now();
            let enc = encode(&model, &imgs, D, params, threads).expect("encode");
            let te = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let back = decode(&model, &enc.chunks, n, D, params, threads).expect("decode");
            let td = t.elapsed().as_secs_f64();
            assert!(back == imgs);
            println!(
                "{name:14} threads {threads}: encode {:7.0} images/s, decode {:7.0} images/s, {:.3} bits/dim",
                n as f64 / te,
                n as f64 / td,
                enc.payload_bits() as f64 / (n * D) as f64
            );
        }
    }
}
