//! Weights I/O: a save/load round trip is exact, and every malformed file is refused with a
//! message naming it, before any variable changes.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;

use vae_core::candle_core::{DType, Device, Tensor};
use vae_core::{weights, DataShape, Preset, Rng, Vae};

fn model(seed: u64) -> (vae_core::candle_nn::VarMap, Vae) {
    let cfg = Preset::PytorchExample.model(DataShape::image(1, 28, 28));
    Vae::init(&cfg, &Device::Cpu, &mut Rng::new(seed)).unwrap()
}

fn outputs(m: &Vae) -> Vec<f32> {
    let x = Tensor::from_vec(Rng::new(1).normal_vec(4 * 784), (4, 784), &Device::Cpu).unwrap();
    let q = m.encode(&x, None).unwrap();
    m.decode(&q.mu, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn save_then_load_gives_bit_identical_outputs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    let (vm, m) = model(1);
    weights::save_varmap(&vm, &path)?;
    let (vm2, m2) = model(2);
    assert_ne!(outputs(&m), outputs(&m2));
    weights::load_varmap(&vm2, &path)?;
    let (a, b) = (outputs(&m), outputs(&m2));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    Ok(())
}

/// Loads `bytes` as weights and checks the error names the file and says `what`, and that the
/// model's weights did not change.
fn refused(bytes: &[u8], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let (vm, m) = model(3);
    let before = outputs(&m);
    let err = weights::load_varmap(&vm, &path)
        .expect_err("must be refused")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()),
        "no file name in: {err}"
    );
    assert!(err.contains(what), "expected `{what}` in: {err}");
    assert_eq!(
        before,
        outputs(&m),
        "weights changed although loading failed"
    );
}

fn file_with(tensors: Vec<(String, Tensor)>) -> Vec<u8> {
    weights::to_bytes(&tensors, None).unwrap()
}

fn good_tensors() -> Vec<(String, Tensor)> {
    let (vm, _) = model(4);
    weights::named_vars(&vm)
}

#[test]
fn malformed_files_are_refused() {
    refused(b"", "empty");
    let good = file_with(good_tensors());
    refused(&good[..good.len() / 2], "truncated");
    refused(&good[..5], "truncated");
    // A header length of 2^60 bytes.
    let mut bomb = (1u64 << 60).to_le_bytes().to_vec();
    bomb.extend_from_slice(b"{}");
    refused(&bomb, "header claims");
    // A header that is not JSON.
    let mut junk = 8u64.to_le_bytes().to_vec();
    junk.extend_from_slice(b"not json");
    refused(&junk, "not a valid safetensors file");
    // Pickles, old and zip-based.
    refused(b"\x80\x02}q\x00.", "pickle");
    refused(b"PK\x03\x04rest-of-a-zip", "pickle");
}

/// A safetensors file whose header length has 0x80 as its low byte (the first byte of a
/// pickle) is read, not refused as a pickle.
#[test]
fn header_length_starting_with_the_pickle_opcode_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    // Longer names grow the header 8 bytes at a time: one of them gives a length of 0x..80.
    let bytes = (1..200)
        .map(|n| file_with(vec![("w".repeat(n), t.clone())]))
        .find(|b| b[0] == 0x80)
        .expect("a header of length 0x80 mod 256");
    std::fs::write(&path, &bytes).unwrap();
    let got = weights::read_tensors(&path, &Device::Cpu).unwrap();
    assert_eq!(got.tensors.len(), 1);
}

#[test]
fn tensors_that_do_not_fit_the_model_are_refused() {
    let mut t = good_tensors();
    t.retain(|(n, _)| n != "decoder.out.bias");
    refused(&file_with(t), "missing tensor `decoder.out.bias`");

    let mut t = good_tensors();
    t.push((
        "decoder.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    ));
    refused(&file_with(t), "unexpected tensor `decoder.extra.weight`");

    let mut t = good_tensors();
    for (n, v) in t.iter_mut() {
        if n == "encoder.head.bias" {
            *v = Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap();
        }
    }
    refused(&file_with(t), "shape [7]");

    for bad in [f32::NAN, f32::INFINITY] {
        let mut t = good_tensors();
        for (n, v) in t.iter_mut() {
            if n == "decoder.fc0.bias" {
                let mut vals = v.to_vec1::<f32>().unwrap();
                vals[3] = bad;
                *v = Tensor::new(vals, &Device::Cpu).unwrap();
            }
        }
        refused(&file_with(t), "non-finite");
    }
}

#[test]
fn wrong_dtype_is_refused() {
    // Written by hand: safetensors with an F16 tensor.
    let header = r#"{"encoder.head.bias":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    refused(&bytes, "dtype F16");
}

#[test]
fn metadata_round_trips() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), "42".to_string());
    weights::save_tensors(&path, &good_tensors(), Some(meta))?;
    let f = weights::read_tensors(Path::new(&path), &Device::Cpu)?;
    assert_eq!(f.metadata.get("step").map(String::as_str), Some("42"));
    Ok(())
}
