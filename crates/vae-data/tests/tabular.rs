//! CSV and NPY files: parsing, labels, scaling, and bad files refused with the file named.

use std::path::{Path, PathBuf};

use vae_data::tabular::{encode_npy_f32, read_csv, read_npy, LabelColumn, Normalize};
use vae_data::DataConfig;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("writing a test file");
    p
}

fn csv_refused(path: &Path, label: Option<&str>, what: &str) -> String {
    let l = label.map(LabelColumn::parse);
    let err = match read_csv(path, l.as_ref()) {
        Ok(t) => panic!("{} accepted: {} rows", path.display(), t.rows()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(what), "error lacks `{what}`: {err}");
    err
}

fn npy_refused(path: &Path, what: &str) -> String {
    let err = match read_npy(path, None) {
        Ok(t) => panic!("{} accepted: {} rows", path.display(), t.rows()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(what), "error lacks `{what}`: {err}");
    err
}

#[test]
fn csv_with_header_and_named_label_column() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = write(
        tmp.path(),
        "iris.csv",
        b"sepal, petal ,species\n1.0,10,setosa\n# a comment\n3.0, 30,virginica\n2.0,20,setosa\n",
    );
    let t = read_csv(&p, Some(&LabelColumn::parse("species")))?;
    assert_eq!(t.cols, 2);
    assert_eq!(t.values, [1.0, 10.0, 3.0, 30.0, 2.0, 20.0]);
    assert_eq!(t.header, Some(vec!["sepal".into(), "petal".into()]));
    // Class names numbered in sorted order: setosa 0, virginica 1.
    assert_eq!(t.labels, Some(vec![0, 1, 0]));
    assert_eq!(t.num_classes, Some(2));
    // The same column by index; integer labels are kept as numbers.
    let p = write(tmp.path(), "n.csv", b"0.5,3\n0.25,0\n");
    let t = read_csv(&p, Some(&LabelColumn::parse("1")))?;
    assert_eq!((t.labels, t.num_classes), (Some(vec![3, 0]), Some(4)));
    assert_eq!(t.header, None);
    Ok(())
}

#[test]
fn normalisation_per_column() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = write(tmp.path(), "t.csv", b"a,b,c\n1,10,5\n3,30,5\n2,20,5\n");
    let t = read_csv(&p, None)?;
    let mut unit = t.values.clone();
    Normalize::Unit.apply(&mut unit, 3);
    // Min-max per column; a constant column becomes 0.
    assert_eq!(unit, [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.0]);
    let mut std = t.values.clone();
    Normalize::Standard.apply(&mut std, 3);
    // Column a is 1, 3, 2: mean 2, population variance 2/3.
    let s = (1.5f64).sqrt();
    let want = [-s, -s, 0.0, s, s, 0.0, 0.0, 0.0, 0.0];
    for (g, w) in std.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{std:?}");
    }
    let ds = t.into_dataset(Normalize::Unit)?;
    assert_eq!(ds.shape, vae_core::DataShape::tabular(3));
    let mut x = Vec::new();
    ds.gather(&[1], &mut x);
    assert_eq!(x, [1.0, 1.0, 0.0]);
    Ok(())
}

#[test]
fn bad_csv_files() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    csv_refused(&write(d, "empty.csv", b""), None, "empty file");
    csv_refused(&write(d, "header.csv", b"a,b\n"), None, "no data rows");
    let err = csv_refused(
        &write(d, "text.csv", b"a,b\n1,2\n3,x\n"),
        None,
        "`x` is not a number",
    );
    assert!(
        err.contains("line 3") && err.contains("column 1 (`b`)"),
        "{err}"
    );
    csv_refused(&write(d, "nan.csv", b"1,2\n3,NaN\n"), None, "not finite");
    let err = csv_refused(
        &write(d, "ragged.csv", b"1,2,3\n4,5\n"),
        None,
        "2 fields where the first row has 3",
    );
    assert!(err.contains("line 2"), "{err}");
    csv_refused(
        &write(d, "bin.csv", &[0xff, 0xfe, 0x00, 0x41, b'\n', 0x80, b'\n']),
        None,
        "UTF-8",
    );
    let p = write(d, "lab.csv", b"a,b\n1,2\n");
    csv_refused(&p, Some("kind"), "no such column");
    csv_refused(&p, Some("5"), "--label-column 5");
    csv_refused(
        &write(d, "one.csv", b"y\n1\n"),
        Some("y"),
        "no feature columns",
    );
    Ok(())
}

