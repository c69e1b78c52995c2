//! `vae-infer plot`: the latent scatter coloured by label, and the training curves.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Command;
use crate::analysis::pca::Pca;
use crate::args::{dataset_name, load_split, positive, ModelArgs, Split};
use crate::latent::{encode_dataset, Latents};
use crate::{plot, InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Directory for latent.png and curves.png (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Which split's latent means to scatter.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Project onto the two principal components (the default when the latent space has more
    /// than two dimensions).
    #[arg(long, conflicts_with = "no_pca")]
    pub pca: bool,
    /// Plot the first two latent dimensions as they are.
    #[arg(long)]
    pub no_pca: bool,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scatter: PathBuf,
    /// None when no metrics.jsonl was found beside the config.
    pub curves: Option<PathBuf>,
    /// `pca` or `dims`.
    pub projection: &'static str,
    /// Share of the variance along each principal component (PCA only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_variance: Option<[f64; 2]>,
    pub points: usize,
}

impl super::Report for Report {
    fn text(&self) -> String {
        let proj = match self.explained_variance {
            Some([a, b]) => format!(
                "principal components ({:.1}% + {:.1}% of the variance)",
                100.0 * a,
                100.0 * b
            ),
            None => "latent dimensions 0 and 1".into(),
        };
        let curves = match &self.curves {
            Some(p) => format!("wrote the training curves to {}", p.display()),
            None => "no metrics.jsonl beside the config: no training curves".into(),
        };
        format!(
            "wrote the scatter of {} latent means on {proj} to {}\n{curves}",
            self.points,
            self.scatter.display()
        )
    }
}

/// A 2-D scatter picture of latents, with its projection.
pub struct ScatterPicture {
    pub png: Vec<u8>,
    pub projection: &'static str,
    pub explained: Option<[f64; 2]>,
}

/// Draws latent means coloured by label: PCA when `pca` (or when unset and the latent space has
/// more than two dimensions), else the first two dimensions.
pub fn latent_scatter(
    lat: &Latents,
    pca: Option<bool>,
    dataset: Option<&str>,
    split: &str,
) -> Result<ScatterPicture> {
    let dim = lat.dim;
    let use_pca = pca.unwrap_or(dim > 2) && dim >= 2;
    let (points, explained, xd, yd) = if use_pca {
        let p = Pca::fit(&lat.mu, dim, 2);
        let e = [p.explained[0], p.explained.get(1).copied().unwrap_or(0.0)];
        (
            p.project(&lat.mu),
            Some(e),
            format!("PC 1 ({:.1}%)", 100.0 * e[0]),
            format!("PC 2 ({:.1}%)", 100.0 * e[1]),
        )
    } else {
        let pts: Vec<f64> = lat
            .mu
            .chunks_exact(dim)
            .flat_map(|r| [f64::from(r[0]), r.get(1).map_or(0.0, |&v| f64::from(v))])
            .collect();
        (pts, None, "z[0]".to_string(), "z[1]".to_string())
    };
    let classes = lat
        .labels
        .as_ref()
        .and_then(|l| l.iter().max())
        .map_or(0, |&c| c as usize + 1);
    let names = vae_data::named::class_labels(dataset, classes);
    let title = format!("Latent means of the {split} split ({} examples)", lat.len());
    let png = plot::scatter_png(&plot::Scatter {
        points: &points,
        labels: lat.labels.as_deref(),
        names: &names,
        title: &title,
        x_desc: &xd,
        y_desc: &yd,
    })?;
    Ok(ScatterPicture {
        png,
        projection: if use_pca { "pca" } else { "dims" },
        explained,
    })
}

/// The training-curve picture of a run, if its directory has a metrics.jsonl.
pub fn curves_picture(dir: Option<&Path>) -> Result<Option<Vec<u8>>> {
    let Some(path) = dir.map(|d| vae_run::RunDir::new(d).metrics()) else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    let series = plot::read_curves(&path)?;
    Ok(Some(plot::lines_png(
        &series,
        "Negative ELBO per epoch",
        "epoch",
        "nats per example",
    )?))
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        positive("--batch-size", self.batch_size)?;
        std::fs::create_dir_all(&self.out).map_err(|e| InferError::File {
            path: self.out.clone(),
            msg: format!("cannot create the output directory: {e}"),
        })?;
        let m = self.model.load()?;
        let data = load_split(&m, self.split, self.limit)?;
        let lat = encode_dataset(&m.model, &data, &m.device, self.batch_size)?;
        let pca = match (self.pca, self.no_pca) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        let pic = latent_scatter(&lat, pca, dataset_name(&m), self.split.name())?;
        let scatter = self.out.join("latent.png");
        vae_core::weights::atomic_write(&scatter, &pic.png)?;
        let curves = match curves_picture(self.model.run_dir().as_deref())? {
            Some(png) => {
                let p = self.out.join("curves.png");
                vae_core::weights::atomic_write(&p, &png)?;
                Some(p)
            }
            None => None,
        };
        Ok(Report {
            scatter,
            curves,
            projection: pic.projection,
            explained_variance: pic.explained,
            points: lat.len(),
        })
    }
}
