//! `vae_rs.train(data, out=..., **flags)`: the flags of `vae-train` (the same names with `_`
//! for `-`, the same defaults, `config=` a TOML file of them), vae-train's launch and its loop.
//!
//! Data given as arrays are written into the run directory as IDX files (`DIR/data/`,
//! `--dataset idx`), then read back as `vae-train` reads any dataset: the run directory is a
//! normal one, which `vae-infer` evaluates with the same examples in the same order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Value};
use vae_core::DataShape;
use vae_data::idx_set::{write_idx_set, IdxSplit};
use vae_run::RunDir;
use vae_train::cli::Args;
use vae_train::metrics::EpochMetrics;
use vae_train::train::{self as training, Observer, Outcome};

use crate::arrays;
use crate::errors::{compute, Failure, Kind};
use crate::model::{load_model, Model};

/// The data flags that say where the data is: refused beside data given as the first argument.
const SOURCE_FLAGS: [&str; 5] = ["dataset", "data_dir", "images", "csv", "npy"];

/// A flag's Python value as JSON, for vae-train's `Args` (as its TOML file is read).
fn to_json(v: &Bound<'_, PyAny>, flag: &str) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::from(i));
        }
        return Ok(Value::from(v.extract::<u64>()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::from(v.extract::<f64>()?));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::String(s.extract::<String>()?));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items: Vec<Value> = v
            .try_iter()?
            .map(|item| to_json(&item?, flag))
            .collect::<PyResult<_>>()?;
        return Ok(Value::Array(items));
    }
    if v.hasattr("__fspath__")? {
        let p: PathBuf = v.extract()?;
        return Ok(Value::String(p.display().to_string()));
    }
    // NumPy scalars.
    if let Ok(i) = v.extract::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = v.extract::<f64>() {
        return Ok(Value::from(f));
    }
    Err(Failure::input(format!(
        "{flag}: a value of type {} is no flag value",
        v.get_type().name()?
    ))
    .into())
}

/// vae-train's `Args` from keyword arguments named as its flags (`batch_size` for
/// `--batch-size`); unknown names and values of the wrong type are refused by name.
fn flags_to_args(flags: Option<&Bound<'_, PyDict>>) -> PyResult<Args> {
    let known: Vec<String> = match serde_json::to_value(Args::default()) {
        Ok(Value::Object(o)) => o.keys().map(|k| k.replace('-', "_")).collect(),
        _ => Vec::new(),
    };
    let mut object = Map::new();
    let (mut config, mut resume) = (None, None);
    for (k, v) in flags.into_iter().flat_map(|d| d.iter()) {
        let name: String = k.extract()?;
        let flag = format!("--{}", name.replace('_', "-"));
        match name.as_str() {
            "config" => config = Some(v.extract::<PathBuf>()?),
            "resume" => resume = Some(v.extract::<PathBuf>()?),
            _ if known.contains(&name) => {
                object.insert(name.replace('_', "-"), to_json(&v, &flag)?);
            }
            _ => {
                let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
                names.extend(["config", "resume"]);
                names.sort_unstable();
                return Err(Failure::input(format!(
                    "unknown flag `{name}` (the flags of vae-train: {})",
                    names.join(", ")
                ))
                .into());
            }
        }
    }
    // Each flag alone first, so that a value of the wrong type is refused by its name.
    for (k, v) in &object {
        let one = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
        if let Err(e) = serde_json::from_value::<Args>(one) {
            return Err(Failure::input(format!("--{k}: {e}")).into());
        }
    }
    let mut args: Args =
        serde_json::from_value(Value::Object(object)).map_err(|e| Failure::input(e.to_string()))?;
    args.config = config;
    args.resume = resume;
    Ok(args)
}

/// One split of images given as arrays.
struct ArraySplit {
    shape: DataShape,
    pixels: Vec<u8>,
    labels: Option<Vec<u32>>,
}

impl ArraySplit {
    fn read(
        images: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        what: &str,
    ) -> PyResult<Self> {
        let (n, shape, pixels) = arrays::images(images, what)?;
        let labels = labels
            .map(|l| arrays::labels(l, n, &format!("{what}_labels")))
            .transpose()?;
        Ok(Self {
            shape,
            pixels,
            labels,
        })
    }

    fn idx(&self) -> IdxSplit<'_> {
        IdxSplit {
            shape: self.shape,
            pixels: &self.pixels,
            labels: self.labels.as_deref(),
        }
    }
}

/// Images given as arrays: the training split and, when given, the test split.
struct Arrays {
    train: ArraySplit,
    test: Option<ArraySplit>,
}

