//! The compressed file: a written file parses back to the same header and chunks, and every
//! damage (empty, truncated at any byte, any flipped byte, trailing bytes, another model) is
//! an error naming its cause, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{block_images, BlockModel, Kind};
use vae_codec::format::{
    fingerprint, parse, parse_payload, sha256, tile_grid, write_file, Container, FormatError,
    Header, Padding, TiledFile, CODEC_VERSION, FORMAT_VERSION,
};
use vae_codec::{decode, encode, CodecParams};

fn tiled(name: &str, height: u32, width: u32) -> TiledFile {
    TiledFile {
        name: name.into(),
        height,
        width,
        channels: 1,
        padding: if height.is_multiple_of(2) {
            Padding::Edge
        } else {
            Padding::Constant(height as u8)
        },
    }
}

fn small_file(container: Container) -> (Vec<u8>, Header, Vec<u8>, BlockModel) {
    let m = BlockModel {
        blocks: 2,
        block: 8,
        kind: Kind::Logistic { components: 1 },
        sigma: 0.05,
        scale: 1.0,
    };
    let images = block_images(5, 2, 8, 3, 11);
    let params = CodecParams {
        latent_bits: 10,
        chunk_images: 2,
    };
    let enc = encode(&m, &images, 16, params, 1).unwrap();
    let header = Header {
        codec_version: CODEC_VERSION,
        params,
        shape: (1, 4, 4),
        count: 5,
        latent_dim: 2,
        fingerprint: fingerprint(b"{\"model\":1}", b"weights"),
        payload_sha256: [0; 32],
        original_sha256: sha256(&images),
        container,
    };
    let file = write_file(&header, &enc.chunks);
    (file, header, images, m)
}

#[test]
fn file_round_trips_with_each_container() {
    for container in [
        Container::Raw,
        Container::Idx {
            header: vec![0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 4],
        },
        Container::PngFolder {
            names: (0..5).map(|i| format!("shirts/{i}.png")).collect(),
        },
        // 4x4 tiles: 1 + 2x2 tiles, a folder.
        Container::Tiled {
            folder: true,
            files: vec![tiled("a.png", 4, 4), tiled("b/c.png", 7, 5)],
        },
        // 5 x 1 tiles of one picture.
        Container::Tiled {
            folder: false,
            files: vec![tiled("-", 17, 4)],
        },
    ] {
        let (file, header, images, m) = small_file(container.clone());
        let (h, payload) = parse(&file).unwrap();
        assert_eq!(h.container, container);
        assert_eq!((h.shape, h.count, h.latent_dim), (header.shape, 5, 2));
        assert_eq!(h.params, header.params);
        assert_eq!(h.payload_sha256, sha256(payload));
        h.check_model(&header.fingerprint).unwrap();
        let chunks = parse_payload(&h, payload).unwrap();
        let back = decode(&m, &chunks, 5, h.pixels(), h.params, 1).unwrap();
        h.check_original(&back).unwrap();
        assert_eq!(back, images);
    }
}

#[test]
fn every_truncation_is_an_error() {
    let (file, ..) = small_file(Container::PngFolder {
        names: (0..5).map(|i| format!("{i}.png")).collect(),
    });
    assert_eq!(parse(&[]).unwrap_err(), FormatError::Empty);
    let mut fields = std::collections::BTreeSet::new();
    for n in 1..file.len() {
        let e = parse(&file[..n]).unwrap_err();
        match &e {
            FormatError::Truncated(f) => {
                fields.insert(*f);
            }
            e => panic!("cut at {n}: {e}"),
        }
        assert!(!e.to_string().contains('\n'));
    }
    // The error names the field the cut falls in.
    for f in [
        "magic",
        "format version",
        "header length",
        "image shape",
        "model fingerprint",
        "container",
        "header checksum",
        "payload",
    ] {
        assert!(fields.contains(f), "no cut named `{f}`: {fields:?}");
    }
}

