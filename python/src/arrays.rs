//! NumPy arrays in and out: uint8 images `(n, h, w)` or `(n, h, w, c)` (the model keeps them
//! channel-major), float32 latents and features `(n, d)`, integer labels `(n,)`. Every input is
//! checked before it reaches the library; outputs hand their buffer to NumPy without a copy.

use numpy::ndarray::{Array, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use vae_core::DataShape;

use crate::errors::Failure;

/// `obj` as a NumPy array (anything else goes through `numpy.asarray`).
fn ndarray<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(a.clone());
    }
    let a = obj
        .py()
        .import("numpy")?
        .call_method1("asarray", (obj,))
        .map_err(|e| Failure::input(format!("{what}: not an array ({e})")))?;
    Ok(a.cast_into::<PyUntypedArray>()?)
}

fn dtype_name(a: &Bound<'_, PyUntypedArray>) -> String {
    a.dtype().to_string()
}

/// The shape a model of `shape` takes its images in, for messages: `(n, 28, 28)`.
pub fn image_form(shape: DataShape) -> String {
    if shape.is_image() && shape.channels == 1 {
        format!("(n, {}, {})", shape.height, shape.width)
    } else if shape.is_image() {
        format!("(n, {}, {}, {})", shape.height, shape.width, shape.channels)
    } else {
        format!("(n, {})", shape.dim())
    }
}

/// Images from `obj`: a uint8 array `(n, h, w)` (grey) or `(n, h, w, c)` with c 1 or 3, as its
/// number of images, their shape and their pixels, channel-major.
pub fn images(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(usize, DataShape, Vec<u8>)> {
    let a = ndarray(obj, what)?;
    let want = "a uint8 array of shape (n, height, width) or (n, height, width, channels)";
    let Ok(a) = a.cast::<PyArrayDyn<u8>>() else {
        return Err(Failure::input(format!(
            "{what}: images must be {want} with values 0 to 255; got a {} array (convert with \
             .astype(numpy.uint8) if the values are 0 to 255)",
            dtype_name(&a)
        ))
        .into());
    };
    let dims = a.shape().to_vec();
    let shape = match dims[..] {
        [_, h, w] => DataShape::image(1, h, w),
        [_, h, w, c] if c == 1 || c == 3 => DataShape::image(c, h, w),
        [_, _, _, c] => {
            return Err(Failure::input(format!(
                "{what}: images of {c} channels; they must have 1 (grey) or 3 (RGB)"
            ))
            .into())
        }
        _ => {
            return Err(Failure::input(format!(
                "{what}: images must be {want}; got an array of shape {dims:?}"
            ))
            .into())
        }
    };
    let n = dims[0];
    if n == 0 || shape.dim() == 0 {
        return Err(Failure::input(format!("{what}: no images (shape {dims:?})")).into());
    }
    let ro = a.readonly();
    let view = ro.as_array();
    let pixels = if dims.len() == 4 && shape.channels == 3 {
        // (n, h, w, c) to the model's (n, c, h, w).
        view.permuted_axes(IxDyn(&[0, 3, 1, 2]))
            .iter()
            .copied()
            .collect()
    } else {
        match ro.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => view.iter().copied().collect(),
        }
    };
    Ok((n, shape, pixels))
}

/// Images from `obj` for a model of `shape`: their number and pixels (channel-major).
pub fn images_for(
    obj: &Bound<'_, PyAny>,
    shape: DataShape,
    what: &str,
) -> PyResult<(usize, Vec<u8>)> {
    let (n, got, pixels) = images(obj, what)?;
    if got != shape {
        return Err(Failure::input(format!(
            "{what}: images of {}x{}{}, but the model takes {}x{}{} images (arrays of shape {})",
            got.height,
            got.width,
            channels_note(got),
            shape.height,
            shape.width,
            channels_note(shape),
            image_form(shape)
        ))
        .into());
    }
    Ok((n, pixels))
}

fn channels_note(s: DataShape) -> String {
    match s.channels {
        1 => " grey".into(),
        3 => " RGB".into(),
        c => format!(" with {c} channels"),
    }
}