/// Reads `data`: arrays (an array of images, or a dict of `train`, `test`, `train_labels`,
/// `test_labels` as `vae_rs.datasets.sample()` gives), or a dataset name or path, which sets
/// the data flags of `args`.
fn read_data(
    data: Option<&Bound<'_, PyAny>>,
    labels: Option<&Bound<'_, PyAny>>,
    args: &mut Args,
) -> PyResult<Option<Arrays>> {
    let Some(data) = data.filter(|d| !d.is_none()) else {
        if labels.is_some() {
            return Err(
                Failure::input("labels: they go with images given as an array (data)").into(),
            );
        }
        return Ok(None);
    };
    if let Ok(d) = data.cast::<PyDict>() {
        if labels.is_some() {
            return Err(Failure::input(
                "labels: with a dict of data, give them as its train_labels and test_labels",
            )
            .into());
        }
        for key in d.keys() {
            let k: String = key.extract()?;
            if !["train", "test", "train_labels", "test_labels"].contains(&k.as_str()) {
                return Err(Failure::input(format!(
                    "data: unknown key `{k}` (the keys: train, test, train_labels, test_labels)"
                ))
                .into());
            }
        }
        let train = d
            .get_item("train")?
            .ok_or_else(|| Failure::input("data: a dict of data needs `train` (images)"))?;
        let train = ArraySplit::read(&train, d.get_item("train_labels")?.as_ref(), "train")?;
        let test = match d.get_item("test")? {
            Some(t) => Some(ArraySplit::read(
                &t,
                d.get_item("test_labels")?.as_ref(),
                "test",
            )?),
            None if d.contains("test_labels")? => {
                return Err(Failure::input("data: test_labels without test images").into())
            }
            None => None,
        };
        return Ok(Some(Arrays { train, test }));
    }
    let is_path = data.is_instance_of::<PyString>() || data.hasattr("__fspath__")?;
    if !is_path {
        let train = ArraySplit::read(data, labels, "data")?;
        return Ok(Some(Arrays { train, test: None }));
    }
    if labels.is_some() {
        return Err(Failure::input("labels: they go with images given as an array (data)").into());
    }
    let path: PathBuf = data.extract()?;
    let name = path.display().to_string();
    let d = &mut args.data;
    if vae_data::named::find(&name).is_some() {
        d.dataset = Some(name);
    } else if path.is_dir() {
        if has_idx_images(&path) {
            d.dataset = Some(vae_data::config::IDX.into());
            d.data_dir = Some(path);
        } else {
            d.images = Some(path);
        }
    } else if path.is_file() {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => d.csv = Some(path),
            Some(e) if e.eq_ignore_ascii_case("npy") => d.npy = Some(path),
            _ => {
                return Err(Failure::input(format!(
                "data: {name}: a file that is neither .csv nor .npy (a folder of pictures or of \
                     IDX files, a CSV or NPY file, or a dataset name)"
            ))
                .into())
            }
        }
    } else {
        return Err(Failure::new(
            Kind::File,
            format!(
                "data: {name}: no such file or directory, and no dataset of that name ({})",
                vae_data::named::names().join(", ")
            ),
        )
        .into());
    }
    Ok(None)
}

/// Whether `dir` holds the training images of an IDX set (`--dataset idx`).
fn has_idx_images(dir: &Path) -> bool {
    ["train-images-idx3-ubyte", "train-images-idx4-ubyte"]
        .iter()
        .any(|s| vae_data::dataset::find_idx(dir, s).is_some())
}

/// Writes a line to Python's `sys.stderr` (where a notebook shows it).
fn say(py: Python<'_>, line: &str) {
    let _ = py
        .import("sys")
        .and_then(|s| s.getattr("stderr"))
        .and_then(|e| e.call_method1("write", (format!("{line}\n"),)));
}

/// The loop's reports, as lines on `sys.stderr` (unless quiet) and calls of the callback; a
/// Ctrl-C (Python's SIGINT handler raising) or an exception of the callback stops the run after
/// the current step, with a checkpoint, and is raised once the run has stopped.
struct Progress<'a> {
    callback: Option<Py<PyAny>>,
    quiet: bool,
    stop: &'a AtomicBool,
    error: Option<PyErr>,
}

impl Progress<'_> {
    fn call(&mut self, py: Python<'_>, event: &Bound<'_, PyDict>) {
        if self.error.is_some() {
            return;
        }
        let r = py.check_signals().and_then(|()| match &self.callback {
            Some(cb) => cb.call1(py, (event,)).map(drop),
            None => Ok(()),
        });
        if let Err(e) = r {
            self.error = Some(e);
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    fn event<'py>(py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("event", kind)?;
        Ok(d)
    }
}

