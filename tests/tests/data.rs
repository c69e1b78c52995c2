//! Data sources end to end: `vae-train` on a folder of pictures and on a CSV table, the error of
//! a named dataset found nowhere, and bad files refused with the file named.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A labelled folder: `classes` sub-folders of `per_class` 16x16 grey PNGs, class k a bright
/// square at a position of its own on a dark background, with a little per-picture variation.
fn write_picture_folder(dir: &Path, classes: usize, per_class: usize) {
    for k in 0..classes {
        let sub = dir.join(format!("class-{k}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for i in 0..per_class {
            let img = image::GrayImage::from_fn(16, 16, |x, y| {
                let inside = x / 4 == k as u32 && (y / 4) == (i % 4) as u32;
                image::Luma([if inside { 220 } else { (i * 3 % 40) as u8 }])
            });
            img.save(sub.join(format!("{i:03}.png"))).expect("png");
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn train_on_a_picture_folder_then_sample() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let pics = tmp.path().join("pics");
    write_picture_folder(&pics, 3, 100);
    let run = tmp.path().join("run");
    ok(train(&[
        "--images",
        s(&pics),
        "--epochs",
        "2",
        "--threads",
        "1",
        "--quiet",
        "--out",
        s(&run),
    ]));
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    let v = m[1]["val_loss"].as_f64().expect("val_loss");
    // 256 pixels, so a Bernoulli negative ELBO is at most a few hundred nats.
    assert!(v.is_finite() && v > 0.0 && v < 256.0, "val_loss {v}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json"))?)?;
    assert_eq!(cfg["data"]["dataset"], "images");
    assert_eq!(cfg["data"]["images"], s(&pics));
    // 300 pictures, none in a test folder: 10% held out for validation.
    let out = ok(infer(&["evaluate", "--run", s(&run), "--json"]));
    let e: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(e["examples"].as_u64(), Some(30), "{out}");
    let png = tmp.path().join("s.png");
    ok(infer(&[
        "sample",
        "--run",
        s(&run),
        "--n",
        "16",
        "--out",
        s(&png),
    ]));
    // A 4x4 grid of 16x16 pictures drawn at 2x with 2-pixel borders: 4 * 34 + 2.
    assert_eq!(png_size(&png), (138, 138));
    Ok(())
}

#[test]
fn train_on_a_csv_table() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let csv = tmp.path().join("t.csv");
    let mut text = String::from("a,b,c,d,kind\n");
    for i in 0..200 {
        let t = i as f64 / 200.0;
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            t,
            1.0 - t,
            (t * 6.0).sin(),
            (i % 7) as f64,
            if i % 2 == 0 { "even" } else { "odd" }
        ));
    }
    std::fs::write(&csv, text)?;
    let run = tmp.path().join("run");
    ok(train(&[
        "--csv",
        s(&csv),
        "--label-column",
        "kind",
        "--val-fraction",
        "0.2",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--quiet",
        "--out",
        s(&run),
    ]));
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    assert!(m[1]["val_loss"].as_f64().is_some_and(f64::is_finite));
    // 160 training rows in batches of 32: 5 steps an epoch.
    assert_eq!(m[1]["step"].as_u64(), Some(10));
    // Tabular data is not drawn as pictures.
    assert!(!run.join("samples/epoch-001.png").exists());
    Ok(())
}

