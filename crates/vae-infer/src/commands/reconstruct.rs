//! `vae-infer reconstruct`: validation images above their reconstructions.

use std::path::PathBuf;

use serde::Serialize;
use vae_data::Dataset;

use super::Command;
use crate::args::{check_image, check_out, load_splits, positive, ModelArgs};
use crate::model::Loaded;
use crate::{reconstruct, InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of validation examples to reconstruct.
    #[arg(long, default_value_t = 32)]
    pub n: usize,
    /// Pictures per row (each row of originals is followed by its reconstructions).
    #[arg(long, default_value_t = 8)]
    pub cols: usize,
    /// First validation example shown.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub n: usize,
    pub cols: usize,
    /// Rows of the picture (originals and reconstructions).
    pub rows: usize,
    /// Mean squared error per value between the originals and their reconstructions.
    pub mse: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote {} originals above their reconstructions ({} rows of {}) to {}\n  mean squared error {:.5} per value",
            self.n,
            self.rows,
            self.cols,
            self.out.display(),
            self.mse
        )
    }
}

/// The picture of `reconstruct` as PNG bytes, with its report numbers (mse, rows).
pub fn reconstruction_png(
    m: &Loaded,
    data: &Dataset,
    n: usize,
    offset: usize,
    cols: usize,
) -> Result<(Vec<u8>, f64, usize)> {
    let end = (offset + n).min(data.len());
    if offset >= end {
        return Err(InferError::Flag(format!(
            "--offset {offset}: the validation split has {} examples",
            data.len()
        )));
    }
    let idx: Vec<usize> = (offset..end).collect();
    let r = reconstruct::reconstruct(&m.model, data, &idx, &m.device)?;
    let d = data.shape.dim();
    let cols = cols.min(idx.len());
    let values = reconstruct::comparison_layout(&r, d, cols);
    let png = vae_run::image::grid_png(&values, m.model.config().shape, cols, 2)?;
    Ok((png, r.mse, 2 * idx.len().div_ceil(cols)))
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        check_out(&self.out)?;
        positive("--n", self.n)?;
        positive("--cols", self.cols)?;
        let m = self.model.load()?;
        check_image(&m, "reconstruct")?;
        let data = load_splits(&m)?.test;
        let (png, mse, rows) = reconstruction_png(&m, &data, self.n, self.offset, self.cols)?;
        vae_core::weights::atomic_write(&self.out, &png)?;
        let n = self.n.min(data.len() - self.offset);
        Ok(Report {
            out: self.out.clone(),
            n,
            cols: self.cols.min(n),
            rows,
            mse,
        })
    }
}
