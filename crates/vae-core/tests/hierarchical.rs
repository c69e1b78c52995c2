//! The hierarchical architecture against its definitions: gradients of the whole model by
//! finite differences, the bounds (IWAE >= ELBO, the KL per group against the densities), the
//! latent layout, generation with temperatures and reconstruction.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vae_core::arch::{Activation, Arch, HierarchicalConfig};
use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::config::{DataShape, ModelConfig};
use vae_core::likelihood::{BetaBinomial, DiscretizedLogistic, Likelihood};
use vae_core::objective::iwae_bound;
use vae_core::{Noise, Preset, Rng, Vae};

/// A tiny model of 8x8 grey images: a top group of 2, one group at 2x2 and two at 4x4.
fn tiny(likelihood: Likelihood) -> ModelConfig {
    ModelConfig {
        shape: DataShape::image(1, 8, 8),
        latent_dim: 2,
        arch: Arch::Hierarchical(HierarchicalConfig {
            width: 3,
            bottleneck: 2,
            z_channels: 1,
            groups: vec![1, 2],
            blocks: 1,
            activation: Activation::Tanh,
        }),
        likelihood,
        num_classes: None,
    }
}

fn dl() -> Likelihood {
    Likelihood::DiscretizedLogistic(DiscretizedLogistic { mixtures: 2 })
}

/// `n` images of 8-bit levels (v/255).
fn images(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n * d)
        .map(|_| (r.uniform_f32() * 255.0).round() / 255.0)
        .collect()
}

#[test]
fn layout_has_one_kl_unit_per_group() -> anyhow::Result<()> {
    let cfg = tiny(dl());
    let (_vm, model) = Vae::init(&cfg, &Device::Cpu, &mut Rng::new(1))?;
    let dims: Vec<usize> = model.latent().groups.iter().map(|g| g.dim).collect();
    assert_eq!(dims, vec![2, 4, 16, 16]);
    assert_eq!(model.latent().kl_units(), 4);
    assert_eq!(model.latent().noise_dim(), 38);
    // The preset builds for 28x28 grey and 32x32 colour images, and refuses a conditional model.
    for shape in [DataShape::image(1, 28, 28), DataShape::image(3, 32, 32)] {
        let cfg = Preset::Hvae.model(shape);
        cfg.validate()?;
        let mut c = cfg.clone();
        c.num_classes = Some(10);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--conditional"), "{err}");
    }
    let mut odd = tiny(dl());
    odd.shape = DataShape::image(1, 6, 6);
    assert!(odd
        .validate()
        .unwrap_err()
        .to_string()
        .contains("divide by 4"));
    Ok(())
}

/// Central differences in f64 on every parameter tensor of the whole model, through the
/// importance-weighted bound with K = 2 (every group sampled, its density and the
/// likelihood's) and through the one-sample ELBO with its analytic KL per group.
#[test]
fn whole_model_gradients_match_finite_differences() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for likelihood in [dl(), Likelihood::BetaBinomial(BetaBinomial {})] {
        let cfg = tiny(likelihood);
        let (vm, model) = Vae::init_with_dtype(&cfg, &dev, DType::F64, &mut Rng::new(9))?;
        let (n, d) = (2, cfg.shape.dim());
        let nd = model.latent().noise_dim();
        let to64 = |v: Vec<f32>| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let x = Tensor::from_vec(to64(images(n, d, 10)), (n, d), &dev)?;
        let eps2 = Tensor::from_vec(to64(Rng::new(11).normal_vec(2 * n * nd)), (2, n, nd), &dev)?;
        let eps1 = Tensor::from_vec(to64(Rng::new(12).normal_vec(n * nd)), (n, nd), &dev)?;
        let loss = |model: &Vae| -> anyhow::Result<Tensor> {
            let t = model.terms(&x, None, &eps2, 1.0)?;
            let iwae = iwae_bound(t.log_w.as_ref().unwrap())?.sum_all()?.neg()?;
            let e = model.elbo_terms(&x, None, &eps1)?;
            let elbo = (e.recon.sum_all()? + e.kl_units.sum_all()?)?;
            Ok((iwae + elbo)?)
        };
        let grads = loss(&model)?.backward()?;
        for var in &vm.all_vars() {
            let g = grads
                .get(var.as_tensor())
                .expect("every parameter gets a gradient");
            let g = g.flatten_all()?.to_vec1::<f64>()?;
            let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
            for i in (0..base.len()).step_by((base.len() / 3).max(1)) {
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
                    "{}: parameter {i} of a {:?} tensor: autograd {} vs finite difference {fd}",
                    cfg.likelihood.name(),
                    var.dims(),
                    g[i]
                );
            }
        }
    }
    Ok(())
}

