//! The trainer: AdamW with warmup + cosine learning rate, gradient-norm clipping, gradient
//! accumulation, EMA with warmup, label dropout for classifier-free guidance, periodic atomic
//! checkpoints, exact resume, a NaN guard, a progress bar and a metrics log.
//!
//! Exact resume: the data order is a function of (seed, example counter), and the trainer's
//! random state, optimiser moments, EMA and step are all in the checkpoint, so N steps + resume
//! + N steps gives the same weights as 2N steps.

use crate::checkpoint::{self, TrainState};
use crate::denoiser::Denoiser;
use crate::domain::Dataset;
use crate::optim::{clip_grad_norm, grad_norm, gradients, lr_at, AdamW, AdamWConfig, Ema, EmaConfig, LrSchedule};
use crate::params::Params;
use crate::process::Process;
use crate::progress::Progress;
use crate::rng::Rng;
use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Training settings, as in an experiment's `[train]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Shape of the learning rate after warmup.
    pub lr_schedule: LrSchedule,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// AdamW betas.
    pub betas: [f64; 2],
    /// AdamW epsilon.
    pub eps: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 disables).
    pub grad_clip: f64,
    /// Probability of replacing a class label by the null class (classifier-free guidance).
    pub cond_drop: f64,
    /// Save a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: usize,
    /// Keep this many newest checkpoints (0 keeps all).
    pub keep_checkpoints: usize,
    /// Append a line to metrics.jsonl every this many steps.
    pub log_every: usize,
    /// Exponential moving average of the weights.
    pub ema: EmaConfig,
    /// Precision of the convolutions' products: "f32" (default) or "bf16" (see
    /// [`crate::nn::set_bf16_compute`]; needs a CPU with AVX-512 BF16).
    pub precision: Precision,
}

/// Precision of the products during training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout.
    #[default]
    F32,
    /// bfloat16 operands, float32 sums, float32 weights and everything else.
    Bf16,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 256,
            grad_accum: 1,
            lr: 1e-3,
            lr_schedule: LrSchedule::Cosine,
            warmup_steps: 100,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
            cond_drop: 0.1,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            log_every: 10,
            ema: EmaConfig::default(),
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.steps >= 1, "train.steps must be at least 1");
        anyhow::ensure!(self.batch_size >= 1, "train.batch_size must be at least 1");
        anyhow::ensure!(self.grad_accum >= 1, "train.grad_accum must be at least 1");
        anyhow::ensure!(self.lr > 0.0 && self.lr.is_finite(), "train.lr must be a positive number, got {}", self.lr);
        anyhow::ensure!((0.0..1.0).contains(&self.cond_drop), "train.cond_drop must lie in [0, 1), got {}", self.cond_drop);
        anyhow::ensure!(self.grad_clip >= 0.0, "train.grad_clip must be >= 0 (0 disables), got {}", self.grad_clip);
        anyhow::ensure!(self.log_every >= 1, "train.log_every must be at least 1");
        anyhow::ensure!(self.checkpoint_every >= 1, "train.checkpoint_every must be at least 1");
        Ok(())
    }
}

/// The example order: each epoch is a permutation drawn from `(seed, epoch)`, so the examples
/// of any step follow from a counter alone.
pub struct DataOrder {
    seed: u64,
    len: usize,
    epoch: Option<usize>,
    perm: Vec<usize>,
}

const DATA_STREAM: u64 = 0x5EED_DA7A;

impl DataOrder {
    /// The order over `len` examples.
    pub fn new(seed: u64, len: usize) -> Self {
        Self { seed, len, epoch: None, perm: vec![] }
    }

