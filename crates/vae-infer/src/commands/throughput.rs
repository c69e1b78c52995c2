//! `vae-infer throughput`: encoding and sampling speed of the model.

use serde::Serialize;
use vae_core::{par, Rng};

use super::Command;
use crate::args::{load_split, ModelArgs, Split};
use crate::{InferError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Codes drawn from the prior and decoded.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Posterior means of the training split, per second.
    pub encode_per_second: f64,
    /// Prior samples decoded to the likelihood's mean, per second.
    pub sample_per_second: f64,
    pub examples: usize,
    pub samples: usize,
    pub threads: usize,
}

impl super::Report for Report {
    fn text(&self) -> String {
        format!(
            "encode {:.0} examples/s ({} examples), sample {:.0} examples/s ({} samples), {} threads",
            self.encode_per_second, self.examples, self.sample_per_second, self.samples, self.threads
        )
    }
}

impl Command for Args {
    type Report = Report;

    fn model(&self) -> &ModelArgs {
        &self.model
    }

    /// The time to encode the training split and to decode `--samples` prior codes, in batches
    /// spread over the threads.
    fn run(&self) -> Result<Report> {
        if self.batch_size == 0 || self.samples == 0 {
            return Err(InferError::Flag(
                "--batch-size and --samples must be at least 1".into(),
            ));
        }
        let m = self.model.load()?;
        let data = load_split(&m, Split::Train, None)?;
        let threads = par::threads_for(&m.device, self.model.threads());
        let bs = self.batch_size;
        let time =
            |n: usize, f: &(dyn Fn(std::ops::Range<usize>) -> Result<()> + Sync)| -> Result<f64> {
                let start = std::time::Instant::now();
                let batches = n.div_ceil(bs);
                for r in par::map_ranges(batches, threads, |r| -> Result<()> {
                    for b in r {
                        f(b * bs..((b + 1) * bs).min(n))?;
                    }
                    Ok(())
                }) {
                    r?;
                }
                m.device.synchronize()?;
                Ok(n as f64 / start.elapsed().as_secs_f64())
            };
        let encode = time(data.len(), &|rows| {
            let idx: Vec<usize> = rows.collect();
            let mut buf = Vec::new();
            let (x, labels) = vae_run::batch(&data, &idx, &m.model, &m.device, &mut buf)?;
            // Computed eagerly on the CPU; other devices are synchronised below.
            m.model.encode(&x, labels.as_ref())?;
            Ok(())
        })?;
        let sample = time(self.samples, &|rows| {
            let mut rng = Rng::stream(self.model.seed(), rows.start as u64);
            vae_run::sample::sample(&m.model, rows.len(), &[1.0], None, &mut rng, &m.device)?;
            Ok(())
        })?;
        Ok(Report {
            encode_per_second: encode,
            sample_per_second: sample,
            examples: data.len(),
            samples: self.samples,
            threads,
        })
    }
}
