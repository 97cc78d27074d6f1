//! Checkpoints: one safetensors file of tensors (`model.*`, `ema.*`, `opt.m.*`, `opt.v.*`) and
//! one JSON file of training state per saved step, each written to a temporary file and renamed,
//! safetensors first, so a checkpoint whose JSON exists is complete. Loading runs no code.
//!
//! A file damaged after the fact (a disk that lost its tail, a copy cut short) is caught when it
//! is read: [`newest_loadable`] reports it and falls back to the next older checkpoint.

use crate::crashpoint::{self, Phase, Point};
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
    /// The sum of the step losses since the last metrics line (0 in older checkpoints), so a
    /// resumed run logs the means an uninterrupted one does.
    #[serde(default)]
    pub window_loss: f64,
    /// The number of steps in that sum.
    #[serde(default)]
    pub window_steps: usize,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_observed(path, bytes, || {})
}

/// [`write_atomic`], calling `halfway` when half of the temporary file is written (where the
/// tests' crash points sit). A stale temporary file is overwritten.
fn write_atomic_observed(path: &Path, bytes: &[u8], halfway: impl FnOnce()) -> anyhow::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        f.write_all(first)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        halfway();
        f.write_all(rest)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// `path` with `.tmp` appended to its file name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The safetensors bytes of `tensors` (names sorted, as candle writes them).
pub fn serialize_tensors(tensors: &HashMap<String, Tensor>) -> anyhow::Result<Vec<u8>> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize(sorted, None).context("cannot serialise tensors as safetensors")
}

/// Saves tensors as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    write_atomic(path, &serialize_tensors(tensors)?)
}

/// Loads a safetensors file, with an error naming it.
pub fn load_tensors(path: &Path, device: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))
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
        let text = std::fs::read_to_string(&self.state)
            .with_context(|| format!("cannot read {}", self.state.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid checkpoint state", self.state.display()))
    }
}

/// Writes a checkpoint: tensors first, then the state, each atomically (with the tests' crash
/// points, [`crashpoint`], halfway through each file and between them).
pub fn save(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    state: &TrainState,
) -> anyhow::Result<Checkpoint> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let step = state.step;
    let c = Checkpoint::at(dir, step);
    let bytes = serialize_tensors(tensors)?;
    write_atomic_observed(&c.tensors, &bytes, || {
        crashpoint::reached(Point::Checkpoint(step, Phase::TensorsHalf))
    })?;
    crashpoint::reached(Point::Checkpoint(step, Phase::BeforeState));
    let json = serde_json::to_string_pretty(state)?;
    write_atomic_observed(&c.state, json.as_bytes(), || {
        crashpoint::reached(Point::Checkpoint(step, Phase::StateHalf))
    })?;
    Ok(c)
}

