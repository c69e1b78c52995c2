//! Exact mode (`Kernels::Exact`): random mlp, conv and hierarchical VAEs, with relu and with
//! tanh activations, give bit-identical encoder and decoder outputs at every SIMD level, with the
//! batch split over 1 or 2 threads and one image at a time, and agree with the normal path to
//! f32 tolerance; gelu, which has no exact pass, is refused, and the architectures say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{Device, Tensor};
use vae_core::fastmath::SimdLevel;
use vae_core::ops::{self, Kernels};
use vae_core::{par, Activation, Arch, DataShape, ModelConfig, Preset, Rng, Vae};

/// The model of `preset` for 28x28 grey images, with `activation` between its layers.
fn config(preset: Preset, activation: Activation) -> ModelConfig {
    let mut cfg = preset.model(DataShape::image(1, 28, 28));
    match &mut cfg.arch {
        Arch::Mlp(c) => c.activation = activation,
        Arch::Conv(c) => c.activation = activation,
        Arch::Hierarchical(c) => c.activation = activation,
    }
    cfg
}

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

/// The bits of every value of `t`, in order.
fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn exact_mode_is_bit_identical_across_simd_levels_threads_and_batches() {
    let dev = Device::Cpu;
    for (preset, activation) in [
        (Preset::PytorchExample, Activation::Relu),
        (Preset::PytorchExample, Activation::Tanh),
        (Preset::Conv, Activation::Relu),
        (Preset::Conv, Activation::Tanh),
        (Preset::Hvae, Activation::Relu),
        (Preset::Hvae, Activation::Tanh),
    ] {
        let preset_name = format!("{preset:?} {activation:?}");
        let cfg = config(preset, activation);
        let (_vars, model) = Vae::init(&cfg, &dev, &mut Rng::new(3)).unwrap();
        let n = 6;
        let pixels: Vec<f32> = Rng::new(4)
            .normal_vec(n * 784)
            .iter()
            .map(|v| (v.abs() * 0.3).min(1.0))
            .collect();
        let x = Tensor::from_vec(pixels, (n, 784), &dev).unwrap();
        let normal = outputs(&model, &x, 1);
        let exact = model.with_kernels(Kernels::exact()).unwrap();
        let want = outputs(&exact, &x, 1);
        assert!(
            max_rel_diff(&want.0, &normal.0) < 1e-4,
            "{preset_name} encoder"
        );
        assert!(
            max_rel_diff(&want.1, &normal.1) < 1e-4,
            "{preset_name} decoder"
        );
        for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
            let capped = model
                .with_kernels(Kernels::Exact { simd: Some(level) })
                .unwrap();
            for threads in [1, 2, n] {
                assert_eq!(
                    outputs(&capped, &x, threads),
                    want,
                    "{preset_name} {level:?} {threads} threads"
                );
            }
        }
        // The setting belongs to the model: the native one still runs its own kernels.
        assert_eq!(outputs(&model, &x, 1), normal, "{preset_name} native");
    }
}

/// In exact mode the activations come from `fastmath` (whose bits do not depend on the CPU),
/// not from candle's libm calls: bit for bit `fastmath::tanh` and `fastmath::sigmoid`, which
/// differ from libm's in the last bits of some values.
#[test]
fn exact_activations_come_from_fastmath() {
    let v: Vec<f32> = Rng::new(8)
        .normal_vec(2000)
        .iter()
        .map(|x| 3.0 * x)
        .collect();
    let x = Tensor::from_vec(v.clone(), (20, 100), &Device::Cpu).unwrap();
    let want = |f: fn(f32) -> f32| -> Vec<u32> { v.iter().map(|&x| f(x).to_bits()).collect() };
    let native = Kernels::Native;
    let libm_tanh = bits(&Activation::Tanh.apply(&x, native).unwrap());
    let libm_sigmoid = bits(&ops::activate(&x, ops::Act::Sigmoid, native).unwrap());
    let exact = Kernels::exact();
    let tanh = bits(&Activation::Tanh.apply(&x, exact).unwrap());
    let sigmoid = bits(&ops::activate(&x, ops::Act::Sigmoid, exact).unwrap());
    assert_eq!(tanh, want(vae_core::fastmath::tanh));
    assert_eq!(sigmoid, want(vae_core::fastmath::sigmoid));
    assert_ne!(tanh, libm_tanh, "the test cannot tell the two tanh apart");
    assert_ne!(
        sigmoid, libm_sigmoid,
        "the test cannot tell the two sigmoids apart"
    );
    let relu = bits(&Activation::Relu.apply(&x, exact).unwrap());
    assert_eq!(relu, want(|x| x.max(0.0)));
}

#[test]
fn gelu_has_no_exact_pass() {
    let dev = Device::Cpu;
    for preset in [Preset::PytorchExample, Preset::Conv] {
        let cfg = config(preset, Activation::Gelu);
        let (_vars, model) = Vae::init(&cfg, &dev, &mut Rng::new(1)).unwrap();
        let x = Tensor::zeros((2, 784), candle_core::DType::F32, &dev).unwrap();
        assert!(model.encode(&x, None).is_ok());
        let exact = model.with_kernels(Kernels::exact()).unwrap();
        let e = exact.encode(&x, None).unwrap_err().to_string();
        assert!(e.contains("gelu") && e.contains("exact"), "{preset:?}: {e}");
    }
}

