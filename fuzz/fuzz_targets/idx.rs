//! The IDX reader on arbitrary bytes, as 1-D (labels) and 3-D (images) files, from memory and
//! from a file (raw or gzipped, as the bytes say), and memory-mapped: it must return an error or
//! a consistent array, never panic, and never allocate from an unchecked header.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vae_data::idx::{map_idx_file, read_idx_bytes, read_idx_file};

fuzz_target!(|data: &[u8]| {
    for ndim in [1, 3] {
        if let Ok(a) = read_idx_bytes(data, Path::new("fuzz"), ndim) {
            assert_eq!(a.dims.len(), ndim);
            assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
        }
    }
    let Ok(f) = tempfile_path() else { return };
    if std::fs::write(&f, data).is_ok() {
        let from_file = read_idx_file(&f, 3).ok();
        assert_eq!(from_file, read_idx_bytes(data, Path::new("fuzz"), 3).ok());
        if let Ok(m) = map_idx_file(&f, 3) {
            assert_eq!(Some(m.values.bytes()), from_file.as_ref().map(|a| &a.data[..]));
        }
    }
    let _ = std::fs::remove_file(&f);
});

fn tempfile_path() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("vae-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join("input"))
}
