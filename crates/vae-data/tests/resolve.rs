//! Finding named datasets: the order of the places tried, and the error when none has them.
//! One test function, because it sets `VAE_DATA_DIR` for the whole process.

use std::io::Write;
use std::path::Path;

use vae_data::idx::encode_idx;
use vae_data::{resolve_with, Binarize, DataConfig, DataError, ResolveOptions};

fn write_idx_set(dir: &Path, n: usize, value: u8) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).expect("gzip in memory");
        e.finish().expect("gzip in memory")
    };
    let images = encode_idx(&[n, 2, 2], &vec![value; n * 4]);
    let labels = encode_idx(&[n], &vec![3; n]);
    for (stem, bytes) in [
        ("train-images-idx3-ubyte", &images),
        ("train-labels-idx1-ubyte", &labels),
        ("t10k-images-idx3-ubyte", &images),
        ("t10k-labels-idx1-ubyte", &labels),
    ] {
        std::fs::write(dir.join(format!("{stem}.gz")), gz(bytes)).expect("write");
    }
}

/// The first pixel of the first training example, as the byte it was written as.
fn first_value(r: &vae_data::Resolved) -> f32 {
    let mut x = Vec::new();
    r.splits.train.gather(&[0], &mut x);
    (x[0] * 255.0).round()
}

#[test]
fn places_are_tried_in_order_and_all_are_listed_when_none_has_the_data() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    std::env::set_var("VAE_DATA_DIR", root.path());
    let no_hub = ResolveOptions {
        hub: false,
        ..ResolveOptions::default()
    };
    assert!(
        !Path::new("/usr/share/datasets/kmnist").exists(),
        "this test assumes KMNIST is not installed in /usr/share/datasets"
    );

    // Nothing anywhere: one error naming every place, and how to provide the files.
    let err = resolve_with("kmnist", None, no_hub).expect_err("found");
    let DataError::NotFound { tried, hint, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    let kdir = root.path().join("kmnist");
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[0].contains(&kdir.display().to_string()), "{tried:?}");
    assert!(tried[1].contains("/usr/share/datasets/kmnist"), "{tried:?}");
    assert!(tried[2].contains("Hugging Face hub"), "{tried:?}");
    assert!(hint.contains("--data-dir") && hint.contains("train-images-idx3-ubyte"));
    // With the hub allowed, KMNIST has no hub loader: said so, without any network access.
    let err = resolve_with("kmnist", None, ResolveOptions::default()).expect_err("found");
    let msg = err.to_string();
    assert!(
        msg.contains("no hub loader for `kmnist`") || msg.contains("no hub support"),
        "{msg}"
    );

    // HF_HUB_OFFLINE: the hub is skipped at once (or absent from this build).
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_HOME", root.path().join("hf"));
    let err = resolve_with("mnist", None, ResolveOptions::default()).expect_err("found");
    let msg = err.to_string();
    assert!(
        msg.contains("HF_HUB_OFFLINE is set") || msg.contains("no hub support"),
        "{msg}"
    );
    std::env::remove_var("HF_HUB_OFFLINE");

    // A partial copy: the missing files are named.
    write_idx_set(&kdir, 3, 51);
    std::fs::remove_file(kdir.join("t10k-labels-idx1-ubyte.gz"))?;
    let err = resolve_with("kmnist", None, no_hub).expect_err("found");
    assert!(
        err.to_string()
            .contains("missing t10k-labels-idx1-ubyte[.gz]"),
        "{err}"
    );

    // $VAE_DATA_DIR/<name> is found...
    write_idx_set(&kdir, 3, 51);
    let r = resolve_with("kmnist", None, no_hub)?;
    assert_eq!(r.source, kdir.display().to_string());
    assert_eq!(first_value(&r), 51.0);
    // ...but --data-dir comes first.
    let explicit = root.path().join("explicit");
    write_idx_set(&explicit, 2, 255);
    let r = resolve_with("kmnist", Some(&explicit), no_hub)?;
    assert_eq!((r.splits.train.len(), first_value(&r)), (2, 255.0));
    // An explicit directory without the files is an error, not a fallback.
    let err = resolve_with("kmnist", Some(&root.path().join("none")), no_hub).expect_err("found");
    assert!(err.to_string().contains("no such directory"), "{err}");

    // Through DataConfig: static binarisation applied at load time (value 51/255 = 0.2 becomes
    // 0 or 1), and --val-fraction replacing the test split.
    let cfg = DataConfig {
        source: vae_data::Source::Named {
            name: "kmnist".into(),
            data_dir: None,
        },
        binarize: Binarize::Static,
        val_fraction: Some(0.34),
        ..DataConfig::default()
    };
    let r = cfg.load_with(false)?;
    assert_eq!((r.splits.train.len(), r.splits.test.len()), (2, 1));
    let mut x = Vec::new();
    r.splits.train.gather(&[0, 1], &mut x);
    assert!(x.iter().all(|&v| v == 0.0 || v == 1.0), "{x:?}");
    std::env::remove_var("VAE_DATA_DIR");
    std::env::remove_var("HF_HOME");
    Ok(())
}
