//! `vae-infer decompress`: the images of a file written by `compress`, decoded with the same
//! model and written back as they came (a raw IDX file byte for byte, one PNG file, or a
//! folder of PNG files of the same names, each picture cropped out of its tiles), after their
//! checksum matches the original's. Any failure leaves nothing behind.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vae_codec::format;

use super::Command;
use crate::args::ModelArgs;
use crate::codec::source::{self, Output};
use crate::codec::stdio;
use crate::codec::{self, check_cpu, CodecModel, SimdArgs};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The compressed file, or - for standard input.
    pub file: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the images: a file (IDX, raw pixels or one PNG file), a new folder for a
    /// folder of PNG files, or - for standard output (one file only; the report then goes to
    /// standard error).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[command(flatten)]
    pub simd: SimdArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Images decoded (for pictures coded in tiles, the tiles).
    pub images: u64,
    /// Files written: one, or the PNG files of a folder.
    pub files: usize,
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
            "decompressed {} images into {} ({} file{}, {} bytes)\n  {:.2} s, {:.0} images/s ({} threads, simd {})",
            self.images,
            self.out.display(),
            self.files,
            if self.files == 1 { "" } else { "s" },
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

    fn stdout_is_data(&self) -> bool {
        stdio::is_dash(&self.out)
    }

    fn run(&self) -> Result<Report> {
        let simd = self.simd.in_use();
        let mut a = self.model.clone();
        a.runtime.device = Some(check_cpu(&a.runtime).map(|_| "cpu".to_string())?);
        let threads = a.threads();
        let to_stdout = stdio::is_dash(&self.out);
        if to_stdout {
            stdio::check_stdout()?;
        }
        let (bytes, name) = if stdio::is_dash(&self.file) {
            (stdio::read_stdin()?, Path::new("standard input"))
        } else {
            let b = std::fs::read(&self.file).map_err(|e| file_err(&self.file, e))?;
            (b, self.file.as_path())
        };
        let (header, _) = format::parse(&bytes).map_err(|e| file_err(name, e))?;
        match source::folder_files(&header.container) {
            Some(n) if to_stdout => {
                return Err(InferError::Flag(format!(
                    "--out -: {} holds a folder of {n} PNG files, and standard output takes one \
                     file: give --out DIR",
                    name.display()
                )))
            }
            _ if to_stdout => {}
            _ => source::check_out_free(&header.container, &self.out)?,
        }
        let m = a.load()?;
        let glue = CodecModel::new(&m.model, self.simd.cap())?;
        let d = codec::file::decompress(&m, &glue, &bytes, &name.display().to_string(), threads)?;
        let (header, pixels, seconds) = (d.header, d.pixels, d.seconds);
        let s = m.model.config().shape;
        let written = if to_stdout {
            match source::render(&header.container, &pixels, s)? {
                Output::File(b) => {
                    stdio::write_stdout(&b)?;
                    b.len() as u64
                }
                Output::Folder(_) => {
                    return Err(InferError::Flag(
                        "--out -: the file holds a folder of PNG files: give --out DIR".into(),
                    ))
                }
            }
        } else {
            source::write_back(&header.container, &pixels, s, &self.out)?
        };
        Ok(Report {
            images: header.count,
            files: source::folder_files(&header.container).unwrap_or(1),
            bytes: written,
            seconds,
            images_per_second: header.count as f64 / seconds.max(1e-9),
            threads,
            simd,
            out: self.out.clone(),
        })
    }
}
