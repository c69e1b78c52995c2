//! The NPY reader (header parser included) on arbitrary bytes: an error or a table whose size
//! matches its shape, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vae_data::tabular::{read_npy, LabelColumn};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vae-fuzz-npy-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let f = dir.join("input.npy");
    if std::fs::write(&f, data).is_ok() {
        if let Ok(t) = read_npy(&f, None) {
            assert_eq!(t.values.len(), t.rows() * t.cols);
            assert!(t.values.iter().all(|v| v.is_finite()));
        }
        let _ = read_npy(&f, Some(&LabelColumn::Index(0)));
    }
    let _ = std::fs::remove_file(&f);
});