impl Observer for Progress<'_> {
    fn step(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64) {
        Python::attach(|py| {
            let e = Self::event(py, "step").and_then(|d| {
                d.set_item("epoch", epoch)?;
                d.set_item("batch", batch)?;
                d.set_item("batches", batches)?;
                d.set_item("loss", loss)?;
                Ok(d)
            });
            match e {
                Ok(d) => self.call(py, &d),
                Err(e) => self.error = Some(e),
            }
        })
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        Python::attach(|py| {
            if !self.quiet {
                say(py, &m.line());
            }
            let e = Self::event(py, "epoch").and_then(|d| {
                let text = serde_json::to_string(m).map_err(|e| Failure::input(e.to_string()))?;
                let metrics = crate::json::loads(py, &text)?;
                d.call_method1("update", (metrics,))?;
                Ok(d)
            });
            match e {
                Ok(d) => self.call(py, &d),
                Err(e) => self.error = Some(e),
            }
        })
    }

    fn note(&mut self, msg: &str) {
        Python::attach(|py| {
            if !self.quiet {
                say(py, msg);
            }
            if let Ok(d) = Self::event(py, "note").and_then(|d| {
                d.set_item("message", msg)?;
                Ok(d)
            }) {
                self.call(py, &d);
            }
        })
    }
}

/// A finished run (`vae_rs.train`): its directory, how it ended, its metrics and configuration,
/// and its model (`load()`).
#[pyclass(module = "vae_rs", frozen)]
pub struct Run {
    dir: PathBuf,
    outcome: &'static str,
    step: u64,
    best_val_loss: Option<f64>,
}

#[pymethods]
impl Run {
    /// The run directory (config.json, model.safetensors, metrics.jsonl, ...).
    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// "finished", or "early-stopped" (`early_stop`).
    #[getter]
    fn outcome(&self) -> &'static str {
        self.outcome
    }

    /// Training steps done, over all the run's sessions.
    #[getter]
    fn step(&self) -> u64 {
        self.step
    }

    /// The best validation loss (negative ELBO, nats per example).
    #[getter]
    fn best_val_loss(&self) -> Option<f64> {
        self.best_val_loss
    }

    /// metrics.jsonl: one dict per epoch.
    #[getter]
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let path = RunDir::new(&self.dir).metrics();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::new(Kind::File, format!("{}: {e}", path.display())))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| crate::json::loads(py, l))
            .collect()
    }

    /// config.json: the run's whole configuration (`model`, `data`, `train`).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let path = RunDir::new(&self.dir).config();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::new(Kind::File, format!("{}: {e}", path.display())))?;
        crate::json::loads(py, &text)
    }

    /// The trained model (`vae_rs.load(run.dir, ...)`).
    #[pyo3(signature = (*, best = false, device = "auto", threads = None, seed = 0))]
    fn load(
        &self,
        py: Python<'_>,
        best: bool,
        device: &str,
        threads: Option<usize>,
        seed: u64,
    ) -> PyResult<Model> {
        load_model(py, self.dir.clone(), best, device, threads, seed)
    }

    fn __repr__(&self) -> String {
        format!(
            "Run(dir={:?}, outcome={:?}, step={}, best_val_loss={})",
            self.dir.display().to_string(),
            self.outcome,
            self.step,
            self.best_val_loss
                .map_or("None".to_string(), |v| format!("{v:.4}"))
        )
    }
}

