//! Exact round trips of the bits-back coder with synthetic models, its rate accounting, and
//! its independence of the thread count.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{block_images, BlockModel, Kind};
use vae_codec::{decode, encode, CodecParams, SingleLatentModel};

fn model(kind: Kind) -> BlockModel {
    BlockModel {
        blocks: 8,
        block: 16,
        kind,
        sigma: 0.02,
        scale: 1.0,
    }
}

fn round_trip(m: &BlockModel, images: &[u8], params: CodecParams) -> vae_codec::Encoded {
    let d = m.pixels();
    let enc = encode(m, images, d, params, 2).unwrap();
    let back = decode(m, &enc.chunks, images.len() / d, d, params, 2).unwrap();
    assert!(back == images, "decoded images differ");
    enc
}

#[test]
fn logistic_mixture_round_trips_and_accounts_its_rate() {
    let m = model(Kind::Logistic { components: 3 });
    let images = block_images(700, 8, 16, 3, 1);
    let params = CodecParams {
        latent_bits: 16,
        chunk_images: 128,
    };
    let enc = round_trip(&m, &images, params);
    assert_eq!(enc.chunks.len(), 6);
    let payload = enc.payload_bits() as f64;
    let net = enc.net_bits();
    // Net bits per image: pixels ~ log2(7) ≈ 2.8 bits each at best with noise ±3; the
    // latents cost 16 bits each minus what the posterior gives back.
    let per_dim = net / images.len() as f64;
    assert!(per_dim > 2.0 && per_dim < 4.5, "{per_dim} bits/dim");
    // What the accounting leaves over: per chunk at most the first image's latents
    // (8 × 24 bits), the coder's final state (64 bits) and the chunk counts (64 bits).
    let initial = enc.initial_bits();
    assert!(initial > 0.0, "initial bits {initial}");
    assert!(
        initial < 6.0 * (8.0 * 24.0 + 128.0),
        "initial bits {initial}"
    );
    assert!(
        (payload - net) / payload < 0.005,
        "payload {payload} vs net {net}"
    );
    // Every image codes its latents (the first of each chunk at 3 bits, its few bits from
    // the seed) and gets bits back; the precision climbs 3, 6, 10 to 16 bits and never falls.
    assert!(enc
        .rates
        .iter()
        .all(|r| r.posterior_bits > 0.0 && r.prior_bits > 0.0));
    let precision: Vec<f64> = enc.rates.iter().map(|r| r.prior_bits / 8.0).collect();
    for (c, chunk) in precision.chunks(128).enumerate() {
        assert_eq!(chunk[0], 3.0, "chunk {c} starts at {} bits", chunk[0]);
        assert!(
            chunk.windows(2).all(|w| w[0] <= w[1]),
            "chunk {c}: {chunk:?}"
        );
        assert!(chunk.iter().all(|b| [3.0, 6.0, 10.0, 16.0].contains(b)));
        assert_eq!(
            *chunk.last().unwrap(),
            16.0,
            "chunk {c} never reached 16 bits"
        );
        // The levels say where each step starts: the first at image 0.
        let levels = &enc.chunks[c].levels;
        assert_eq!(levels.len(), 4);
        assert_eq!(levels[0], 0);
        for (j, &b) in [3.0, 6.0, 10.0, 16.0].iter().enumerate() {
            let first = chunk.iter().position(|&p| p >= b).unwrap();
            assert_eq!(levels[j] as usize, first, "chunk {c} step {j}");
        }
    }
}

#[test]
fn beta_binomial_and_bernoulli_round_trip() {
    let m = model(Kind::BetaBinomial);
    let images = block_images(150, 8, 16, 6, 2);
    round_trip(&m, &images, CodecParams::default());
    let m = model(Kind::Bernoulli);
    let binary: Vec<u8> = block_images(150, 8, 16, 60, 3)
        .iter()
        .map(|&v| (v > 127) as u8)
        .collect();
    let enc = round_trip(
        &m,
        &binary,
        CodecParams {
            latent_bits: 12,
            chunk_images: 50,
        },
    );
    let per_dim = enc.net_bits() / binary.len() as f64;
    // The block model is crude for thresholded noise (about 1.16 bits/dim measured): a bound
    // that a broken pixel model or latent accounting would exceed.
    assert!(per_dim > 0.5 && per_dim < 1.5, "{per_dim} bits/dim");
}

