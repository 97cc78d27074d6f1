//! Checkpoints: one safetensors file of tensors (`model.*`, `ema.*`, `opt.m.*`, `opt.v.*`) and
//! one JSON file of training state per saved step, each written to a temporary file and renamed,
//! safetensors first, so a checkpoint whose JSON exists is complete. Loading runs no code.

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The JSON half of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: usize,
    /// Hash of the training configuration (see `Experiment::train_hash`).
    pub config_hash: String,
    /// Mean loss over the last logging window.
    pub loss: f64,
    /// Wall-clock seconds spent training so far, across resumes.
    pub seconds: f64,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// `path` with `.tmp` appended to its file name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Saves tensors as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let tmp = tmp_path(path);
    candle_core::safetensors::save(tensors, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {}", tmp.display()))
}

/// Loads a safetensors file, with an error naming it.
pub fn load_tensors(path: &Path, device: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).with_context(|| format!("cannot read checkpoint {}", path.display()))
}

/// One saved checkpoint on disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Its step.
    pub step: usize,
    /// The tensors file.
    pub tensors: PathBuf,
    /// The state file.
    pub state: PathBuf,
}

impl Checkpoint {
    /// The checkpoint of `step` in `dir` (whether or not it exists).
    pub fn at(dir: &Path, step: usize) -> Self {
        Self {
            step,
            tensors: dir.join(format!("step-{step:08}.safetensors")),
            state: dir.join(format!("step-{step:08}.json")),
        }
    }

    /// Reads the state file.
    pub fn read_state(&self) -> anyhow::Result<TrainState> {
        let text = std::fs::read_to_string(&self.state).with_context(|| format!("cannot read {}", self.state.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid checkpoint state", self.state.display()))
    }
}

/// Writes a checkpoint: tensors first, then the state, each atomically.
pub fn save(dir: &Path, tensors: &HashMap<String, Tensor>, state: &TrainState) -> anyhow::Result<Checkpoint> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let c = Checkpoint::at(dir, state.step);
    save_tensors(&c.tensors, tensors)?;
    write_atomic(&c.state, serde_json::to_string_pretty(state)?.as_bytes())?;
    Ok(c)
}

/// Complete checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<Checkpoint> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.strip_suffix(".json")) {
            if let Ok(step) = step.parse::<usize>() {
                let c = Checkpoint::at(dir, step);
                if c.tensors.exists() {
                    out.push(c);
                }
            }
        }
    }
    out.sort_by_key(|c| c.step);
    out
}

/// The newest complete checkpoint in `dir`.
pub fn latest(dir: &Path) -> Option<Checkpoint> {
    list(dir).pop()
}

/// Deletes all but the newest `keep` checkpoints (keep = 0 keeps all).
pub fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(dir);
    for c in all.iter().take(all.len().saturating_sub(keep)) {
        // state first: a checkpoint without its state is ignored by `list`
        std::fs::remove_file(&c.state).ok();
        std::fs::remove_file(&c.tensors).ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_list_prune() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sugarcube-ckpt-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        for step in [10, 20, 30] {
            let mut t = HashMap::new();
            t.insert("model.w".to_string(), Tensor::new(&[step as f32], &Device::Cpu)?);
            let st = TrainState { step, config_hash: "h".into(), loss: 0.5, seconds: 1.0 };
            save(&dir, &t, &st)?;
        }
        assert_eq!(latest(&dir).unwrap().step, 30);
        prune(&dir, 2)?;
        assert_eq!(list(&dir).iter().map(|c| c.step).collect::<Vec<_>>(), vec![20, 30]);
        let back = load_tensors(&latest(&dir).unwrap().tensors, &Device::Cpu)?;
        assert_eq!(back["model.w"].to_vec1::<f32>()?, vec![30.0]);
        assert_eq!(latest(&dir).unwrap().read_state()?.step, 30);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
