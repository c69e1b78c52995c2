//! What rank 0 of a run across processes sends the others: the checkpoint it resumed from
//! (weights, optimizer state, training state), and its decisions at the end of an epoch. In
//! one process each is the identity.

use std::collections::BTreeMap;

use vae_core::candle_core::Tensor;

use crate::checkpoint::TrainState;
use crate::reduce::Reduce;
use crate::step::Trainer;
use crate::{Result, TrainError};

/// Rank 0's `found` checkpoint (already loaded into its `trainer`) on every rank: each other
/// rank gets the same weights, optimizer moments and step count, and the training state.
pub fn checkpoint(
    group: &mut dyn Reduce,
    trainer: &mut Trainer,
    found: Option<TrainState>,
) -> Result<Option<TrainState>> {
    if group.ranks() == 1 {
        return Ok(found);
    }
    let root = group.rank() == 0;
    let mut head = Vec::new();
    let mut values = Vec::new();
    if root {
        let (moments, step) = trainer.opt.state_tensors()?;
        head = serde_json::to_vec(&serde_json::json!({
            "state": found,
            "optimizer_step": step,
        }))?;
        if found.is_some() {
            for (_, var) in trainer.opt.variables() {
                push_values(&mut values, var.as_tensor())?;
            }
            for (_, m) in &moments {
                push_values(&mut values, m)?;
            }
        }
    }
    group.broadcast(&mut head)?;
    let head: serde_json::Value = serde_json::from_slice(&head)?;
    let state: Option<TrainState> = serde_json::from_value(head["state"].clone())?;
    if state.is_none() {
        return Ok(None);
    }
    group.broadcast(&mut values)?;
    if root {
        return Ok(state);
    }
    let step = head["optimizer_step"]
        .as_u64()
        .ok_or_else(|| TrainError::Internal("rank 0 sent no optimizer step".into()))?;
    let mut at = 0;
    let mut take = |n: usize| -> Result<Vec<f32>> {
        let bytes = values
            .get(at..at + 4 * n)
            .ok_or_else(|| TrainError::Internal("rank 0 sent too few values".into()))?;
        at += 4 * n;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    for (_, var) in trainer.opt.variables() {
        let v = take(var.elem_count())?;
        var.set(&Tensor::from_vec(v, var.shape(), var.device())?)?;
    }
    let (names, _) = trainer.opt.state_tensors()?;
    let mut moments = BTreeMap::new();
    for (name, t) in names {
        let v = take(t.elem_count())?;
        moments.insert(name, Tensor::from_vec(v, t.shape(), t.device())?);
    }
    trainer.opt.set_state(&moments, step)?;
    Ok(state)
}

fn push_values(out: &mut Vec<u8>, t: &Tensor) -> Result<()> {
    for v in t.flatten_all()?.to_vec1::<f32>()? {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// Rank 0's decisions at the end of an epoch (stop early; the signals it saw) on every rank.
pub fn decision(group: &mut dyn Reduce, mine: [u8; 2]) -> Result<[u8; 2]> {
    if group.ranks() == 1 {
        return Ok(mine);
    }
    let mut bytes = mine.to_vec();
    group.broadcast(&mut bytes)?;
    match bytes[..] {
        [a, b] => Ok([a, b]),
        _ => Err(TrainError::Internal(
            "rank 0 sent a malformed decision".into(),
        )),
    }
}