/// Trains a VAE and writes its run directory `out` (default runs/<dataset>-<preset>).
///
/// `data`: uint8 images (n, h, w) or (n, h, w, c) with `labels`; a dict of `train`, `test`,
/// `train_labels`, `test_labels` (as `vae_rs.datasets.sample()` gives); a dataset name
/// ("sample", "fashion-mnist", ...); a path (a folder of pictures or of IDX files, a CSV or NPY
/// file); or None, where the flags say (`dataset=...`; Fashion-MNIST by default). Arrays are
/// written into `out/data/` as IDX files, so that `vae-infer` can use the run.
///
/// `flags`: those of `vae-train` with `_` for `-` and the same defaults (`epochs=10`,
/// `batch_size=128`, `preset="pytorch-example"`, `likelihood`, `hidden=[400]`, `latent_dim`,
/// `threads`, `seed`, `quiet`, ...), `config=` a TOML file of them, `resume=DIR` to continue a
/// run where it stopped.
///
/// Progress: each epoch's line on `sys.stderr` (unless `quiet=True`), and `callback(event)`
/// with `event["event"]` "step" (`epoch`, `batch`, `batches`, `loss`), "epoch" (the
/// metrics.jsonl line) or "note" (`message`). Ctrl-C, or an exception raised by the callback,
/// stops the run after the current step with a checkpoint (continue it with `resume=`), then
/// is raised. Returns the `Run`.
#[pyfunction]
#[pyo3(signature = (data = None, out = None, *, callback = None, labels = None, **flags))]
pub fn train(
    py: Python<'_>,
    data: Option<&Bound<'_, PyAny>>,
    out: Option<PathBuf>,
    callback: Option<Py<PyAny>>,
    labels: Option<&Bound<'_, PyAny>>,
    flags: Option<&Bound<'_, PyDict>>,
) -> PyResult<Run> {
    if let Some(cb) = &callback {
        if !cb.bind(py).is_callable() {
            return Err(Failure::input("callback: not callable").into());
        }
    }
    let mut args = flags_to_args(flags)?;
    if out.is_some() {
        args.out = out;
    }
    let given = data.is_some_and(|d| !d.is_none());
    if given && args.resume.is_some() {
        return Err(Failure::input(
            "resume: a resumed run reads the data it was started with; leave out data",
        )
        .into());
    }
    let arrays = read_data(data, labels, &mut args)?;
    let mut args = compute(py, move || Ok(args.with_config_file()?))?;
    // The arrays are dropped once written: training reads them back from the run directory.
    if let Some(a) = arrays {
        let d = &args.data;
        let set: Vec<&str> = SOURCE_FLAGS
            .iter()
            .zip([
                d.dataset.is_some(),
                d.data_dir.is_some(),
                d.images.is_some(),
                d.csv.is_some(),
                d.npy.is_some(),
            ])
            .filter_map(|(f, on)| on.then_some(*f))
            .collect();
        if !set.is_empty() {
            return Err(Failure::input(format!(
                "data: given as arrays and with {}: give the data one way",
                set.join(", ")
            ))
            .into());
        }
        prepare_arrays(py, &mut args, &a)?;
    }
    let quiet = args.quiet;
    let launch = compute(py, move || Ok(args.launch()?))?;
    let device = vae_core::device::select(&launch.cfg.train.device).map_err(Failure::from)?;
    if !quiet {
        if let Some(note) = &launch.data.note {
            say(py, note);
        }
        for note in &launch.notes {
            say(py, note);
        }
        say(py, &launch.describe(&device, 1));
    }
    let stop = AtomicBool::new(false);
    let mut progress = Progress {
        callback,
        quiet,
        stop: &stop,
        error: None,
    };
    let out = launch.out.clone();
    let summary = {
        let progress = &mut progress;
        let stop = &stop;
        compute(py, move || {
            training::run(
                launch.cfg,
                &launch.data.splits,
                device,
                &launch.out,
                launch.start,
                progress,
                stop,
            )
            .map_err(|e| {
                Failure::from(e).context(format!("training into {}", launch.out.display()))
            })
        })?
    };
    if let Some(e) = progress.error {
        if !quiet {
            say(
                py,
                &format!(
                    "continue with: vae_rs.train(resume={:?})",
                    out.display().to_string()
                ),
            );
        }
        return Err(e);
    }
    if !quiet {
        if let Some(line) = summary.describe(&out) {
            say(py, &line);
        }
    }
    Ok(Run {
        dir: out,
        outcome: match summary.outcome {
            Outcome::Finished => "finished",
            Outcome::EarlyStopped => "early-stopped",
            Outcome::Interrupted => "interrupted",
        },
        step: summary.step,
        best_val_loss: summary.best_val_loss,
    })
}

/// Points the data flags of `args` at the run directory's `data/` and writes the arrays there,
/// once the flags are known to be valid and the directory to hold no run.
fn prepare_arrays(py: Python<'_>, args: &mut Args, a: &Arrays) -> PyResult<()> {
    let out = args.out_for(vae_data::config::IDX, args.preset.unwrap_or_default());
    training::check_fresh(&out).map_err(Failure::from)?;
    let dir = std::path::absolute(RunDir::new(&out).data())
        .map_err(|e| Failure::new(Kind::File, format!("{}: {e}", out.display())))?;
    args.data.dataset = Some(vae_data::config::IDX.into());
    args.data.data_dir = Some(dir.clone());
    let classes = [Some(&a.train), a.test.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.labels.as_ref()?.iter().max())
        .max()
        .map(|&m| m as usize + 1);
    // The flags are checked before anything is written.
    args.resolve(a.train.shape, classes)
        .map_err(Failure::from)?;
    compute(py, || {
        Ok(write_idx_set(
            &dir,
            a.train.idx(),
            a.test.as_ref().map(ArraySplit::idx),
        )?)
    })
}
