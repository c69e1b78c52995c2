//! Weights I/O: safetensors files, written atomically and checked completely before use.
//!
//! This is the only module of vae-core that touches the file system.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use safetensors::tensor::{Dtype, TensorView};

use crate::{Error, Result};

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one:
/// a temporary file in the same directory, fsync, rename over `path`, fsync of the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not all file systems allow syncing a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Serialises named f32 tensors (sorted by name) with optional string metadata.
pub fn to_bytes(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buffers = Vec::with_capacity(sorted.len());
    for (name, t) in &sorted {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        buffers.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Config(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::Config(format!("safetensors: {e}")))
}

/// Saves named tensors atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    atomic_write(path, &to_bytes(tensors, metadata)?)
}

/// The variables of a map as sorted (name, tensor) pairs.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, var)| (k.clone(), var.as_tensor().clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Saves every variable of a model atomically.
pub fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    save_tensors(path, &named_vars(varmap), None)
}

/// A checked safetensors file: every tensor f32 and finite.
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Reads and checks a safetensors file: refuses pickles, malformed headers, non-f32 dtypes and
/// non-finite values, naming the file and the tensor.
pub fn read_tensors(path: &Path, device: &Device) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::weights(path, m);
    if bytes.is_empty() {
        return Err(bad("the file is empty, not a safetensors file".into()));
    }
    // A pickle starts with the protocol opcode 0x80 (or is a zip archive); a safetensors file
    // starts with its header length, whose low byte may be 0x80 too, then its JSON header.
    let safetensors_like = bytes.len() >= 9
        && bytes[8] == b'{'
        && u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) <= (bytes.len() - 8) as u64;
    if (bytes[0] == 0x80 && !safetensors_like) || bytes.starts_with(b"PK\x03\x04") {
        return Err(bad(
            "this is a pickle (PyTorch .pt/.pth) file, not safetensors; pickles can run code and are never loaded: convert it with safetensors.torch.save_file".into(),
        ));
    }
    if bytes.len() < 8 {
        return Err(bad(format!(
            "truncated: {} bytes, a safetensors header needs at least 8",
            bytes.len()
        )));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > (bytes.len() - 8) as u64 {
        return Err(bad(format!(
            "header claims {header_len} bytes but the file holds only {} after the length (truncated or not safetensors)",
            bytes.len() - 8
        )));
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| match e {
        safetensors::SafeTensorError::MetadataIncompleteBuffer => bad(
            "truncated or padded: the tensor data does not match the sizes the header gives".into(),
        ),
        e => bad(format!("not a valid safetensors file: {e}")),
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor `{name}` has dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor `{name}` holds a non-finite value ({}) at index {i}",
                values[i]
            )));
        }
        let t = Tensor::from_vec(values, view.shape(), device)?;
        tensors.insert(name.to_string(), t);
    }
    Ok(TensorFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Checks that `found` has exactly the names and shapes of `expected`, naming every difference.
pub fn check_names_and_shapes(
    path: &Path,
    expected: &[(String, Vec<usize>)],
    found: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match found.get(name) {
            None => problems.push(format!("missing tensor `{name}`")),
            Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                "tensor `{name}` has shape {:?}, the model needs {:?}",
                t.dims(),
                shape
            )),
            Some(_) => {}
        }
    }
    for name in found.keys() {
        if !expected.iter().any(|(n, _)| n == name) {
            problems.push(format!("unexpected tensor `{name}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::weights(path, problems.join("; ")))
    }
}

/// Loads weights into a model's variables. Every check (format, dtype, finiteness, names,
/// shapes) passes before the first variable changes.
pub fn load_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let vars = named_vars(varmap);
    let device = vars
        .first()
        .map(|(_, t)| t.device().clone())
        .unwrap_or(Device::Cpu);
    let file = read_tensors(path, &device)?;
    let expected: Vec<(String, Vec<usize>)> = vars
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect();
    check_names_and_shapes(path, &expected, &file.tensors)?;
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    for (name, t) in &file.tensors {
        data[name].set(t)?;
    }
    Ok(())
}