    /// The `count` example indices starting at position `start` of the endless stream.
    pub fn indices(&mut self, start: u64, count: usize) -> Vec<usize> {
        (0..count as u64)
            .map(|k| {
                let pos = start + k;
                let epoch = (pos / self.len as u64) as usize;
                if self.epoch != Some(epoch) {
                    let mut rng = Rng::stream(self.seed ^ DATA_STREAM, epoch as u64);
                    self.perm = (0..self.len).collect();
                    rng.shuffle(&mut self.perm);
                    self.epoch = Some(epoch);
                }
                self.perm[(pos % self.len as u64) as usize]
            })
            .collect()
    }
}

/// One metrics.jsonl line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimiser steps completed.
    pub step: usize,
    /// Mean loss since the previous line.
    pub loss: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Gradient norm of the last step, before clipping.
    pub grad_norm: f64,
    /// Training seconds so far.
    pub seconds: f64,
}

/// What a finished training run reports.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Steps completed in total.
    pub steps: usize,
    /// Steps run by this call.
    pub steps_run: usize,
    /// Mean loss over the last logging window.
    pub final_loss: f64,
    /// Examples per second in this call.
    pub items_per_s: f64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// Everything the trainer works on.
pub struct Trainer<'a> {
    /// Settings.
    pub cfg: &'a TrainConfig,
    /// The forward process.
    pub process: &'a dyn Process,
    /// Training data.
    pub dataset: &'a dyn Dataset,
    /// The network.
    pub model: &'a dyn Denoiser,
    /// Its parameters.
    pub params: &'a Params,
    /// Where tensors live.
    pub device: Device,
    /// The experiment seed.
    pub seed: u64,
    /// Hash of the training configuration, stored in checkpoints.
    pub config_hash: String,
    /// The run directory (checkpoints/, metrics.jsonl).
    pub run_dir: PathBuf,
    /// No progress display.
    pub quiet: bool,
    /// Stop after this step (with a checkpoint) even if `cfg.steps` is larger; `--resume`
    /// continues the same run later.
    pub stop_at: Option<usize>,
}

