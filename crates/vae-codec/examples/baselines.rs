//! The classical baselines on an IDX image file (raw or gzipped): a table, or one JSON object a
//! line with `--json` (what `cargo xtask compress-bench` reads).
//!
//! `cargo run --release -p vae-codec --features classical --example baselines -- FILE
//! [--limit N] [--codecs png,webp,gzip,bzip2,xz] [--json]`

use std::io::Read;

use vae_codec::classical::{run_codecs, CODECS};

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: baselines FILE.idx[.gz] [--limit N] [--codecs LIST] [--json]";
    let path = args.first().filter(|a| !a.starts_with("--")).ok_or(usage)?;
    let limit = value(&args, "--limit")
        .map(|s| s.parse::<usize>())
        .transpose()?;
    let codecs: Vec<&'static str> = match value(&args, "--codecs") {
        None => CODECS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|c| {
                CODECS
                    .iter()
                    .find(|k| **k == c.trim())
                    .copied()
                    .ok_or_else(|| format!("unknown codec `{c}` (known: {})", CODECS.join(", ")))
            })
            .collect::<Result<_, _>>()?,
    };
    let json = args.iter().any(|a| a == "--json");
    let raw = std::fs::read(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        out
    } else {
        raw
    };
    if bytes.len() < 16 || bytes[..3] != [0, 0, 8] || bytes[3] != 3 {
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
    if n.checked_mul(h * w).and_then(|b| b.checked_add(16)) != Some(bytes.len()) {
        return Err(format!("{path}: length does not match its header").into());
    }
    if let Some(l) = limit {
        n = n.min(l);
    }
    let images = &bytes[16..16 + n * h * w];
    let rows = run_codecs(images, (1, h, w), &codecs)?;
    if json {
        for r in rows {
            println!(
                "{{\"codec\":\"{}\",\"mode\":\"{}\",\"images\":{n},\"bytes\":{},\"bits_per_dim\":{},\"encode_seconds\":{},\"decode_seconds\":{}}}",
                r.codec,
                r.mode.name(),
                r.bytes,
                r.bits_per_dim,
                r.encode_seconds,
                r.decode_seconds
            );
        }
        return Ok(());
    }
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
