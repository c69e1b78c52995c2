//! Errors as Python exceptions: `vae_rs.Error`, and its subclasses `InputError` (also a
//! `ValueError`: a wrong dtype, shape or size, a refused flag, a damaged file) and `FileError`
//! (also an `OSError`: a file or run that is not there, cannot be read or written). The
//! messages are the command line's.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyTypeInfo;
use vae_data::DataError;
use vae_infer::InferError;
use vae_run::RunError;
use vae_train::TrainError;

/// Which exception an error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `InputError` (a `ValueError`): what was given is wrong.
    Input,
    /// `FileError` (an `OSError`): a file is missing or cannot be read or written.
    File,
    /// `Error`: anything else (a training that diverged, a failure of the library itself).
    Other,
}

/// An error of the library, not yet a Python exception (made while the GIL is released).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Kind::Input, message)
    }

    /// This failure with `what` in front of its message (as the command line's context).
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::attach(|py| {
            let class = match f.kind {
                Kind::Input => INPUT_ERROR.get(py),
                Kind::File => FILE_ERROR.get(py),
                Kind::Other => ERROR.get(py),
            };
            match class {
                Some(c) => PyErr::from_type(c.bind(py).clone(), f.message),
                None => PyException::new_err(f.message),
            }
        })
    }
}

/// The kind of an I/O error: damaged contents are input, the rest is about files.
fn io(e: &std::io::Error) -> Kind {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    match e.kind() {
        InvalidData | InvalidInput | UnexpectedEof => Kind::Input,
        _ => Kind::File,
    }
}

/// A message about `path`: a file that is not there, or one whose contents are wrong.
fn about(path: &Path) -> Kind {
    if path.exists() {
        Kind::Input
    } else {
        Kind::File
    }
}

fn core(e: &vae_core::Error) -> Kind {
    use vae_core::Error as E;
    match e {
        E::Io { source, .. } => io(source),
        E::Config(_) | E::Device(_) | E::Weights { .. } => Kind::Input,
        E::Candle(_) => Kind::Other,
    }
}

fn data(e: &DataError) -> Kind {
    match e {
        DataError::Io { source, .. } => io(source),
        DataError::NotFound { .. } => Kind::File,
        DataError::Format { .. } | DataError::Config(_) => Kind::Input,
    }
}

fn run(e: &RunError) -> Kind {
    match e {
        RunError::Core(e) => core(e),
        RunError::Data(e) => data(e),
        RunError::Flag(_) | RunError::Mismatch(_) => Kind::Input,
        RunError::File { path, .. } => about(path),
        RunError::Png(_) => Kind::Other,
    }
}

fn train(e: &TrainError) -> Kind {
    match e {
        TrainError::Core(e) => core(e),
        TrainError::Data(e) => data(e),
        TrainError::Run(e) => run(e),
        TrainError::Flag(_) | TrainError::File { .. } => Kind::Input,
        TrainError::Io { source, .. } => io(source),
        TrainError::Context { source, .. } => train(source),
        TrainError::Json(_)
        | TrainError::Internal(_)
        | TrainError::Agreed { .. }
        | TrainError::NonFinite { .. }
        | TrainError::NonFiniteAt { .. } => Kind::Other,
    }
}

fn infer(e: &InferError) -> Kind {
    match e {
        InferError::Core(e) => core(e),
        InferError::Data(e) => data(e),
        InferError::Run(e) => run(e),
        InferError::Flag(_) | InferError::Unsupported(_) | InferError::Input(_) => Kind::Input,
        InferError::File { path, .. } => about(path),
        InferError::Safetensors(_) | InferError::Plot(_) | InferError::Json(_) => Kind::Other,
    }
}

macro_rules! failure_from {
    ($($t:ty => $f:ident),* $(,)?) => {
        $(impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::new($f(&e), e.to_string())
            }
        })*
    };
}

failure_from!(
    vae_core::Error => core,
    DataError => data,
    RunError => run,
    TrainError => train,
    InferError => infer,
);

impl From<vae_core::candle_core::Error> for Failure {
    fn from(e: vae_core::candle_core::Error) -> Self {
        Failure::new(Kind::Other, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Runs `f` with the GIL released (other Python threads run meanwhile), turning a failure into
/// its exception and a panic into `vae_rs.Error` instead of unwinding into the interpreter.
pub fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    let r = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => Err(internal(panic).into()),
    }
}

/// The failure of a panic (a bug: the library should have refused the input with an error).
pub fn internal(panic: Box<dyn std::any::Any + Send>) -> Failure {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    Failure::new(Kind::Other, format!("internal error: {msg}"))
}

static ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INPUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FILE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Creates the exception classes and adds them to `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let make = |name: &str, bases: Vec<Bound<'_, PyType>>, doc: &str| -> PyResult<Py<PyType>> {
        let ns = PyDict::new(py);
        ns.set_item("__module__", "vae_rs")?;
        ns.set_item("__doc__", doc)?;
        let class = PyType::type_object(py).call1((name, PyTuple::new(py, bases)?, ns))?;
        Ok(class.cast_into::<PyType>()?.unbind())
    };
    let error = make(
        "Error",
        vec![PyException::type_object(py)],
        "Every error of vae_rs; its message is the command line's.",
    )?;
    let input = make(
        "InputError",
        vec![error.bind(py).clone(), PyValueError::type_object(py)],
        "What was given is wrong: a dtype, shape or size, a flag's value, a damaged file or \
         compressed buffer, a model that cannot do what was asked.",
    )?;
    let file = make(
        "FileError",
        vec![error.bind(py).clone(), PyOSError::type_object(py)],
        "A file or run directory is missing, or cannot be read or written.",
    )?;
    for (name, class, cell) in [
        ("Error", error, &ERROR),
        ("InputError", input, &INPUT_ERROR),
        ("FileError", file, &FILE_ERROR),
    ] {
        m.add(name, class.bind(py))?;
        let _ = cell.set(py, class);
    }
    Ok(())
}
