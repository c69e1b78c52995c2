//! The coder driven by real VAEs (random mlp and conv models of vae-core) in exact mode: the
//! compressed bytes do not depend on the SIMD level or the thread count, and a stream written
//! at one SIMD level decodes at another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use vae_codec::detmath::sigmoid;
use vae_codec::{
    decode, encode, CodecError, CodecParams, Gaussian, PixelParams, SingleLatentModel,
};
use vae_core::candle_core::{Device, Tensor};
use vae_core::fastmath::SimdLevel;
use vae_core::ops::Kernels;
use vae_core::{DataShape, Preset, Rng, Vae};

/// q(z|x) from the encoder; p(x|z) a logistic per pixel centred on sigmoid(decoder output).
struct Glue(Vae);

fn model_err(e: impl std::fmt::Display) -> CodecError {
    CodecError::Model(e.to_string())
}

impl SingleLatentModel for Glue {
    fn latent_dim(&self) -> usize {
        self.0.latent_dim()
    }

    fn posteriors(&self, images: &[&[u8]]) -> vae_codec::Result<Vec<Vec<Gaussian>>> {
        let d = images.first().map_or(0, |i| i.len());
        let x: Vec<f32> = images
            .iter()
            .flat_map(|i| i.iter().map(|&v| v as f32 / 255.0))
            .collect();
        let x = Tensor::from_vec(x, (images.len(), d), &Device::Cpu).map_err(model_err)?;
        let q = self.0.encode(&x, None).map_err(model_err)?;
        let mu = q.mu.to_vec2::<f32>().map_err(model_err)?;
        let lv = q.logvar.to_vec2::<f32>().map_err(model_err)?;
        Ok(mu
            .iter()
            .zip(&lv)
            .map(|(m, l)| {
                m.iter()
                    .zip(l)
                    .map(|(&m, &l)| Gaussian::from_mu_logvar(m as f64, l as f64))
                    .collect()
            })
            .collect())
    }

    fn pixel_params(&self, z: &[f32]) -> vae_codec::Result<PixelParams> {
        let mut p = self.pixel_params_batch(&[z.to_vec()])?;
        p.pop().ok_or_else(|| model_err("no output"))
    }

    fn pixel_params_batch(&self, zs: &[Vec<f32>]) -> vae_codec::Result<Vec<PixelParams>> {
        let l = self.0.latent_dim();
        let flat: Vec<f32> = zs.iter().flatten().copied().collect();
        let z = Tensor::from_vec(flat, (zs.len(), l), &Device::Cpu).map_err(model_err)?;
        let raw = self.0.decode(&z, None).map_err(model_err)?;
        let raw = raw.to_vec2::<f32>().map_err(model_err)?;
        Ok(raw
            .iter()
            .map(|r| PixelParams::Logistic {
                components: 1,
                weights: vec![1.0; r.len()],
                means: r.iter().map(|&v| sigmoid(v as f64)).collect(),
                scales: vec![0.1; r.len()],
            })
            .collect())
    }
}

#[test]
fn bytes_do_not_depend_on_simd_level_or_threads() {
    let images = common::block_images(40, 49, 16, 5, 21);
    let params = CodecParams {
        latent_bits: 14,
        chunk_images: 16,
    };
    for preset in [Preset::PytorchExample, Preset::Conv] {
        let cfg = preset.model(DataShape::image(1, 28, 28));
        let (_vars, vae) = Vae::init(&cfg, &Device::Cpu, &mut Rng::new(9)).unwrap();
        let glue = Glue(vae.with_kernels(Kernels::exact()).unwrap());
        let baseline = Kernels::Exact {
            simd: Some(SimdLevel::Baseline),
        };
        let glue_base = Glue(vae.with_kernels(baseline).unwrap());
        let base = encode(&glue_base, &images, 784, params, 1).unwrap();
        for threads in [1, 2] {
            let enc = encode(&glue, &images, 784, params, threads).unwrap();
            assert_eq!(enc.chunks, base.chunks, "{preset:?}, {threads} threads");
        }
        // Written at the baseline level, read at the CPU's own.
        let back = decode(&glue, &base.chunks, 40, 784, params, 2).unwrap();
        assert!(back == images, "{preset:?}: decoded images differ");
        let enc = encode(&glue_base, &images, 784, params, 2).unwrap();
        assert_eq!(enc.chunks, base.chunks);
    }
}
