//! Checkpoints: everything needed to continue a run exactly, written so that a crash at any
//! moment leaves the previous checkpoint whole.
//!
//! `DIR/checkpoints/step-NNNNNNNN/` holds `model.safetensors`, `optimizer.safetensors` and
//! `state.json`. Each is written into a temporary directory first (files fsynced), which is
//! then renamed into place; the `latest` file, naming the newest checkpoint, is updated last,
//! and only then are old checkpoints pruned. A reader that finds `latest` missing or pointing at
//! something unreadable falls back to the newest complete checkpoint. What a process killed in
//! the middle of a write leaves behind is cleared by the next write.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vae_core::candle_nn::VarMap;
use vae_core::weights;

use crate::metrics::EpochMetrics;
use crate::optim::Adam;
use crate::{Result, TrainError};

/// Where training stands, as saved in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub version: u32,
    /// The epoch to continue (1-based) and how many of its batches are done.
    pub epoch: usize,
    pub batch: usize,
    /// Optimizer steps done.
    pub step: u64,
    /// Position in the epoch's shuffled order (examples done): `batch * batch_size`.
    pub cursor: usize,
    /// State of the noise generator (reparameterisation, dynamic binarisation).
    pub rng: [u64; 4],
    /// Best validation loss so far and its epoch.
    pub best_val_loss: Option<f64>,
    pub best_epoch: usize,
    /// Partial sums of the epoch in progress.
    pub epoch_neg_elbo: f64,
    pub epoch_objective: f64,
    pub epoch_seconds: f64,
    /// Updates of the epoch in progress skipped by `--skip-threshold`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch_skipped: u64,
    /// Sum and largest of the gradient norms (before clipping) of the epoch in progress.
    #[serde(default)]
    pub epoch_grad_norm_sum: f64,
    #[serde(default)]
    pub epoch_grad_norm_max: f64,
    /// Seconds the epoch in progress spent in reductions across ranks.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub epoch_reduce_seconds: f64,
    /// The metrics line of the last finished epoch (appended again on resume if the run
    /// stopped between the checkpoint and the line).
    pub last_metrics: Option<EpochMetrics>,
    /// [`crate::RunConfig::hash`] of the run.
    pub config_hash: String,
    /// The shards each batch was split into (ranks × threads) when this was written: with the
    /// same number, a resumed run gives the bytes of an uninterrupted one. Absent in
    /// checkpoints of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
}

pub const STATE_VERSION: u32 = 1;

