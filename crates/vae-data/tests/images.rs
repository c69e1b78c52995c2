//! Folders of pictures: layouts, sizes, channels, and bad pictures refused with the file named.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use vae_data::images::{load_image_dir, ImageOptions};
use vae_data::DataConfig;
use vae_data::Source;

fn grey(path: &Path, w: u32, h: u32, v: u8) {
    GrayImage::from_pixel(w, h, Luma([v]))
        .save(path)
        .expect("writing a test picture");
}

/// Writes `per_class` grey 4x4 pictures into each of `classes` sub-folders of `dir`, the
/// pictures of class k all of value 10 * k.
fn labelled(dir: &Path, classes: &[&str], per_class: usize) {
    for (k, c) in classes.iter().enumerate() {
        let d = dir.join(c);
        std::fs::create_dir_all(&d).expect("mkdir");
        for i in 0..per_class {
            grey(&d.join(format!("{i:03}.png")), 4, 4, 10 * k as u8);
        }
    }
}

fn refused(dir: &Path, opts: ImageOptions, names: &Path, what: &str) -> String {
    let err = match load_image_dir(dir, opts) {
        Ok(f) => panic!("accepted: {} pictures", f.train.len()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&names.display().to_string()),
        "error does not name {}: {err}",
        names.display()
    );
    assert!(err.contains(what), "error lacks `{what}`: {err}");
    err
}

#[test]
fn one_sub_folder_per_class_gives_labels() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    labelled(tmp.path(), &["cat", "ant", "bee"], 3);
    std::fs::write(tmp.path().join("README.txt"), "not a picture")?;
    let f = load_image_dir(tmp.path(), ImageOptions::default())?;
    // Classes in sorted order of their names.
    assert_eq!(f.classes, ["ant", "bee", "cat"]);
    assert_eq!(f.train.len(), 9);
    assert_eq!(f.train.shape, vae_core::DataShape::image(1, 4, 4));
    assert_eq!(f.train.num_classes, Some(3));
    assert_eq!(f.train.gather_labels(&[0, 3, 8]), Some(vec![0, 1, 2]));
    let mut x = Vec::new();
    // "ant" was written as class 1 (value 10), and is class 0 here.
    f.train.gather(&[0], &mut x);
    assert_eq!((x[0] * 255.0).round(), 10.0);
    assert!(f.test.is_none());
    Ok(())
}

#[test]
fn loose_pictures_resized_and_coloured() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    grey(&tmp.path().join("a.png"), 8, 6, 200);
    let mut rgb = RgbImage::from_pixel(5, 5, Rgb([255, 0, 0]));
    rgb.put_pixel(0, 0, Rgb([0, 0, 255]));
    rgb.save(tmp.path().join("b.jpg"))?;
    // Different sizes need --image-size.
    let b = tmp.path().join("b.jpg");
    let err = refused(tmp.path(), ImageOptions::default(), &b, "--image-size");
    assert!(err.contains("5x5") && err.contains("8x6"), "{err}");
    let f = load_image_dir(
        tmp.path(),
        ImageOptions {
            size: Some(4),
            channels: None,
        },
    )?;
    // One picture has colour: both become RGB, channel-major.
    assert_eq!(f.train.shape, vae_core::DataShape::image(3, 4, 4));
    assert_eq!(f.train.labels, None);
    let mut x = Vec::new();
    f.train.gather(&[0], &mut x);
    // The grey picture: the same value in all three planes.
    let back: Vec<f32> = [x[0], x[16], x[32]]
        .iter()
        .map(|v| (v * 255.0).round())
        .collect();
    assert_eq!(back, [200.0; 3]);
    f.train.gather(&[1], &mut x);
    // The red picture (JPEG, so not exact): red plane high, green plane low, at the far corner.
    assert!(x[15] > 0.8 && x[16 + 15] < 0.2, "{x:?}");
    let f = load_image_dir(
        tmp.path(),
        ImageOptions {
            size: Some(4),
            channels: Some(1),
        },
    )?;
    assert_eq!(f.train.shape, vae_core::DataShape::image(1, 4, 4));
    Ok(())
}