/// For every fixed set of samples the IWAE bound is at least the mean log-weight (Jensen),
/// the mean log-weight's expectation is the ELBO, and the ELBO's KL (analytic per group, given
/// the groups above) matches E_q[log q(z|x) - log p(z)] of all groups together.
#[test]
fn bounds_and_kl_per_group_agree_with_the_densities() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny(dl());
    let (_vm, model) = Vae::init(&cfg, &dev, &mut Rng::new(3))?;
    let (n, d) = (3, cfg.shape.dim());
    let x = Tensor::from_vec(images(n, d, 4), (n, d), &dev)?;
    let k = 4000;
    let eps = Noise::draw(&model, k, n, 1, &mut Rng::new(5)).tensor(&dev)?;
    let pass = model.pass(&x, None, &eps, true)?;
    assert_eq!(pass.kl.dims(), &[n, 4]);
    let (lp, lq) = (pass.log_p.unwrap(), pass.log_q.unwrap());
    assert_eq!(lp.dims(), &[k, n]);
    let mc = (lq - lp)?.mean(0)?.to_vec1::<f32>()?;
    let kl = pass.kl.sum(1)?.to_vec1::<f32>()?;
    for i in 0..n {
        // Both average the same 4000 samples of the lower groups' KL; the difference is the
        // Monte-Carlo error of log q - log p around its analytic mean (well below 0.2 nats
        // here: a few nats of KL over 38 dimensions).
        assert!((mc[i] - kl[i]).abs() < 0.2, "example {i}: {mc:?} vs {kl:?}");
    }
    let t = model.terms(&x, None, &eps.narrow(0, 0, 64)?, 1.0)?;
    let log_w = t.log_w.unwrap();
    let bound = iwae_bound(&log_w)?.to_vec1::<f32>()?;
    let mean = log_w.mean(0)?.to_vec1::<f32>()?;
    for (b, m) in bound.iter().zip(&mean) {
        assert!(b + 1e-3 >= *m, "IWAE {b} below the mean log-weight {m}");
    }
    // The importance-sampled log-likelihood lies above the one-sample ELBO averaged over
    // many samples.
    let ll = model.log_likelihood(&x, None, 500, 50, &mut Rng::new(6))?;
    let many = model.terms(&x, None, &eps.narrow(0, 0, 500)?, 1.0)?;
    let elbo = (many.recon.neg()? - many.kl()?)?.to_vec1::<f32>()?;
    for i in 0..n {
        assert!(
            ll[i] >= elbo[i] as f64 - 0.05,
            "example {i}: log-likelihood {} below the ELBO {}",
            ll[i],
            elbo[i]
        );
    }
    Ok(())
}

/// Generation: with every lower group at temperature 0 (or no noise) it is the decoder of the
/// top codes; the noise and the temperature of a lower group change it, the same noise and
/// temperatures give the same pictures; reconstruction is deterministic and encode_groups
/// gives each group's q.
#[test]
fn generation_with_temperatures_and_reconstruction() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny(dl());
    let (_vm, model) = Vae::init(&cfg, &dev, &mut Rng::new(7))?;
    // Untrained priors are N(0, I) (their last layers start at zero), so z at a prior mean
    // is 0 and the lower groups' noise alone moves the pictures.
    let n = 5;
    let nd = model.latent().noise_dim();
    let z = Tensor::from_vec(Rng::new(8).normal_vec(n * 2), (n, 2), &dev)?;
    let eps = Tensor::from_vec(Rng::new(9).normal_vec(n * (nd - 2)), (n, nd - 2), &dev)?;
    let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let mean = model.decode_mean(&z, None)?;
    let cold = model.generate_mean(&z, Some(&eps), &[1.0, 0.0], None)?;
    assert_eq!(max_diff(&mean, &cold), 0.0);
    let warm = model.generate_mean(&z, Some(&eps), &[1.0], None)?;
    let warm2 = model.generate_mean(&z, Some(&eps), &[1.0, 1.0, 1.0, 1.0], None)?;
    assert_eq!(max_diff(&warm, &warm2), 0.0);
    assert!(
        max_diff(&warm, &mean) > 1e-4,
        "the lower groups' noise changes nothing"
    );
    let cooler = model.generate_mean(&z, Some(&eps), &[1.0, 0.5], None)?;
    assert!(max_diff(&warm, &cooler) > 1e-5);
    // Only the last group warm: differs from all cold.
    let last = model.generate_mean(&z, Some(&eps), &[1.0, 0.0, 0.0, 1.0], None)?;
    assert!(max_diff(&last, &mean) > 1e-5);
    assert_eq!(mean.dims(), &[n, 64]);
    let v = warm.flatten_all()?.to_vec1::<f32>()?;
    assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));

    let x = Tensor::from_vec(images(n, 64, 10), (n, 64), &dev)?;
    let r1 = model.reconstruct_mean(&x, None)?;
    let r2 = model.reconstruct_mean(&x, None)?;
    assert_eq!(max_diff(&r1, &r2), 0.0);
    let qs = model.encode_groups(&x, None)?;
    let dims: Vec<usize> = qs.iter().map(|q| q.mu.dim(1).unwrap()).collect();
    assert_eq!(dims, vec![2, 4, 16, 16]);
    let top = model.encode(&x, None)?;
    assert_eq!(max_diff(&top.mu, &qs[0].mu), 0.0);
    Ok(())
}

/// A detached copy computes the same values and records no graph.
#[test]
fn detached_copy_computes_the_same() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny(dl());
    let (vm, model) = Vae::init(&cfg, &dev, &mut Rng::new(2))?;
    let copy = model.detached(&vm)?;
    let n = 4;
    let x = Tensor::from_vec(images(n, 64, 3), (n, 64), &dev)?;
    let eps = Noise::draw(&model, 1, n, 1, &mut Rng::new(4)).single(&dev)?;
    let a = model.elbo_terms(&x, None, &eps)?;
    let b = copy.elbo_terms(&x, None, &eps)?;
    assert_eq!(a.recon.to_vec1::<f32>()?, b.recon.to_vec1::<f32>()?);
    assert_eq!(a.kl_units.to_vec2::<f32>()?, b.kl_units.to_vec2::<f32>()?);
    assert!(a.recon.track_op() && !b.recon.track_op());
    Ok(())
}
