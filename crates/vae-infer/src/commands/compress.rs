//! `vae-infer compress`: lossless compression of 8-bit images by bits-back coding with the
//! model (BB-ANS), with the rate beside the model's negative ELBO on the same images.
//!
//! The file is decoded again before it is renamed into place: nothing is reported as written
//! unless it decodes to the images.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vae_codec::CodecParams;
use vae_data::{Dataset, Values};
use vae_run::eval::{self, Prep, Scoring};

use super::Command;
use crate::args::{load_split, ModelArgs, Split};
use crate::codec::source::{self, Images};
use crate::codec::{self, check_cpu, CodecModel, PixelKind, SimdArgs};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The images to compress: an IDX file (as --idx) or a folder of PNG files (as --images).
    #[arg(value_name = "INPUT", conflicts_with_all = ["split", "idx", "images"])]
    pub input: Option<PathBuf>,
    /// Compress a split of the run's dataset (decompressed as a raw IDX images file).
    #[arg(long, value_enum, required_unless_present_any = ["idx", "images", "input"], conflicts_with_all = ["idx", "images"])]
    pub split: Option<Split>,
    /// With --split: only its first N images.
    #[arg(long, requires = "split")]
    pub limit: Option<usize>,
    /// Compress an IDX file of 8-bit images, raw or gzipped (decompressed as the raw file).
    #[arg(long, conflicts_with = "images")]
    pub idx: Option<PathBuf>,
    /// Compress the 8-bit PNG files of a folder, sub-folders included (grey or RGB, the
    /// model's size; decompressed as PNG files of the same names).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The compressed file to write.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Images per independently coded chunk (each chunk's first image pays for its latents'
    /// bits; the threads share out the chunks). Larger chunks lower that cost, fewer chunks
    /// leave threads idle. Recorded in the file.
    #[arg(long, value_name = "N", default_value_t = CodecParams::default().chunk_images, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_images: u32,
    #[command(flatten)]
    pub simd: SimdArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub images: usize,
    /// Values per image.
    pub dims: usize,
    /// Bytes of the file, header included.
    pub bytes: u64,
    /// Bytes of the header (checksums, shape, names, ...).
    pub header_bytes: u64,
    /// 8 × bytes / (images × dims): the rate of the whole file.
    pub bits_per_dim: f64,
    /// The model's one-sample negative ELBO on the same images, in bits per dimension (a
    /// bound on -log2 P per value).
    pub neg_elbo_bits_per_dim: f64,
    /// Σ over images of -log2 p(x|z) - log2 p(z) + log2 q(z|x) under the quantised models, in
    /// bits per dimension: the rate without the initial bits and the header.
    pub net_bits_per_dim: f64,
    /// Bits of the payload beyond the images' net bits: what the first image of each chunk
    /// could not get back, the coders' final states, the chunks' counts.
    pub initial_bits: f64,
    /// Bins per latent dimension: 2^latent_bits.
    pub latent_bits: u32,
    /// Images per independently coded chunk.
    pub chunk_images: u32,
    /// Seconds of coding (the model's passes included).
    pub seconds: f64,
    pub images_per_second: f64,
    /// Seconds of decoding the file again before it is renamed into place.
    pub verify_seconds: f64,
    /// Seconds of the negative ELBO.
    pub elbo_seconds: f64,
    pub threads: usize,
    /// The SIMD level of the model's kernels.
    pub simd: &'static str,
    pub likelihood: String,
    pub out: PathBuf,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "compressed {} images into {} ({} bytes, {} of them header)\n  \
             {:.4} bits/dim (negative ELBO {:.4} bits/dim, net {:.4}, initial bits {:.0})\n  \
             {:.2} s, {:.0} images/s ({} threads, simd {}); verified in {:.2} s",
            self.images,
            self.out.display(),
            self.bytes,
            self.header_bytes,
            self.bits_per_dim,
            self.neg_elbo_bits_per_dim,
            self.net_bits_per_dim,
            self.initial_bits,
            self.seconds,
            self.images_per_second,
            self.threads,
            self.simd,
            self.verify_seconds
        )
    }
}

