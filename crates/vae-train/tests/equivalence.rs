//! The speed work changes no result: a fixed-seed run's loss curve with the fused CPU kernels
//! and data-parallel shards matches the unoptimised path (composite candle operations, one
//! thread: what a GPU runs) within float tolerance.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vae_core::candle_core::Device;
use vae_core::Preset;
use vae_run::flags::KernelChoice;
use vae_train::config::{RunConfig, TrainConfig};
use vae_train::step::Trainer;

fn curve(preset: Preset, fused: bool, threads: usize, steps: usize) -> Vec<f64> {
    let splits = vae_data::resolve::load_sample().unwrap();
    let mut train = TrainConfig::preset(preset);
    train.threads = threads;
    train.kernels = if fused {
        KernelChoice::Native
    } else {
        KernelChoice::Composite
    };
    let cfg = RunConfig {
        model: preset.model(splits.train.shape),
        data: vae_data::DataConfig::default(),
        train,
    };
    let mut t = Trainer::new(cfg, Device::Cpu).unwrap();
    let order = vae_data::epoch_order(splits.train.len(), 0, 1);
    let mut buf = Vec::new();
    order
        .chunks(128)
        .take(steps)
        .map(|batch| {
            t.train_step(&splits.train, batch, 1.0, &mut buf)
                .unwrap()
                .neg_elbo
                / batch.len() as f64
        })
        .collect()
}

fn close(a: &[f64], b: &[f64], rel: f64, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * y.abs(),
            "{what}: step {i}: {x} vs {y}\n{a:?}\n{b:?}"
        );
    }
}

#[test]
fn fused_and_parallel_training_follows_the_reference_path() {
    for (preset, steps) in [
        (Preset::PytorchExample, 40),
        (Preset::Iwae, 20),
        (Preset::Conv, 8),
    ] {
        let reference = curve(preset, false, 1, steps);
        let fused = curve(preset, true, 1, steps);
        let parallel = curve(preset, true, 2, steps);
        // The loss falls, so the comparison is not of constants.
        assert!(
            reference.last().unwrap() < &(reference[0] * 0.9),
            "{preset}: {reference:?}"
        );
        // Different summation orders only: agreement to about 1e-4 after dozens of steps.
        close(
            &fused,
            &reference,
            2e-4,
            &format!("{preset} fused vs reference"),
        );
        close(
            &parallel,
            &reference,
            2e-4,
            &format!("{preset} 2 threads vs reference"),
        );
    }
}