#[test]
fn every_flipped_byte_is_an_error() {
    let (file, ..) = small_file(Container::Idx {
        header: vec![0, 0, 8, 3],
    });
    for i in 0..file.len() {
        for bit in [0x01u8, 0x80] {
            let mut f = file.clone();
            f[i] ^= bit;
            let e = parse(&f).expect_err(&format!("byte {i} flipped parsed"));
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'));
        }
    }
    let mut f = file.clone();
    let last = f.len() - 1;
    f[last] ^= 4;
    assert_eq!(parse(&f).unwrap_err(), FormatError::Checksum("payload"));
    let mut f = file.clone();
    f[60] ^= 4;
    assert_eq!(parse(&f).unwrap_err(), FormatError::Checksum("header"));
    let mut f = file.clone();
    f[0] = b'P';
    assert_eq!(parse(&f).unwrap_err(), FormatError::BadMagic);
    let mut f = file.clone();
    f[8] = 9;
    assert_eq!(parse(&f).unwrap_err(), FormatError::UnsupportedVersion(9));
    let mut f = file;
    f.push(0);
    assert_eq!(parse(&f).unwrap_err(), FormatError::Trailing(1));
}

/// Files are written in the current format version; the tiles of a tiled container are
/// ceil(H/h) x ceil(W/w) per picture, and their sum must be the image count.
#[test]
fn tiled_containers_cover_the_images_exactly() {
    let (file, ..) = small_file(Container::Raw);
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), FORMAT_VERSION);
    assert_eq!(tile_grid(28, 28, 28, 28), (1, 1));
    assert_eq!(tile_grid(61, 45, 28, 28), (3, 2));
    assert_eq!(tile_grid(1, 57, 28, 28), (1, 3));
    for (files, tiles) in [
        (vec![tiled("a.png", 9, 8)], 6),
        (vec![tiled("a.png", 4, 4), tiled("b.png", 4, 13)], 5),
    ] {
        let (file, ..) = small_file(Container::Tiled {
            folder: true,
            files,
        });
        match parse(&file) {
            Err(e) if tiles != 5 => assert_eq!(
                e.to_string(),
                format!("invalid header: files of {tiles} tiles for 5 images")
            ),
            Ok((h, _)) if tiles == 5 => assert_eq!(h.count, 5),
            other => panic!("{tiles} tiles: {other:?}"),
        }
    }
}

#[test]
fn another_model_is_refused_by_name() {
    let (file, ..) = small_file(Container::Raw);
    let (h, _) = parse(&file).unwrap();
    let other = fingerprint(b"{\"model\":1}", b"weightz");
    let e = h.check_model(&other).unwrap_err().to_string();
    assert!(
        e.starts_with("compressed with another model: fingerprint "),
        "{e}"
    );
    assert!(e.contains(&format!("this model {:02x}", other[0])), "{e}");
    // The config's length is hashed too: moving bytes between config and weights changes it.
    assert_ne!(fingerprint(b"ab", b"c"), fingerprint(b"a", b"bc"));
}

#[test]
fn invalid_fields_behind_a_valid_checksum_are_refused() {
    let (file, ..) = small_file(Container::Raw);
    let header_len = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let reseal = |f: &mut Vec<u8>| {
        let sum = sha256(&f[..header_len - 32]);
        f[header_len - 32..header_len].copy_from_slice(&sum);
    };
    for (offset, value, what) in [
        (16usize, 30u8, "latent bin precision"),
        (17, 16, "model precision"),
        (20, 0, "image shape"),
        (44, 0, "chunks"),
        (152, 7, "container kind"),
    ] {
        let mut f = file.clone();
        f[offset..offset + 4].fill(0);
        f[offset] = value;
        reseal(&mut f);
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.starts_with("invalid header"), "{what}: {e}");
    }
}

