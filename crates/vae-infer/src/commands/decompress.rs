//! `vae-infer decompress`: the images of a file written by `compress`, decoded with the same
//! model and written back as they came (a raw IDX file byte for byte, or PNG files of the same
//! names), after their checksum matches the original's. Any failure leaves nothing behind.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vae_codec::format;

use super::Command;
use crate::args::ModelArgs;
use crate::codec::source;
use crate::codec::{self, check_cpu, CodecModel, SimdArgs};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The compressed file.
    pub file: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the images: a file (IDX or raw pixels), or a new folder for PNG files.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[command(flatten)]
    pub simd: SimdArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub images: u64,
    /// Bytes written (the IDX file, or all the PNG files).
    pub bytes: u64,
    /// Seconds of decoding (the model's passes included).
    pub seconds: f64,
    pub images_per_second: f64,
    pub threads: usize,
    pub simd: &'static str,
    pub out: PathBuf,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "decompressed {} images into {} ({} bytes)\n  {:.2} s, {:.0} images/s ({} threads, simd {})",
            self.images,
            self.out.display(),
            self.bytes,
            self.seconds,
            self.images_per_second,
            self.threads,
            self.simd
        )
    }
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> InferError {
    InferError::File {
        path: path.into(),
        msg: msg.to_string(),
    }
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
        let threads = a.threads();
        let bytes = std::fs::read(&self.file).map_err(|e| file_err(&self.file, e))?;
        let (header, _) = format::parse(&bytes).map_err(|e| file_err(&self.file, e))?;
        source::check_out_free(&header.container, &self.out)?;
        let m = a.load()?;
        let glue = CodecModel::new(&m.model, self.simd.cap())?;
        let d = codec::file::decompress(&m, &glue, &bytes, &self.file.display().to_string(), threads)?;
        let (header, pixels, seconds) = (d.header, d.pixels, d.seconds);
        let s = m.model.config().shape;
        let written = source::write_back(&header.container, &pixels, s, &self.out)?;
        Ok(Report {
            images: header.count,
            bytes: written,
            seconds,
            images_per_second: header.count as f64 / seconds.max(1e-9),
            threads,
            simd,
            out: self.out.clone(),
        })
    }
}
