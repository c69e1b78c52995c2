//! A folder of IDX files of any image size (`--dataset idx`): written and read back, with and
//! without labels and a test split, and the errors that name the file.

use std::path::Path;

use vae_core::DataShape;
use vae_data::dataset::Stream;
use vae_data::idx::encode_idx;
use vae_data::idx_set::{load_idx_set, write_idx_set, IdxSplit};
use vae_data::{DataConfig, Dataset, FlatDataConfig};

/// Every value of `d` as the byte it was written as.
fn bytes(d: &Dataset) -> Vec<u8> {
    let mut x = Vec::new();
    d.gather(&(0..d.len()).collect::<Vec<_>>(), &mut x);
    x.iter().map(|v| (v * 255.0).round() as u8).collect()
}

fn config(dir: &Path) -> anyhow::Result<DataConfig> {
    let mut flat = FlatDataConfig::from(DataConfig::default());
    flat.dataset = "idx".into();
    flat.data_dir = Some(dir.to_path_buf());
    Ok(DataConfig::try_from(flat)?)
}

#[test]
fn grey_images_with_labels_and_a_test_split_read_back_as_written() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shape = DataShape::image(1, 3, 2);
    let train: Vec<u8> = (0..4 * 6).map(|v| (v * 7) as u8).collect();
    let test: Vec<u8> = (0..2 * 6).map(|v| 255 - v as u8).collect();
    let (tl, vl) = ([0u32, 4, 1, 2], [3u32, 0]);
    write_idx_set(
        dir.path(),
        IdxSplit {
            shape,
            pixels: &train,
            labels: Some(&tl),
        },
        Some(IdxSplit {
            shape,
            pixels: &test,
            labels: Some(&vl),
        }),
    )?;
    assert!(dir.path().join("train-images-idx3-ubyte").is_file());
    let cfg = config(dir.path())?;
    // The flat form in config.json names the source and its folder, and reads back the same.
    let flat = FlatDataConfig::from(cfg.clone());
    assert_eq!(flat.dataset, "idx");
    assert_eq!(DataConfig::try_from(flat)?, cfg);
    let r = cfg.load()?;
    let (a, b) = (&r.splits.train, &r.splits.test);
    assert_eq!((a.shape, a.len(), b.len()), (shape, 4, 2));
    assert_eq!((bytes(a), bytes(b)), (train, test));
    assert_eq!(a.labels.as_deref(), Some(&tl[..]));
    assert_eq!(b.labels.as_deref(), Some(&vl[..]));
    // Five classes: one more than the largest label of either split.
    assert_eq!((a.num_classes, b.num_classes), (Some(5), Some(5)));
    assert!(a.is_8bit());
    Ok(())
}

#[test]
fn colour_images_without_labels_or_test_split_hold_out_a_validation_split() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shape = DataShape::image(3, 2, 2);
    let train: Vec<u8> = (0..20 * 12).map(|v| v as u8).collect();
    // A set written before (grey, labelled, with a test split) is replaced as a whole.
    let old = [1u8; 4 * 6];
    let one = DataShape::image(1, 2, 3);
    write_idx_set(
        dir.path(),
        IdxSplit {
            shape: one,
            pixels: &old,
            labels: Some(&[0, 1, 0, 1]),
        },
        Some(IdxSplit {
            shape: one,
            pixels: &old,
            labels: Some(&[1, 1, 1, 1]),
        }),
    )?;
    write_idx_set(
        dir.path(),
        IdxSplit {
            shape,
            pixels: &train,
            labels: None,
        },
        None,
    )?;
    let mut names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    names.sort();
    assert_eq!(names, ["train-images-idx4-ubyte"]);
    let (t, test) = load_idx_set(dir.path(), Stream::Off)?;
    assert!(test.is_none());
    assert_eq!((t.shape, t.len(), t.labels.is_none()), (shape, 20, true));
    assert_eq!(bytes(&t), train);
    let r = config(dir.path())?.load()?;
    assert_eq!((r.splits.train.len(), r.splits.test.len()), (18, 2));
    Ok(())
}

#[test]
fn bad_sets_are_refused_naming_the_file_or_the_split() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let shape = DataShape::image(1, 2, 2);
    let px = [0u8; 8];
    let err = |r: vae_data::Result<()>| r.expect_err("accepted").to_string();
    let e = err(write_idx_set(
        d,
        IdxSplit {
            shape,
            pixels: &px,
            labels: Some(&[0, 256]),
        },
        None,
    ));
    assert!(e.contains("label 256 does not fit"), "{e}");
    let e = err(write_idx_set(
        d,
        IdxSplit {
            shape,
            pixels: &px[..7],
            labels: None,
        },
        None,
    ));
    assert!(e.contains("the training split: 7 values"), "{e}");
    let e = err(write_idx_set(
        d,
        IdxSplit {
            shape,
            pixels: &px,
            labels: Some(&[0, 1]),
        },
        Some(IdxSplit {
            shape,
            pixels: &px,
            labels: None,
        }),
    ));
    assert!(e.contains("labels for both or neither"), "{e}");
    // Nothing was written by the refused calls.
    assert_eq!(std::fs::read_dir(d)?.count(), 0);

    let e = load_idx_set(d, Stream::Off).expect_err("empty").to_string();
    assert!(e.contains("no training images"), "{e}");
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        encode_idx(&[2, 2, 2], &px),
    )?;
    std::fs::write(d.join("train-labels-idx1-ubyte"), encode_idx(&[3], &[0; 3]))?;
    let e = load_idx_set(d, Stream::Off)
        .expect_err("3 labels")
        .to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte: 3 labels for the 2 images"),
        "{e}"
    );
    std::fs::remove_file(d.join("train-labels-idx1-ubyte"))?;
    std::fs::write(
        d.join("train-images-idx4-ubyte"),
        encode_idx(&[2, 1, 2, 2], &px),
    )?;
    let e = load_idx_set(d, Stream::Off)
        .expect_err("two forms")
        .to_string();
    assert!(e.contains("keep one"), "{e}");
    let e = DataConfig::try_from(FlatDataConfig {
        dataset: "idx".into(),
        ..FlatDataConfig::from(DataConfig::default())
    })
    .expect_err("no folder")
    .to_string();
    assert!(e.contains("--data-dir"), "{e}");
    let e = config(&d.join("nowhere"))?
        .load()
        .expect_err("no folder")
        .to_string();
    assert!(
        e.contains("nowhere") && e.contains("no such directory"),
        "{e}"
    );
    Ok(())
}