/// The fuzz corpus's crafted headers (fuzz/seeds/codec_header): the good ones parse (those of
/// a folder of pictures in tiles and one such picture among them), every other one is refused with its own cause.
#[test]
fn crafted_seed_files_are_refused_for_their_cause() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/codec_header");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let got = parse(&bytes);
        seen += 1;
        let want: Option<&str> = match name.as_str() {
            n if n.starts_with("good-") || n == "other-fingerprint" => None,
            "empty" => Some("empty file"),
            "magic-only" => Some("truncated file: it ends inside the format version"),
            "bad-magic" => Some("bad magic"),
            "version-9" => Some("unsupported format version 9 (this build reads version 4)"),
            "version-2" => Some("unsupported format version 2 (this build reads version 4)"),
            "version-3" => Some("unsupported format version 3 (this build reads version 4)"),
            "codec-9" => Some("unsupported codec version 9"),
            "header-length-huge" | "header-length-small" => Some("invalid header: header length"),
            "header-cut" => Some("truncated file: it ends inside the payload checksum"),
            "container-cut" => Some("truncated file: it ends inside the container"),
            "flipped-header-byte" => Some("checksum mismatch in the header"),
            "payload-cut" => Some("truncated file: it ends inside the payload"),
            "trailing" => Some("1 trailing bytes"),
            "payload-checksum" => Some("checksum mismatch in the payload"),
            "name-traversal" | "name-absolute" => Some("is not a plain relative path"),
            "names-too-few" => Some("1 file names for 2 images"),
            "zero-shape" | "huge-shape" => Some("invalid header: image shape"),
            "huge-count" => Some("images"),
            "latent-bits-30" => Some("latent bin precision 30"),
            "precision-16" => Some("model precision 16"),
            "chunk-zero" => Some("chunks of 0 images"),
            "kind-7" => Some("container kind 7"),
            "tiled-tiles-mismatch" => Some("files of 3 tiles for 2 images"),
            "tiled-channels" => Some("`a.png`: 3 channels in tiles of 1"),
            "tiled-zero-side" => Some("`sub/b.png`: a picture of 0x3"),
            "tiled-form-2" => Some("tiled container form 2"),
            "tiled-duplicate-names" => Some("file name `a.png` appears twice"),
            "tiled-file-two-pictures" => Some("2 files for 2 tiles"),
            "tiled-padding-7" => Some("`sub/b.png`: padding 7 0"),
            "payload-word-count-huge" => None,
            other => panic!("seed `{other}` has no expectation"),
        };
        match (want, got) {
            (None, Ok((h, payload))) => {
                let chunks = parse_payload(&h, payload);
                if name == "payload-word-count-huge" {
                    assert_eq!(chunks.unwrap_err(), FormatError::Truncated("payload"));
                } else {
                    assert_eq!(chunks.unwrap().len(), 1, "{name}");
                    if name.starts_with("good-tiled") {
                        assert!(matches!(h.container, Container::Tiled { .. }), "{name}");
                    }
                    let fp = [0x11u8; 32];
                    assert_eq!(
                        h.check_model(&fp).is_ok(),
                        name != "other-fingerprint",
                        "{name}"
                    );
                }
            }
            (Some(w), Err(e)) => assert!(e.to_string().contains(w), "{name}: `{e}` lacks `{w}`"),
            (w, g) => panic!("{name}: expected {w:?}, got {g:?}"),
        }
    }
    assert_eq!(seen, 39);
}

/// The chunks' levels are stored as LEB128 differences: any non-decreasing levels come back,
/// small ones take a byte each, and a level written longer than it needs is refused.
#[test]
fn levels_round_trip_as_differences() {
    let (file, header, ..) = small_file(Container::Raw);
    let (h, payload) = parse(&file).unwrap();
    let mut chunks = parse_payload(&h, payload).unwrap();
    let levels = vec![0, 0, 1, 127, 128, 300, 70_000, 70_000, u32::MAX];
    chunks[0].levels = levels.clone();
    assert_eq!(
        chunks[0].level_bytes().len(),
        1 + 1 + 1 + 1 + 1 + 2 + 3 + 1 + 5
    );
    let file = write_file(&header, &chunks);
    let (h, payload) = parse(&file).unwrap();
    let back = parse_payload(&h, payload).unwrap();
    assert_eq!(back[0].levels, levels);
    assert_eq!(back, chunks);
    // The first chunk's levels start at byte 10 of the payload: its first level (0) written
    // as the two bytes 0x80 0x00.
    let mut overlong = payload[..10].to_vec();
    overlong.extend_from_slice(&[0x80, 0x00]);
    overlong.extend_from_slice(&payload[11..]);
    assert_eq!(overlong.len(), payload.len() + 1);
    let e = parse_payload(&h, &overlong).unwrap_err();
    assert!(e.to_string().contains("longer than it needs"), "{e}");
}