/// The tensors under `prefix`, with the prefix removed.
pub fn strip_prefix(t: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

impl Trainer<'_> {
    fn checkpoint_dir(&self) -> PathBuf {
        self.run_dir.join("checkpoints")
    }

    /// Trains to `cfg.steps`, from scratch or (with `resume`) from the newest checkpoint.
    pub fn run(&self, resume: bool) -> anyhow::Result<TrainReport> {
        let cfg = self.cfg;
        cfg.validate()?;
        let _precision = crate::nn::Bf16Compute::set(cfg.precision == Precision::Bf16).context("train.precision = \"bf16\"")?;
        anyhow::ensure!(!self.dataset.is_empty(), "the training data is empty");
        let vars = self.params.vars();
        anyhow::ensure!(!vars.is_empty(), "the model has no parameters");
        let adam = AdamWConfig { betas: cfg.betas, eps: cfg.eps, weight_decay: cfg.weight_decay };
        let mut opt = AdamW::new(vars.clone(), adam)?;
        let mut ema = if cfg.ema.enabled { Some(Ema::new(&vars, cfg.ema.clone())?) } else { None };
        let mut rng = Rng::stream(self.seed, 0x7EA1_0000);
        let mut start = 0usize;
        let mut seconds = 0.0;
        let ckpt_dir = self.checkpoint_dir();
        if resume {
            if let Some(c) = checkpoint::latest(&ckpt_dir) {
                let state = c.read_state()?;
                anyhow::ensure!(
                    state.config_hash == self.config_hash,
                    "cannot resume from {}: it was trained with a different configuration \
                     (hash {} vs {}); start a new run with --out",
                    c.state.display(),
                    &state.config_hash[..12.min(state.config_hash.len())],
                    &self.config_hash[..12.min(self.config_hash.len())]
                );
                let t = checkpoint::load_tensors(&c.tensors, &self.device)?;
                self.params.load(&t, "model.").with_context(|| format!("in {}", c.tensors.display()))?;
                opt.load_state(&t, "opt.", state.step).with_context(|| format!("in {}", c.tensors.display()))?;
                if let Some(e) = ema.as_mut() {
                    let shadow = strip_prefix(&t, "ema.");
                    for (i, (name, _)) in vars.iter().enumerate() {
                        e.shadow[i] = shadow
                            .get(name)
                            .ok_or_else(|| anyhow::anyhow!("{}: tensor `ema.{name}` is missing", c.tensors.display()))?
                            .clone();
                    }
                }
                rng = state.rng;
                start = state.step;
                seconds = state.seconds;
                truncate_metrics(&self.run_dir.join("metrics.jsonl"), start)?;
                if !self.quiet {
                    eprintln!("resuming from {} (step {start})", c.state.display());
                }
            } else if !self.quiet {
                eprintln!("no checkpoint in {}: starting from step 0", ckpt_dir.display());
            }
        }
        let end = self.stop_at.map_or(cfg.steps, |s| s.min(cfg.steps));
        if start >= end {
            if !self.quiet {
                eprintln!("already trained for {start} of {} steps", cfg.steps);
            }
            return Ok(TrainReport {
                steps: start,
                steps_run: 0,
                final_loss: f64::NAN,
                items_per_s: 0.0,
                checkpoint: checkpoint::latest(&ckpt_dir).map(|c| c.tensors),
            });
        }

        let info = self.dataset.info();
        let null_class = info.num_classes.map(|n| n as u32);
        let mut order = DataOrder::new(self.seed, self.dataset.len());
        let metrics_path = self.run_dir.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot open {}", metrics_path.display()))?;
        let mut progress = Progress::new("train", "step", cfg.steps as u64, start as u64, self.quiet);
        let began = Instant::now();
        let (mut window_loss, mut window_n) = (0.0, 0usize);
        let mut last_loss = f64::NAN;
        let mut last_ckpt = None;
        let per_step = cfg.batch_size * cfg.grad_accum;

        for step in start..end {
            let lr = lr_at(cfg.lr_schedule, cfg.lr, cfg.warmup_steps, cfg.steps, step);
            let mut grads: Option<Vec<Tensor>> = None;
            let mut step_loss = 0.0;
            for micro in 0..cfg.grad_accum {
                let first = (step * per_step + micro * cfg.batch_size) as u64;
                let idx = order.indices(first, cfg.batch_size);
                let batch = self.dataset.batch(&idx, &self.device)?;
                let cond = match (&batch.cond, null_class) {
                    (Some(c), Some(null)) if cfg.cond_drop > 0.0 => {
                        let ids: Vec<u32> = c
                            .to_vec1::<u32>()?
                            .into_iter()
                            .map(|id| if rng.uniform() < cfg.cond_drop { null } else { id })
                            .collect();
                        Some(Tensor::from_vec(ids, idx.len(), &self.device)?)
                    }
                    (c, _) => c.clone(),
                };
                let corrupted = self.process.corrupt(&batch.x0, &mut rng)?;
                let out = self.model.forward_train(&corrupted.x_t, &corrupted.t, cond.as_ref(), &mut rng)?;
                let loss = self.process.loss(&out, &corrupted)?;
                let loss_value = crate::tensor_util::scalar_f64(&loss)?;
                if !loss_value.is_finite() {
                    return Err(self.diverged(step + 1, "loss", loss_value));
                }
                step_loss += loss_value / cfg.grad_accum as f64;
                let scaled = if cfg.grad_accum > 1 { loss.affine(1.0 / cfg.grad_accum as f64, 0.0)? } else { loss };
                let store = scaled.backward()?;
                let g = gradients(&store, &vars)?;
                grads = Some(match grads {
                    None => g,
                    Some(acc) => acc.iter().zip(&g).map(|(a, b)| a.add(b)).collect::<candle_core::Result<_>>()?,
                });
            }
            let mut grads = grads.expect("grad_accum >= 1");
            let norm = if cfg.grad_clip > 0.0 { clip_grad_norm(&mut grads, cfg.grad_clip)? } else { grad_norm(&grads)? };
            if !norm.is_finite() {
                return Err(self.diverged(step + 1, "gradient norm", norm));
            }
            opt.step(&grads, lr)?;
            if let Some(e) = ema.as_mut() {
                e.update(&vars, step + 1)?;
            }
            window_loss += step_loss;
            window_n += 1;
            let done = step + 1;
            progress.set(done as u64, &format!("loss {step_loss:.4}"));
            let elapsed = seconds + began.elapsed().as_secs_f64();
            if done % cfg.log_every == 0 || done == end {
                last_loss = window_loss / window_n as f64;
                let line = MetricsLine { step: done, loss: last_loss, lr, grad_norm: norm, seconds: elapsed };
                writeln!(metrics, "{}", serde_json::to_string(&line)?)?;
                (window_loss, window_n) = (0.0, 0);
            }
            if done % cfg.checkpoint_every == 0 || done == end {
                // never save weights that overflowed: the last good checkpoint must stay good
                let total = grad_norm(&vars.iter().map(|(_, v)| v.as_tensor().clone()).collect::<Vec<_>>())?;
                if !total.is_finite() {
                    return Err(self.diverged(done, "weight norm", total));
                }
                let mut t: HashMap<String, Tensor> = HashMap::new();
                for (name, v) in &vars {
                    t.insert(format!("model.{name}"), v.as_tensor().clone());
                }
                if let Some(e) = &ema {
                    for ((name, _), s) in vars.iter().zip(&e.shadow) {
                        t.insert(format!("ema.{name}"), s.clone());
                    }
                }
                for (k, v) in opt.state() {
                    t.insert(format!("opt.{k}"), v);
                }
                let state = TrainState {
                    step: done,
                    rng: rng.clone(),
                    config_hash: self.config_hash.clone(),
                    loss: if window_n == 0 { last_loss } else { window_loss / window_n as f64 },
                    seconds: elapsed,
                };
                let c = checkpoint::save(&ckpt_dir, &t, &state)?;
                checkpoint::prune(&ckpt_dir, cfg.keep_checkpoints)?;
                last_ckpt = Some(c.tensors);
            }
        }
        let secs = began.elapsed().as_secs_f64();
        let steps_run = end.saturating_sub(start);
        let items_per_s = (steps_run * per_step) as f64 / secs.max(1e-9);
        progress.finish(&format!("loss {last_loss:.4}, {items_per_s:.0} examples/s"));
        Ok(TrainReport { steps: end.max(start), steps_run, final_loss: last_loss, items_per_s, checkpoint: last_ckpt })
    }

    fn diverged(&self, step: usize, what: &str, value: f64) -> anyhow::Error {
        let last = checkpoint::latest(&self.checkpoint_dir());
        let keep = match last {
            Some(c) => format!("the last good checkpoint is {} (step {})", c.tensors.display(), c.step),
            None => "no checkpoint had been written yet".to_string(),
        };
        anyhow::anyhow!(
            "training diverged at step {step}: the {what} is {value}; {keep}. Lower train.lr, \
             enable train.grad_clip, or check the data for NaN/infinite values"
        )
    }
}

/// Drops metrics lines after `step` (left by a run that went on past its last checkpoint), so
/// a resumed run's log has each step once. Rewrites through a temporary file.
fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<MetricsLine>(l).map(|m| m.step <= step).unwrap_or(false))
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    checkpoint::write_atomic(path, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_order_is_a_function_of_the_counter() {
        let mut a = DataOrder::new(3, 10);
        let all = a.indices(0, 25);
        let mut b = DataOrder::new(3, 10);
        assert_eq!(b.indices(12, 13), all[12..].to_vec());
        let mut first: Vec<usize> = all[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_ne!(all[..10], all[10..20]);
    }
}
