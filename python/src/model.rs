//! `vae_rs.load(run_dir)` and the `Model` it returns: vae-infer's model loading, and the
//! library functions of its commands (encode, sample, reconstruct, evaluate) on arrays.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use vae_core::candle_core::Tensor;
use vae_core::DataShape;
use vae_data::{Binarize, Dataset, Values};
use vae_infer::args::{cut, load_split, ModelArgs, Split};
use vae_infer::commands::evaluate::{self, Report};
use vae_infer::commands::sample::{self, LatentSource};
use vae_infer::latent::encode_dataset;
use vae_infer::model::Loaded;
use vae_run::batch::one_hot;
use vae_run::RunDir;

use crate::arrays;
use crate::errors::{compute, Failure};

/// Examples per forward pass of `decode` and `reconstruct` (and the default `batch_size`).
const BATCH: usize = 1000;

// `evaluate`'s `iw_samples=500` in its signature is the command's default.
const _: () = assert!(evaluate::DEFAULT_IW_SAMPLES == 500);

/// A trained model, loaded from a run directory (`vae_rs.load`, `Run.load`): encode, decode,
/// sample, reconstruct and evaluate NumPy arrays.
#[pyclass(module = "vae_rs", frozen)]
pub struct Model {
    pub(crate) loaded: Loaded,
    pub(crate) args: ModelArgs,
    dir: PathBuf,
    config: String,
}

/// The run directory's model, as `vae-infer --run DIR` loads it.
pub fn load_model(
    py: Python<'_>,
    dir: PathBuf,
    best: bool,
    device: &str,
    threads: Option<usize>,
    seed: u64,
) -> PyResult<Model> {
    if threads == Some(0) {
        return Err(Failure::input("--threads must be at least 1").into());
    }
    let mut args = ModelArgs::for_run(&dir, device, 1);
    args.best = best;
    args.runtime.threads = threads;
    args.runtime.seed = Some(seed);
    compute(py, move || {
        let loaded = args.load()?;
        let cfg = RunDir::new(&dir).config();
        let config = std::fs::read_to_string(&cfg).map_err(|e| {
            Failure::new(crate::errors::Kind::File, format!("{}: {e}", cfg.display()))
        })?;
        Ok(Model {
            loaded,
            args,
            dir,
            config,
        })
    })
}

/// The model of a run directory written by `vae-train` or `vae_rs.train`: model.safetensors
/// (best.safetensors with `best`) and config.json, every tensor checked. `device`: "auto",
/// "cpu", "cuda[:N]", "metal"; `threads`: all cores by default; `seed`: of the random draws
/// (sampling, the evaluation's noise).
#[pyfunction]
#[pyo3(signature = (run_dir, *, best = false, device = "auto", threads = None, seed = 0))]
pub fn load(
    py: Python<'_>,
    run_dir: PathBuf,
    best: bool,
    device: &str,
    threads: Option<usize>,
    seed: u64,
) -> PyResult<Model> {
    load_model(py, run_dir, best, device, threads, seed)
}

impl Model {
    fn data_shape(&self) -> DataShape {
        self.loaded.model.config().shape
    }