#[test]
fn a_named_dataset_found_nowhere_fails_fast_listing_the_places_tried() -> anyhow::Result<()> {
    assert!(
        !Path::new("/usr/share/datasets/mnist").exists(),
        "this test assumes MNIST is not installed in /usr/share/datasets"
    );
    let tmp = tempfile::tempdir()?;
    // The hub's address is a loopback port that was just free (connection refused), and its
    // cache an empty folder: the real hub path runs, and no traffic leaves the machine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut c = train(&["--dataset", "mnist", "--epochs", "1", "--quiet"]);
    c.env("VAE_DATA_DIR", tmp.path())
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("HF_HOME", tmp.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .current_dir(tmp.path());
    let start = Instant::now();
    let err = fails(c, 1);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for place in [
        tmp.path().join("mnist").display().to_string(),
        "/usr/share/datasets/mnist".into(),
        "Hugging Face hub".into(),
    ] {
        assert!(err.contains(&place), "`{place}` not listed:\n{err}");
    }
    assert!(err.contains("--data-dir"), "no hint:\n{err}");
    assert!(
        !tmp.path().join("runs").exists(),
        "a run directory was made"
    );
    Ok(())
}

/// The default build has no hub download: a named dataset found nowhere fails at once, saying
/// which flag builds the download in, without touching the network (a listener that never
/// answers stands in for the hub).
#[test]
fn without_the_hub_feature_a_missing_dataset_names_the_flag() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut c = train(&["--dataset", "cifar10", "--epochs", "1", "--quiet"]);
    c.env("VAE_DATA_DIR", tmp.path())
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("HF_HOME", tmp.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .current_dir(tmp.path());
    let start = Instant::now();
    let err = fails(c, 1);
    let took = start.elapsed();
    drop(listener);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        err.contains("Hugging Face hub: not tried") && err.contains("--features hub"),
        "the error does not say how to get the download:\n{err}"
    );
    assert!(err.contains("test_batch.bin"), "no install hint:\n{err}");
    Ok(())
}

/// Runs vae-train on `args` expecting exit 1 with `file` and `what` in the message.
fn refused(args: &[&str], file: &Path, what: &str) -> String {
    let err = fails(train(args), 1);
    assert!(
        err.contains(s(file)),
        "{} not named:\n{err}",
        file.display()
    );
    assert!(err.contains(what), "`{what}` not in:\n{err}");
    err
}

#[test]
fn bad_files_are_refused_with_the_file_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    let out = d.join("run");
    let common = ["--epochs", "1", "--quiet", "--out", s(&out)];

    // CIFAR-10: a batch cut short.
    let cifar = d.join("cifar");
    std::fs::create_dir_all(&cifar)?;
    for f in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        std::fs::write(cifar.join(f), vec![1u8; 3073 * 2])?;
    }
    let bad = cifar.join("data_batch_2.bin");
    std::fs::write(&bad, vec![1u8; 3073 * 2 - 10])?;
    let mut args = vec!["--dataset", "cifar10", "--data-dir", s(&cifar)];
    args.extend(common);
    refused(&args, &bad, "not a whole number of 3073-byte records");
    // ... and a batch missing.
    std::fs::remove_file(&bad)?;
    let err = fails(train(&args), 1);
    assert!(err.contains("data_batch_2.bin"), "{err}");

    // PNG: a truncated picture in a class folder.
    let pics = d.join("pics");
    write_picture_folder(&pics, 2, 3);
    let png = pics.join("class-1").join("001.png");
    let bytes = std::fs::read(&png)?;
    std::fs::write(&png, &bytes[..bytes.len() / 2])?;
    let mut args = vec!["--images", s(&pics)];
    args.extend(common);
    refused(&args, &png, "cannot decode");

    // CSV: text in a number column.
    let csv = d.join("t.csv");
    std::fs::write(&csv, "x,y\n1,2\n3,oops\n")?;
    let mut args = vec!["--csv", s(&csv)];
    args.extend(common);
    refused(&args, &csv, "`oops` is not a number");

    // NPY: a big-endian array.
    let npy = d.join("t.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = b"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }".to_vec();
    // Preamble and header padded with spaces to a multiple of 64 bytes, ending in a newline.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&[0; 16]);
    std::fs::write(&npy, bytes)?;
    let mut args = vec!["--npy", s(&npy)];
    args.extend(common);
    refused(&args, &npy, "big-endian");

    // Flags that contradict each other.
    let mut args = vec!["--csv", s(&csv), "--dataset", "mnist"];
    args.extend(common);
    let err = fails(train(&args), 1);
    assert!(
        err.contains("--dataset mnist cannot be combined with --csv"),
        "{err}"
    );
    assert!(!out.exists(), "a run directory was made for bad data");
    Ok(())
}
