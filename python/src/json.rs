//! JSON text (reports, configurations, metrics) as Python objects, through the `json` module.

use pyo3::prelude::*;

/// `json.loads(text)`.
pub fn loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}