/// Every value a hierarchical model's coding pass shows its callback (each group's prior and
/// posterior), as bits; the callback takes the posterior means as the values.
fn coding_values(model: &Vae, x: &Tensor, latents_only: bool) -> (Vec<u32>, Option<Vec<u32>>) {
    let n = x.dim(0).unwrap();
    let mut seen = Vec::new();
    let mut bits = |t: &Tensor| {
        seen.extend(
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits()),
        )
    };
    let mut choose = |_g: usize,
                      prior: Option<&vae_core::arch::CodingGaussian>,
                      post: Option<&vae_core::arch::CodingGaussian>| {
        if let Some(p) = prior {
            bits(&p.mu);
            bits(&p.raw_log_sigma);
        }
        let q = post.unwrap();
        bits(&q.mu);
        bits(&q.raw_log_sigma);
        Ok(q.mu.clone())
    };
    let params = if latents_only {
        model.coding_pass_latents(Some(x), n, &mut choose).unwrap();
        None
    } else {
        let p = model.coding_pass(Some(x), n, &mut choose).unwrap();
        Some(
            p.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        )
    };
    (seen, params)
}

/// The hierarchical model's coding pass in exact mode: the same priors, posteriors and
/// likelihood parameters at every SIMD level and for one image as inside a batch, and the pass
/// that stops after the last group shows its callback the same values as the whole pass.
#[test]
fn hierarchical_coding_pass_is_exact_and_its_latent_part_agrees() {
    let dev = Device::Cpu;
    let cfg = config(Preset::Hvae, Activation::Relu);
    let (_vars, model) = Vae::init(&cfg, &dev, &mut Rng::new(5)).unwrap();
    let n = 3;
    let pixels: Vec<f32> = Rng::new(6)
        .normal_vec(n * 784)
        .iter()
        .map(|v| (v.abs() * 0.3).min(1.0))
        .collect();
    let x = Tensor::from_vec(pixels, (n, 784), &dev).unwrap();
    let exact = model.with_kernels(Kernels::exact()).unwrap();
    let (seen, params) = coding_values(&exact, &x, false);
    let (seen_latents, none) = coding_values(&exact, &x, true);
    assert!(none.is_none() && !seen.is_empty());
    assert_eq!(seen_latents, seen, "the latent pass shows other values");
    for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
        let capped = model
            .with_kernels(Kernels::Exact { simd: Some(level) })
            .unwrap();
        assert_eq!(
            coding_values(&capped, &x, false),
            (seen.clone(), params.clone()),
            "{level:?}"
        );
    }
    // One image alone: its likelihood parameters are its rows of the batch's.
    let one = coding_values(&exact, &x.narrow(0, 1, 1).unwrap(), false)
        .1
        .unwrap();
    let params = params.unwrap();
    let per = params.len() / n;
    assert_eq!(one, params[per..2 * per], "one image against the batch");
}

/// `Arch::exact_forward` says what the passes above show: every preset's architecture with
/// relu or tanh has an exact pass, with gelu it has none and the flag is named.
#[test]
fn architectures_say_whether_they_have_an_exact_pass() {
    for preset in [Preset::PytorchExample, Preset::Conv, Preset::Hvae] {
        for a in [Activation::Relu, Activation::Tanh] {
            assert_eq!(config(preset, a).arch.exact_forward(), Ok(()), "{preset:?}");
        }
        let e = config(preset, Activation::Gelu)
            .arch
            .exact_forward()
            .unwrap_err();
        assert!(e.contains("--activation gelu"), "{preset:?}: {e}");
    }
}

/// A decoder's two passes: the pass without images that keeps its top-down states, at the
/// values a whole pass chose, gives the same priors and likelihood parameters; the posteriors
/// on the kept states give the same priors and posteriors as the whole pass, bit for bit.
#[test]
fn kept_states_give_the_whole_pass_values() {
    use vae_core::arch::{CodingGaussian, KeptStates};
    let dev = Device::Cpu;
    let cfg = config(Preset::Hvae, Activation::Relu);
    let (_vars, model) = Vae::init(&cfg, &dev, &mut Rng::new(8)).unwrap();
    let model = model.with_kernels(Kernels::exact()).unwrap();
    let n = 2;
    let pixels: Vec<f32> = Rng::new(9)
        .normal_vec(n * 784)
        .iter()
        .map(|v| (v.abs() * 0.4).min(1.0))
        .collect();
    let x = Tensor::from_vec(pixels, (n, 784), &dev).unwrap();
    let gauss = |g: Option<&CodingGaussian>| g.map(|g| (bits(&g.mu), bits(&g.raw_log_sigma)));
    // The whole pass: every group at its posterior means plus a shift (not a value the
    // posteriors alone would give back).
    let (mut values, mut whole) = (Vec::new(), Vec::new());
    let params = model
        .coding_pass(Some(&x), n, &mut |g, prior, post| {
            let z = (post.unwrap().mu.clone() + 0.25 * g as f64)?;
            whole.push((gauss(prior), gauss(post)));
            values.push(z.clone());
            Ok(z)
        })
        .unwrap();
    // Without images, keeping the states, at the same values.
    let mut kept = KeptStates::default();
    let mut priors = Vec::new();
    let params_kept = model
        .coding_pass_keeping(
            n,
            &mut |g, prior, post| {
                assert!(post.is_none());
                priors.push(gauss(prior));
                Ok(values[g].clone())
            },
            &mut kept,
        )
        .unwrap();
    assert!(!kept.is_empty());
    assert_eq!(bits(&params_kept), bits(&params), "likelihood parameters");
    let want_priors: Vec<_> = whole.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(priors, want_priors, "priors without images");
    // The posteriors on the kept states (the values returned below the top are not used:
    // zeros change nothing).
    let mut again = Vec::new();
    model
        .coding_posteriors(&x, n, &kept, &mut |g, prior, post| {
            again.push((gauss(prior), gauss(post)));
            if g == 0 {
                Ok(values[0].clone())
            } else {
                Ok(values[g].zeros_like()?)
            }
        })
        .unwrap();
    assert_eq!(again, whole, "priors and posteriors on the kept states");
}
