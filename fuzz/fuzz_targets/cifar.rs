//! The CIFAR-10 batch reader on arbitrary bytes: an error or whole records with labels below
//! 10, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vae_data::cifar::{read_cifar_bytes, PIXELS};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = read_cifar_bytes(data, Path::new("fuzz")) {
        assert_eq!(b.pixels.len(), b.labels.len() * PIXELS);
        assert!(b.labels.iter().all(|&l| l < 10));
        assert!(!b.is_empty());
    }
});
