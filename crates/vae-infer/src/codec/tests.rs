//! The coder's pixel models are the training likelihoods: for random raw decoder outputs the
//! quantised probabilities of every level agree with vae-core's per-pixel pmfs (f64 references
//! of the likelihoods the model was trained with), to the resolution of the fixed-point models.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use vae_codec::models::{IntCdf, TOTAL};
use vae_codec::pixels::{beta_binomial_table, inverse, LogisticCdf};
use vae_codec::PixelParams;
use vae_core::likelihood::LikelihoodSettings;
use vae_core::ops::{beta_binomial_pixel_pmf, discretized_logistic_pixel_pmf};
use vae_core::{LikelihoodKind, PixelCoding, Rng};

use super::params_of;

/// The pixel model of the likelihood `kind` with `mixtures` components, as a run records it.
fn coding(kind: LikelihoodKind, mixtures: usize) -> PixelCoding {
    kind.build(LikelihoodSettings {
        mixtures,
        ..LikelihoodSettings::default()
    })
    .pixel_coding()
    .unwrap()
}

/// The probability of each symbol of an integer model.
fn masses(m: impl IntCdf) -> Vec<f64> {
    (0..m.len())
        .map(|i| (m.cdf(i + 1) - m.cdf(i)) as f64 / TOTAL as f64)
        .collect()
}

/// `n` raw outputs, spread over and beyond the bounds (a third of them far out).
fn raws(n: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed)
        .normal_vec(n)
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 3 == 0 { v * 12.0 } else { *v * 2.0 })
        .collect()
}

/// The leak of the fixed-point models moves a mass by at most 2^-21 plus 2^-15 of itself (the
/// bound vae-codec's own tests use); the f32-to-f64 difference of the maps adds little.
fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() < 1e-6 + 4e-5 * want,
        "{what}: {got} vs {want}"
    );
}

#[test]
fn logistic_pixels_match_the_training_likelihood() {
    let d = 7;
    for k in [1usize, 3, 5] {
        let pp = if k == 1 { 2 } else { 3 * k };
        let mut raw = raws(pp * d, k as u64);
        // Means near the data range (the first blocks after the logits).
        let first_mean = if k == 1 { 0 } else { k * d };
        for v in &mut raw[first_mean..first_mean + k * d] {
            *v = 0.5 + 0.4 * v.tanh();
        }
        let p = params_of(coding(LikelihoodKind::DiscretizedLogistic, k), &raw, d).unwrap();
        p.validate(d).unwrap();
        let PixelParams::Logistic {
            components,
            weights,
            means,
            scales,
        } = &p
        else {
            panic!("{p:?}")
        };
        assert_eq!(*components, k);
        let inv = inverse(scales);
        for px in 0..d {
            let got = masses(LogisticCdf::new(px, d, k, weights, means, &inv));
            let pixel: Vec<f64> = (0..pp).map(|b| f64::from(raw[b * d + px])).collect();
            let want = discretized_logistic_pixel_pmf(&pixel, k).unwrap();
            for v in 0..256 {
                close(got[v], want[v], &format!("K={k} pixel {px} level {v}"));
            }
        }
    }
}

#[test]
fn beta_binomial_pixels_match_the_training_likelihood() {
    let d = 11;
    let raw = raws(2 * d, 7);
    let p = params_of(coding(LikelihoodKind::BetaBinomial, 1), &raw, d).unwrap();
    p.validate(d).unwrap();
    let PixelParams::BetaBinomial { alpha, beta } = &p else {
        panic!("{p:?}")
    };
    for px in 0..d {
        let got = masses(&beta_binomial_table(alpha[px], beta[px]));
        let want = beta_binomial_pixel_pmf(f64::from(raw[px]), f64::from(raw[d + px]));
        for v in 0..256 {
            close(got[v], want[v], &format!("pixel {px} level {v}"));
        }
    }
}

#[test]
fn bernoulli_pixels_are_logits_with_one_as_255() {
    let raw = [-3.0f32, 0.0, 2.5];
    let p = params_of(coding(LikelihoodKind::Bernoulli, 1), &raw, 3).unwrap();
    assert_eq!(
        p,
        PixelParams::Bernoulli {
            logits: vec![-3.0, 0.0, 2.5],
            one: 255
        }
    );
}

#[test]
fn outputs_of_the_wrong_length_are_refused() {
    for (kind, k, n) in [
        (LikelihoodKind::DiscretizedLogistic, 1, 5),
        (LikelihoodKind::DiscretizedLogistic, 5, 10),
        (LikelihoodKind::BetaBinomial, 1, 3),
        (LikelihoodKind::Bernoulli, 1, 4),
    ] {
        let e = params_of(coding(kind, k), &vec![0.0; n], 3).unwrap_err();
        assert!(e.to_string().contains("outputs for 3 pixels"), "{e}");
    }
}
