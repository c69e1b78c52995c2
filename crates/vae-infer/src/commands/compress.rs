//! `vae-infer compress`: lossless compression of 8-bit images by bits-back coding with the
//! model (BB-ANS), with the rate beside the model's negative ELBO on the same images. PNG
//! files of any size are coded in tiles of the model's size; the rates are per value of the
//! pictures given, the tiles' padding paid for by them.
//!
//! The file is decoded again before it is renamed into place (or written to standard
//! output): nothing is reported as written unless it decodes to the images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use vae_codec::{CodecParams, Container};
use vae_core::DataShape;
use vae_data::{Dataset, Values};
use vae_run::eval::{self, Prep, Scoring};

use super::Command;
use crate::args::{load_split, ModelArgs, Split};
use crate::codec::source::{self, Images};
use crate::codec::{padding, png, stdio, tiles};
use crate::codec::{self, check_cpu, CodecModel, SimdArgs};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The images to compress: a PNG file of any size (8-bit, the model's channels; coded in
    /// tiles, decompressed as one PNG file), an IDX file (as --idx), a folder of PNG files (as
    /// --images), or - for standard input (a PNG or an IDX file, told by its first bytes).
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
    /// model's channels, any size: pictures of another size than the model's are coded in
    /// tiles; decompressed as PNG files of the same names).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The compressed file to write, or - for standard output (the report then goes to
    /// standard error).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Images per independently coded chunk (the threads share out the chunks). A chunk's
    /// first images cannot get back the bits their latents cost: they code only the top
    /// latent groups their stack can pay for, the groups below at their prior means (a
    /// hierarchical model), or pay for all (one group); larger chunks spread that cost,
    /// fewer chunks leave threads idle. Recorded in the file.
    #[arg(long, value_name = "N", default_value_t = CodecParams::default().chunk_images, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_images: u32,
    /// What pads the last row and column of tiles of a picture of another size than the
    /// model's: `auto` (the model's choice per picture among its edges repeated, 0 and 255:
    /// the one its tiles cost least), `edge`, or a value from 0 to 255. Coded, so counted in
    /// the rate; recorded in the file.
    #[arg(long, value_name = "auto|edge|V", default_value = "auto")]
    pub padding: padding::PaddingChoice,
    /// Bins per latent value: 2^B bins of equal mass under the value's prior, each standing
    /// for its median. Finer bins bring the decoder closer to the model's continuous latents
    /// and cost more search per value. Recorded in the file.
    /// Also compute the model's one-sample negative ELBO on the coded images (as `evaluate`
    /// draws it), to report beside the file's rate: one more pass of the model over them.
    #[arg(long)]
    pub elbo: bool,
    #[arg(long, value_name = "B", default_value_t = CodecParams::default().latent_bits, value_parser = clap::value_parser!(u32).range(i64::from(*vae_codec::models::LATENT_BITS.start())..=i64::from(*vae_codec::models::LATENT_BITS.end())))]
    pub latent_bits: u32,
    #[command(flatten)]
    pub simd: SimdArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The images given: PNG files, or the images of an IDX file or a split.
    pub images: usize,
    /// Images of the model's size coded: the tiles of pictures of another size, else the
    /// images themselves.
    pub tiles: usize,
    /// Values per coded image (the model's).
    pub dims: usize,
    /// Values of the images given (Σ height × width × channels): what the rates are per.
    pub values: u64,
    /// Values coded: tiles × dims, the padding of the tiles at the pictures' right and bottom
    /// edges (their last column and row repeated) included.
    pub coded_values: u64,
    /// The pictures whose last tiles hold padding, by the padding the model chose for them
    /// (`edge`: the last column and row repeated, or the constant).
    pub padding: BTreeMap<String, usize>,
    /// Bytes of the file, header included.
    pub bytes: u64,
    /// Bytes of the header (checksums, shape, names, sizes, ...).
    pub header_bytes: u64,
    /// 8 × bytes / values: the rate of the whole file per value given, the padding's cost
    /// included.
    pub bits_per_dim: f64,
    /// 8 × bytes / coded_values: the rate per value coded (the same without padding).
    pub bits_per_coded_dim: f64,
    /// With --elbo: the model's one-sample negative ELBO on the coded images, in bits per
    /// value given (a bound on -log2 P of the images given: the tiles are a function of them).
    pub neg_elbo_bits_per_dim: Option<f64>,
    /// Σ over coded images of -log2 p(x|z) - log2 p(z) + log2 q(z|x) under the quantised
    /// models, in bits per value given: the rate without the initial bits and the header.
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
    /// With --elbo: seconds of the negative ELBO.
    pub elbo_seconds: Option<f64>,
    pub threads: usize,
    /// The SIMD level of the model's kernels.
    pub simd: &'static str,
    pub likelihood: String,
    pub out: PathBuf,
}

