//! Writes the fuzz corpus's crafted compressed files (`fuzz/seeds/codec_header`), each a
//! good file or a file with one damage, from the format's own writer, so that a change of the
//! layout rewrites them all: `cargo run -p vae-codec --example codec_seeds -- fuzz/seeds/codec_header`.
//! `tests/format.rs` checks that each is refused for its own cause.

use std::path::PathBuf;

use vae_codec::format::{sha256, write_file, Container, Header, Padding, TiledFile, CODEC_VERSION};
use vae_codec::{Chunk, CodecParams};

/// The pixels the checksum of every seed but the tiled ones covers (one 2x2 grey image).
const PIXELS: [u8; 4] = [0, 64, 128, 255];

fn header(container: Container) -> Header {
    Header {
        codec_version: CODEC_VERSION,
        params: CodecParams {
            latent_bits: 10,
            chunk_images: 2,
        },
        shape: (1, 2, 2),
        count: 1,
        latent_dim: 1,
        fingerprint: [0x11; 32],
        payload_sha256: [0; 32],
        original_sha256: sha256(&PIXELS),
        container,
    }
}

/// A picture of a tiled container (one grey channel).
fn picture(name: &str, height: u32, width: u32, padding: Padding) -> TiledFile {
    TiledFile {
        name: name.into(),
        height,
        width,
        channels: 1,
        padding,
    }
}

/// A tiled container of two 4x4 tiles: a picture of the tiles' size and one of 2x3 padded
/// with zeros (a folder), its checksum over the pictures' own 22 pixels.
fn tiled_header(folder: bool, files: Vec<TiledFile>) -> Header {
    let pixels: Vec<u8> = files
        .iter()
        .flat_map(|f| (0..f.values()).map(|v| (v * 11) as u8))
        .collect();
    Header {
        shape: (1, 4, 4),
        count: 2,
        original_sha256: sha256(&pixels),
        ..header(Container::Tiled { folder, files })
    }
}

fn tiled_pictures() -> Vec<TiledFile> {
    vec![
        picture("a.png", 4, 4, Padding::Edge),
        picture("sub/b.png", 2, 3, Padding::Constant(0)),
    ]
}

fn chunk() -> Chunk {
    Chunk {
        seed_prefix: 0,
        levels: vec![1],
        words: vec![0x1234_5678, 0x9abc_def0, 7],
    }
}

fn file(h: &Header) -> Vec<u8> {
    write_file(h, &[chunk()])
}

/// The header's length (bytes 12..16).
fn header_len(f: &[u8]) -> usize {
    u32::from_le_bytes([f[12], f[13], f[14], f[15]]) as usize
}

/// Recomputes the header checksum over the bytes before it.
fn reseal(f: &mut [u8]) {
    let n = header_len(f);
    let sum = sha256(&f[..n - 32]);
    f[n - 32..n].copy_from_slice(&sum);
}

