//! Datasets: subsets, seeded validation splits, static binarisation, and streaming a mapped
//! file with a bounded resident set.

use std::io::Write;

use vae_core::DataShape;
use vae_data::dataset::Stream;
use vae_data::idx::{encode_idx, map_idx_file};
use vae_data::{epoch_order, Binarize, Dataset, Values};

fn grey_set(n: usize) -> anyhow::Result<Dataset> {
    // Example i: four pixels of value i (mod 256), label i % 3.
    let px: Vec<u8> = (0..n).flat_map(|i| [i as u8; 4]).collect();
    let labels = (0..n).map(|i| (i % 3) as u32).collect();
    Ok(Dataset::new(
        DataShape::image(1, 2, 2),
        Values::U8(px),
        Some(labels),
        Some(3),
    )?)
}

fn first_pixels(d: &Dataset) -> Vec<f32> {
    let mut x = Vec::new();
    d.gather(&(0..d.len()).collect::<Vec<_>>(), &mut x);
    x.chunks(4).map(|c| c[0]).collect()
}

#[test]
fn a_seeded_split_is_disjoint_complete_and_repeatable() -> anyhow::Result<()> {
    let d = grey_set(100)?;
    let (train, val) = d.split(0.2, 7)?;
    assert_eq!((train.len(), val.len()), (80, 20));
    let mut all: Vec<u32> = first_pixels(&train)
        .into_iter()
        .chain(first_pixels(&val))
        .map(|v| (v * 255.0).round() as u32)
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    // Labels follow their examples.
    let v0 = (first_pixels(&val)[0] * 255.0).round() as u32;
    assert_eq!(val.labels.as_ref().map(|l| l[0]), Some(v0 % 3));
    let (_, again) = d.split(0.2, 7)?;
    let (_, other) = d.split(0.2, 8)?;
    assert_eq!(first_pixels(&val), first_pixels(&again));
    assert_ne!(first_pixels(&val), first_pixels(&other));
    // At least one example each side; bad fractions and sizes refused.
    assert_eq!(d.split(0.001, 0)?.1.len(), 1);
    assert!(d.split(0.0, 0).is_err() && d.split(1.0, 0).is_err());
    assert!(d.split(f64::NAN, 0).is_err());
    assert!(grey_set(1)?.split(0.5, 0).is_err());
    Ok(())
}

#[test]
fn static_binarisation_gives_fixed_bits_with_the_right_mean() -> anyhow::Result<()> {
    // 2000 examples of 4 pixels at 51/255 = 0.2.
    let px = vec![51u8; 8000];
    let mut d = Dataset::new(DataShape::image(1, 2, 2), Values::U8(px), None, None)?;
    d.binarize_static();
    let mut x = Vec::new();
    d.gather(&(0..2000).collect::<Vec<_>>(), &mut x);
    assert!(x.iter().all(|&v| v == 0.0 || v == 1.0));
    let mean = x.iter().sum::<f32>() / x.len() as f32;
    // Bernoulli(0.2) over 8000 draws: standard error 0.0045; 0.02 is over 4 of them.
    assert!((mean - 0.2).abs() < 0.02, "mean {mean}");
    // The bits of an example depend on its position only: the same as Binarize::sample_static.
    let mut row = [0.2f32; 4];
    Binarize::sample_static(&mut row, 17);
    assert_eq!(&x[17 * 4..18 * 4], &row);
    // Twice is the same as once.
    let mut y = Vec::new();
    d.binarize_static();
    d.gather(&(0..2000).collect::<Vec<_>>(), &mut y);
    assert_eq!(x, y);
    Ok(())
}

#[test]
fn mapped_datasets_binarise_and_split_like_in_memory_ones() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let n = 300;
    let px: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
    let path = tmp.path().join("imgs");
    std::fs::write(&path, encode_idx(&[n, 2, 2], &px))?;
    let mapped = map_idx_file(&path, 3)?;
    let shape = DataShape::image(1, 2, 2);
    let mut m = Dataset::new(shape, Values::Mapped(mapped.values), None, None)?;
    let mut mem = Dataset::new(shape, Values::U8(px), None, None)?;
    m.binarize_static();
    mem.binarize_static();
    assert_eq!(first_pixels(&m), first_pixels(&mem));
    let (mt, mv) = m.split(0.25, 3)?;
    let (et, ev) = mem.split(0.25, 3)?;
    assert!(mt.is_mapped() && mv.is_mapped());
    assert_eq!(first_pixels(&mt), first_pixels(&et));
    assert_eq!(first_pixels(&mv), first_pixels(&ev));
    assert_eq!(first_pixels(&mv.take(5)), first_pixels(&ev.take(5)));
    Ok(())
}

fn rss_file_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("RssFile:") || l.starts_with("RssShmem:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn reading_a_mapped_file_keeps_its_resident_pages_bounded() -> anyhow::Result<()> {
    if !std::path::Path::new("/proc/self/status").exists() {
        return Ok(()); // Not Linux: nothing to measure.
    }
    let tmp = tempfile::tempdir()?;
    // 192 MiB of 784-byte images, written in chunks.
    let n = (192usize << 20) / 784;
    let dir = tmp.path();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.join("train-images-idx3-ubyte"))?);
    f.write_all(&encode_idx(&[n, 28, 28], &[]))?;
    let chunk: Vec<u8> = (0..784 * 1024).map(|i| (i % 251) as u8).collect();
    let mut left = n * 784;
    while left > 0 {
        let k = left.min(chunk.len());
        f.write_all(&chunk[..k])?;
        left -= k;
    }
    f.flush()?;
    drop(f);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        encode_idx(&[n], &vec![1; n]),
    )?;
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        encode_idx(&[1, 28, 28], &[0; 784]),
    )?;
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), encode_idx(&[1], &[0]))?;
    let s = vae_data::dataset::load_idx_dir_with(dir, 10, Stream::On)?;
    assert!(s.train.is_mapped());
    let before = rss_file_kb();
    let mut batch = Vec::new();
    let mut sum = 0f64;
    let mut peak = 0;
    for (b, idx) in epoch_order(s.train.len(), 0, 1).chunks(128).enumerate() {
        s.train.gather(idx, &mut batch);
        sum += batch.iter().map(|&v| v as f64).sum::<f64>();
        if b % 64 == 0 {
            peak = peak.max(rss_file_kb().saturating_sub(before));
        }
    }
    peak = peak.max(rss_file_kb().saturating_sub(before));
    assert!(sum > 0.0);
    // Pages are released every 64 MiB of pages touched: well under the 192 MiB read.
    assert!(peak < 128 << 10, "resident file pages grew by {peak} KiB");
    Ok(())
}
