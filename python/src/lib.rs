//! The native module of the `vae_rs` Python package (`vae_rs._vae_rs`): vae's trainer, model and
//! lossless codec, NumPy in and out, the GIL released while Rust computes. The package's
//! `__init__.py` re-exports it; `_vae_rs.pyi` types it.
//!
//! - [`train`]: `train(data, out=..., **flags)` and the `Run` it returns.
//! - [`model`]: `load(run_dir)` and `Model` (encode, decode, sample, reconstruct, evaluate).
//! - [`codec`]: `compress(model, images) -> bytes`, `decompress(model, data) -> images`.
//! - [`datasets`]: the embedded sample as arrays.
//! - [`arrays`]: arrays in and out, checked; [`errors`]: exceptions, the GIL released.

mod arrays;
mod codec;
mod datasets;
mod errors;
mod json;
mod model;
mod train;

use pyo3::prelude::*;

#[pymodule]
fn _vae_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // As the binaries do first thing: candle on the calling thread (vae runs its own threads
    // over shards of a batch) and the allocator settings of a training step.
    vae_core::device::configure_process();
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(codec::compress, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decompress, m)?)?;
    m.add_function(wrap_pyfunction!(datasets::sample_dataset, m)?)?;
    m.add_class::<model::Model>()?;
    m.add_class::<train::Run>()?;
    Ok(())
}
