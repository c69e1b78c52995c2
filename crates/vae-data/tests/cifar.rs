//! CIFAR-10 binary batches: reading, and every bad input refused with the file named.

use std::path::{Path, PathBuf};

use vae_data::cifar::{
    encode_cifar, load_cifar_dir, read_cifar_bytes, read_cifar_file, PIXELS, RECORD, TEST_FILE,
    TRAIN_FILES,
};
use vae_data::{resolve_with, DataError, ResolveOptions};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("writing a test file");
    p
}

/// `n` records: record i has label i % 10 and every pixel equal to i (mod 256), except that
/// the first pixel of each plane holds the plane number.
fn records(n: usize) -> Vec<u8> {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let mut pixels = Vec::with_capacity(n * PIXELS);
    for i in 0..n {
        let mut px = vec![i as u8; PIXELS];
        for c in 0..3 {
            px[c * 1024] = c as u8;
        }
        pixels.extend(px);
    }
    encode_cifar(&labels, &pixels)
}

fn write_set(dir: &Path, per_batch: usize) {
    for f in TRAIN_FILES {
        write(dir, f, &records(per_batch));
    }
    write(dir, TEST_FILE, &records(per_batch));
}

fn refused(path: &Path, what: &str) -> String {
    let err = match read_cifar_file(path) {
        Ok(b) => panic!("{} accepted with {} records", path.display(), b.len()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    assert!(err.contains(what), "error lacks `{what}`: {err}");
    err
}

#[test]
fn a_batch_reads_into_labels_and_channel_major_pixels() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let b = read_cifar_file(&write(tmp.path(), "b.bin", &records(3)))?;
    assert_eq!(b.labels, [0, 1, 2]);
    assert_eq!(b.pixels.len(), 3 * PIXELS);
    // Record 2: planes start with 0, 1, 2; the rest is 2.
    let r2 = &b.pixels[2 * PIXELS..];
    assert_eq!((r2[0], r2[1024], r2[2048], r2[1]), (0, 1, 2, 2));
    assert_eq!(read_cifar_bytes(&records(3), Path::new("mem"))?, b);
    Ok(())
}

#[test]
fn a_length_that_is_not_whole_records() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut bytes = records(2);
    bytes.truncate(RECORD + 100);
    let err = refused(&write(tmp.path(), "cut.bin", &bytes), "not a whole number");
    assert!(err.contains("1 records and 100 bytes over"), "{err}");
    refused(&write(tmp.path(), "empty.bin", &[]), "empty file");
    // Trailing bytes after whole records are the same error.
    let mut bytes = records(1);
    bytes.push(0);
    refused(&write(tmp.path(), "long.bin", &bytes), "1 bytes over");
    Ok(())
}

#[test]
fn a_label_out_of_range() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut bytes = records(3);
    bytes[2 * RECORD] = 57;
    let err = refused(
        &write(tmp.path(), "c100.bin", &bytes),
        "label 57 of record 2",
    );
    assert!(err.contains("CIFAR-100"), "{err}");
    Ok(())
}

#[test]
fn a_directory_reads_five_training_batches_and_the_test_batch() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    write_set(tmp.path(), 4);
    let s = load_cifar_dir(tmp.path())?;
    assert_eq!((s.train.len(), s.test.len()), (20, 4));
    assert_eq!(s.train.shape, vae_core::DataShape::image(3, 32, 32));
    assert_eq!(s.train.num_classes, Some(10));
    // Example 5 is record 1 of data_batch_2: label 1, pixels 1 but plane starts 0, 1, 2.
    let mut x = Vec::new();
    s.train.gather(&[5], &mut x);
    assert_eq!(s.train.gather_labels(&[5]), Some(vec![1]));
    assert_eq!((x[0], x[1024], x[2048]), (0.0, 1.0 / 255.0, 2.0 / 255.0));
    assert_eq!(x[1], 1.0 / 255.0);
    // The archive's own folder name is found too.
    let nested = tmp.path().join("n");
    std::fs::create_dir_all(nested.join("cifar-10-batches-bin"))?;
    write_set(&nested.join("cifar-10-batches-bin"), 1);
    assert_eq!(load_cifar_dir(&nested)?.train.len(), 5);
    Ok(())
}

#[test]
fn missing_batches_are_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    write_set(tmp.path(), 1);
    std::fs::remove_file(tmp.path().join("data_batch_3.bin"))?;
    std::fs::remove_file(tmp.path().join(TEST_FILE))?;
    let err = load_cifar_dir(tmp.path())
        .expect_err("accepted")
        .to_string();
    assert!(
        err.contains("missing data_batch_3.bin, test_batch.bin"),
        "{err}"
    );
    // Through the resolver, an explicit --data-dir says the same and how to provide the files.
    let opts = ResolveOptions {
        hub: false,
        ..ResolveOptions::default()
    };
    let err = resolve_with("cifar10", Some(tmp.path()), opts).expect_err("accepted");
    assert!(matches!(err, DataError::NotFound { .. }));
    let msg = err.to_string();
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
    assert!(msg.contains("cifar-10-binary.tar.gz"), "{msg}");
    Ok(())
}

#[test]
fn a_bad_batch_in_a_directory_is_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    write_set(tmp.path(), 2);
    let mut bad = records(2);
    bad[RECORD] = 10;
    write(tmp.path(), "data_batch_4.bin", &bad);
    let opts = ResolveOptions {
        hub: false,
        ..ResolveOptions::default()
    };
    let err = resolve_with("cifar10", Some(tmp.path()), opts)
        .expect_err("accepted")
        .to_string();
    assert!(err.contains("data_batch_4.bin"), "{err}");
    assert!(err.contains("label 10 of record 1"), "{err}");
    Ok(())
}
