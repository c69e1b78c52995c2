//! `vae-infer interpolate`: the decoded path between the posterior means of two examples.

use std::path::PathBuf;

use serde::Serialize;

use super::Command;
use crate::args::{check_image, check_out, in_split, load_splits, ModelArgs};
use crate::latent::posterior;
use crate::{walk, InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Index of the first validation example.
    #[arg(long)]
    pub from: usize,
    /// Index of the second validation example.
    #[arg(long)]
    pub to: usize,
    /// Decoded codes along the path, both ends included.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Spherical interpolation (slerp) instead of a straight line.
    #[arg(long)]
    pub slerp: bool,
    /// Class to decode with (conditional models; default: the first example's label).
    #[arg(long)]
    pub label: Option<u32>,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub from: usize,
    pub to: usize,
    pub steps: usize,
    /// `linear` or `spherical`.
    pub method: &'static str,
    /// Euclidean distance between the two posterior means.
    pub distance: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote the {} interpolation from example {} to {} ({} steps, latent distance {:.3}) to {}\n  row: original, {} decoded codes, original",
            self.method,
            self.from,
            self.to,
            self.steps,
            self.distance,
            self.out.display(),
            self.steps
        )
    }
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    /// One row: the first original, the decoded path between the two posterior means, the
    /// second original.
    fn run(&self) -> Result<Report> {
        check_out(&self.out)?;
        if self.steps < 2 {
            return Err(InferError::Flag("--steps must be at least 2".into()));
        }
        let m = self.model.load()?;
        check_image(&m, "interpolate")?;
        let data = load_splits(&m)?.test;
        in_split("--from", self.from, &data)?;
        in_split("--to", self.to, &data)?;
        let q = posterior(&m.model, &data, &[self.from, self.to], &m.device)?;
        let mu = q.mu.flatten_all()?.to_vec1::<f32>()?;
        let l = m.model.latent_dim();
        let (za, zb) = (&mu[..l], &mu[l..]);
        let z = walk::path(za, zb, self.steps, self.slerp);
        let label = match m.model.config().num_classes {
            Some(_) => self
                .label
                .or_else(|| data.gather_labels(&[self.from]).map(|v| v[0])),
            None => self.label,
        };
        let decoded = walk::decode(&m.model, z, label, &m.device)?;
        let mut buf = Vec::new();
        data.gather(&[self.from], &mut buf);
        let mut values = buf.clone();
        values.extend(decoded);
        data.gather(&[self.to], &mut buf);
        values.extend(&buf);
        vae_run::image::write_grid(&self.out, &values, m.model.config().shape, self.steps + 2)?;
        let distance = za
            .iter()
            .zip(zb)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        Ok(Report {
            out: self.out.clone(),
            from: self.from,
            to: self.to,
            steps: self.steps,
            method: if self.slerp { "spherical" } else { "linear" },
            distance,
        })
    }
}