    /// The examples of `x` (images, or features for a model of tables) with their `labels`, as
    /// a dataset of the model's shape.
    fn dataset(
        &self,
        x: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Dataset> {
        let shape = self.data_shape();
        let (n, values) = if shape.is_image() {
            let (n, px) = arrays::images_for(x, shape, "x")?;
            (n, Values::U8(px))
        } else {
            let (n, v) = arrays::floats(x, shape.dim(), "x")?;
            (n, Values::F32(v))
        };
        let classes = self.loaded.model.config().num_classes;
        let labels = match (labels, classes) {
            (Some(l), _) => Some(arrays::labels(l, n, "labels")?),
            (None, Some(_)) => {
                return Err(Failure::input(
                    "labels: this model is conditional (trained with --conditional): give the \
                     examples' labels",
                )
                .into())
            }
            (None, None) => None,
        };
        Ok(Dataset::new(shape, values, labels, classes).map_err(Failure::from)?)
    }

    /// One-hot labels for `n` codes of a conditional model (None for another).
    fn code_labels(&self, labels: Option<Vec<u32>>) -> Result<Option<Tensor>, Failure> {
        let m = &self.loaded;
        match (m.model.config().num_classes, labels) {
            (Some(k), Some(l)) => Ok(Some(one_hot(&l, k, &m.device)?)),
            (Some(_), None) => Err(Failure::input(
                "labels: this model is conditional (trained with --conditional): give one label \
                 per code",
            )),
            (None, _) => Ok(None),
        }
    }
}

#[pymethods]
impl Model {
    /// The posterior q(z|x) of each example: its means and log-variances, float32 arrays of
    /// shape (n, latent_dim) (the top group of a hierarchical model).
    #[pyo3(signature = (x, *, labels = None, batch_size = 1000))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        labels: Option<&Bound<'py, PyAny>>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        if batch_size == 0 {
            return Err(Failure::input("--batch-size must be at least 1").into());
        }
        let data = self.dataset(x, labels)?;
        let m = &self.loaded;
        let l = compute(py, || {
            Ok(encode_dataset(&m.model, &data, &m.device, batch_size)?)
        })?;
        let n = l.len();
        let mu = arrays::floats_out(py, l.mu, n, l.dim)?;
        let logvar = arrays::floats_out(py, l.logvar, n, l.dim)?;
        PyTuple::new(py, [mu, logvar])
    }

    /// The likelihood's mean for each code of `z` (float32, shape (n, latent_dim)): uint8
    /// images (the mean grey level of each pixel), or float32 features for a model of tables.
    #[pyo3(signature = (z, *, labels = None))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        z: &Bound<'py, PyAny>,
        labels: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let m = &self.loaded;
        let l = m.model.latent_dim();
        let (n, codes) = arrays::floats(z, l, "z")?;
        let labels = labels.map(|y| arrays::labels(y, n, "labels")).transpose()?;
        let onehot = self.code_labels(labels)?;
        let values = compute(py, || {
            let mut out = Vec::with_capacity(n * self.data_shape().dim());
            for start in (0..n).step_by(BATCH) {
                let end = (start + BATCH).min(n);
                let z =
                    Tensor::from_slice(&codes[start * l..end * l], (end - start, l), &m.device)?;
                let y = onehot
                    .as_ref()
                    .map(|y| y.narrow(0, start, end - start))
                    .transpose()?;
                let x = m.model.decode_mean(&z, y.as_ref())?;
                out.extend(x.flatten_all()?.to_vec1::<f32>()?);
            }
            Ok(out)
        })?;
        arrays::examples_out(py, values, n, self.data_shape())
    }

    /// `n` new examples: codes from the prior N(0, I) at `temperature` (a float, or one per
    /// latent group of a hierarchical model; by default the model's own, as `vae-infer sample`
    /// takes it), decoded to the likelihood's mean, drawn from
    /// `seed` (the model's seed by default) exactly as `vae-infer sample` draws its grid.
    #[pyo3(signature = (n = 64, *, temperature = None, label = None, seed = None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        temperature: Option<&Bound<'py, PyAny>>,
        label: Option<u32>,
        seed: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let temps: Vec<f64> = match temperature {
            None => self.loaded.model.sampling_temperatures(),
            Some(t) => match t.extract::<f64>() {
                Ok(v) => vec![v],
                Err(_) => t.extract::<Vec<f64>>().map_err(|_| {
                    Failure::input(
                        "--temperature: a number, or a sequence of numbers (one per latent group)",
                    )
                })?,
            },
        };
        let seed = seed.unwrap_or_else(|| self.args.seed());
        let m = &self.loaded;
        let values = compute(py, || {
            Ok(sample::draw(
                m,
                n,
                &temps,
                label,
                LatentSource::Prior,
                seed,
            )?)
        })?;
        arrays::examples_out(py, values, n, self.data_shape())
    }

    /// Each example decoded from its posterior mean (every latent group at its posterior mean):
    /// what `vae-infer reconstruct` draws under the originals.
    #[pyo3(signature = (x, *, labels = None))]
    fn reconstruct<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        labels: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = self.dataset(x, labels)?;
        let m = &self.loaded;
        let n = data.len();
        let values = compute(py, || {
            let mut out = Vec::with_capacity(n * data.shape.dim());
            for start in (0..n).step_by(BATCH) {
                let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
                let r = vae_infer::reconstruct::reconstruct(&m.model, &data, &idx, &m.device)?;
                out.extend(r.reconstructions);
            }
            Ok(out)
        })?;
        arrays::examples_out(py, values, n, self.data_shape())
    }

    /// The negative ELBO, its reconstruction and KL terms, and the importance-sampled NLL, in
    /// nats per example, with bits/dim where they bound a probability of the data: the
    /// dictionary of `vae-infer evaluate --json`. `x` is an array of examples, or "train" or
    /// "test" for a split of the run's data (the dictionary then names it, as the command's).
    #[pyo3(signature = (x = None, *, iw_samples = 500, batch_size = 1000, limit = None, labels = None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        x: Option<&Bound<'py, PyAny>>,
        iw_samples: usize,
        batch_size: usize,
        limit: Option<usize>,
        labels: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if limit == Some(0) {
            return Err(Failure::input("--limit must be at least 1").into());
        }
        let split = match x.map(|v| v.extract::<String>()) {
            None => Some(Split::Test),
            Some(Ok(s)) => Some(match s.as_str() {
                "test" => Split::Test,
                "train" => Split::Train,
                other => {
                    return Err(Failure::input(format!(
                        "x: \"{other}\" is no split of the run's data (\"train\" or \"test\"); \
                         give an array to evaluate other examples"
                    ))
                    .into())
                }
            }),
            Some(Err(_)) => None,
        };
        let given = match (split, x) {
            (None, Some(x)) => {
                let mut d = self.dataset(x, labels)?;
                // A run trained on statically binarised data is scored on the binarisation its
                // loader gives (dynamic binarisation is fixed by `evaluate` itself).
                if self.loaded.data.as_ref().map(|d| d.binarize) == Some(Binarize::Static) {
                    d.binarize_static();
                }
                Some(cut(d, limit))
            }
            _ => None,
        };
        let (m, a) = (&self.loaded, &self.args);
        let hidden = |_: usize| indicatif::ProgressBar::hidden();
        let json = compute(py, || {
            let json = match (split, given) {
                (_, Some(d)) => serde_json::to_string(&evaluate::evaluate(
                    m, d, batch_size, iw_samples, a, &hidden,
                )?),
                (Some(split), None) => {
                    let d = load_split(m, split, limit)?;
                    let scores = evaluate::evaluate(m, d, batch_size, iw_samples, a, &hidden)?;
                    serde_json::to_string(&Report { split, scores })
                }
                (None, None) => return Err(Failure::input("x: no examples")),
            };
            json.map_err(|e| Failure::new(crate::errors::Kind::Other, e.to_string()))
        })?;
        crate::json::loads(py, &json)
    }

    /// The run's configuration (config.json) as a dictionary: `model`, `data`, `train`.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::json::loads(py, &self.config)
    }

    /// The dimension of the (top) latent code.
    #[getter]
    fn latent_dim(&self) -> usize {
        self.loaded.model.latent_dim()
    }

    /// What one example is: (channels, height, width).
    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        let s = self.data_shape();
        (s.channels, s.height, s.width)
    }

    /// The run directory the model was loaded from.
    #[getter]
    fn run_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The likelihood p(x|z), by its command-line name.
    #[getter]
    fn likelihood(&self) -> String {
        self.loaded.model.likelihood().name().to_string()
    }

    fn __repr__(&self) -> String {
        let s = self.data_shape();
        format!(
            "Model(run_dir={:?}, shape=({}, {}, {}), latent_dim={}, likelihood={:?}, device={:?})",
            self.dir.display().to_string(),
            s.channels,
            s.height,
            s.width,
            self.loaded.model.latent_dim(),
            self.loaded.model.likelihood().name(),
            vae_core::device::name(&self.loaded.device)
        )
    }
}