/// Parameters far from what the images need: tiny and huge posterior sigmas, pixel scales
/// a thousand times too small or too large, images at the extremes of the range.
#[test]
fn extreme_parameters_round_trip() {
    let mut images = block_images(40, 8, 16, 100, 4);
    images[..128].fill(0);
    images[128..256].fill(255);
    for kind in [
        Kind::Logistic { components: 1 },
        Kind::Logistic { components: 5 },
        Kind::BetaBinomial,
    ] {
        for sigma in [1e-12, 1e-3, 0.5, 3.0, 1e6] {
            for scale in [1e-4, 1.0, 1e3] {
                let m = BlockModel {
                    blocks: 8,
                    block: 16,
                    kind,
                    sigma,
                    scale,
                };
                for latent_bits in [4, 16] {
                    let params = CodecParams {
                        latent_bits,
                        chunk_images: 16,
                    };
                    round_trip(&m, &images, params);
                }
            }
        }
    }
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let m = model(Kind::Logistic { components: 2 });
    let images = block_images(300, 8, 16, 4, 5);
    let params = CodecParams {
        latent_bits: 14,
        chunk_images: 32,
    };
    let d = m.pixels();
    let one = encode(&m, &images, d, params, 1).unwrap();
    for threads in [2, 3, 16] {
        let many = encode(&m, &images, d, params, threads).unwrap();
        assert_eq!(one.chunks, many.chunks, "{threads} threads");
        assert_eq!(one.rates, many.rates);
        let back = decode(&m, &many.chunks, 300, d, params, threads).unwrap();
        assert!(back == images);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let m = model(Kind::Bernoulli);
    let images = block_images(3, 8, 16, 3, 6);
    let e = encode(&m, &images, m.pixels(), CodecParams::default(), 1).unwrap_err();
    assert!(e.to_string().contains("Bernoulli"), "{e}");
    let m = model(Kind::BetaBinomial);
    assert!(encode(&m, &images[..100], m.pixels(), CodecParams::default(), 1).is_err());
    let bad = CodecParams {
        latent_bits: 30,
        chunk_images: 4,
    };
    assert!(encode(&m, &images, m.pixels(), bad, 1).is_err());
    let bad = CodecParams {
        latent_bits: 12,
        chunk_images: 0,
    };
    assert!(encode(&m, &images, m.pixels(), bad, 1).is_err());
}

/// Decoding with another model or a damaged stack never panics: it fails, or gives other
/// pixels (which the file's checksum of the original then refuses).
#[test]
fn wrong_model_or_damaged_words_do_not_panic() {
    let m = model(Kind::Logistic { components: 2 });
    let images = block_images(64, 8, 16, 4, 7);
    let params = CodecParams {
        latent_bits: 12,
        chunk_images: 32,
    };
    let d = m.pixels();
    let enc = encode(&m, &images, d, params, 1).unwrap();
    let other = BlockModel {
        sigma: 0.3,
        ..model(Kind::Logistic { components: 2 })
    };
    match decode(&other, &enc.chunks, 64, d, params, 1) {
        Ok(back) => assert!(back != images),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for i in 0..enc.chunks[0].words.len() {
        let mut chunks = enc.chunks.clone();
        chunks[0].words[i] ^= 0x0100_0000;
        if let Ok(back) = decode(&m, &chunks, 64, d, params, 1) {
            assert!(
                back != images,
                "word {i} flipped and still decoded the same"
            );
        }
    }
    let mut chunks = enc.chunks.clone();
    chunks[1].seed_prefix = 1000;
    assert!(decode(&m, &chunks, 64, d, params, 1).is_err());
    assert!(decode(&m, &enc.chunks[..1], 64, d, params, 1).is_err());
    assert_eq!(m.latent_dim(), 8);
}

/// A chunk warms up: its first image codes the top group at 3 bits (a few bits from the
/// seed), later ones both groups at 3 bits, then at 6, then at the file's precision, as their
/// predecessors' bits allow; the levels say where, the file decodes, and what was popped off
/// the seed stays far below one image's full latent pops.
#[test]
fn a_chunk_codes_more_groups_as_its_stack_grows() {
    let m = common::TwoGroups {
        blocks: 16,
        block: 8,
        sigma: 0.05,
    };
    let images = block_images(30, 16, 8, 3, 5);
    let params = CodecParams {
        latent_bits: 12,
        chunk_images: 30,
    };
    let enc = encode(&m, &images, 128, params, 1).unwrap();
    // The steps: (top, 3), (below, 3), (top, 6), (below, 6), (top, 10), (below, 10),
    // (top, 12), (below, 12).
    let levels = &enc.chunks[0].levels;
    assert_eq!(levels.len(), 8);
    assert_eq!(levels[0], 0, "the first image took no step: {levels:?}");
    assert!(
        levels[1] >= 1,
        "the first image coded both groups: {levels:?}"
    );
    assert!(levels.windows(2).all(|w| w[0] <= w[1]), "{levels:?}");
    assert!(
        levels[7] < 30,
        "the chunk never reached 12 bits: {levels:?}"
    );
    // Each image's latent cost under the prior is its groups' values times their bits.
    let dims = [1.0, 16.0];
    for (i, r) in enc.rates.iter().enumerate() {
        let taken = levels.iter().filter(|&&l| l as usize <= i).count();
        let mut bits = [0.0f64; 2];
        for j in 0..taken {
            bits[j % 2] = [3.0, 6.0, 10.0, 12.0][j / 2];
        }
        let want = dims[0] * bits[0] + dims[1] * bits[1];
        assert!(
            (r.prior_bits - want).abs() < 1e-9,
            "image {i}: {taken} steps, {}",
            r.prior_bits
        );
    }
    let back = decode(&m, &enc.chunks, 30, 128, params, 2).unwrap();
    assert_eq!(back, images);
    // Popping every latent of the first image would have taken about 17 x 12 bits.
    assert!(enc.initial_bits() < 17.0 * 12.0, "{}", enc.initial_bits());
    // Levels that fall, name an image past the chunk, or miss steps are refused.
    for bad in [
        vec![0, 5, 3, 6, 6, 7, 8, 9],
        vec![0, 1, 2, 3, 4, 5, 6, 31],
        vec![0, 1],
    ] {
        let mut chunks = enc.chunks.clone();
        chunks[0].levels = bad;
        let e = decode(&m, &chunks, 30, 128, params, 1).unwrap_err();
        assert!(e.to_string().contains("steps of its warm-up"), "{e}");
    }
}