/// Complete checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<Checkpoint> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.strip_suffix(".json"))
        {
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

/// The newest complete checkpoint in `dir` (complete by its files' names; whether it loads is
/// [`newest_loadable`]'s question).
pub fn latest(dir: &Path) -> Option<Checkpoint> {
    list(dir).pop()
}

/// The newest checkpoint of `dir` that loads, with what `load` made of it; None when `dir`
/// holds no checkpoint. Checkpoints are tried newest first: when `load` returns `Ok(Err(e))`
/// (a state or tensors file that fails to read, parse or fit: a torn or damaged file) a warning
/// names the checkpoint and the error and the next older one is tried; `Err(e)` stops the
/// search (a checkpoint that reads but must not be used, such as another configuration's). An
/// error when none loads.
pub fn newest_loadable<T>(
    dir: &Path,
    mut load: impl FnMut(&Checkpoint) -> anyhow::Result<anyhow::Result<T>>,
) -> anyhow::Result<Option<(Checkpoint, T)>> {
    let all = list(dir);
    if all.is_empty() {
        return Ok(None);
    }
    for c in all.iter().rev() {
        match load(c)? {
            Ok(t) => return Ok(Some((c.clone(), t))),
            Err(e) => eprintln!(
                "warning: skipping checkpoint {} (step {}): {e:#}",
                c.tensors.display(),
                c.step
            ),
        }
    }
    anyhow::bail!(
        "none of the {} checkpoints in {} loads (each is reported above); move them away to start again",
        all.len(),
        dir.display()
    )
}

/// Deletes all but the newest `keep` checkpoints up to step `upto` (keep = 0 keeps all).
/// Checkpoints after `upto` are left alone: after a resume that skipped damaged ones, they are
/// the damaged ones, which the run overwrites when it gets there, and counting them would
/// prune the good ones.
pub fn prune(dir: &Path, keep: usize, upto: usize) -> anyhow::Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all: Vec<Checkpoint> = list(dir).into_iter().filter(|c| c.step <= upto).collect();
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
            t.insert(
                "model.w".to_string(),
                Tensor::new(&[step as f32], &Device::Cpu)?,
            );
            let st = TrainState {
                step,
                config_hash: "h".into(),
                loss: 0.5,
                seconds: 1.0,
                window_loss: 0.0,
                window_steps: 0,
            };
            save(&dir, &t, &st)?;
        }
        assert_eq!(latest(&dir).unwrap().step, 30);
        prune(&dir, 2, 30)?;
        assert_eq!(
            list(&dir).iter().map(|c| c.step).collect::<Vec<_>>(),
            vec![20, 30]
        );
        let back = load_tensors(&latest(&dir).unwrap().tensors, &Device::Cpu)?;
        assert_eq!(back["model.w"].to_vec1::<f32>()?, vec![30.0]);
        assert_eq!(latest(&dir).unwrap().read_state()?.step, 30);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn tensors_serialise_as_candle_writes_them() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sugarcube-ckpt-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut t = HashMap::new();
        t.insert(
            "b".to_string(),
            Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?,
        );
        t.insert("a".to_string(), Tensor::new(&[7u32], &Device::Cpu)?);
        let theirs = dir.join("candle.safetensors");
        candle_core::safetensors::save(&t, &theirs)?;
        assert_eq!(serialize_tensors(&t)?, std::fs::read(&theirs)?);
        // a stale temporary file is overwritten
        let ours = dir.join("ours.safetensors");
        std::fs::write(
            tmp_path(&ours),
            b"stale and much longer than the tensors file would ever be, surely",
        )?;
        save_tensors(&ours, &t)?;
        assert!(!tmp_path(&ours).exists());
        assert_eq!(
            load_tensors(&ours, &Device::Cpu)?["b"].to_vec2::<f32>()?,
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn newest_loadable_skips_damaged_checkpoints_and_prune_spares_them() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sugarcube-ckpt-torn-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        assert!(newest_loadable(&dir, |_| Ok(Ok(())))?.is_none());
        for step in [10, 20, 30] {
            let mut t = HashMap::new();
            t.insert(
                "model.w".to_string(),
                Tensor::new(&[step as f32; 64], &Device::Cpu)?,
            );
            save(
                &dir,
                &t,
                &TrainState {
                    step,
                    config_hash: "h".into(),
                    loss: 0.5,
                    seconds: 1.0,
                    window_loss: 0.0,
                    window_steps: 0,
                },
            )?;
        }
        let load = |c: &Checkpoint| -> anyhow::Result<anyhow::Result<usize>> {
            Ok(c.read_state()
                .and_then(|s| load_tensors(&c.tensors, &Device::Cpu).map(|_| s.step)))
        };
        assert_eq!(newest_loadable(&dir, load)?.unwrap().1, 30);
        // the newest tensors file cut in half, the next one's state garbage
        let c30 = Checkpoint::at(&dir, 30);
        let bytes = std::fs::read(&c30.tensors)?;
        std::fs::write(&c30.tensors, &bytes[..bytes.len() / 2])?;
        std::fs::write(Checkpoint::at(&dir, 20).state, b"{\"step\": 2")?;
        let (c, step) = newest_loadable(&dir, load)?.unwrap();
        assert_eq!((c.step, step), (10, 10));
        // a resumed run saving step 20 again keeps 10 and 20 under keep = 2, not the damaged 30
        prune(&dir, 2, 20)?;
        assert_eq!(
            list(&dir).iter().map(|c| c.step).collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        prune(&dir, 1, 20)?;
        assert_eq!(
            list(&dir).iter().map(|c| c.step).collect::<Vec<_>>(),
            vec![20, 30]
        );
        // none loads: an error naming the folder; a fatal error stops the search at once
        let err = newest_loadable(&dir, load).unwrap_err().to_string();
        assert!(
            err.contains("none of the 2 checkpoints") && err.contains(&dir.display().to_string()),
            "{err}"
        );
        let mut tried = 0;
        assert!(
            newest_loadable(&dir, |_| -> anyhow::Result<anyhow::Result<()>> {
                tried += 1;
                anyhow::bail!("another configuration")
            })
            .is_err()
        );
        assert_eq!(tried, 1);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