/// A float32 matrix `(n, cols)` from `obj`, as its rows and values.
pub fn floats(obj: &Bound<'_, PyAny>, cols: usize, what: &str) -> PyResult<(usize, Vec<f32>)> {
    let a = ndarray(obj, what)?;
    let Ok(a) = a.cast::<PyArrayDyn<f32>>() else {
        return Err(Failure::input(format!(
            "{what}: must be a float32 array of shape (n, {cols}); got a {} array (convert with \
             .astype(numpy.float32))",
            dtype_name(&a)
        ))
        .into());
    };
    let dims = a.shape().to_vec();
    match dims[..] {
        [n, c] if c == cols && n > 0 => {}
        _ => {
            return Err(Failure::input(format!(
            "{what}: must be an array of shape (n, {cols}) with n at least 1; got shape {dims:?}"
        ))
            .into())
        }
    }
    let ro = a.readonly();
    let values: Vec<f32> = match ro.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => ro.as_array().iter().copied().collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Failure::input(format!(
            "{what}: the value at row {}, column {} is {}",
            i / cols,
            i % cols,
            values[i]
        ))
        .into());
    }
    Ok((dims[0], values))
}

/// Labels from `obj`: `n` non-negative integers `(n,)`.
pub fn labels(obj: &Bound<'_, PyAny>, n: usize, what: &str) -> PyResult<Vec<u32>> {
    let a = ndarray(obj, what)?;
    let kind: String = a.dtype().getattr("kind")?.extract()?;
    if kind != "i" && kind != "u" {
        return Err(Failure::input(format!(
            "{what}: labels must be integers; got a {} array",
            dtype_name(&a)
        ))
        .into());
    }
    let a = a.call_method1("astype", ("int64",))?;
    let a = a.cast::<PyArrayDyn<i64>>()?;
    let dims = a.shape().to_vec();
    if dims != [n] {
        return Err(Failure::input(format!(
            "{what}: {dims:?} labels for {n} examples (an array of shape ({n},) is needed)"
        ))
        .into());
    }
    let ro = a.readonly();
    ro.as_array()
        .iter()
        .map(|&l| {
            u32::try_from(l).map_err(|_| {
                Failure::input(format!(
                    "{what}: label {l} is not a class number (0, 1, ...)"
                ))
                .into()
            })
        })
        .collect()
}

/// Values nominally in [0, 1] (`n` examples of `shape`, channel-major) as uint8 images
/// `(n, h, w)` or `(n, h, w, c)`, each v as round(255 v) (as the PNG grids draw them); data
/// that are not images as float32 `(n, d)`.
pub fn examples_out<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    n: usize,
    shape: DataShape,
) -> PyResult<Bound<'py, PyAny>> {
    if !shape.is_image() {
        return floats_out(py, values, n, shape.dim());
    }
    let px: Vec<u8> = values
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    images_out(py, px, n, shape)
}

/// Pixels (`n` images of `shape`, channel-major) as uint8 `(n, h, w)` or `(n, h, w, c)`.
pub fn images_out<'py>(
    py: Python<'py>,
    pixels: Vec<u8>,
    n: usize,
    shape: DataShape,
) -> PyResult<Bound<'py, PyAny>> {
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let bad = |e: numpy::ndarray::ShapeError| Failure::input(format!("images of {c}x{h}x{w}: {e}"));
    let a = if c == 1 {
        Array::from_shape_vec(IxDyn(&[n, h, w]), pixels).map_err(bad)?
    } else {
        // (n, c, h, w) to (n, h, w, c), one copy into the layout NumPy users expect.
        let chw = Array::from_shape_vec(IxDyn(&[n, c, h, w]), pixels).map_err(bad)?;
        chw.permuted_axes(IxDyn(&[0, 2, 3, 1]))
            .as_standard_layout()
            .into_owned()
    };
    Ok(a.into_pyarray(py).into_any())
}

/// Values as a float32 array `(n, cols)`, handed to NumPy without a copy.
pub fn floats_out<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    n: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let a = Array::from_shape_vec(IxDyn(&[n, cols]), values)
        .map_err(|e| Failure::input(format!("({n}, {cols}): {e}")))?;
    Ok(a.into_pyarray(py).into_any())
}
