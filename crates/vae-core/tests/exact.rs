//! Exact mode (`ops::set_exact`): a random mlp and a random conv VAE give bit-identical
//! encoder and decoder outputs at every SIMD level, with the batch split over 1 or 2 threads
//! and one image at a time, and agree with the normal path to f32 tolerance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{Device, Tensor};
use vae_core::fastmath::{set_simd_cap, SimdLevel};
use vae_core::{ops, par, DataShape, Preset, Rng, Vae};

fn outputs(model: &Vae, x: &Tensor, threads: usize) -> (Vec<u32>, Vec<u32>) {
    let n = x.dim(0).unwrap();
    let parts = par::map_ranges(n, threads, |r| {
        let xs = x.narrow(0, r.start, r.len()).unwrap();
        let q = model.encode(&xs, None).unwrap();
        let p = model.decode(&q.mu, None).unwrap();
        (Tensor::cat(&[&q.mu, &q.logvar], 1).unwrap(), p)
    });
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    for (e, d) in parts {
        enc.extend(
            e.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits()),
        );
        dec.extend(
            d.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits()),
        );
    }
    (enc, dec)
}

fn max_rel_diff(a: &[u32], b: &[u32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let (x, y) = (f32::from_bits(x), f32::from_bits(y));
            (x - y).abs() / (1.0 + y.abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn exact_mode_is_bit_identical_across_simd_levels_threads_and_batches() {
    let dev = Device::Cpu;
    for preset in [Preset::PytorchExample, Preset::Conv] {
        let cfg = preset.model(DataShape::image(1, 28, 28));
        let (_vars, model) = Vae::init(&cfg, &dev, &mut Rng::new(3)).unwrap();
        let n = 6;
        let pixels: Vec<f32> = Rng::new(4)
            .normal_vec(n * 784)
            .iter()
            .map(|v| (v.abs() * 0.3).min(1.0))
            .collect();
        let x = Tensor::from_vec(pixels, (n, 784), &dev).unwrap();
        let normal = outputs(&model, &x, 1);
        let guard = ops::ExactGuard::new();
        assert!(ops::exact());
        set_simd_cap(None);
        let want = outputs(&model, &x, 1);
        assert!(
            max_rel_diff(&want.0, &normal.0) < 1e-4,
            "{preset:?} encoder"
        );
        assert!(
            max_rel_diff(&want.1, &normal.1) < 1e-4,
            "{preset:?} decoder"
        );
        for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
            set_simd_cap(Some(level));
            for threads in [1, 2, n] {
                assert_eq!(
                    outputs(&model, &x, threads),
                    want,
                    "{preset:?} {level:?} {threads} threads"
                );
            }
        }
        set_simd_cap(None);
        drop(guard);
        assert!(!ops::exact());
    }
}
