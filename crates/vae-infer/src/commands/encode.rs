//! `vae-infer encode`: the posterior means and log-variances of a split, to CSV, NPY or
//! safetensors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::Command;
use crate::args::{check_out, dataset_name, load_split, positive, ModelArgs, Split};
use crate::latent::{encode_with, write_latents, LatentFormat};
use crate::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which split of the run's dataset.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Output file: .csv, .npy or .safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Every latent group of a hierarchical model side by side (top group first, each lower
    /// group with the groups above it at their posterior means), not only the top group.
    #[arg(long)]
    pub all_groups: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub split: Split,
    pub format: LatentFormat,
    pub examples: usize,
    pub latent_dim: usize,
    /// Which latent groups were written: `top` or `all`.
    pub groups: &'static str,
    /// The dimensions of each group written, in order.
    pub group_dims: Vec<usize>,
    /// The model's number of latent groups.
    pub latent_groups: usize,
    pub labelled: bool,
    pub seconds: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote the posterior means and log-variances of {} {} examples ({} latent dimensions{}{}) to {} in {:.2}s",
            self.examples,
            self.split.name(),
            self.latent_dim,
            match (self.groups, self.latent_groups) {
                ("all", _) => format!(", every latent group: {:?}", self.group_dims),
                (_, 1) => String::new(),
                (_, n) => format!(", the top group of {n}"),
            },
            if self.labelled { ", with labels" } else { "" },
            self.out.display(),
            self.seconds
        )
    }
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        check_out(&self.out)?;
        // Refuse an unknown extension before any work.
        LatentFormat::from_path(&self.out)?;
        positive("--batch-size", self.batch_size)?;
        let m = self.model.load()?;
        let data = load_split(&m, self.split, self.limit)?;
        let start = Instant::now();
        let l = encode_with(&m.model, &data, &m.device, self.batch_size, self.all_groups)?;
        let layout = m.model.latent();
        let group_dims: Vec<usize> = if self.all_groups {
            layout.groups.iter().map(|g| g.dim).collect()
        } else {
            vec![m.model.latent_dim()]
        };
        let meta = HashMap::from([
            ("split".to_string(), self.split.name().to_string()),
            ("latent_dim".to_string(), l.dim.to_string()),
            (
                "dataset".to_string(),
                dataset_name(&m).unwrap_or("unknown").to_string(),
            ),
        ]);
        let format = write_latents(&self.out, &l, meta)?;
        Ok(Report {
            out: self.out.clone(),
            split: self.split,
            format,
            examples: l.len(),
            latent_dim: l.dim,
            groups: if self.all_groups { "all" } else { "top" },
            group_dims,
            latent_groups: layout.groups.len(),
            labelled: l.labels.is_some(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