#[test]
fn npy_files_of_each_supported_type() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = write(
        tmp.path(),
        "f4.npy",
        &encode_npy_f32(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    );
    let t = read_npy(&p, None)?;
    assert_eq!((t.cols, t.rows()), (3, 2));
    assert_eq!(t.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let t = read_npy(&p, Some(&LabelColumn::Index(2)))?;
    assert_eq!(t.cols, 2);
    assert_eq!(t.values, [1.0, 2.0, 4.0, 5.0]);
    assert_eq!((t.labels, t.num_classes), (Some(vec![3, 6]), Some(7)));
    // Headers as numpy 1.x writes them for f64 and u8 (np.save of arrays of shape (2, 2)).
    for (descr, body) in [
        (
            "<f8",
            [0.5f64, 1.5, 2.5, 3.5]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        ),
        ("|u1", vec![0u8, 255, 7, 9]),
    ] {
        let p = write(tmp.path(), "x.npy", &npy(descr, false, "(2, 2)", &body));
        let t = read_npy(&p, None)?;
        assert_eq!(t.rows(), 2, "{descr}");
        if descr == "|u1" {
            assert_eq!(t.values, [0.0, 255.0, 7.0, 9.0]);
        } else {
            assert_eq!(t.values, [0.5, 1.5, 2.5, 3.5]);
        }
    }
    Ok(())
}

/// An NPY 1.0 file with the given header fields and body.
fn npy(descr: &str, fortran: bool, shape: &str, body: &[u8]) -> Vec<u8> {
    let f = if fortran { "True" } else { "False" };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out
}

#[test]
fn bad_npy_files() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    let f4 = |n: usize| vec![0u8; 4 * n];
    npy_refused(
        &write(d, "magic.npy", b"PK\x03\x04 zip file"),
        "magic string",
    );
    npy_refused(&write(d, "short.npy", b"\x93NUM"), "preamble");
    npy_refused(
        &write(d, "big.npy", &npy(">f4", false, "(2, 2)", &f4(4))),
        "big-endian",
    );
    npy_refused(
        &write(d, "i8.npy", &npy("<i8", false, "(2, 2)", &[0; 32])),
        "`<i8` is not supported",
    );
    npy_refused(
        &write(d, "fortran.npy", &npy("<f4", true, "(2, 2)", &f4(4))),
        "Fortran order",
    );
    npy_refused(
        &write(d, "3d.npy", &npy("<f4", false, "(2, 2, 2)", &f4(8))),
        "expected 2 dimensions",
    );
    npy_refused(
        &write(d, "1d.npy", &npy("<f4", false, "(4,)", &f4(4))),
        "expected 2 dimensions",
    );
    npy_refused(
        &write(d, "empty.npy", &npy("<f4", false, "(0, 3)", &[])),
        "holds no examples",
    );
    npy_refused(
        &write(d, "cut.npy", &npy("<f4", false, "(2, 2)", &f4(3))),
        "truncated",
    );
    npy_refused(
        &write(d, "long.npy", &npy("<f4", false, "(2, 2)", &f4(5))),
        "4 trailing bytes",
    );
    // A shape claiming 2^70 values is refused from the header, before any allocation.
    npy_refused(
        &write(
            d,
            "huge.npy",
            &npy("<f8", false, "(1180591620717411303424, 1)", &f4(1)),
        ),
        "not a number",
    );
    npy_refused(
        &write(
            d,
            "claim.npy",
            &npy("<f8", false, "(4294967296, 4294967296)", &f4(1)),
        ),
        "claims more than",
    );
    npy_refused(
        &write(d, "garbled.npy", &npy("<f4", false, "[2, 2]", &f4(4))),
        "malformed NPY header",
    );
    let nan: Vec<u8> = [1.0f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let err = npy_refused(
        &write(d, "nan.npy", &npy("<f4", false, "(1, 2)", &nan)),
        "not finite",
    );
    assert!(err.contains("row 0, column 1"), "{err}");
    let p = write(d, "lab.npy", &encode_npy_f32(1, 2, &[0.5, 1.5]));
    let err = read_npy(&p, Some(&LabelColumn::Index(1)))
        .expect_err("accepted")
        .to_string();
    assert!(
        err.contains("lab.npy") && err.contains("1.5 is not a class number"),
        "{err}"
    );
    Ok(())
}

#[test]
fn tables_without_a_test_split_hold_out_a_validation_fraction() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut text = String::from("x,y,label\n");
    for i in 0..50 {
        text.push_str(&format!("{i},{},{}\n", 100 - i, i % 3));
    }
    let p = write(tmp.path(), "t.csv", text.as_bytes());
    let cfg = DataConfig {
        source: vae_data::Source::Table {
            format: vae_data::TableFormat::Csv,
            path: p.clone(),
            label_column: Some("label".into()),
            normalize: vae_data::Normalize::Unit,
        },
        ..DataConfig::default()
    };
    let r = cfg.load()?;
    // The default fraction, 0.1, of 50 rows.
    assert_eq!((r.splits.train.len(), r.splits.test.len()), (45, 5));
    assert_eq!(r.splits.train.num_classes, Some(3));
    assert!(
        r.note.as_deref().unwrap_or("").contains("5 of the 50"),
        "{:?}",
        r.note
    );
    // Seeded: the same split every time, another with another seed.
    let again = cfg.load()?;
    let other = DataConfig {
        split_seed: 1,
        ..cfg.clone()
    }
    .load()?;
    let firsts = |r: &vae_data::Resolved| {
        let mut x = Vec::new();
        r.splits.test.gather(&[0, 1, 2, 3, 4], &mut x);
        x
    };
    assert_eq!(firsts(&r), firsts(&again));
    assert_ne!(firsts(&r), firsts(&other));
    let r = DataConfig {
        val_fraction: Some(0.5),
        ..cfg.clone()
    }
    .load()?;
    assert_eq!((r.splits.train.len(), r.splits.test.len()), (25, 25));
    let err = DataConfig {
        val_fraction: Some(1.0),
        ..cfg
    }
    .load()
    .expect_err("accepted");
    assert!(err.to_string().contains("--val-fraction"), "{err}");
    Ok(())
}
