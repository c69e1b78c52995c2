//! The analysis commands of `vae-infer`: for each, its flags (`XxxArgs`), what it computed
//! (`XxxReport`, printed as JSON with `--json`) and the function that runs it (`run_xxx`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use vae_data::{Dataset, Splits};

use crate::classify::{fit_logistic, knn_predict, LogisticConfig};
use crate::cli::ModelArgs;
use crate::cluster::{self, KMeansConfig};
use crate::latent::{encode_dataset, posterior, write_latents, LatentFormat, Latents};
use crate::metrics::{accuracy, cluster_scores};
use crate::model::Loaded;
use crate::{eval, image, plot, reconstruct, sample, walk, InferError, Result};
use vae_core::Rng;

#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Class of a conditional model.
    #[arg(long)]
    pub label: Option<u32>,
    /// Scale of the prior's standard deviation.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
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
pub struct SampleReport {
    pub out: PathBuf,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

/// `vae-infer sample`.
pub fn run_sample(a: &SampleArgs) -> Result<SampleReport> {
    if a.n == 0 {
        return Err(InferError::Usage("--n must be at least 1".into()));
    }
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        return Err(InferError::Usage(format!(
            "--temperature must be positive, got {}",
            a.temperature
        )));
    }
    let m = a.model.load()?;
    let mut rng = Rng::stream(a.model.seed, 0x5a3b1e);
    let source = match a.latent {
        LatentSource::Prior => sample::LatentGaussian::standard(m.model.latent_dim()),
        LatentSource::Posterior => {
            let train = load_split(&m, Split::Train, None)?;
            sample::aggregate_posterior(&m.model, &train, a.label, &m.device)?
        }
    };
    let x = sample::sample_from(
        &m.model,
        &source,
        a.n,
        a.temperature,
        a.label,
        &mut rng,
        &m.device,
    )?;
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let cols = (a.n as f64).sqrt().ceil() as usize;
    image::write_grid(&a.out, &values, m.model.config().shape, cols)?;
    Ok(SampleReport {
        out: a.out.clone(),
        n: a.n,
        rows: a.n.div_ceil(cols),
        cols,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which split of the run's dataset.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Importance samples per example for the log-likelihood estimate (0 skips it).
    #[arg(long, default_value_t = 5000)]
    pub iw_samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    pub split: Split,
    #[serde(flatten)]
    pub elbo: eval::ElboStats,
    /// -log p(x) estimated with `iw_samples` importance samples (null when skipped).
    pub nll: Option<f64>,
    pub bits_per_dim: Option<f64>,
    pub iw_samples: usize,
}

/// The split of the data a model was trained on.
pub fn load_split(m: &Loaded, split: Split, limit: Option<usize>) -> Result<Dataset> {
    let splits = load_splits(m)?;
    let d = match split {
        Split::Train => splits.train,
        Split::Test => splits.test,
    };
    Ok(match limit {
        Some(n) => d.take(n),
        None => d,
    })
}

/// `vae-infer evaluate`.
pub fn run_evaluate(a: &EvaluateArgs) -> Result<EvaluateReport> {
    if a.batch_size == 0 {
        return Err(InferError::Usage("--batch-size must be at least 1".into()));
    }
    let m = a.model.load()?;
    let data = load_split(&m, a.split, a.limit)?;
    if data.is_empty() {
        return Err(InferError::Usage("no examples to evaluate".into()));
    }
    let elbo = eval::elbo_stats(
        &m.model,
        &data,
        &m.device,
        a.batch_size,
        a.model.seed,
        a.model.threads,
    )?;
    let ll = if a.iw_samples > 0 {
        Some(eval::nll(
            &m.model,
            &data,
            &m.device,
            a.iw_samples,
            a.model.seed,
            a.model.threads,
        )?)
    } else {
        None
    };
    Ok(EvaluateReport {
        split: a.split,
        elbo,
        nll: ll.map(|l| l.nll),
        bits_per_dim: ll.map(|l| l.bits_per_dim),
        iw_samples: a.iw_samples,
    })
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Codes drawn from the prior and decoded.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Posterior means of the training split, per second.
    pub encode_per_second: f64,
    /// Prior samples decoded to the likelihood's mean, per second.
    pub sample_per_second: f64,
    pub examples: usize,
    pub samples: usize,
    pub threads: usize,
}

/// `vae-infer throughput`: the time to encode the training split and to decode `--samples`
/// prior codes, in batches spread over the threads.
pub fn run_throughput(a: &ThroughputArgs) -> Result<ThroughputReport> {
    if a.batch_size == 0 || a.samples == 0 {
        return Err(InferError::Usage(
            "--batch-size and --samples must be at least 1".into(),
        ));
    }
    let m = a.model.load()?;
    let data = load_split(&m, Split::Train, None)?;
    let threads = if m.device.is_cpu() {
        a.model.threads.max(1)
    } else {
        1
    };
    let bs = a.batch_size;
    let time =
        |n: usize, f: &(dyn Fn(std::ops::Range<usize>) -> Result<()> + Sync)| -> Result<f64> {
            let start = std::time::Instant::now();
            let batches = n.div_ceil(bs);
            for r in vae_core::par::map_ranges(batches, threads, |r| -> Result<()> {
                for b in r {
                    f(b * bs..((b + 1) * bs).min(n))?;
                }
                Ok(())
            }) {
                r?;
            }
            m.device.synchronize()?;
            Ok(n as f64 / start.elapsed().as_secs_f64())
        };
    let encode = time(data.len(), &|rows| {
        let idx: Vec<usize> = rows.collect();
        let mut buf = Vec::new();
        let (x, labels) = crate::model::batch(&data, &idx, &m.model, &m.device, &mut buf)?;
        // Computed eagerly on the CPU; other devices are synchronised below.
        m.model.encode(&x, labels.as_ref())?;
        Ok(())
    })?;
    let sample = time(a.samples, &|rows| {
        let mut rng = Rng::stream(a.model.seed, rows.start as u64);
        sample::sample(&m.model, rows.len(), 1.0, None, &mut rng, &m.device)?;
        Ok(())
    })?;
    Ok(ThroughputReport {
        encode_per_second: encode,
        sample_per_second: sample,
        examples: data.len(),
        samples: a.samples,
        threads,
    })
}

/// Both splits of the data a model was trained on.
pub fn load_splits(m: &Loaded) -> Result<Splits> {
    let data = m.data.as_ref().ok_or_else(|| {
        InferError::Usage(
            "the config has no `data` section; this command needs the run's dataset".into(),
        )
    })?;
    Ok(data.load()?.splits)
}

/// The name of the run's dataset, if the config has one.
pub fn dataset_name(m: &Loaded) -> Option<&str> {
    m.data.as_ref().map(|d| d.dataset.as_str())
}

/// The directory holding the run's config.json (and metrics.jsonl): `--run`, or the directory
/// of `--config`.
pub fn run_dir(a: &ModelArgs) -> Option<PathBuf> {
    match (&a.run, &a.config) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(c)) => Some(
            c.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
        _ => None,
    }
}

fn check_image(m: &Loaded, what: &str) -> Result<()> {
    let s = m.model.config().shape;
    if s.is_image() {
        Ok(())
    } else {
        Err(InferError::Usage(format!(
            "{what} draws pictures, but this model's data ({}x{}x{}) are not images",
            s.channels, s.height, s.width
        )))
    }
}

fn positive(flag: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(InferError::Usage(format!("{flag} must be at least 1")))
    } else {
        Ok(())
    }
}

