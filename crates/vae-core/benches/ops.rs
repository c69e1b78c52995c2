//! Micro-benchmarks of the CPU hot spots of training, each beside its composite twin (the same
//! maths in plain candle operations): `cargo bench -p vae-core --bench ops`. Shapes are those of
//! preset `pytorch-example` at batch 128 (784-400-20), and of preset `conv` for the convolutions.

// Benchmark set-up may unwrap: a failure there is a broken benchmark.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vae_core::candle_core::{Device, Tensor, Var};
use vae_core::ops::{self, Act, Kernels};
use vae_core::{fastmath, Rng};

const BATCH: usize = 128;
const IN: usize = 784;
const HIDDEN: usize = 400;

fn normal(rng: &mut Rng, rows: usize, cols: usize, scale: f32) -> Tensor {
    let v: Vec<f32> = rng
        .normal_vec(rows * cols)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// A variable of the given 4-d shape, standard normal values.
fn feature_map(rng: &mut Rng, dims: (usize, usize, usize, usize)) -> Var {
    let n = dims.0 * dims.1 * dims.2 * dims.3;
    Var::from_tensor(&normal(rng, 1, n, 1.0).reshape(dims).unwrap()).unwrap()
}

/// A 4x4 kernel `[o, c, 4, 4]` (the conv preset's second, `[64, 32, 4, 4]`, and its first and
/// last, `[32, 1, 4, 4]`).
fn conv_kernel(rng: &mut Rng, o: usize, c: usize) -> Var {
    let w = normal(rng, o, c * 16, 0.04);
    Var::from_tensor(&w.reshape((o, c, 4, 4)).unwrap()).unwrap()
}

/// A bias of `n` values.
fn bias(rng: &mut Rng, n: usize) -> Var {
    Var::from_tensor(&normal(rng, 1, n, 0.04).squeeze(0).unwrap()).unwrap()
}

fn with_paths(c: &mut Criterion, group: &str, mut f: impl FnMut(Kernels) -> Tensor) {
    // As in the binaries: candle on one thread, the process's allocator settings.
    vae_core::device::configure_process();
    let mut g = c.benchmark_group(group);
    for (k, name) in [
        (Kernels::Native, "fused"),
        (Kernels::Composite, "composite"),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(f(k)));
        });
    }
    g.finish();
}

/// The encoder's first layer (ReLU) and the decoder's output layer (identity: logits), forward
/// and backward with respect to the weights.
fn linear(c: &mut Criterion) {
    let mut rng = Rng::new(0);
    let x = normal(&mut rng, BATCH, IN, 1.0);
    let w = Var::from_tensor(&normal(&mut rng, HIDDEN, IN, 0.03)).unwrap();
    let b = Var::from_tensor(&normal(&mut rng, 1, HIDDEN, 0.03).squeeze(0).unwrap()).unwrap();
    with_paths(c, "linear 784->400 relu, forward+backward", |k| {
        let y = ops::linear(&x, &w, &b, Act::Relu, k).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        grads.get(w.as_tensor()).unwrap().clone()
    });
    let h = Var::from_tensor(&normal(&mut rng, BATCH, HIDDEN, 1.0)).unwrap();
    let w2 = Var::from_tensor(&normal(&mut rng, IN, HIDDEN, 0.05)).unwrap();
    let b2 = Var::from_tensor(&normal(&mut rng, 1, IN, 0.05).squeeze(0).unwrap()).unwrap();
    with_paths(c, "linear 400->784 identity, forward+backward", |k| {
        let y = ops::linear(&h, &w2, &b2, Act::Identity, k).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        grads.get(h.as_tensor()).unwrap().clone()
    });
}

/// The Bernoulli log-likelihood of a batch, summed per example, forward and backward.
fn bernoulli(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let logits = Var::from_tensor(&normal(&mut rng, BATCH, IN, 3.0)).unwrap();
    let x: Vec<f32> = (0..BATCH * IN).map(|i| (i % 256) as f32 / 255.0).collect();
    let x = Tensor::from_vec(x, (BATCH, IN), &Device::Cpu).unwrap();
    with_paths(c, "bernoulli log-prob 128x784, forward+backward", |k| {
        let lp = ops::bernoulli_log_prob(&logits, &x, k).unwrap();
        let grads = lp.sum_all().unwrap().backward().unwrap();
        grads.get(logits.as_tensor()).unwrap().clone()
    });
}

