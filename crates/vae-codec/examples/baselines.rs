//! The classical baselines on an IDX image file (raw or gzipped), as a table.
//!
//! `cargo run --release -p vae-codec --example baselines -- FILE [LIMIT]`

use std::io::Read;

use vae_codec::classical::run_baselines;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: baselines FILE.idx[.gz] [LIMIT]")?;
    let limit: Option<usize> = std::env::args().nth(2).and_then(|s| s.parse().ok());
    let raw = std::fs::read(&path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        out
    } else {
        raw
    };
    if bytes.len() < 16 || bytes[2] != 8 || bytes[3] != 3 {
        return Err(format!("{path}: not a 3-d u8 IDX file").into());
    }
    let dim = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]) as usize
    };
    let (mut n, h, w) = (dim(1), dim(2), dim(3));
    if bytes.len() != 16 + n * h * w {
        return Err(format!("{path}: length does not match its header").into());
    }
    if let Some(l) = limit {
        n = n.min(l);
    }
    let images = &bytes[16..16 + n * h * w];
    let rows = run_baselines(images, (1, h, w))?;
    println!("{n} images of {h}x{w}");
    println!("| codec | mode | bytes | bits/dim | encode s | decode s |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.2} | {:.2} |",
            r.codec,
            r.mode.name(),
            r.bytes,
            r.bits_per_dim,
            r.encode_seconds,
            r.decode_seconds
        );
    }
    Ok(())
}