impl TrainState {
    /// Moves on to the start of the next epoch: its sums cleared, the noise generator at
    /// `rng`, and `metrics` the epoch just finished (kept as it was when None).
    pub fn next_epoch(&mut self, rng: [u64; 4], metrics: Option<EpochMetrics>) {
        self.epoch += 1;
        self.batch = 0;
        self.cursor = 0;
        self.epoch_neg_elbo = 0.0;
        self.epoch_objective = 0.0;
        self.epoch_seconds = 0.0;
        self.epoch_skipped = 0;
        self.epoch_grad_norm_sum = 0.0;
        self.epoch_grad_norm_max = 0.0;
        self.epoch_reduce_seconds = 0.0;
        self.rng = rng;
        if metrics.is_some() {
            self.last_metrics = metrics;
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::io(path, e)
}

fn fsync_dir(dir: &Path) {
    // Not every file system can sync a directory; the rename is still atomic.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The directory name of the checkpoint after `step` steps.
pub fn name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint of `varmap`, `opt` and `state` into `root` (the `checkpoints` directory),
/// updates `latest`, then keeps the newest `keep`. On any error the partial directory is
/// removed and the previous checkpoints are untouched.
pub fn write(
    root: &Path,
    varmap: &VarMap,
    opt: &Adam,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    clean_leftovers(root)?;
    let name = name(state.step);
    let dst = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
        weights::save_varmap(varmap, &tmp.join("model.safetensors"))?;
        opt.save(&tmp.join("optimizer.safetensors"))?;
        let json = serde_json::to_string_pretty(state)?;
        weights::atomic_write(&tmp.join("state.json"), json.as_bytes())?;
        fsync_dir(&tmp);
        if dst.exists() {
            // The same step written again (after a resume): replace it.
            let old = root.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(&dst, &old).map_err(|e| io(&dst, e))?;
            std::fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
        }
        fsync_dir(root);
        weights::atomic_write(&root.join("latest"), name.as_bytes())?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    prune(root, keep, &name)?;
    Ok(dst)
}

/// Clears what a process killed while writing or pruning checkpoints left behind: a partial
/// `.tmp` directory and a half-deleted `.del` directory are removed; a complete checkpoint moved
/// aside to `.old` (killed between the two renames of a rewrite) is put back when nothing
/// replaced it, else removed; a `step-` directory without its `state.json` (checkpoints are only
/// ever renamed into place complete, so this is the remains of a deletion) is removed. Hidden
/// directories of this process are left alone: they are in use.
fn clean_leftovers(root: &Path) -> Result<()> {
    let own = format!("-{}", std::process::id());
    let entries = std::fs::read_dir(root).map_err(|e| io(root, e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_dir() {
            continue;
        }
        let garbage = match file.strip_prefix('.').filter(|r| r.starts_with("step-")) {
            Some(_) if file.ends_with(&own) => false,
            Some(rest) => match rest.split_once(".old-") {
                Some((step, _pid)) => {
                    let back = root.join(step);
                    if !back.exists() && path.join("state.json").is_file() {
                        std::fs::rename(&path, &back).map_err(|e| io(&back, e))?;
                        false
                    } else {
                        true
                    }
                }
                None => rest.contains(".tmp-") || rest.contains(".del-"),
            },
            None => file.starts_with("step-") && !path.join("state.json").exists(),
        };
        if garbage {
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// The complete checkpoints in `root`, oldest first.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("step-") && !n.contains('.'))
                        && p.join("state.json").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn prune(root: &Path, keep: usize, newest: &str) -> Result<()> {
    let all = list(root);
    let excess = all.len().saturating_sub(keep.max(1));
    for p in all.into_iter().take(excess) {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == newest {
            continue;
        }
        // Renamed aside first, so that a deletion cut short never leaves a half checkpoint
        // under a checkpoint's name.
        let trash = root.join(format!(".{name}.del-{}", std::process::id()));
        std::fs::rename(&p, &trash).map_err(|e| io(&p, e))?;
        std::fs::remove_dir_all(&trash).map_err(|e| io(&trash, e))?;
    }
    Ok(())
}

/// Reads `state.json` of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| TrainError::file(&path, format!("not a valid training state: {e}")))?;
    if state.version != STATE_VERSION {
        return Err(TrainError::file(
            &path,
            format!(
                "state version {} is not supported (expected {STATE_VERSION})",
                state.version
            ),
        ));
    }
    Ok(state)
}

/// Loads a checkpoint into `varmap` and `opt`; every file is checked before anything changes
/// (weights first into a scratch copy, so a bad optimizer file leaves the model as it was).
pub fn load(dir: &Path, varmap: &VarMap, opt: &mut Adam, config_hash: &str) -> Result<TrainState> {
    let state = read_state(dir)?;
    if state.config_hash != config_hash {
        return Err(TrainError::file(
            dir,
            "this checkpoint was written by a run with another configuration",
        ));
    }
    let model_path = dir.join("model.safetensors");
    let device = weights::named_vars(varmap)
        .first()
        .map(|(_, t)| t.device().clone())
        .unwrap_or(vae_core::candle_core::Device::Cpu);
    // Check the weights completely before touching the optimizer or the model.
    weights::read_tensors(&model_path, &device)?;
    opt.load(&dir.join("optimizer.safetensors"))?;
    weights::load_varmap(varmap, &model_path)?;
    Ok(state)
}

/// The checkpoint to resume from: the one `latest` names if it loads, else the newest complete
/// one that does. Returns None when there is none at all.
pub fn resume(
    root: &Path,
    varmap: &VarMap,
    opt: &mut Adam,
    config_hash: &str,
) -> Result<Option<(PathBuf, TrainState)>> {
    let mut candidates = list(root);
    candidates.reverse();
    if let Ok(n) = std::fs::read_to_string(root.join("latest")) {
        let p = root.join(n.trim());
        if let Some(i) = candidates.iter().position(|c| *c == p) {
            let c = candidates.remove(i);
            candidates.insert(0, c);
        }
    }
    let mut last_err = None;
    for c in candidates {
        match load(&c, varmap, opt, config_hash) {
            Ok(s) => return Ok(Some((c, s))),
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_state(p: &Path) {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(p.join("state.json"), "{}").unwrap();
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_cleared_and_moved_checkpoints_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Another process (pid 4000000000 cannot exist on Linux) was killed: mid-write, between the renames
        // of a rewrite, and after a rewrite whose old copy it had not yet removed.
        let partial = root.join(".step-00000010.tmp-4000000000");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("model.safetensors"), b"half").unwrap();
        dir_with_state(&root.join(".step-00000020.old-4000000000"));
        dir_with_state(&root.join("step-00000030"));
        dir_with_state(&root.join(".step-00000030.old-4000000000"));
        // Killed while pruning: in the middle of a deletion, and (before deletions were renamed
        // aside first) after a checkpoint's state.json was deleted.
        std::fs::create_dir_all(root.join(".step-00000005.del-4000000000")).unwrap();
        std::fs::create_dir_all(root.join("step-00000008")).unwrap();
        std::fs::write(root.join("step-00000008/model.safetensors"), b"x").unwrap();
        // Ours, in use, and an unrelated hidden directory: left alone.
        let ours = root.join(format!(".step-00000040.tmp-{}", std::process::id()));
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::create_dir_all(root.join(".cache")).unwrap();

        clean_leftovers(root).unwrap();

        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected = vec![
            ".cache".to_string(),
            format!(".step-00000040.tmp-{}", std::process::id()),
            "step-00000020".into(),
            "step-00000030".into(),
        ];
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(
            list(root),
            vec![root.join("step-00000020"), root.join("step-00000030")]
        );
    }
}