/// The two likelihoods over 8-bit levels of a batch, summed per example, forward and backward:
/// the discretized logistic with 1 and 5 components, and the beta-binomial.
fn discrete(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..BATCH * IN)
        .map(|i| ((i * 37) % 256) as f32 / 255.0)
        .collect();
    let x = Tensor::from_vec(x, (BATCH, IN), &Device::Cpu).unwrap();
    for mixtures in [1usize, 5] {
        let pp = ops::discretized_logistic_params_per_dim(mixtures);
        let params = Var::from_tensor(&normal(&mut rng, BATCH, pp * IN, 1.0)).unwrap();
        let name = format!("discretized logistic K={mixtures} log-prob 128x784, forward+backward");
        with_paths(c, &name, |k| {
            let lp = ops::discretized_logistic_log_prob(&params, &x, mixtures, k).unwrap();
            let grads = lp.sum_all().unwrap().backward().unwrap();
            grads.get(params.as_tensor()).unwrap().clone()
        });
    }
    let params = Var::from_tensor(&normal(&mut rng, BATCH, 2 * IN, 3.0)).unwrap();
    with_paths(c, "beta-binomial log-prob 128x784, forward+backward", |k| {
        let lp = ops::beta_binomial_log_prob(&params, &x, k).unwrap();
        let grads = lp.sum_all().unwrap().backward().unwrap();
        grads.get(params.as_tensor()).unwrap().clone()
    });
}

/// The vectorised scalar functions against the standard library's.
fn math(c: &mut Criterion) {
    let n = BATCH * IN;
    let xs: Vec<f32> = (0..n)
        .map(|i| (i as f32 / n as f32) * 40.0 - 20.0)
        .collect();
    let mut out = vec![0f32; n];
    let mut g = c.benchmark_group("exp over 100,352 values");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("fastmath", |b| {
        b.iter(|| {
            for (o, &x) in out.iter_mut().zip(black_box(&xs)) {
                *o = fastmath::exp(x);
            }
            black_box(&out);
        });
    });
    g.bench_function("std", |b| {
        b.iter(|| {
            for (o, &x) in out.iter_mut().zip(black_box(&xs)) {
                *o = x.exp();
            }
            black_box(&out);
        });
    });
    g.finish();

    let mut eps = vec![0f32; BATCH * 20];
    let mut rng = Rng::new(2);
    let mut g = c.benchmark_group("normal draws, 128x20");
    g.throughput(Throughput::Elements(eps.len() as u64));
    g.bench_function("Rng::fill_normal", |b| {
        b.iter(|| {
            rng.fill_normal(&mut eps);
            black_box(&eps);
        });
    });
    g.finish();
}

/// The inner layers of preset `conv` at batch 128, forward and backward (input, kernel and bias
/// gradients): the encoder's conv 32->64 (channels-last in, NCHW out) and the decoder's
/// transposed conv 64->32 (NCHW in, channels-last out), both with their ReLU.
fn conv(c: &mut Criterion) {
    use vae_core::ops::{ConvOpts, MapLayout};
    let mut rng = Rng::new(1);
    let x = feature_map(&mut rng, (BATCH, 14, 14, 32));
    let w = conv_kernel(&mut rng, 64, 32);
    let b = bias(&mut rng, 64);
    let o = ConvOpts::new(2, 1)
        .act(Act::Relu)
        .layouts(MapLayout::Nhwc, MapLayout::Nchw);
    with_paths(c, "conv2d 32->64 14x14 relu, forward+backward", |k| {
        let y = ops::conv2d_with(&x, &w, &b, o.kernels(k)).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        grads.get(x.as_tensor()).unwrap().clone()
    });
    let z = feature_map(&mut rng, (BATCH, 64, 7, 7));
    let bt = bias(&mut rng, 32);
    let o = o.layouts(MapLayout::Nchw, MapLayout::Nhwc);
    with_paths(
        c,
        "conv-transpose2d 64->32 7x7 relu, forward+backward",
        |k| {
            let y = ops::conv_transpose2d_with(&z, &w, &bt, o.kernels(k)).unwrap();
            let grads = y.sum_all().unwrap().backward().unwrap();
            grads.get(z.as_tensor()).unwrap().clone()
        },
    );
}

