//! `vae-infer report`: one self-contained HTML page with the configuration, samples,
//! reconstructions, the latent space, training curves and every number of the other commands.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vae_run::eval::{Bound, ElboStats};

use super::classify::{classify_latents, Method};
use super::cluster::cluster_latents;
use super::manifold::manifold_png;
use super::plot::{curves_picture, latent_scatter};
use super::reconstruct::reconstruction_png;
use super::sample::SAMPLE_STREAM;
use super::traverse::traversal_png;
use super::Command;
use crate::analysis::classify::LogisticConfig;
use crate::args::{check_out, dataset_name, encode_splits, positive, LatentArgs, ModelArgs};
use crate::latent::Latents;
use crate::model::Loaded;
use crate::page::{Figure, Page, Section, Table};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub latents: LatentArgs,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// k-means++ seedings of the clustering.
    #[arg(long, default_value_t = 10)]
    pub restarts: usize,
    /// Neighbours of the k-NN classifier.
    #[arg(long, default_value_t = 5)]
    pub knn_k: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub evaluation: ElboStats,
    /// What the evaluation bounds: `discrete`, `dequantized`, `binary`, or `none`.
    pub density: Bound,
    /// The negative ELBO in bits per dimension, where it bounds a probability of the data.
    pub bits_per_dim: Option<f64>,
    pub cluster: super::cluster::Report,
    pub knn: super::classify::Report,
    pub linear: super::classify::Report,
    /// Pictures on the page.
    pub figures: usize,
    pub seconds: f64,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "wrote {} ({} figures) in {:.1}s\n  test negative ELBO {:.3} nats\n  k-means accuracy {:.4}  NMI {:.4}  ARI {:.4}\n  k-NN accuracy {:.4}  linear accuracy {:.4}",
            self.out.display(),
            self.figures,
            self.seconds,
            self.evaluation.neg_elbo,
            self.cluster.accuracy,
            self.cluster.nmi,
            self.cluster.ari,
            self.knn.accuracy,
            self.linear.accuracy
        )
    }
}

fn shape_dim(m: &Loaded) -> usize {
    m.model.config().shape.dim()
}

fn describe_model(m: &Loaded) -> String {
    let c = m.model.config();
    format!(
        "{}, latent {}, {} likelihood{}",
        c.arch.get().describe(),
        c.latent_dim,
        c.likelihood.name(),
        if c.num_classes.is_some() {
            ", conditional"
        } else {
            ""
        }
    )
}

