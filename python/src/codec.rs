//! `vae_rs.compress` and `vae_rs.decompress`: vae-infer's codec functions on arrays and bytes.
//! The bytes are those of the file `vae-infer compress --idx` writes for the same images (an
//! IDX file of them), so either side decodes what the other wrote.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use vae_codec::{CodecParams, Container};
use vae_core::DataShape;
use vae_infer::codec::{self, source};

use crate::arrays;
use crate::errors::{compute, Failure};
use crate::model::Model;

/// What names the bytes in messages.
const DATA: &str = "the compressed data";

/// Refuses a model that is not on the CPU: the coder's arithmetic runs on the host.
fn on_cpu(model: &Model) -> PyResult<()> {
    codec::check_cpu(&model.args.runtime).map_err(Failure::from)?;
    if !model.loaded.device.is_cpu() {
        return Err(Failure::input(
            "compress and decompress run on the CPU (their arithmetic must give the same bits on \
             every machine): load the model with device=\"cpu\"",
        )
        .into());
    }
    Ok(())
}

/// Compresses uint8 images of the model's size ((n, h, w) or (n, h, w, c)) losslessly by
/// bits-back coding with `model` (trained with likelihood "discretized-logistic" or
/// "beta-binomial", or "bernoulli" on binarised images; on the CPU). The bytes are the file
/// `vae-infer compress --idx` writes for an IDX file of the same images; they are decoded again
/// before they are returned. `chunk_images`: images per independently coded chunk.
#[pyfunction]
#[pyo3(signature = (model, images, *, chunk_images = None))]
pub fn compress<'py>(
    py: Python<'py>,
    model: &Model,
    images: &Bound<'py, PyAny>,
    chunk_images: Option<u32>,
) -> PyResult<Bound<'py, PyBytes>> {
    on_cpu(model)?;
    let params = CodecParams {
        chunk_images: chunk_images.unwrap_or(CodecParams::default().chunk_images),
        ..CodecParams::default()
    };
    if params.chunk_images == 0 {
        return Err(Failure::input("--chunk-images must be at least 1").into());
    }
    let m = &model.loaded;
    let (_, pixels) = arrays::images_for(images, m.model.config().shape, "images")?;
    let threads = model.args.threads();
    let file = compute(py, || {
        // The model with the exact kernels, for this call alone.
        let glue = codec::CodecModel::new(&m.model, None)?;
        let imgs = source::from_pixels(pixels, m.model.config().shape, "images")?;
        let c = codec::file::compress(m, &glue, &imgs, params, threads)?;
        // As the command does before it renames the file into place.
        let back = codec::file::decompress(m, &glue, &c.file, DATA, threads)?;
        if back.pixels != imgs.pixels {
            return Err(Failure::new(
                crate::errors::Kind::Other,
                "the compressed data decode to other images",
            ));
        }
        Ok(c.file)
    })?;
    Ok(PyBytes::new(py, &file))
}

/// The images of bytes written by `compress` (or a file of `vae-infer compress`), decoded with
/// the model that wrote them and checked against the original's checksum: uint8 (n, h, w) or
/// (n, h, w, c); a file of one PNG picture of any size (coded in tiles) gives that picture, n
/// = 1. A truncated, damaged or foreign buffer raises `InputError`, and so does a file of a
/// folder of pictures of several sizes (`vae-infer decompress` writes those).
#[pyfunction]
pub fn decompress<'py>(
    py: Python<'py>,
    model: &Model,
    data: PyBackedBytes,
) -> PyResult<Bound<'py, PyAny>> {
    on_cpu(model)?;
    let m = &model.loaded;
    let threads = model.args.threads();
    let d = compute(py, || {
        let glue = codec::CodecModel::new(&m.model, None)?;
        Ok(codec::file::decompress(m, &glue, &data, DATA, threads)?)
    })?;
    let shape = m.model.config().shape;
    match &d.header.container {
        Container::Tiled {
            folder: false,
            files,
        } => {
            let f = &files[..];
            let [f] = f else {
                return Err(
                    Failure::input(format!("{DATA}: {} pictures in one file", f.len())).into(),
                );
            };
            let pic = DataShape::image(f.channels.into(), f.height as usize, f.width as usize);
            let px = source::originals(&d.header.container, &d.pixels, shape)
                .map_err(Failure::from)?
                .into_owned();
            arrays::images_out(py, px, 1, pic)
        }
        Container::Tiled { files, .. } => Err(Failure::input(format!(
            "{DATA}: a folder of {} PNG files of several sizes, which an array cannot hold: \
             decompress it with vae-infer decompress",
            files.len()
        ))
        .into()),
        _ => arrays::images_out(py, d.pixels, d.header.count as usize, shape),
    }
}
