//! `vae-infer traverse`: one latent dimension at a time around a base code.

use std::path::PathBuf;

use serde::Serialize;

use super::Command;
use crate::args::{check_image, check_out, in_split, load_splits, positive, ModelArgs};
use crate::latent::posterior;
use crate::model::Loaded;
use crate::{walk, InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Only this latent dimension (default: one row per dimension).
    #[arg(long)]
    pub dim: Option<usize>,
    /// Each dimension moves from -RANGE to +RANGE around the base code.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub range: f64,
    /// Pictures per row.
    #[arg(long, default_value_t = 9)]
    pub steps: usize,
    /// Base code: the posterior mean of this validation example (default: the zero code).
    #[arg(long)]
    pub index: Option<usize>,
    /// Class to decode with (conditional models; default: the example's label).
    #[arg(long)]
    pub label: Option<u32>,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    /// The dimensions drawn, one row each.
    pub dims: Vec<usize>,
    pub steps: usize,
    pub range: f64,
    /// The validation example whose posterior mean is the base code (none: the zero code).
    pub index: Option<usize>,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote the traversal of {} latent dimension(s) over ±{} in {} steps around {} to {}",
            self.dims.len(),
            self.range,
            self.steps,
            match self.index {
                Some(i) => format!("the posterior mean of example {i}"),
                None => "the zero code".into(),
            },
            self.out.display()
        )
    }
}

/// The traversal picture as PNG bytes.
pub fn traversal_png(
    m: &Loaded,
    base: &[f32],
    dims: &[usize],
    range: f64,
    steps: usize,
    label: Option<u32>,
) -> Result<Vec<u8>> {
    let z = walk::traversal(base, dims, range, steps);
    let decoded = walk::decode(&m.model, z, label, &m.device)?;
    Ok(vae_run::image::grid_png(
        &decoded,
        m.model.config().shape,
        steps,
        2,
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
        if !(self.range.is_finite() && self.range > 0.0) {
            return Err(InferError::Flag(format!(
                "--range must be positive, got {}",
                self.range
            )));
        }
        let m = self.model.load()?;
        check_image(&m, "traverse")?;
        let l = m.model.latent_dim();
        let dims: Vec<usize> = match self.dim {
            Some(d) if d >= l => {
                return Err(InferError::Flag(format!(
                    "--dim {d}: the latent space has {l} dimensions (0..{l})"
                )))
            }
            Some(d) => vec![d],
            None => (0..l).collect(),
        };
        let (base, label) = match self.index {
            Some(i) => {
                let data = load_splits(&m)?.test;
                in_split("--index", i, &data)?;
                let q = posterior(&m.model, &data, &[i], &m.device)?;
                let own = data.gather_labels(&[i]).map(|v| v[0]);
                let label = match m.model.config().num_classes {
                    Some(_) => self.label.or(own),
                    None => self.label,
                };
                (q.mu.flatten_all()?.to_vec1::<f32>()?, label)
            }
            None => (vec![0f32; l], self.label),
        };
        let png = traversal_png(&m, &base, &dims, self.range, self.steps, label)?;
        vae_core::weights::atomic_write(&self.out, &png)?;
        Ok(Report {
            out: self.out.clone(),
            dims,
            steps: self.steps,
            range: self.range,
            index: self.index,
        })
    }
}
