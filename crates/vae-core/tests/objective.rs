//! The bounds against their definitions: IWAE >= ELBO, monotone in K, the log-likelihood
//! estimate against exact integration, free bits and warm-up, and gradients of whole models by
//! finite differences.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vae_core::arch::{Activation, Arch, ConvConfig, MlpConfig, Upsampling};
use vae_core::candle_core::{DType, Device, Tensor, Var};
use vae_core::config::{DataShape, ModelConfig};
use vae_core::dist::LN_2PI;
use vae_core::likelihood::{Bernoulli, ContinuousBernoulli, Gaussian, GaussianLearned, Likelihood};
use vae_core::objective::iwae_bound;
use vae_core::{Objective, Rng, Vae};

fn mlp(dim: usize, latent: usize, hidden: Vec<usize>, likelihood: Likelihood) -> ModelConfig {
    ModelConfig {
        shape: DataShape::tabular(dim),
        latent_dim: latent,
        arch: Arch::Mlp(MlpConfig {
            hidden,
            activation: Activation::Tanh,
        }),
        likelihood,
        num_classes: None,
    }
}

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n * d).map(|_| r.uniform_f32()).collect()
}

/// For any fixed set of samples, logmeanexp(log w) >= mean(log w) (Jensen); with beta = 1 and
/// K = 1 the log-weight is log p(x|z) + log p(z) - log q(z|x), whose mean is the ELBO.
#[test]
fn iwae_bound_is_at_least_the_elbo_and_grows_with_k() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = mlp(12, 3, vec![16], Likelihood::Bernoulli(Bernoulli {}));
    let (_vm, model) = Vae::init(&cfg, &dev, &mut Rng::new(1))?;
    let n = 400;
    let x = Tensor::from_vec(data(n, 12, 2), (n, 12), &dev)?;
    let mut rng = Rng::new(3);
    let mut means = Vec::new();
    for k in [1usize, 2, 8, 64] {
        let eps = Tensor::from_vec(rng.normal_vec(k * n * 3), (k, n, 3), &dev)?;
        let t = model.terms(&x, None, &eps, 1.0)?;
        if k > 1 {
            let log_w = t.log_w.clone().expect("log-weights for K > 1");
            let bound = iwae_bound(&log_w)?.to_vec1::<f32>()?;
            let per_sample_mean = log_w.mean(0)?.to_vec1::<f32>()?;
            for (b, m) in bound.iter().zip(&per_sample_mean) {
                assert!(b + 1e-4 >= *m, "IWAE {b} below the mean log-weight {m}");
            }
            means.push(bound.iter().map(|&v| v as f64).sum::<f64>() / n as f64);
        } else {
            // K = 1: minus (recon + KL) is the one-sample ELBO.
            let elbo = (t.recon.neg()? - t.kl()?)?.mean_all()?.to_scalar::<f32>()? as f64;
            means.push(elbo);
        }
    }
    // Expected bound increases with K; averaged over 400 examples the noise is far smaller than
    // the gaps of this untrained model.
    for w in means.windows(2) {
        assert!(w[1] > w[0], "bound fell with K: {means:?}");
    }
    Ok(())
}

