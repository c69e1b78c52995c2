//! `vae-infer manifold`: a grid over two latent dimensions at prior quantiles.

use std::path::PathBuf;

use serde::Serialize;

use super::Command;
use crate::args::{check_image, check_out, positive, ModelArgs};
use crate::model::Loaded;
use crate::{walk, InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Pictures per side of the grid.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// The two latent dimensions spanned (horizontal, vertical); the others stay at 0.
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub dims: Vec<usize>,
    /// Class to decode with (conditional models).
    #[arg(long)]
    pub label: Option<u32>,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub steps: usize,
    pub dims: [usize; 2],
    /// The outermost grid value, Φ⁻¹(1 - 0.5 / steps).
    pub extent: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote the {0}x{0} manifold over latent dimensions {1} and {2} (prior quantiles, ±{3:.3}) to {4}",
            self.steps,
            self.dims[0],
            self.dims[1],
            self.extent,
            self.out.display()
        )
    }
}

/// The manifold picture as PNG bytes.
pub fn manifold_png(
    m: &Loaded,
    dims: (usize, usize),
    steps: usize,
    label: Option<u32>,
) -> Result<Vec<u8>> {
    let z = walk::manifold(m.model.latent_dim(), dims, steps);
    let decoded = walk::decode(&m.model, z, label, &m.device)?;
    Ok(vae_run::image::grid_png(
        &decoded,
        m.model.config().shape,
        steps,
        1,
    )?)
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        check_out(&self.out)?;
        positive("--steps", self.steps)?;
        let [d0, d1] = self.dims[..] else {
            return Err(InferError::Flag(format!(
                "--dims: expected two dimensions such as 0,1, got {}",
                self.dims.len()
            )));
        };
        if d0 == d1 {
            return Err(InferError::Flag(format!(
                "--dims {d0},{d1}: the two dimensions must differ"
            )));
        }
        let m = self.model.load()?;
        check_image(&m, "manifold")?;
        let l = m.model.latent_dim();
        if d0.max(d1) >= l {
            return Err(InferError::Flag(format!(
                "--dims {d0},{d1}: the latent space has {l} dimensions (0..{l})"
            )));
        }
        let png = manifold_png(&m, (d0, d1), self.steps, self.label)?;
        vae_core::weights::atomic_write(&self.out, &png)?;
        Ok(Report {
            out: self.out.clone(),
            steps: self.steps,
            dims: [d0, d1],
            extent: walk::normal_quantile(1.0 - 0.5 / self.steps as f64),
        })
    }
}
