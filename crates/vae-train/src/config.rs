//! The whole resolved configuration of a run, written to `DIR/config.json`.

use serde::{Deserialize, Serialize};
use vae_core::{ModelConfig, Objective, Preset};
use vae_data::DataConfig;
use vae_run::flags::KernelChoice;

use crate::optim::AdamConfig;

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// lr * (1 + cos(pi * step / total_steps)) / 2.
    Cosine,
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!(
                "unknown schedule `{s}` (expected constant or cosine)"
            )),
        }
    }
}

impl LrSchedule {
    /// The learning rate for step `step` (0-based) of `total`.
    pub fn lr(&self, base: f64, step: u64, total: u64) -> f64 {
        match self {
            Self::Constant => base,
            Self::Cosine => {
                let t = (step as f64 / total.max(1) as f64).min(1.0);
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: Preset,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: AdamConfig,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Largest Euclidean norm of the gradient (clipped above).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Steps over which the learning rate ramps linearly up to its value (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lr_warmup: u64,
    /// Updates whose gradient norm (before clipping) exceeds this are skipped (VDVAE's
    /// outlier skipping); the skips are counted in metrics.jsonl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_threshold: Option<f64>,
    /// Stop when the validation loss has not improved for this many epochs.
    #[serde(default)]
    pub early_stop: Option<usize>,
    /// What is minimised: beta, KL warm-up, free bits, importance samples.
    pub objective: Objective,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda[:N]` or `metal`.
    pub device: String,
    /// CPU threads used by a training step.
    pub threads: usize,
    /// The kernels (`--kernels`; absent from config.json when native).
    #[serde(default, skip_serializing_if = "KernelChoice::is_native")]
    pub kernels: KernelChoice,
    /// Steps between checkpoints (besides the one at the end of each epoch).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept on disk (the oldest are removed).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    3
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl TrainConfig {
    /// The training settings of a preset.
    pub fn preset(preset: Preset) -> Self {
        let base = Self {
            preset,
            epochs: 10,
            batch_size: 128,
            optimizer: AdamConfig::default(),
            lr_schedule: LrSchedule::Constant,
            grad_clip: None,
            lr_warmup: 0,
            skip_threshold: None,
            early_stop: None,
            objective: Objective::default(),
            seed: 0,
            device: "auto".into(),
            threads: default_threads(),
            kernels: KernelChoice::Native,
            checkpoint_every: None,
            keep: default_keep(),
        };
        match preset {
            // VDVAE's recipe, scaled to short runs: a smaller batch, a learning-rate warm-up,
            // clipping and skipping of the rare updates with an outlying gradient norm; a KL
            // warm-up over the first epoch and a floor of half a nat under each latent group's
            // KL (free bits per group: the model's KL has one unit per group).
            //
            // The loss is in nats per image (VDVAE's is per dimension, 784 times smaller here),
            // so the norms are large: on full Fashion-MNIST at 1e-3 they run at about 10,000
            // to 15,000, with calm-phase peaks near 40,000 (`grad_norm_mean`/`grad_norm_max` in
            // metrics.jsonl; per batch at `RUST_LOG=vae_train=debug`). VDVAE's clip of 200,
            // taken over as it was, clipped every update: Adam then saw each batch's gradient
            // scaled to one norm, so a batch with a small gradient weighed ten times the others.
            // Twice, at 1e-3 and at a peak of 7e-4, the second epoch broke down that way: at
            // batch 1,294 (just after a batch of norm 1,464) the norms jumped to 50,000-117,000,
            // the loss rose by 300 nats and every later update was over the skip threshold of
            // 50,000. Here clipping and skipping act on outliers only, as in VDVAE, and the
            // rate decays to zero over the run (resumed from one first-epoch checkpoint, 5e-4
            // made the loss fall faster than 1e-3 did).
            Preset::Hvae => Self {
                batch_size: 64,
                objective: Objective {
                    kl_warmup: 1.0,
                    free_bits: 0.5,
                    ..Objective::default()
                },
                optimizer: AdamConfig {
                    // 2e-3 stalled on the full training set (validation 4.34 bits/dim after
                    // one epoch, against 3.71 at 1e-3).
                    lr: 1e-3,
                    ..AdamConfig::default()
                },
                lr_schedule: LrSchedule::Cosine,
                grad_clip: Some(50_000.0),
                lr_warmup: 200,
                skip_threshold: Some(200_000.0),
                ..base
            },
            _ => base,
        }
    }

    /// The learning rate of step `step` (0-based) of `total`: the schedule's, times the
    /// warm-up's ramp (step + 1) / lr_warmup while it lasts.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let lr = self.lr_schedule.lr(self.optimizer.lr, step, total);
        if step < self.lr_warmup {
            lr * (step + 1) as f64 / self.lr_warmup as f64
        } else {
            lr
        }
    }

    /// Checks the settings a user can get wrong; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        if self.epochs == 0 {
            return Err("--epochs must be at least 1".into());
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return Err(format!(
                "--lr must be a positive number, got {}",
                self.optimizer.lr
            ));
        }
        if !(self.optimizer.weight_decay >= 0.0 && self.optimizer.weight_decay.is_finite()) {
            return Err(format!(
                "--weight-decay must be a non-negative number, got {}",
                self.optimizer.weight_decay
            ));
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0 && c.is_finite()) {
                return Err(format!("--grad-clip must be a positive number, got {c}"));
            }
        }
        if let Some(c) = self.skip_threshold {
            if !(c > 0.0 && c.is_finite()) {
                return Err(format!(
                    "--skip-threshold must be a positive gradient norm, got {c}"
                ));
            }
        }
        if self.early_stop == Some(0) {
            return Err("--early-stop must be at least 1 epoch".into());
        }
        if self.checkpoint_every == Some(0) {
            return Err("--checkpoint-every must be at least 1 step".into());
        }
        if self.keep == 0 {
            return Err("--keep must be at least 1".into());
        }
        self.objective.validate().map_err(|e| match e {
            vae_core::Error::Config(m) => m,
            e => e.to_string(),
        })?;
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        Ok(())
    }
}

/// The number of cores this process may use.
pub fn default_threads() -> usize {
    vae_core::par::available_threads()
}

/// Model, data and training settings together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

/// What a resumed run should be told about the settings it changes: a cosine schedule is
/// planned over the whole run, so a new `--epochs` re-plans it from the current step on.
pub fn resume_notes(saved: &RunConfig, resumed: &RunConfig) -> Vec<String> {
    let (a, b) = (&saved.train, &resumed.train);
    let mut notes = Vec::new();
    if a.epochs != b.epochs && b.lr_schedule == LrSchedule::Cosine {
        notes.push(format!(
            "--epochs {}: the cosine learning-rate schedule, planned over {} epochs, is re-planned \
             over {} from this step on; the run will not end where a {}-epoch run started afresh \
             ends (its first epochs ran at the rates of a {}-epoch schedule). To extend runs \
             without this, train with --lr-schedule constant, or start with the final --epochs",
            b.epochs, a.epochs, b.epochs, b.epochs, a.epochs
        ));
    }
    notes
}

/// Settings that may change when a run is resumed: they change how long it runs, where, how
/// often it is saved, or (learning rate, schedule, clipping) how it goes on from where it
/// stopped, never what was computed so far.
pub const RESUMABLE: [&str; 11] = [
    "epochs",
    "threads",
    "device",
    "kernels",
    "checkpoint_every",
    "keep",
    "early_stop",
    "grad_clip",
    "lr_schedule",
    "lr_warmup",
    "skip_threshold",
];

impl RunConfig {
    /// The configuration as JSON with the settings that may change on resume removed.
    fn fixed_part(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(t) = v.get_mut("train").and_then(|t| t.as_object_mut()) {
            for k in RESUMABLE {
                t.remove(k);
            }
            if let Some(o) = t.get_mut("optimizer").and_then(|o| o.as_object_mut()) {
                o.remove("lr");
            }
        }
        // Streaming changes how the data is read, not what it is.
        if let Some(d) = v.get_mut("data").and_then(|d| d.as_object_mut()) {
            d.remove("stream");
        }
        v
    }

    /// A hash of everything that fixes the computation (FNV-1a of the canonical JSON).
    pub fn hash(&self) -> String {
        let text = self.fixed_part().to_string();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Every setting that differs from `other`, as `path: old -> new` (the ranks of a run
    /// across processes must agree on all of them).
    pub fn all_differences(&self, other: &RunConfig) -> Vec<String> {
        let mut out = Vec::new();
        let value = |c: &RunConfig| serde_json::to_value(c).unwrap_or_default();
        diff("", &value(self), &value(other), &mut out);
        out
    }

    /// The settings that differ from `other`, as `path: old -> new`, ignoring those that may
    /// change on resume.
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let mut out = Vec::new();
        diff("", &self.fixed_part(), &other.fixed_part(), &mut out);
        out
    }
}

fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let null = serde_json::Value::Null;
                diff(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(epochs: usize, schedule: LrSchedule) -> RunConfig {
        let mut train = TrainConfig::preset(Preset::Hvae);
        train.epochs = epochs;
        train.lr_schedule = schedule;
        RunConfig {
            model: Preset::Hvae.model(vae_core::DataShape::image(1, 28, 28)),
            data: DataConfig::default(),
            train,
        }
    }

    /// A resumed cosine run told of its re-planned schedule when its epochs change, and only
    /// then.
    #[test]
    fn a_new_epoch_count_re_plans_a_cosine_schedule_and_says_so() {
        let notes = resume_notes(&run(1, LrSchedule::Cosine), &run(2, LrSchedule::Cosine));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("re-planned") && notes[0].contains("--epochs 2"));
        assert!(resume_notes(&run(2, LrSchedule::Cosine), &run(2, LrSchedule::Cosine)).is_empty());
        let constant = (run(1, LrSchedule::Constant), run(3, LrSchedule::Constant));
        assert!(resume_notes(&constant.0, &constant.1).is_empty());
    }
}