/// A model with one latent dimension, whose log p(x) = ln of the integral of p(x|z) p(z) dz is
/// computed by quadrature on [-10, 10]: the estimate lies between the ELBO and it, and comes
/// close to it with many samples.
#[test]
fn log_likelihood_estimate_lies_between_elbo_and_exact_value() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = mlp(6, 1, vec![8], Likelihood::Bernoulli(Bernoulli {}));
    let (_vm, model) = Vae::init(&cfg, &dev, &mut Rng::new(5))?;
    let n = 20;
    let xs: Vec<f32> = data(n, 6, 6)
        .iter()
        .map(|v| if *v > 0.5 { 1.0 } else { 0.0 })
        .collect();
    let x = Tensor::from_vec(xs, (n, 6), &dev)?;
    // Exact: log of sum_i p(x|z_i) N(z_i; 0, 1) dz over a fine grid.
    let m = 8001;
    let zs: Vec<f32> = (0..m)
        .map(|i| -10.0 + 20.0 * i as f32 / (m - 1) as f32)
        .collect();
    let dz = 20.0 / (m - 1) as f64;
    let params = model.decode(&Tensor::from_vec(zs.clone(), (m, 1), &dev)?, None)?;
    let mut exact = Vec::new();
    for b in 0..n {
        let xb = x.get(b)?.unsqueeze(0)?.broadcast_as((m, 6))?.contiguous()?;
        let log_px = model
            .likelihood()
            .log_prob(&params, &xb, vae_core::ops::Kernels::Native)?
            .to_vec1::<f32>()?;
        let terms: Vec<f64> = (0..m)
            .map(|i| log_px[i] as f64 - 0.5 * (zs[i] as f64).powi(2) - 0.5 * LN_2PI)
            .collect();
        let mx = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        exact.push(mx + (terms.iter().map(|t| (t - mx).exp()).sum::<f64>() * dz).ln());
    }
    let est = model.log_likelihood(&x, None, 5000, 700, &mut Rng::new(7))?;
    let mut rng = Rng::new(8);
    let eps = Tensor::from_vec(rng.normal_vec(256 * n), (256, n, 1), &dev)?;
    // The ELBO, averaged over 256 samples per example.
    let q = model.encode(&x, None)?;
    let kl = q.kl_std_normal()?.to_vec1::<f32>()?;
    let t = model.terms(&x, None, &eps, 1.0)?;
    let recon = t.recon.to_vec1::<f32>()?;
    for b in 0..n {
        let elbo = -(recon[b] + kl[b]) as f64;
        assert!(
            elbo <= est[b] + 0.05,
            "example {b}: ELBO {elbo} above the estimate {}",
            est[b]
        );
        assert!(
            est[b] <= exact[b] + 0.02,
            "example {b}: estimate {} above exact {}",
            est[b],
            exact[b]
        );
        assert!(
            exact[b] - est[b] < 0.05,
            "example {b}: estimate {} far from exact {}",
            est[b],
            exact[b]
        );
    }
    Ok(())
}

/// Free bits: the KL part of the objective is beta * sum_j max(F, mean_b KL_bj), and only
/// dimensions above the floor get a gradient. Warm-up: beta ramps linearly.
#[test]
fn free_bits_and_warmup_follow_their_definitions() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let obj = Objective {
        beta: 2.0,
        kl_warmup: 4.0,
        free_bits: 0.5,
        iwae_k: 1,
    };
    assert_eq!(obj.beta_at(0.0), 0.0);
    assert_eq!(obj.beta_at(1.0), 0.5);
    assert_eq!(obj.beta_at(3.0), 1.5);
    assert_eq!(obj.beta_at(9.0), 2.0);
    // Two examples, three dimensions; batch means 0.1, 0.6 and 2.0.
    let kl = Var::from_vec(vec![0.1f32, 0.2, 3.0, 0.1, 1.0, 1.0], (2, 3), &dev)?;
    let sums = kl.as_tensor().sum(0)?;
    let mask = obj.free_bits_mask(&sums, 2)?;
    assert_eq!(mask.to_vec1::<f32>()?, vec![0.0, 1.0, 1.0]);
    let value = obj.kl_term_value(&[0.2, 1.2, 4.0], 2, 1.5);
    assert!((value - 1.5 * (0.5 + 0.6 + 2.0)).abs() < 1e-12);
    let t = vae_core::Terms {
        recon: Tensor::new(&[10f32, 20.0], &dev)?,
        kl_units: kl.as_tensor().clone(),
        log_w: None,
    };
    let loss = obj.shard_loss(&t, 2, 1.5, Some(&mask))?;
    // (10 + 20 + 1.5 * (0.2 + 3.0 + 1.0 + 1.0)) / 2, the masked first dimension left out.
    assert!((loss.to_scalar::<f32>()? - (30.0 + 1.5 * 5.2) / 2.0).abs() < 1e-5);
    let g = loss
        .backward()?
        .get(kl.as_tensor())
        .unwrap()
        .to_vec2::<f32>()?;
    assert_eq!(g, vec![vec![0.0, 0.75, 0.75], vec![0.0, 0.75, 0.75]]);
    // Without free bits every dimension counts.
    let plain = Objective {
        free_bits: 0.0,
        ..obj
    }
    .shard_loss(&t, 2, 1.0, None)?
    .to_scalar::<f32>()?;
    assert!((plain - (30.0 + 5.4) / 2.0).abs() < 1e-5);
    Ok(())
}

