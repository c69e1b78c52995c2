//! Streaming benchmark: writes a large raw IDX dataset into a temporary directory, loads it
//! through [`DataConfig`] with `--stream on` (memory-mapped), visits one epoch in shuffled
//! batches exactly as the training loop gathers them, and reports the peak resident set (VmHWM)
//! beside the file's size. The files are removed at the end, also on error.
//!
//! ```text
//! cargo run --release -p vae-data --example stream_epoch -- [GIB] [DIR]
//! ```
//! GIB: size of the image file in GiB (default 2); DIR: where to put the temporary directory
//! (default the system's temporary directory; it needs GIB of free disk).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use vae_data::idx::encode_idx;
use vae_data::{epoch_order, DataConfig, Stream};

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let gib: f64 = args.next().map_or(Ok(2.0), |s| s.parse())?;
    let parent = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("vae-stream-")
        .tempdir_in(&parent)?;
    let dir = tmp.path();
    let (h, w) = (28usize, 28usize);
    let n = ((gib * (1u64 << 30) as f64) as usize) / (h * w);
    let start = Instant::now();
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(dir.join("train-images-idx3-ubyte"))?,
    );
    f.write_all(&encode_idx(&[n, h, w], &[]))?;
    // Each image a different shift of a fixed pattern, written 1024 images at a time.
    let block: Vec<u8> = (0..h * w * 1024).map(|i| ((i * 31) % 256) as u8).collect();
    let mut left = n * h * w;
    while left > 0 {
        let k = left.min(block.len());
        f.write_all(&block[..k])?;
        left -= k;
    }
    f.into_inner()?.sync_all()?;
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        encode_idx(&[n], &labels),
    )?;
    drop(labels);
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        encode_idx(&[100, h, w], &vec![0; 100 * h * w]),
    )?;
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        encode_idx(&[100], &[0; 100]),
    )?;
    let file_bytes = std::fs::metadata(dir.join("train-images-idx3-ubyte"))?.len();
    println!(
        "wrote {n} images of {h}x{w} ({:.2} GiB) in {:.1}s",
        file_bytes as f64 / (1u64 << 30) as f64,
        start.elapsed().as_secs_f64()
    );

    let hwm_before = status_kib("VmHWM:");
    let cfg = DataConfig {
        source: vae_data::Source::Named {
            name: "mnist".into(),
            data_dir: Some(dir.to_path_buf()),
        },
        stream: Stream::On,
        ..DataConfig::default()
    };
    let splits = cfg.load_with(false)?.splits;
    anyhow::ensure!(splits.train.is_mapped(), "the training split is not mapped");
    let start = Instant::now();
    let order = epoch_order(splits.train.len(), 0, 1);
    let mut batch = Vec::new();
    let mut sum = 0f64;
    let mut rss_max = 0;
    for (b, idx) in order.chunks(128).enumerate() {
        splits.train.gather(idx, &mut batch);
        let labels = splits.train.gather_labels(idx);
        sum += batch.iter().map(|&v| v as f64).sum::<f64>();
        sum += labels.map_or(0, |l| l.len()) as f64;
        if b % 256 == 0 {
            rss_max = rss_max.max(status_kib("VmRSS:"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm = status_kib("VmHWM:");
    println!(
        "one epoch: {} batches of 128 in {secs:.1}s ({:.0} examples/s), checksum {sum:.0}",
        order.len().div_ceil(128),
        order.len() as f64 / secs
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB (before loading: {:.1} MiB; largest VmRSS sampled: {:.1} MiB); dataset file: {:.1} MiB",
        hwm as f64 / 1024.0,
        hwm_before as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        file_bytes as f64 / (1u64 << 20) as f64
    );
    drop(splits);
    tmp.close()?;
    Ok(())
}