/// Latent dimensions by decreasing variance of the posterior means (the dimensions the encoder
/// uses; inactive ones stay near 0 for every input).
pub fn active_dims(l: &Latents) -> Vec<usize> {
    let n = l.len().max(1) as f64;
    let var: Vec<f64> = (0..l.dim)
        .map(|t| {
            let col = || l.mu.iter().skip(t).step_by(l.dim).map(|&v| f64::from(v));
            let mean = col().sum::<f64>() / n;
            col().map(|v| (v - mean).powi(2)).sum::<f64>() / n
        })
        .collect();
    let mut dims: Vec<usize> = (0..l.dim).collect();
    dims.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
    dims
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    fn run(&self) -> Result<Report> {
        check_out(&self.out)?;
        self.latents.check()?;
        positive("--restarts", self.restarts)?;
        positive("--knn-k", self.knn_k)?;
        let start = Instant::now();
        let a = &self.model;
        let m = a.load()?;
        // Shown as written (vae-train writes it pretty-printed, in its own key order).
        let config_json = match a.config_path() {
            Some(p) => std::fs::read_to_string(&p).map_err(|e| InferError::File {
                path: p.clone(),
                msg: e.to_string(),
            })?,
            None => String::new(),
        };
        let splits = self.latents.splits(&m)?;
        let (evaluation, scoring, _) =
            super::evaluate::scored_elbo(&m, splits.test.clone(), self.latents.batch_size, a)?;
        let bits_per_dim = scoring.bits_per_dim(evaluation.neg_elbo, shape_dim(&m));
        let lat = encode_splits(&m, &splits, self.latents.batch_size)?;
        let cluster = cluster_latents(&lat, None, self.restarts, 300, a.seed())?;
        let logistic = LogisticConfig::default();
        let knn = classify_latents(&lat, Method::Knn, self.knn_k, &logistic)?;
        let linear = classify_latents(&lat, Method::Linear, self.knn_k, &logistic)?;

        let shape = m.model.config().shape;
        // A hierarchical model's prior is its top-down hierarchy, and the pictures of the latent
        // space walk its top group alone: the captions say so.
        let hierarchical = m.model.latent().groups.len() > 1;
        let temperatures = m.model.sampling_temperatures();
        let mut sections = Vec::new();
        if shape.is_image() {
            let mut rng = vae_core::Rng::stream(a.seed(), SAMPLE_STREAM);
            let x =
                vae_run::sample::sample(&m.model, 64, &temperatures, None, &mut rng, &m.device)?;
            let samples =
                vae_run::image::grid_png(&x.flatten_all()?.to_vec1::<f32>()?, shape, 8, 2)?;
            let n = 32.min(splits.test.len());
            let (recon, mse, _) = reconstruction_png(&m, &splits.test, n, 0, 8)?;
            sections.push(Section {
                heading: "Samples and reconstructions".into(),
                figures: vec![
                    Figure {
                        caption: if hierarchical {
                            format!(
                                "64 samples from the model's prior: the top group's code drawn from N(0, I), each lower group from its prior given the groups above (temperatures {temperatures:?}, top group first), decoded to the likelihood's mean"
                            )
                        } else {
                            "64 samples: codes drawn from the prior N(0, I), decoded to the likelihood's mean".into()
                        },
                        png: samples,
                    },
                    Figure {
                        caption: format!(
                            "The first {n} validation images (odd rows) above their reconstructions (even rows): the decoded posterior mean; mean squared error {mse:.5}"
                        ),
                        png: recon,
                    },
                ],
                note: None,
            });
        }
        let scatter = latent_scatter(&lat.test, None, dataset_name(&m), "test")?;
        let mut latent_figs = vec![Figure {
            caption: match scatter.explained {
                Some([p, q]) => format!(
                    "Posterior means of the test split on their two principal components ({:.1}% and {:.1}% of the variance), coloured by label",
                    100.0 * p,
                    100.0 * q
                ),
                None => "Posterior means of the test split, coloured by label".into(),
            } + if hierarchical {
                " (the top latent group)"
            } else {
                ""
            },
            png: scatter.png,
        }];
        let l = m.model.latent_dim();
        // The most informative dimensions first: by the variance of the test split's means.
        let active = active_dims(&lat.test);
        let label = m.model.config().num_classes.map(|_| 0);
        if shape.is_image() && l >= 2 {
            let (d0, d1) = (active[0], active[1]);
            latent_figs.push(Figure {
                caption: format!(
                    "The decoded manifold over latent dimensions {d0} and {d1} (those whose posterior means vary most) at prior quantiles, 15 x 15; the other dimensions at 0{}",
                    if hierarchical {
                        "; dimensions of the top group, every lower group at its prior mean"
                    } else {
                        ""
                    }
                ),
                png: manifold_png(&m, (d0, d1), 15, label)?,
            });
        }
        if shape.is_image() {
            let dims: Vec<usize> = active.iter().copied().take(10).collect();
            latent_figs.push(Figure {
                caption: format!(
                    "Traversals from -3 to 3 around the zero code of the {} most varying latent dimensions (rows: {:?}){}",
                    dims.len(),
                    dims,
                    if hierarchical {
                        "; dimensions of the top group, every lower group at its prior mean"
                    } else {
                        ""
                    }
                ),
                png: traversal_png(&m, &vec![0f32; l], &dims, 3.0, 9, label)?,
            });
        }
        sections.push(Section {
            heading: "Latent space".into(),
            figures: latent_figs,
            note: None,
        });
        let curves = curves_picture(a.run_dir().as_deref())?;
        sections.push(Section {
            heading: "Training".into(),
            note: curves
                .is_none()
                .then(|| "No metrics.jsonl beside the configuration: no training curves.".into()),
            figures: curves
                .map(|png| {
                    vec![Figure {
                        caption: "Training and validation negative ELBO per epoch (metrics.jsonl)"
                            .into(),
                        png,
                    }]
                })
                .unwrap_or_default(),
        });
        let f = |v: f64| format!("{v:.4}");
        let tables = vec![
            Table {
                heading: format!("Evaluation (test split, {} examples)", evaluation.examples),
                rows: [
                    (
                        match scoring.bound {
                            Bound::None => "negative ELBO, a cross-entropy (nats)".to_string(),
                            _ => "negative ELBO, a bound on −log P of the data (nats)".into(),
                        },
                        format!("{:.3}", evaluation.neg_elbo),
                    ),
                    (
                        "reconstruction (nats)".into(),
                        format!("{:.3}", evaluation.recon),
                    ),
                    ("KL (nats)".into(), format!("{:.3}", evaluation.kl)),
                ]
                .into_iter()
                .chain(bits_per_dim.map(|b| ("bits/dim".to_string(), format!("{b:.4}"))))
                .chain(scoring.reason.clone().map(|r| ("bits/dim".to_string(), format!("none: {r}"))))
                .collect(),
            },
            Table {
                heading: format!(
                    "Latent space (fit on {} train, scored on {} test)",
                    lat.train.len(),
                    lat.test.len()
                ),
                rows: vec![
                    (
                        format!("k-means (k = {}) accuracy", cluster.k),
                        f(cluster.accuracy),
                    ),
                    ("k-means NMI".into(), f(cluster.nmi)),
                    ("k-means ARI".into(), f(cluster.ari)),
                    (format!("{}-NN accuracy", self.knn_k), f(knn.accuracy)),
                    ("logistic regression accuracy".into(), f(linear.accuracy)),
                ],
            },
        ];
        let source = match (&a.run, &a.model) {
            (Some(d), _) => d.display().to_string(),
            (None, Some(w)) => w.display().to_string(),
            _ => String::new(),
        };
        let page = Page {
            title: "VAE report".into(),
            subtitle: format!(
                "{source} · {} · data: {}",
                describe_model(&m),
                dataset_name(&m).unwrap_or("unknown")
            ),
            tables,
            sections,
            config_json,
        };
        let figures = page.sections.iter().map(|s| s.figures.len()).sum();
        let html = crate::page::render(&page);
        vae_core::weights::atomic_write(&self.out, html.as_bytes())?;
        Ok(Report {
            out: self.out.clone(),
            evaluation,
            density: scoring.bound,
            bits_per_dim,
            cluster,
            knn,
            linear,
            figures,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
