//! `vae-infer sample`: codes from the prior (or the aggregate posterior) decoded into a grid.

use std::path::PathBuf;

use serde::Serialize;
use vae_core::Rng;
use vae_run::sample::{aggregate_posterior, sample_from, LatentGaussian};

use super::Command;
use crate::args::{load_split, ModelArgs, Split};
use crate::model::Loaded;
use crate::{InferError, Result};

/// Seed stream of the pictures of `sample` and of the report's sample grid.
pub const SAMPLE_STREAM: u64 = 0x5a3b1e;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Class of a conditional model.
    #[arg(long)]
    pub label: Option<u32>,
    /// Scale of the prior's standard deviation; for a hierarchical model one value per latent
    /// group, comma-separated, top group first (e.g. 1.0,0.8,0.6), the last value repeating
    /// for the groups after it. Default: the architecture's choice, 1 for a single latent
    /// group, 1 for the top group and 0.5 below it for the hierarchical model (the JSON report
    /// gives the values used).
    #[arg(long, value_delimiter = ',')]
    pub temperature: Vec<f64>,
    /// Where codes come from: `prior` (N(0, I)) or `posterior` (the aggregate posterior of the
    /// training split, of class --label if given: samples that stay where the data is).
    #[arg(long, value_enum, default_value_t = LatentSource::Prior)]
    pub latent: LatentSource,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Where `sample` draws its codes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatentSource {
    Prior,
    Posterior,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// The temperature of each latent group, top group first.
    pub temperatures: Vec<f64>,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote {} samples ({}x{} grid) to {}",
            self.n,
            self.rows,
            self.cols,
            self.out.display()
        )
    }
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        if self.n == 0 {
            return Err(InferError::Flag("--n must be at least 1".into()));
        }
        let m = self.model.load()?;
        let temperature = if self.temperature.is_empty() {
            m.model.sampling_temperatures()
        } else {
            self.temperature.clone()
        };
        check_temperatures(&temperature)?;
        let values = draw(
            &m,
            self.n,
            &temperature,
            self.label,
            self.latent,
            self.model.seed(),
        )?;
        let cols = (self.n as f64).sqrt().ceil() as usize;
        vae_run::image::write_grid(&self.out, &values, m.model.config().shape, cols)?;
        let groups = m.model.latent().groups.len();
        Ok(Report {
            out: self.out.clone(),
            n: self.n,
            rows: self.n.div_ceil(cols),
            cols,
            temperatures: (0..groups)
                .map(|g| {
                    let t = &temperature;
                    t.get(g).or(t.last()).copied().unwrap_or(1.0)
                })
                .collect(),
        })
    }
}

/// Refuses temperatures that are not positive (a group below the top may be 0).
fn check_temperatures(temperature: &[f64]) -> Result<()> {
    if temperature.is_empty() {
        return Err(InferError::Flag("--temperature needs a value".into()));
    }
    // The top group's temperature scales the prior's deviation; a lower group at 0 is at its
    // prior mean.
    for (g, &t) in temperature.iter().enumerate() {
        let ok = t.is_finite() && (t > 0.0 || (g > 0 && t == 0.0));
        if !ok {
            return Err(InferError::Flag(format!(
                "--temperature must be positive (a group below the top may be 0), got {t}"
            )));
        }
    }
    Ok(())
}

/// `n` samples of the model of `m`, `[n, dim]` row-major (the likelihood's mean, nominally in
/// [0, 1]): codes from `latent` at `temperature` (one value per latent group, the last
/// repeating), of class `label` for a conditional model, drawn from `seed`'s sample stream, as
/// `sample` draws its grid.
pub fn draw(
    m: &Loaded,
    n: usize,
    temperature: &[f64],
    label: Option<u32>,
    latent: LatentSource,
    seed: u64,
) -> Result<Vec<f32>> {
    if n == 0 {
        return Err(InferError::Flag("--n must be at least 1".into()));
    }
    check_temperatures(temperature)?;
    let groups = m.model.latent().groups.len();
    if temperature.len() > groups {
        return Err(InferError::Flag(format!(
            "--temperature: {} values for a model with {groups} latent group{}",
            temperature.len(),
            if groups == 1 { "" } else { "s" }
        )));
    }
    let mut rng = Rng::stream(seed, SAMPLE_STREAM);
    let source = match latent {
        LatentSource::Prior => LatentGaussian::prior(&m.model),
        LatentSource::Posterior => {
            let train = load_split(m, Split::Train, None)?;
            aggregate_posterior(&m.model, &train, label, &m.device)?
        }
    };
    let x = sample_from(
        &m.model,
        &source,
        n,
        temperature,
        label,
        &mut rng,
        &m.device,
    )?;
    Ok(x.flatten_all()?.to_vec1::<f32>()?)
}