impl super::Report for Report {
    fn text(&self) -> String {
        let tiles = if self.coded_values == self.values {
            String::new()
        } else {
            let padding: Vec<String> = self
                .padding
                .iter()
                .map(|(p, n)| format!("{p} for {n}"))
                .collect();
            format!(
                "\n  in {} tiles, padded with {}: {} values coded for {} ({:.4} bits per coded value)",
                self.tiles,
                padding.join(", "),
                self.coded_values,
                self.values,
                self.bits_per_coded_dim
            )
        };
        let elbo = match (self.neg_elbo_bits_per_dim, self.elbo_seconds) {
            (Some(b), Some(t)) => format!("negative ELBO {b:.4} bits/dim in {t:.2} s, "),
            _ => String::new(),
        };
        format!(
            "compressed {} images into {} ({} bytes, {} of them header)\n  \
             {:.4} bits/dim ({elbo}net {:.4}, initial bits {:.0}){tiles}\n  \
             {:.2} s, {:.0} images/s ({} threads, simd {}); verified in {:.2} s",
            self.images,
            self.out.display(),
            self.bytes,
            self.header_bytes,
            self.bits_per_dim,
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

/// Whether `path` is a PNG file: by its extension, or by its first bytes.
fn is_png_file(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        return true;
    }
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| png::is_png(&head))
}

impl Args {
    /// The images to code, read and checked against the model's shape; pictures coded in
    /// tiles are padded as the model chooses (scored on `threads` threads).
    fn images(
        &self,
        m: &crate::model::Loaded,
        glue: &CodecModel,
        threads: usize,
    ) -> Result<Images> {
        let shape = m.model.config().shape;
        let pad = |pics: &[&png::Picture]| padding::paddings(self.padding, glue, pics, threads);
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
            (Some(p), _, _) if stdio::is_dash(p) => {
                let bytes = stdio::read_stdin()?;
                source::from_bytes(&bytes, Path::new("standard input"), shape, &pad)
            }
            (Some(p), _, _) if p.is_dir() => source::from_png_dir(p, shape, &pad),
            (Some(p), _, _) if is_png_file(p) => source::from_png_file(p, shape, &pad),
            (Some(p), _, _) | (None, Some(p), _) => source::from_idx(p, shape),
            (None, None, Some(d)) => source::from_png_dir(d, shape, &pad),
            (None, None, None) => Err(InferError::Flag(
                "give the images: FILE.png, --split, --idx FILE, --images DIR or -".into(),
            )),
        }
    }
}

/// The negative ELBO of the coded images in bits per coded value (one sample of z per image,
/// the noise from the run's seed, as `evaluate` draws it: with the model's own kernels, not
/// the exact ones the coder needs, so it is `evaluate`'s figure at `evaluate`'s speed).
fn neg_elbo_bits(
    m: &crate::model::Loaded,
    glue: &CodecModel,
    imgs: &Images,
    a: &ModelArgs,
) -> Result<f64> {
    let shape = m.model.config().shape;
    let data = Dataset::new(shape, Values::U8(imgs.pixels.clone()), None, None)?;
    let scoring = Scoring::of(&m.model, &data, glue.codes_binarised())?;
    let elbo = eval::elbo_stats(
        &m.model,
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

    fn stdout_is_data(&self) -> bool {
        stdio::is_dash(&self.out)
    }

    fn run(&self) -> Result<Report> {
        let simd = self.simd.in_use();
        let mut a = self.model.clone();
        a.runtime.device = Some(check_cpu(&a.runtime).map(|_| "cpu".to_string())?);
        let to_stdout = stdio::is_dash(&self.out);
        if to_stdout {
            stdio::check_stdout()?;
        } else {
            crate::args::check_out(&self.out)?;
        }
        let threads = a.threads();
        let m = a.load()?;
        let glue = CodecModel::new(&m.model, self.simd.cap())?;
        let imgs = self.images(&m, &glue, threads)?;
        glue.check_values(&imgs.pixels, |i| imgs.name(i))?;
        let d = glue.pixels();

        let t = Instant::now();
        let neg_elbo_bits_per_coded_dim = self
            .elbo
            .then(|| neg_elbo_bits(&m, &glue, &imgs, &a))
            .transpose()?;
        let elbo_seconds = self.elbo.then(|| t.elapsed().as_secs_f64());

        let params = CodecParams {
            chunk_images: self.chunk_images,
            latent_bits: self.latent_bits,
        };
        let c = codec::file::compress(&m, &glue, &imgs, params, threads)?;
        let out_name = self.out.display().to_string();

        let t = Instant::now();
        let verify = |back: &[u8]| -> std::result::Result<(), String> {
            let back = codec::file::decompress(&m, &glue, back, &out_name, threads)
                .map_err(|e| e.to_string())?;
            if back.header != c.header {
                return Err("the header reads back differently".into());
            }
            (back.pixels == imgs.pixels)
                .then_some(())
                .ok_or_else(|| "the file decodes to other images".into())
        };
        if to_stdout {
            verify(&c.file).map_err(|e| {
                InferError::Input(format!("standard output: verification failed: {e}"))
            })?;
            stdio::write_stdout(&c.file)?;
        } else {
            vae_codec::io::write_atomic(&self.out, &c.file, verify)
                .map_err(|e| InferError::Input(e.to_string()))?;
        }
        let verify_seconds = t.elapsed().as_secs_f64();

        let coded_values = (imgs.count * d) as u64;
        let values = imgs.original_values();
        let per_value = values as f64;
        let bytes = c.file.len() as u64;
        let seconds = c.seconds;
        let mut padded = BTreeMap::new();
        if let Container::Tiled { files, .. } = &imgs.container {
            for f in files {
                let shape = DataShape::image(f.channels.into(), f.height as usize, f.width as usize);
                if tiles::is_padded(shape, imgs.shape) {
                    *padded.entry(padding::name(f.padding)).or_insert(0) += 1;
                }
            }
        }
        Ok(Report {
            images: imgs.pictures(),
            padding: padded,
            tiles: imgs.count,
            dims: d,
            values,
            coded_values,
            bytes,
            header_bytes: bytes - c.payload_bytes as u64,
            bits_per_dim: 8.0 * bytes as f64 / per_value,
            bits_per_coded_dim: 8.0 * bytes as f64 / coded_values as f64,
            neg_elbo_bits_per_dim: neg_elbo_bits_per_coded_dim
                .map(|b| b * coded_values as f64 / per_value),
            net_bits_per_dim: c.net_bits / per_value,
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
