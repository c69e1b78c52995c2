//! The compressed-file parser on arbitrary bytes: `parse` and `parse_payload` must return an
//! error or a consistent header, never panic, and never allocate from an unchecked size.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vae_codec::format::{parse, parse_payload, sha256};

fuzz_target!(|data: &[u8]| {
    if let Ok((h, payload)) = parse(data) {
        assert_eq!(sha256(payload), h.payload_sha256);
        assert!(h.pixels() > 0 && h.count > 0);
        let _ = h.check_model(&[0; 32]);
        if let Ok(chunks) = parse_payload(&h, payload) {
            assert_eq!(chunks.len() as u64, h.count.div_ceil(h.params.chunk_images as u64));
        }
    }
});