/// A good file with bytes `at..` set to `bytes`, the header checksum recomputed.
fn with(base: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    f[at..at + bytes.len()].copy_from_slice(bytes);
    reseal(&mut f);
    f
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds/codec_header".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let names = Container::PngFolder {
        names: vec!["shirt.png".into()],
    };
    let png = file(&header(names));
    let raw = file(&header(Container::Raw));
    let idx = file(&header(Container::Idx {
        header: vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2],
    }));
    let tiled = file(&tiled_header(true, tiled_pictures()));
    let n = header_len(&png);
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("magic-only", png[..8].to_vec()),
        ("good-png-names", png.clone()),
        ("good-raw", raw.clone()),
        ("good-idx", idx),
        ("version-9", with(&png, 8, &9u16.to_le_bytes())),
        ("version-2", with(&png, 8, &2u16.to_le_bytes())),
        ("version-3", with(&png, 8, &3u16.to_le_bytes())),
        ("codec-9", with(&png, 10, &9u16.to_le_bytes())),
        ("header-cut", png[..100].to_vec()),
        ("container-cut", png[..160].to_vec()),
        ("payload-cut", png[..png.len() - 3].to_vec()),
        ("latent-bits-30", with(&png, 16, &[30])),
        ("precision-16", with(&png, 17, &[16])),
        ("zero-shape", with(&png, 20, &0u32.to_le_bytes())),
        ("huge-shape", with(&png, 24, &(1u32 << 30).to_le_bytes())),
        ("huge-count", with(&raw, 32, &(1u64 << 62).to_le_bytes())),
        ("chunk-zero", with(&png, 44, &0u32.to_le_bytes())),
        ("kind-7", with(&raw, 152, &[7])),
    ];
    // The header length itself wrong: nothing to reseal.
    for (name, len) in [
        ("header-length-huge", u32::MAX),
        ("header-length-small", 20),
    ] {
        let mut f = png.clone();
        f[12..16].copy_from_slice(&len.to_le_bytes());
        seeds.push((name, f));
    }
    let mut bad_magic = png.clone();
    bad_magic[0] = b'P';
    seeds.push(("bad-magic", bad_magic));
    let mut flipped = png.clone();
    flipped[60] ^= 4;
    seeds.push(("flipped-header-byte", flipped));
    let mut trailing = png.clone();
    trailing.push(0);
    seeds.push(("trailing", trailing));
    let mut payload = png.clone();
    let last = payload.len() - 1;
    payload[last] ^= 1;
    seeds.push(("payload-checksum", payload));
    let mut other = header(Container::PngFolder {
        names: vec!["shirt.png".into()],
    });
    other.fingerprint = [0x22; 32];
    seeds.push(("other-fingerprint", file(&other)));
    for (name, bad) in [("name-traversal", "../x.png"), ("name-absolute", "/x.png")] {
        let h = header(Container::PngFolder {
            names: vec![bad.into()],
        });
        seeds.push((name, file(&h)));
    }
    let mut two = header(Container::PngFolder {
        names: vec!["one.png".into()],
    });
    two.count = 2;
    seeds.push(("names-too-few", file(&two)));
    // Tiled containers (kind 3): a folder, one file, and each way their fields can disagree.
    seeds.push(("good-tiled", tiled.clone()));
    let one = vec![picture("x.png", 5, 3, Padding::Constant(255))];
    seeds.push(("good-tiled-file", file(&tiled_header(false, one))));
    let mut form = tiled.clone();
    form[157] = 2;
    reseal(&mut form);
    seeds.push(("tiled-form-2", form));
    let mut pics = tiled_pictures();
    pics[1].width = 5;
    seeds.push(("tiled-tiles-mismatch", file(&tiled_header(true, pics))));
    let mut pics = tiled_pictures();
    pics[0].channels = 3;
    pics[1].channels = 3;
    seeds.push(("tiled-channels", file(&tiled_header(true, pics))));
    let mut pics = tiled_pictures();
    pics[1].height = 0;
    seeds.push(("tiled-zero-side", file(&tiled_header(true, pics))));
    let mut pics = tiled_pictures();
    pics[1].name = "a.png".into();
    seeds.push(("tiled-duplicate-names", file(&tiled_header(true, pics))));
    seeds.push((
        "tiled-file-two-pictures",
        file(&tiled_header(false, tiled_pictures())),
    ));
    // The last byte but one of the container: the second picture's padding kind.
    let container_end = header_len(&tiled) - 32;
    seeds.push(("tiled-padding-7", with(&tiled, container_end - 2, &[7])));
    // A word count far beyond the payload, behind a valid payload checksum.
    let mut words = png[..n].to_vec();
    let mut p = png[n..].to_vec();
    p[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    words[88..120].copy_from_slice(&sha256(&p));
    words.extend_from_slice(&p);
    reseal(&mut words);
    seeds.push(("payload-word-count-huge", words));
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    Ok(())
}