impl Args {
    /// The images to code, read and checked against the model's shape.
    fn images(&self, m: &crate::model::Loaded) -> Result<Images> {
        let shape = m.model.config().shape;
        if let Some(split) = self.split {
            if self.limit == Some(0) {
                return Err(InferError::Flag("--limit must be at least 1".into()));
            }
            // As `evaluate` scores it: a run trained with dynamic binarisation on one fixed
            // binarisation of the split.
            let (data, _) = super::evaluate::scored_split(m, load_split(m, split, self.limit)?);
            return source::from_dataset(&data, &format!("the {} split", split.name()));
        }
        match (&self.input, &self.idx, &self.images) {
            (Some(p), _, _) if p.is_dir() => source::from_png_dir(p, shape),
            (Some(p), _, _) | (None, Some(p), _) => source::from_idx(p, shape),
            (None, None, Some(d)) => source::from_png_dir(d, shape),
            (None, None, None) => Err(InferError::Flag(
                "give the images: --split, --idx FILE or --images DIR".into(),
            )),
        }
    }
}

/// The negative ELBO of the images in bits per dimension (one sample of z per image, the
/// noise from the run's seed, as `evaluate` draws it).
fn neg_elbo_bits(
    m: &crate::model::Loaded,
    glue: &CodecModel,
    imgs: &Images,
    a: &ModelArgs,
) -> Result<f64> {
    let shape = m.model.config().shape;
    let data = Dataset::new(shape, Values::U8(imgs.pixels.clone()), None, None)?;
    let scoring = Scoring::of(&m.model, &data, glue.kind() == PixelKind::Bernoulli)?;
    let elbo = eval::elbo_stats(
        glue.vae(),
        &data,
        &m.device,
        1000,
        a.seed(),
        a.threads(),
        Prep::AsIs,
    )?;
    scoring
        .bits_per_dim(elbo.neg_elbo, shape.dim())
        .ok_or_else(|| InferError::Unsupported(scoring.reason.unwrap_or_default()))
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        let simd = self.simd.in_use();
        let mut a = self.model.clone();
        a.runtime.device = Some(check_cpu(&a.runtime).map(|_| "cpu".to_string())?);
        crate::args::check_out(&self.out)?;
        let threads = a.threads();
        let m = a.load()?;
        let glue = CodecModel::new(&m.model, self.simd.cap())?;
        let imgs = self.images(&m)?;
        glue.check_values(&imgs.pixels, |i| imgs.name(i))?;
        let d = glue.pixels();

        let t = Instant::now();
        let neg_elbo_bits_per_dim = neg_elbo_bits(&m, &glue, &imgs, &a)?;
        let elbo_seconds = t.elapsed().as_secs_f64();

        let params = CodecParams {
            chunk_images: self.chunk_images,
            ..CodecParams::default()
        };
        let c = codec::file::compress(&m, &glue, &imgs, params, threads)?;
        let out_name = self.out.display().to_string();

        let t = Instant::now();
        vae_codec::io::write_atomic(&self.out, &c.file, |back| {
            let back = codec::file::decompress(&m, &glue, back, &out_name, threads)
                .map_err(|e| e.to_string())?;
            if back.header != c.header {
                return Err("the header reads back differently".into());
            }
            (back.pixels == imgs.pixels)
                .then_some(())
                .ok_or_else(|| "the file decodes to other images".into())
        })
        .map_err(|e| InferError::Input(e.to_string()))?;
        let verify_seconds = t.elapsed().as_secs_f64();

        let dims = (imgs.count * d) as f64;
        let bytes = c.file.len() as u64;
        let seconds = c.seconds;
        Ok(Report {
            images: imgs.count,
            dims: d,
            bytes,
            header_bytes: bytes - c.payload_bytes as u64,
            bits_per_dim: 8.0 * bytes as f64 / dims,
            neg_elbo_bits_per_dim,
            net_bits_per_dim: c.net_bits / dims,
            initial_bits: c.initial_bits,
            latent_bits: params.latent_bits,
            chunk_images: params.chunk_images,
            seconds,
            images_per_second: imgs.count as f64 / seconds.max(1e-9),
            verify_seconds,
            elbo_seconds,
            threads,
            simd,
            likelihood: m.model.likelihood().name().to_string(),
            out: self.out.clone(),
        })
    }
}
