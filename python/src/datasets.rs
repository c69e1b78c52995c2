//! `vae_rs.datasets.sample()`: the sample compiled into the library (the first 6,000 training
//! and 1,000 test images of Fashion-MNIST), as arrays.

use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vae_data::Dataset;

use crate::arrays;
use crate::errors::compute;

/// The pixels and labels of a split, as the dataset holds them.
fn split(d: &Dataset) -> (Vec<u8>, Vec<i64>) {
    let mut buf = Vec::new();
    d.gather(&(0..d.len()).collect::<Vec<_>>(), &mut buf);
    // The dataset gives v/255: 255x rounds back to v exactly.
    let px = buf.iter().map(|&x| (x * 255.0).round() as u8).collect();
    let labels = d
        .labels
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|&l| i64::from(l))
        .collect();
    (px, labels)
}

/// The embedded sample of Fashion-MNIST: a dict with `train` (6000, 28, 28) and `test`
/// (1000, 28, 28) uint8 images, and `train_labels`, `test_labels` (int64 class numbers).
#[pyfunction]
pub fn sample_dataset(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let (train, test, shape) = compute(py, || {
        let s = vae_data::resolve::load_sample()?;
        Ok((split(&s.train), split(&s.test), s.train.shape))
    })?;
    let out = PyDict::new(py);
    for (name, (px, labels)) in [("train", train), ("test", test)] {
        let n = labels.len();
        out.set_item(name, arrays::images_out(py, px, n, shape)?)?;
        out.set_item(format!("{name}_labels"), labels.into_pyarray(py))?;
    }
    Ok(out)
}