#[test]
fn train_and_test_folders_are_the_splits() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    labelled(&tmp.path().join("train"), &["a", "b"], 4);
    labelled(&tmp.path().join("test"), &["b"], 2);
    let f = load_image_dir(tmp.path(), ImageOptions::default())?;
    let test = f.test.expect("a test split");
    assert_eq!((f.train.len(), test.len()), (8, 2));
    // The test split's "b" is class 1, as in training.
    assert_eq!(test.labels, Some(vec![1, 1]));
    let cfg = DataConfig {
        source: Source::Images {
            dir: tmp.path().to_path_buf(),
            size: None,
            channels: None,
        },
        ..DataConfig::default()
    };
    let r = cfg.load()?;
    assert_eq!((r.splits.train.len(), r.splits.test.len()), (8, 2));
    // A test class unknown to training is refused.
    labelled(&tmp.path().join("test"), &["zebra"], 1);
    let zebra: PathBuf = tmp.path().join("test").join("zebra");
    refused(tmp.path(), ImageOptions::default(), &zebra, "class `zebra`");
    Ok(())
}

#[test]
fn bad_pictures_and_folders() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    refused(d, ImageOptions::default(), d, "no PNG or JPEG");
    refused(
        &d.join("nope"),
        ImageOptions::default(),
        &d.join("nope"),
        "no such directory",
    );
    // A truncated PNG.
    grey(&d.join("ok.png"), 4, 4, 1);
    let bytes = std::fs::read(d.join("ok.png"))?;
    std::fs::write(d.join("cut.png"), &bytes[..bytes.len() / 2])?;
    refused(
        d,
        ImageOptions::default(),
        &d.join("cut.png"),
        "cannot decode",
    );
    std::fs::remove_file(d.join("cut.png"))?;
    // Not a picture at all, under a picture's name.
    std::fs::write(d.join("text.png"), "hello, world")?;
    refused(
        d,
        ImageOptions::default(),
        &d.join("text.png"),
        "Invalid PNG signature",
    );
    std::fs::remove_file(d.join("text.png"))?;
    // Pictures beside class folders.
    labelled(d, &["k"], 1);
    refused(d, ImageOptions::default(), d, "both pictures");
    Ok(())
}

/// A PNG whose header claims `w` x `h` pixels, with one tiny compressed row: a decompression
/// bomb's header (built by hand; the CRCs are computed so the chunks are valid).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(ty);
        crc.update(data);
        out.extend_from_slice(ty);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &[0u8; 1024]).expect("zlib in memory");
    chunk(&mut out, b"IDAT", &z.finish().expect("zlib in memory"));
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn a_decompression_bomb_is_refused_by_the_limits() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    // 100,000 x 100,000 grey pixels would take 10 GB.
    std::fs::write(d.join("bomb.png"), png_claiming(100_000, 100_000))?;
    let err = refused(d, ImageOptions::default(), &d.join("bomb.png"), "refused");
    assert!(err.contains("8192"), "{err}");
    // Within the side limit but over the memory limit: 8000 x 8000 x 8 bytes (RGBA16).
    std::fs::remove_file(d.join("bomb.png"))?;
    let mut p = png_claiming(8000, 8000);
    // Colour type 6 (RGBA), 16 bits: IHDR data starts at byte 16; depth at 24, colour at 25.
    p[24] = 16;
    p[25] = 6;
    let ihdr_crc = {
        let mut c = flate2::Crc::new();
        c.update(&p[12..29]);
        c.sum()
    };
    p[29..33].copy_from_slice(&ihdr_crc.to_be_bytes());
    std::fs::write(d.join("bomb2.png"), p)?;
    refused(d, ImageOptions::default(), &d.join("bomb2.png"), "refused");
    Ok(())
}
