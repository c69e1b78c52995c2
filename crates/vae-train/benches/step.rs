//! One training step (forward, backward and the Adam update) of the reference workload (preset
//! `pytorch-example`) and of the `conv`, `iwae` (K = 5) and `hvae` presets, each at its
//! preset's batch size (128; 64 for `hvae`), with the fused kernels at 1 and 2 threads and along
//! the composite path at 1 thread:
//! `cargo bench -p vae-train --bench step`. The epoch-level figure against PyTorch is
//! `cargo xtask bench`.

// Benchmark set-up may unwrap: a failure there is a broken benchmark.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vae_core::candle_core::Device;
use vae_core::Preset;
use vae_run::flags::KernelChoice;
use vae_train::config::{RunConfig, TrainConfig};
use vae_train::step::Trainer;

fn step(c: &mut Criterion) {
    vae_core::device::configure_process();
    let splits = vae_data::resolve::load_sample().unwrap();
    let order = vae_data::epoch_order(splits.train.len(), 0, 1);
    for (preset, k) in [
        (Preset::PytorchExample, 1),
        (Preset::Conv, 1),
        (Preset::Iwae, 5),
        (Preset::Hvae, 1),
    ] {
        let batch = TrainConfig::preset(preset).batch_size;
        let name = if k > 1 {
            format!("train step, {preset} K={k}, batch {batch}")
        } else {
            format!("train step, {preset}, batch {batch}")
        };
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(batch as u64));
        if matches!(preset, Preset::Conv | Preset::Hvae) {
            g.sample_size(10);
        }
        for (fused, threads) in [(true, 1), (true, 2), (false, 1)] {
            step_of(&mut g, &splits, &order, preset, k, fused, threads);
        }
        g.finish();
    }
}

fn step_of(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    splits: &vae_data::Splits,
    order: &[usize],
    preset: Preset,
    k: usize,
    fused: bool,
    threads: usize,
) {
    let mut train = TrainConfig::preset(preset);
    train.threads = threads;
    train.kernels = if fused {
        KernelChoice::Native
    } else {
        KernelChoice::Composite
    };
    train.objective.iwae_k = k;
    let mut data = vae_data::DataConfig::default();
    if preset == Preset::Iwae {
        data.binarize = vae_data::Binarize::Dynamic;
    }
    let cfg = RunConfig {
        model: preset.model(splits.train.shape),
        data,
        train,
    };
    let mut batches = order.chunks_exact(cfg.train.batch_size).cycle();
    let mut t = Trainer::new(cfg, Device::Cpu).unwrap();
    let mut buf = Vec::new();
    let name = format!(
        "{} {threads} thread{}",
        if fused { "fused" } else { "composite" },
        if threads == 1 { "" } else { "s" }
    );
    g.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| {
            let batch = batches.next().unwrap();
            t.train_step(&splits.train, batch, 1.0, &mut buf).unwrap()
        });
    });
}

criterion_group!(benches, step);
criterion_main!(benches);