fn in_split(flag: &str, i: usize, data: &Dataset) -> Result<()> {
    if i < data.len() {
        Ok(())
    } else {
        Err(InferError::Usage(format!(
            "{flag} {i}: the validation split has {} examples (0..{})",
            data.len(),
            data.len()
        )))
    }
}

/// Refuses an output file whose directory does not exist, before any work is done.
fn check_out(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(InferError::File {
            path: path.into(),
            msg: format!("--out: the directory {} does not exist", dir.display()),
        })
    }
}

fn write_png(path: &Path, values: &[f32], m: &Loaded, cols: usize) -> Result<()> {
    image::write_grid(path, values, m.model.config().shape, cols)
}

// ---------------------------------------------------------------------------------------------
// reconstruct

#[derive(Debug, Clone, Args)]
pub struct ReconstructArgs {
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
pub struct ReconstructReport {
    pub out: PathBuf,
    pub n: usize,
    pub cols: usize,
    /// Rows of the picture (originals and reconstructions).
    pub rows: usize,
    /// Mean squared error per value between the originals and their reconstructions.
    pub mse: f64,
}

impl ReconstructReport {
    pub fn text(&self) -> String {
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

/// The picture of `reconstruct` as PNG bytes, with its report numbers.
pub fn reconstruction_png(
    m: &Loaded,
    data: &Dataset,
    n: usize,
    offset: usize,
    cols: usize,
) -> Result<(Vec<u8>, f64, usize)> {
    let end = (offset + n).min(data.len());
    if offset >= end {
        return Err(InferError::Usage(format!(
            "--offset {offset}: the validation split has {} examples",
            data.len()
        )));
    }
    let idx: Vec<usize> = (offset..end).collect();
    let r = reconstruct::reconstruct(&m.model, data, &idx, &m.device)?;
    let d = data.shape.dim();
    let cols = cols.min(idx.len());
    let values = reconstruct::comparison_layout(&r, d, cols);
    let png = image::grid_png(&values, m.model.config().shape, cols, 2)?;
    Ok((png, r.mse, 2 * idx.len().div_ceil(cols)))
}

/// `vae-infer reconstruct`.
pub fn run_reconstruct(a: &ReconstructArgs) -> Result<ReconstructReport> {
    check_out(&a.out)?;
    positive("--n", a.n)?;
    positive("--cols", a.cols)?;
    let m = a.model.load()?;
    check_image(&m, "reconstruct")?;
    let data = load_splits(&m)?.test;
    let (png, mse, rows) = reconstruction_png(&m, &data, a.n, a.offset, a.cols)?;
    vae_core::weights::atomic_write(&a.out, &png)?;
    let n = a.n.min(data.len() - a.offset);
    Ok(ReconstructReport {
        out: a.out.clone(),
        n,
        cols: a.cols.min(n),
        rows,
        mse,
    })
}

// ---------------------------------------------------------------------------------------------
// interpolate

#[derive(Debug, Clone, Args)]
pub struct InterpolateArgs {
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
pub struct InterpolateReport {
    pub out: PathBuf,
    pub from: usize,
    pub to: usize,
    pub steps: usize,
    /// `linear` or `spherical`.
    pub method: &'static str,
    /// Euclidean distance between the two posterior means.
    pub distance: f64,
}

impl InterpolateReport {
    pub fn text(&self) -> String {
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

/// `vae-infer interpolate`: one row, the first original, the decoded path between the two
/// posterior means, the second original.
pub fn run_interpolate(a: &InterpolateArgs) -> Result<InterpolateReport> {
    check_out(&a.out)?;
    if a.steps < 2 {
        return Err(InferError::Usage("--steps must be at least 2".into()));
    }
    let m = a.model.load()?;
    check_image(&m, "interpolate")?;
    let data = load_splits(&m)?.test;
    in_split("--from", a.from, &data)?;
    in_split("--to", a.to, &data)?;
    let q = posterior(&m.model, &data, &[a.from, a.to], &m.device)?;
    let mu = q.mu.flatten_all()?.to_vec1::<f32>()?;
    let l = m.model.latent_dim();
    let (za, zb) = (&mu[..l], &mu[l..]);
    let z = walk::path(za, zb, a.steps, a.slerp);
    let label = match m.model.config().num_classes {
        Some(_) => a
            .label
            .or_else(|| data.gather_labels(&[a.from]).map(|v| v[0])),
        None => a.label,
    };
    let decoded = walk::decode(&m.model, z, label, &m.device)?;
    let mut buf = Vec::new();
    data.gather(&[a.from], &mut buf);
    let mut values = buf.clone();
    values.extend(decoded);
    data.gather(&[a.to], &mut buf);
    values.extend(&buf);
    write_png(&a.out, &values, &m, a.steps + 2)?;
    let distance = za
        .iter()
        .zip(zb)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    Ok(InterpolateReport {
        out: a.out.clone(),
        from: a.from,
        to: a.to,
        steps: a.steps,
        method: if a.slerp { "spherical" } else { "linear" },
        distance,
    })
}

// ---------------------------------------------------------------------------------------------
// traverse

#[derive(Debug, Clone, Args)]
pub struct TraverseArgs {
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
pub struct TraverseReport {
    pub out: PathBuf,
    /// The dimensions drawn, one row each.
    pub dims: Vec<usize>,
    pub steps: usize,
    pub range: f64,
    /// The validation example whose posterior mean is the base code (none: the zero code).
    pub index: Option<usize>,
}

impl TraverseReport {
    pub fn text(&self) -> String {
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
    image::grid_png(&decoded, m.model.config().shape, steps, 2)
}

/// `vae-infer traverse`.
pub fn run_traverse(a: &TraverseArgs) -> Result<TraverseReport> {
    check_out(&a.out)?;
    positive("--steps", a.steps)?;
    if !(a.range.is_finite() && a.range > 0.0) {
        return Err(InferError::Usage(format!(
            "--range must be positive, got {}",
            a.range
        )));
    }
    let m = a.model.load()?;
    check_image(&m, "traverse")?;
    let l = m.model.latent_dim();
    let dims: Vec<usize> = match a.dim {
        Some(d) if d >= l => {
            return Err(InferError::Usage(format!(
                "--dim {d}: the latent space has {l} dimensions (0..{l})"
            )))
        }
        Some(d) => vec![d],
        None => (0..l).collect(),
    };
    let (base, label) = match a.index {
        Some(i) => {
            let data = load_splits(&m)?.test;
            in_split("--index", i, &data)?;
            let q = posterior(&m.model, &data, &[i], &m.device)?;
            let own = data.gather_labels(&[i]).map(|v| v[0]);
            let label = match m.model.config().num_classes {
                Some(_) => a.label.or(own),
                None => a.label,
            };
            (q.mu.flatten_all()?.to_vec1::<f32>()?, label)
        }
        None => (vec![0f32; l], a.label),
    };
    let png = traversal_png(&m, &base, &dims, a.range, a.steps, label)?;
    vae_core::weights::atomic_write(&a.out, &png)?;
    Ok(TraverseReport {
        out: a.out.clone(),
        dims,
        steps: a.steps,
        range: a.range,
        index: a.index,
    })
}

// ---------------------------------------------------------------------------------------------
// manifold

#[derive(Debug, Clone, Args)]
pub struct ManifoldArgs {
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
pub struct ManifoldReport {
    pub out: PathBuf,
    pub steps: usize,
    pub dims: [usize; 2],
    /// The outermost grid value, Φ⁻¹(1 - 0.5 / steps).
    pub extent: f64,
}

impl ManifoldReport {
    pub fn text(&self) -> String {
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
    image::grid_png(&decoded, m.model.config().shape, steps, 1)
}

/// `vae-infer manifold`.
pub fn run_manifold(a: &ManifoldArgs) -> Result<ManifoldReport> {
    check_out(&a.out)?;
    positive("--steps", a.steps)?;
    let [d0, d1] = a.dims[..] else {
        return Err(InferError::Usage(format!(
            "--dims: expected two dimensions such as 0,1, got {}",
            a.dims.len()
        )));
    };
    if d0 == d1 {
        return Err(InferError::Usage(format!(
            "--dims {d0},{d1}: the two dimensions must differ"
        )));
    }
    let m = a.model.load()?;
    check_image(&m, "manifold")?;
    let l = m.model.latent_dim();
    if d0.max(d1) >= l {
        return Err(InferError::Usage(format!(
            "--dims {d0},{d1}: the latent space has {l} dimensions (0..{l})"
        )));
    }
    let png = manifold_png(&m, (d0, d1), a.steps, a.label)?;
    vae_core::weights::atomic_write(&a.out, &png)?;
    Ok(ManifoldReport {
        out: a.out.clone(),
        steps: a.steps,
        dims: [d0, d1],
        extent: walk::normal_quantile(1.0 - 0.5 / a.steps as f64),
    })
}

// ---------------------------------------------------------------------------------------------
// encode

#[derive(Debug, Clone, Args)]
pub struct EncodeArgs {
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
}

#[derive(Debug, Clone, Serialize)]
pub struct EncodeReport {
    pub out: PathBuf,
    pub split: Split,
    pub format: LatentFormat,
    pub examples: usize,
    pub latent_dim: usize,
    pub labelled: bool,
    pub seconds: f64,
}

impl EncodeReport {
    pub fn text(&self) -> String {
        format!(
            "wrote the posterior means and log-variances of {} {} examples ({} latent dimensions{}) to {} in {:.2}s",
            self.examples,
            split_name(self.split),
            self.latent_dim,
            if self.labelled { ", with labels" } else { "" },
            self.out.display(),
            self.seconds
        )
    }
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// `vae-infer encode`.
pub fn run_encode(a: &EncodeArgs) -> Result<EncodeReport> {
    check_out(&a.out)?;
    // Refuse an unknown extension before any work.
    LatentFormat::from_path(&a.out)?;
    positive("--batch-size", a.batch_size)?;
    let m = a.model.load()?;
    let splits = load_splits(&m)?;
    let data = match a.split {
        Split::Train => splits.train,
        Split::Test => splits.test,
    };
    let data = match a.limit {
        Some(n) => data.take(n),
        None => data,
    };
    let start = Instant::now();
    let l = encode_dataset(&m.model, &data, &m.device, a.batch_size)?;
    let meta = HashMap::from([
        ("split".to_string(), split_name(a.split).to_string()),
        ("latent_dim".to_string(), l.dim.to_string()),
        (
            "dataset".to_string(),
            dataset_name(&m).unwrap_or("unknown").to_string(),
        ),
    ]);
    let format = write_latents(&a.out, &l, meta)?;
    Ok(EncodeReport {
        out: a.out.clone(),
        split: a.split,
        format,
        examples: l.len(),
        latent_dim: l.dim,
        labelled: l.labels.is_some(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------------
// latents of both splits, for cluster, classify, plot and report

/// Flags shared by the commands that encode both splits.
#[derive(Debug, Clone, Args)]
pub struct LatentArgs {
    /// Use only the first N examples of each split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

/// The posterior means of both splits, and the time encoding took.
pub struct SplitLatents {
    pub train: Latents,
    pub test: Latents,
    pub encode_seconds: f64,
}

impl LatentArgs {
    fn check(&self) -> Result<()> {
        positive("--batch-size", self.batch_size)?;
        if self.limit == Some(0) {
            return Err(InferError::Usage("--limit must be at least 1".into()));
        }
        Ok(())
    }

    /// The splits cut to `--limit` examples each.
    pub fn cut(&self, splits: Splits) -> Splits {
        match self.limit {
            Some(n) => Splits {
                train: splits.train.take(n),
                test: splits.test.take(n),
            },
            None => splits,
        }
    }
}

/// Encodes both splits.
pub fn encode_splits(m: &Loaded, splits: &Splits, batch_size: usize) -> Result<SplitLatents> {
    let start = Instant::now();
    let train = encode_dataset(&m.model, &splits.train, &m.device, batch_size)?;
    let test = encode_dataset(&m.model, &splits.test, &m.device, batch_size)?;
    Ok(SplitLatents {
        train,
        test,
        encode_seconds: start.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------------
// cluster

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub latents: LatentArgs,
    /// Number of clusters (default: the number of classes).
    #[arg(long)]
    pub k: Option<usize>,
    /// k-means++ seedings; the fit with the lowest inertia is kept.
    #[arg(long, default_value_t = 10)]
    pub restarts: usize,
    /// Lloyd iterations per restart at most.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub k: usize,
    /// Test accuracy after the best one-to-one matching of clusters to labels.
    pub accuracy: f64,
    pub nmi: f64,
    pub ari: f64,
    /// Within-cluster sum of squares on the training latents.
    pub inertia: f64,
    pub restarts: usize,
    pub iterations: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub encode_seconds: f64,
    /// Fitting and scoring, encoding excluded.
    pub seconds: f64,
}

impl ClusterReport {
    pub fn text(&self) -> String {
        format!(
            "k-means with k = {} on latent means (fit on {} train, scored on {} test examples)\n  accuracy {:.4}  NMI {:.4}  ARI {:.4}\n  best of {} restarts: inertia {:.1} after {} iterations; {:.2}s (encoding {:.2}s)",
            self.k,
            self.train_examples,
            self.test_examples,
            self.accuracy,
            self.nmi,
            self.ari,
            self.restarts,
            self.inertia,
            self.iterations,
            self.seconds,
            self.encode_seconds
        )
    }
}

/// k-means fitted on the training latents, scored on the test latents.
pub fn cluster_latents(
    lat: &SplitLatents,
    k: Option<usize>,
    restarts: usize,
    max_iter: usize,
    seed: u64,
) -> Result<ClusterReport> {
    let truth = lat.test.require_labels("cluster")?;
    let classes = lat
        .train
        .labels
        .iter()
        .chain(&lat.test.labels)
        .flatten()
        .max()
        .map_or(10, |&c| c as usize + 1);
    let cfg = KMeansConfig {
        k: k.unwrap_or(classes),
        restarts,
        max_iter,
        seed,
        ..KMeansConfig::default()
    };
    let start = Instant::now();
    let km = cluster::fit(&lat.train.mu, lat.train.dim, &cfg)?;
    let pred = km.predict(&lat.test.mu);
    let s = cluster_scores(&pred, truth)?;
    Ok(ClusterReport {
        k: cfg.k,
        accuracy: s.accuracy,
        nmi: s.nmi,
        ari: s.ari,
        inertia: km.inertia,
        restarts,
        iterations: km.iterations,
        train_examples: lat.train.len(),
        test_examples: lat.test.len(),
        encode_seconds: lat.encode_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `vae-infer cluster`.
pub fn run_cluster(a: &ClusterArgs) -> Result<ClusterReport> {
    positive("--restarts", a.restarts)?;
    positive("--max-iter", a.max_iter)?;
    if a.k == Some(0) {
        return Err(InferError::Usage("--k must be at least 1".into()));
    }
    a.latents.check()?;
    let m = a.model.load()?;
    let splits = a.latents.cut(load_splits(&m)?);
    let lat = encode_splits(&m, &splits, a.latents.batch_size)?;
    cluster_latents(&lat, a.k, a.restarts, a.max_iter, a.model.seed)
}

// ---------------------------------------------------------------------------------------------
// classify

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// k nearest neighbours (Euclidean, majority vote).
    Knn,
    /// Multinomial logistic regression on standardised latents.
    Linear,
}

#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub latents: LatentArgs,
    /// The classifier.
    #[arg(long, value_enum, default_value_t = Method::Knn)]
    pub method: Method,
    /// Neighbours of k-NN.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Inverse L2 strength of the linear probe (scikit-learn's C).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub c: f64,
    /// Iterations of the linear probe's optimiser at most.
    #[arg(long, default_value_t = 2000)]
    pub max_iter: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    pub method: Method,
    /// Test accuracy of the classifier fitted on the training latents.
    pub accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged: Option<bool>,
    pub train_examples: usize,
    pub test_examples: usize,
    pub encode_seconds: f64,
    /// Fitting and scoring, encoding excluded.
    pub seconds: f64,
}

impl ClassifyReport {
    pub fn text(&self) -> String {
        let what = match (self.method, self.k) {
            (Method::Knn, Some(k)) => format!("{k}-nearest neighbours"),
            _ => format!(
                "logistic regression ({} L-BFGS iterations{})",
                self.iterations.unwrap_or(0),
                if self.converged == Some(false) {
                    ", not converged"
                } else {
                    ""
                }
            ),
        };
        format!(
            "{what} on latent means (fit on {} train, scored on {} test examples)\n  accuracy {:.4}; {:.2}s (encoding {:.2}s)",
            self.train_examples,
            self.test_examples,
            self.accuracy,
            self.seconds,
            self.encode_seconds
        )
    }
}

/// A classifier fitted on the training latents, scored on the test latents.
pub fn classify_latents(
    lat: &SplitLatents,
    method: Method,
    k: usize,
    logistic: &LogisticConfig,
) -> Result<ClassifyReport> {
    let ytr = lat.train.require_labels("classify")?;
    let yte = lat.test.require_labels("classify")?;
    let start = Instant::now();
    let dim = lat.train.dim;
    let (pred, iterations, converged) = match method {
        Method::Knn => (
            knn_predict(&lat.train.mu, ytr, &lat.test.mu, dim, k)?,
            None,
            None,
        ),
        Method::Linear => {
            let model = fit_logistic(&lat.train.mu, ytr, dim, logistic)?;
            (
                model.predict(&lat.test.mu)?,
                Some(model.iterations),
                Some(model.converged),
            )
        }
    };
    Ok(ClassifyReport {
        method,
        accuracy: accuracy(&pred, yte)?,
        k: (method == Method::Knn).then_some(k),
        iterations,
        converged,
        train_examples: lat.train.len(),
        test_examples: lat.test.len(),
        encode_seconds: lat.encode_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `vae-infer classify`.
pub fn run_classify(a: &ClassifyArgs) -> Result<ClassifyReport> {
    positive("--k", a.k)?;
    positive("--max-iter", a.max_iter)?;
    if !(a.c > 0.0 && a.c.is_finite()) {
        return Err(InferError::Usage(format!(
            "--c must be positive, got {}",
            a.c
        )));
    }
    a.latents.check()?;
    let m = a.model.load()?;
    let splits = a.latents.cut(load_splits(&m)?);
    let lat = encode_splits(&m, &splits, a.latents.batch_size)?;
    let cfg = LogisticConfig {
        c: a.c,
        max_iter: a.max_iter,
        ..LogisticConfig::default()
    };
    classify_latents(&lat, a.method, a.k, &cfg)
}

// ---------------------------------------------------------------------------------------------
// plot

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
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
pub struct PlotReport {
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

impl PlotReport {
    pub fn text(&self) -> String {
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
        let p = crate::pca::Pca::fit(&lat.mu, dim, 2);
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
    let names = plot::class_names(dataset, classes);
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
    let Some(path) = dir.map(|d| d.join("metrics.jsonl")) else {
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

/// `vae-infer plot`.
pub fn run_plot(a: &PlotArgs) -> Result<PlotReport> {
    positive("--batch-size", a.batch_size)?;
    std::fs::create_dir_all(&a.out).map_err(|e| InferError::File {
        path: a.out.clone(),
        msg: format!("cannot create the output directory: {e}"),
    })?;
    let m = a.model.load()?;
    let splits = load_splits(&m)?;
    let data = match a.split {
        Split::Train => splits.train,
        Split::Test => splits.test,
    };
    let data = match a.limit {
        Some(n) => data.take(n),
        None => data,
    };
    let lat = encode_dataset(&m.model, &data, &m.device, a.batch_size)?;
    let pca = match (a.pca, a.no_pca) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let pic = latent_scatter(&lat, pca, dataset_name(&m), split_name(a.split))?;
    let scatter = a.out.join("latent.png");
    vae_core::weights::atomic_write(&scatter, &pic.png)?;
    let curves = match curves_picture(run_dir(&a.model).as_deref())? {
        Some(png) => {
            let p = a.out.join("curves.png");
            vae_core::weights::atomic_write(&p, &png)?;
            Some(p)
        }
        None => None,
    };
    Ok(PlotReport {
        scatter,
        curves,
        projection: pic.projection,
        explained_variance: pic.explained,
        points: lat.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// report

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
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
pub struct ReportReport {
    pub out: PathBuf,
    pub evaluation: crate::eval::ElboStats,
    pub cluster: ClusterReport,
    pub knn: ClassifyReport,
    pub linear: ClassifyReport,
    /// Pictures on the page.
    pub figures: usize,
    pub seconds: f64,
}

impl ReportReport {
    pub fn text(&self) -> String {
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

fn describe_model(m: &Loaded) -> String {
    let c = m.model.config();
    let arch = match &c.arch {
        vae_core::Arch::Mlp { hidden, .. } => format!("mlp {hidden:?}"),
        vae_core::Arch::Conv { channels, .. } => format!("conv {channels:?}"),
    };
    format!(
        "{arch}, latent {}, {} likelihood{}",
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

/// `vae-infer report`.
pub fn run_report(a: &ReportArgs) -> Result<ReportReport> {
    check_out(&a.out)?;
    use crate::report::{Figure, Page, Section, Table};
    a.latents.check()?;
    positive("--restarts", a.restarts)?;
    positive("--knn-k", a.knn_k)?;
    let start = Instant::now();
    let m = a.model.load()?;
    let dir = run_dir(&a.model);
    let config_path = match (&a.model.run, &a.model.config) {
        (Some(d), _) => Some(d.join("config.json")),
        (None, c) => c.clone(),
    };
    // Shown as written (vae-train writes it pretty-printed, in its own key order).
    let config_json = match &config_path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| InferError::File {
            path: p.clone(),
            msg: e.to_string(),
        })?,
        None => String::new(),
    };
    let splits = a.latents.cut(load_splits(&m)?);
    let evaluation = crate::eval::elbo_stats(
        &m.model,
        &splits.test,
        &m.device,
        a.latents.batch_size,
        a.model.seed,
        a.model.threads,
    )?;
    let lat = encode_splits(&m, &splits, a.latents.batch_size)?;
    let cluster = cluster_latents(&lat, None, a.restarts, 300, a.model.seed)?;
    let knn = classify_latents(&lat, Method::Knn, a.knn_k, &LogisticConfig::default())?;
    let linear = classify_latents(&lat, Method::Linear, a.knn_k, &LogisticConfig::default())?;

    let shape = m.model.config().shape;
    let mut sections = Vec::new();
    if shape.is_image() {
        let mut rng = vae_core::Rng::stream(a.model.seed, 0x5a3b1e);
        let x = crate::sample::sample(&m.model, 64, 1.0, None, &mut rng, &m.device)?;
        let samples = image::grid_png(&x.flatten_all()?.to_vec1::<f32>()?, shape, 8, 2)?;
        let n = 32.min(splits.test.len());
        let (recon, mse, _) = reconstruction_png(&m, &splits.test, n, 0, 8)?;
        sections.push(Section {
            heading: "Samples and reconstructions".into(),
            figures: vec![
                Figure {
                    caption: "64 samples: codes drawn from the prior N(0, I), decoded to the likelihood's mean".into(),
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
                "The decoded manifold over latent dimensions {d0} and {d1} (those whose posterior means vary most) at prior quantiles, 15 x 15; the other dimensions at 0"
            ),
            png: manifold_png(&m, (d0, d1), 15, label)?,
        });
    }
    if shape.is_image() {
        let dims: Vec<usize> = active.iter().copied().take(10).collect();
        latent_figs.push(Figure {
            caption: format!(
                "Traversals from -3 to 3 around the zero code of the {} most varying latent dimensions (rows: {:?})",
                dims.len(),
                dims
            ),
            png: traversal_png(&m, &vec![0f32; l], &dims, 3.0, 9, label)?,
        });
    }
    sections.push(Section {
        heading: "Latent space".into(),
        figures: latent_figs,
        note: None,
    });
    let curves = curves_picture(dir.as_deref())?;
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
            rows: vec![
                (
                    "negative ELBO (nats)".into(),
                    format!("{:.3}", evaluation.neg_elbo),
                ),
                (
                    "reconstruction (nats)".into(),
                    format!("{:.3}", evaluation.recon),
                ),
                ("KL (nats)".into(), format!("{:.3}", evaluation.kl)),
            ],
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
                (format!("{}-NN accuracy", a.knn_k), f(knn.accuracy)),
                ("logistic regression accuracy".into(), f(linear.accuracy)),
            ],
        },
    ];
    let source = match (&a.model.run, &a.model.model) {
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
    let html = crate::report::render(&page);
    vae_core::weights::atomic_write(&a.out, html.as_bytes())?;
    Ok(ReportReport {
        out: a.out.clone(),
        evaluation,
        cluster,
        knn,
        linear,
        figures,
        seconds: start.elapsed().as_secs_f64(),
    })
}