/// Central differences in f64 on every parameter tensor of small models of each architecture and
/// likelihood: checks candle's convolution backward passes and our fused operations together.
#[test]
fn whole_model_gradients_match_finite_differences() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let conv = |upsampling| ModelConfig {
        shape: DataShape::image(1, 8, 8),
        latent_dim: 2,
        arch: Arch::Conv(ConvConfig {
            channels: vec![2, 3],
            hidden: 5,
            activation: Activation::Tanh,
            upsampling,
        }),
        likelihood: Likelihood::Bernoulli(Bernoulli {}),
        num_classes: Some(2),
    };
    let cases = [
        mlp(5, 2, vec![4], Likelihood::Bernoulli(Bernoulli {})),
        mlp(
            5,
            2,
            vec![4, 3],
            Likelihood::Gaussian(Gaussian { alpha: 0.2 }),
        ),
        mlp(
            5,
            2,
            vec![4],
            Likelihood::GaussianLearned(GaussianLearned {
                min_logvar: -4.0,
                max_logvar: 2.0,
            }),
        ),
        mlp(
            5,
            2,
            vec![4],
            Likelihood::ContinuousBernoulli(ContinuousBernoulli {}),
        ),
        conv(Upsampling::Transposed),
        conv(Upsampling::Nearest),
    ];
    for cfg in cases {
        let (vm, model) = Vae::init_with_dtype(&cfg, &dev, DType::F64, &mut Rng::new(9))?;
        let d = cfg.shape.dim();
        let n = 3;
        let x = Tensor::from_vec(
            data(n, d, 10).iter().map(|&v| v as f64).collect::<Vec<_>>(),
            (n, d),
            &dev,
        )?;
        let labels = cfg
            .num_classes
            .map(|_| Tensor::new(&[[1f64, 0.0], [0.0, 1.0], [1.0, 0.0]], &dev))
            .transpose()?;
        let eps = Tensor::from_vec(
            Rng::new(11)
                .normal_vec(2 * n * 2)
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            (2, n, 2),
            &dev,
        )?;
        let loss = |model: &Vae| -> anyhow::Result<Tensor> {
            let t = model.terms(&x, labels.as_ref(), &eps, 1.0)?;
            Ok(iwae_bound(t.log_w.as_ref().unwrap())?.sum_all()?.neg()?)
        };
        let grads = loss(&model)?.backward()?;
        let vars = vm.all_vars();
        for var in &vars {
            let g = grads
                .get(var.as_tensor())
                .expect("every parameter gets a gradient");
            let g = g.flatten_all()?.to_vec1::<f64>()?;
            let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
            for i in (0..base.len()).step_by((base.len() / 4).max(1)) {
                let h = 1e-6;
                let mut p = base.clone();
                p[i] += h;
                var.set(&Tensor::from_vec(p.clone(), var.shape(), &dev)?)?;
                let fp = loss(&model)?.to_scalar::<f64>()?;
                p[i] -= 2.0 * h;
                var.set(&Tensor::from_vec(p, var.shape(), &dev)?)?;
                let fm = loss(&model)?.to_scalar::<f64>()?;
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev)?)?;
                let fd = (fp - fm) / (2.0 * h);
                assert!(
                    (g[i] - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                    "{:?} {:?}: parameter {i} of a {:?} tensor: autograd {} vs finite difference {fd}",
                    cfg.arch, cfg.likelihood, var.dims(), g[i]
                );
            }
        }
    }
    Ok(())
}

/// The importance-sampled estimate does not depend on how its K samples are split into passes
/// (`evaluate` sizes its passes by the model's output): the noise is drawn in the same order,
/// and only the f32 rounding of products over a different number of rows may differ.
#[test]
fn log_likelihood_does_not_depend_on_the_chunk_size() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = mlp(6, 2, vec![8], Likelihood::Bernoulli(Bernoulli {}));
    let (_vm, model) = Vae::init(&cfg, &dev, &mut Rng::new(9))?;
    let n = 7;
    let xs: Vec<f32> = data(n, 6, 10)
        .iter()
        .map(|v| if *v > 0.5 { 1.0 } else { 0.0 })
        .collect();
    let x = Tensor::from_vec(xs, (n, 6), &dev)?;
    let whole = model.log_likelihood(&x, None, 50, 50, &mut Rng::new(11))?;
    for chunk in [1, 3, 17, 64] {
        let split = model.log_likelihood(&x, None, 50, chunk, &mut Rng::new(11))?;
        for (a, b) in whole.iter().zip(&split) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs(),
                "chunks of {chunk}: {b} against {a} in one pass"
            );
        }
    }
    // A different seed gives a different estimate (the comparison above can fail).
    let other = model.log_likelihood(&x, None, 50, 50, &mut Rng::new(12))?;
    assert!(whole.iter().zip(&other).any(|(a, b)| a != b));
    Ok(())
}