/// The conv preset's second convolution and the transposed one that mirrors it, and its first
/// and last layers (to and from a one-channel image), forward alone and forward and backward, with the direct products of AVX-512 CPUs (`direct`) and with
/// im2col and `gemm` (`im2col`: the same operation with this thread's kernels capped at AVX2,
/// which leaves the products' own AVX-512 kernels in place). On a CPU without AVX-512 both
/// take im2col.
fn conv_direct(c: &mut Criterion) {
    use vae_core::ops::{ConvOpts, MapLayout};
    vae_core::device::configure_process();
    let mut rng = Rng::new(2);
    let x = feature_map(&mut rng, (BATCH, 14, 14, 32));
    let z = feature_map(&mut rng, (BATCH, 7, 7, 64));
    let w = conv_kernel(&mut rng, 64, 32);
    let b = bias(&mut rng, 64);
    let bt = bias(&mut rng, 32);
    let o = ConvOpts::new(2, 1)
        .act(Act::Relu)
        .layouts(MapLayout::Nhwc, MapLayout::Nhwc);
    let conv = |backward: bool| {
        let y = ops::conv2d_with(&x, &w, &b, o).unwrap();
        if backward {
            let g = y.sum_all().unwrap().backward().unwrap();
            g.get(w.as_tensor()).unwrap().clone()
        } else {
            y
        }
    };
    let convt = |backward: bool| {
        let y = ops::conv_transpose2d_with(&z, &w, &bt, o).unwrap();
        if backward {
            let g = y.sum_all().unwrap().backward().unwrap();
            g.get(w.as_tensor()).unwrap().clone()
        } else {
            y
        }
    };
    // The first and last layers, between an image of one channel and 32 (runs of 4 values).
    let x1 = feature_map(&mut rng, (BATCH, 28, 28, 1));
    let z1 = feature_map(&mut rng, (BATCH, 14, 14, 32));
    let w1 = conv_kernel(&mut rng, 32, 1);
    let b1 = bias(&mut rng, 1);
    let edge = |transposed: bool, backward: bool| {
        let y = if transposed {
            ops::conv_transpose2d_with(&z1, &w1, &b1, o).unwrap()
        } else {
            ops::conv2d_with(&x1, &w1, &bt, o).unwrap()
        };
        if backward {
            let g = y.sum_all().unwrap().backward().unwrap();
            g.get(w1.as_tensor()).unwrap().clone()
        } else {
            y
        }
    };
    let conv1 = |backward: bool| edge(false, backward);
    let convt1 = |backward: bool| edge(true, backward);
    let ops: [(&str, &dyn Fn(bool) -> Tensor); 4] = [
        ("conv2d 32->64 14x14", &conv),
        ("conv-transpose2d 64->32 7x7", &convt),
        ("conv2d 1->32 28x28", &conv1),
        ("conv-transpose2d 32->1 14x14", &convt1),
    ];
    for (name, f) in ops {
        for backward in [false, true] {
            let what = if backward {
                "forward+backward"
            } else {
                "forward"
            };
            let mut g = c.benchmark_group(format!("direct products: {name} {what}"));
            for (path, cap) in [("direct", None), ("im2col", Some(fastmath::SimdLevel::V3))] {
                g.bench_function(BenchmarkId::from_parameter(path), |bench| {
                    fastmath::with_simd_cap(cap, || bench.iter(|| black_box(f(backward))));
                });
            }
            g.finish();
        }
    }
}

/// The output layer of preset `hvae` at its batch of 64: a 1x1 convolution of relu(h), 64
/// channels of 28x28 (channels-last) to the 15 parameters of 5 discretized logistics (NCHW),
/// forward and backward, with the ReLU fused into the convolution (`ConvOpts::pre`) and as a
/// pass of its own before it.
fn pre_activation(c: &mut Criterion) {
    use vae_core::ops::{ConvOpts, MapLayout};
    vae_core::device::configure_process();
    let mut rng = Rng::new(2);
    let (n, side, cin, cout) = (64, 28, 64, 15);
    let h = normal(&mut rng, 1, n * side * side * cin, 1.0);
    let h = Var::from_tensor(&h.reshape((n, side, side, cin)).unwrap()).unwrap();
    let w = normal(&mut rng, cout, cin, 0.1)
        .reshape((cout, cin, 1, 1))
        .unwrap();
    let w = Var::from_tensor(&w).unwrap();
    let b = Var::from_tensor(&normal(&mut rng, 1, cout, 0.1).squeeze(0).unwrap()).unwrap();
    let o = ConvOpts::new(1, 0).layouts(MapLayout::Nhwc, MapLayout::Nchw);
    let mut g = c.benchmark_group("conv2d 1x1 of relu(h) 64->15 28x28, forward+backward");
    g.throughput(Throughput::Elements(n as u64));
    for (name, fused) in [("relu fused", true), ("relu apart", false)] {
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                let y = if fused {
                    ops::conv2d_with(&h, &w, &b, o.pre(Act::Relu)).unwrap()
                } else {
                    let a = ops::activate(&h, Act::Relu, Kernels::Native).unwrap();
                    ops::conv2d_with(&a, &w, &b, o).unwrap()
                };
                let grads = y.sum_all().unwrap().backward().unwrap();
                black_box(grads.get(h.as_tensor()).unwrap().clone())
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    linear,
    bernoulli,
    discrete,
    math,
    conv,
    conv_direct,
    pre_activation
);
criterion_main!(benches);
