//! Speed of compression and decompression with a VAE in exact mode (a randomly initialised
//! model of a preset: the rate means nothing, the time is the model's and the coder's) on the
//! first images of an IDX file.
//!
//! `cargo run --release -p vae-codec --example vae_speed -- FILE.idx[.gz] [IMAGES] [PRESET]`

use std::io::Read;
use std::time::Instant;

use vae_codec::detmath::sigmoid;
use vae_codec::{
    decode, encode, CodecError, CodecParams, Gaussian, PixelParams, SingleLatentModel,
};
use vae_core::candle_core::{Device, Tensor};
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    vae_core::device::configure_process();
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: vae_speed FILE [IMAGES] [PRESET]")?;
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let preset: Preset = args
        .next()
        .unwrap_or_else(|| "pytorch-example".into())
        .parse()?;
    let raw = std::fs::read(&path)?;
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut bytes)?;
    let images = bytes.get(16..16 + n * 784).ok_or("too few images")?;
    let cfg = preset.model(DataShape::image(1, 28, 28));
    let (_vars, vae) = Vae::init(&cfg, &Device::Cpu, &mut Rng::new(1))?;
    let glue = Glue(vae.with_kernels(Kernels::exact())?);
    let params = CodecParams::default();
    for threads in [1, 2] {
        let t = Instant::now();
        let enc = encode(&glue, images, 784, params, threads)?;
        let te = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = decode(&glue, &enc.chunks, n, 784, params, threads)?;
        let td = t.elapsed().as_secs_f64();
        if back != images {
            return Err("round trip differs".into());
        }
        println!(
            "{} threads {threads}: compress {:6.0} images/s, decompress {:6.0} images/s",
            preset.name(),
            n as f64 / te,
            n as f64 / td
        );
    }
    Ok(())
}
