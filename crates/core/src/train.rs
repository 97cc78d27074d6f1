//! The trainer: AdamW with warmup + cosine learning rate, gradient-norm clipping, gradient
//! accumulation, EMA with warmup, label dropout for classifier-free guidance, periodic atomic
//! checkpoints, exact resume, a NaN guard, a progress bar and a metrics log.
//!
//! Randomness per example: each example's label dropout, timestep, noise and dropout masks come
//! from its own stream keyed by (seed, step, position in the step) ([`Rows::training`]), so any
//! split of a step's examples (gradient accumulation now, data-parallel ranks later) draws the
//! same numbers.
//!
//! Exact resume: the data order is a function of (seed, example counter), the random streams of
//! (seed, step, position), and the optimiser moments, EMA and step are in the checkpoint, so
//! N steps + resume + N steps gives the same weights as 2N steps. Resume takes the newest
//! checkpoint that loads (a damaged one is reported and skipped), so a run killed at any moment,
//! even inside a checkpoint write, resumes to the same weights (tested with
//! [`crate::crashpoint`]).
//!
//! Fine-tuning ([`TrainConfig::init`], [`load_init`]) starts a fresh run from another run's
//! weights.

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::cond::{drop_condition, CondDrop};
use crate::crashpoint::{self, Point};
use crate::denoiser::{Denoiser, Inputs};
use crate::domain::{Batch, DataInfo, Dataset};
use crate::optim::{
    clip_grad_norm, grad_norm, gradients, lr_at, AdamW, AdamWConfig, Ema, EmaConfig, LrSchedule,
};
use crate::params::Params;
use crate::process::Process;
use crate::profile;
use crate::progress::Progress;
use crate::rng::{Rng, Rows};
use crate::tensor_util::{length_mask, position_mask};
use anyhow::Context;
use candle_core::{Device, Tensor, Var};
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
    /// Probability of label dropout: replacing a condition by the learned null (classifier-free
    /// guidance).
    pub cond_drop: f64,
    /// Label dropout per field ("each", independently: the model learns partial conditions)
    /// or of the whole condition ("all").
    pub cond_drop_mode: CondDrop,
    /// Save a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: usize,
    /// Keep this many newest checkpoints (0 keeps all).
    pub keep_checkpoints: usize,
    /// Append a line to metrics.jsonl every this many steps (and at the last step).
    pub log_every: usize,
    /// Exponential moving average of the weights.
    pub ema: EmaConfig,
    /// Precision of the convolutions' products: "f32" (default) or "bf16" (see
    /// [`crate::nn::set_bf16_compute`]; needs a CPU with AVX-512 BF16).
    pub precision: Precision,
    /// Sample every this many steps (0 never): a checkpoint at that step, then `sample_n`
    /// samples from it as `sugarcube sample` draws them, into `RUN_DIR/samples/train-step-N/`.
    /// Sampling leaves the training run as it is.
    #[serde(skip_serializing_if = "is_zero")]
    pub sample_every: usize,
    /// Samples drawn each time (`sample_every`).
    #[serde(skip_serializing_if = "is_default_sample_n")]
    pub sample_n: usize,
    /// Fine-tune: start a fresh run from the newest weights of this run directory (relative to
    /// the working directory; see [`load_init`]). A resumed run's own checkpoint wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

const DEFAULT_SAMPLE_N: usize = 16;

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_default_sample_n(v: &usize) -> bool {
    *v == DEFAULT_SAMPLE_N
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
            cond_drop_mode: CondDrop::Each,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            log_every: 10,
            ema: EmaConfig::default(),
            precision: Precision::F32,
            sample_every: 0,
            sample_n: DEFAULT_SAMPLE_N,
            init: None,
        }
    }
}

impl TrainConfig {
    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.steps >= 1, "train.steps must be at least 1");
        anyhow::ensure!(self.batch_size >= 1, "train.batch_size must be at least 1");
        anyhow::ensure!(self.grad_accum >= 1, "train.grad_accum must be at least 1");
        anyhow::ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "train.lr must be a positive number, got {}",
            self.lr
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.cond_drop),
            "train.cond_drop must lie in [0, 1), got {}",
            self.cond_drop
        );
        anyhow::ensure!(
            self.grad_clip >= 0.0,
            "train.grad_clip must be >= 0 (0 disables), got {}",
            self.grad_clip
        );
        anyhow::ensure!(self.log_every >= 1, "train.log_every must be at least 1");
        anyhow::ensure!(
            self.checkpoint_every >= 1,
            "train.checkpoint_every must be at least 1"
        );
        anyhow::ensure!(
            self.sample_every == 0 || self.sample_n >= 1,
            "train.sample_n must be at least 1 when train.sample_every is set"
        );
        Ok(())
    }

    /// The settings that decide the weights: these with `sample_every`, `sample_n` and `init`
    /// at their defaults (which serialise to nothing), so the configuration hash ignores them:
    /// sampling does not change a run, and a resumed run's own checkpoint holds its start.
    pub fn for_hash(&self) -> Self {
        Self {
            sample_every: 0,
            sample_n: DEFAULT_SAMPLE_N,
            init: None,
            ..self.clone()
        }
    }

    /// Whether a checkpoint is due after `step` of a run ending at `end`: every
    /// `checkpoint_every` steps, at the end, and where a sample is due.
    pub fn checkpoint_due(&self, step: usize, end: usize) -> bool {
        step.is_multiple_of(self.checkpoint_every) || step == end || self.sample_due(step)
    }

    /// Whether samples are due after `step` (`sample_every`).
    pub fn sample_due(&self, step: usize) -> bool {
        self.sample_every > 0 && step.is_multiple_of(self.sample_every)
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
        Self {
            seed,
            len,
            epoch: None,
            perm: vec![],
        }
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
    /// What the network learns.
    pub objective: Objective,
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
    /// Called after every step with the steps done and the run directory (after that step's
    /// checkpoint, if any): periodic sampling and tests hook in here. Its time does not count
    /// as training time.
    pub after_step: Option<&'a AfterStep<'a>>,
    /// Fine-tune: a fresh start (no checkpoint to resume) takes its weights from the newest
    /// checkpoint of this run directory ([`load_init`]).
    pub init: Option<PathBuf>,
}

/// A hook the trainer calls after every step with the steps done and the run directory; it
/// returns a line to show beside the progress display, if any.
pub type AfterStep<'a> = dyn Fn(usize, &Path) -> anyhow::Result<Option<String>> + 'a;

/// The tensors under `prefix`, with the prefix removed.
pub fn strip_prefix(t: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// The stream tags of a training example's draws: label dropout, corruption (time and noise),
/// dropout masks. Each comes from the example's own stream, keyed by (seed, step, position).
const COND_STREAM: u64 = 1;
const CORRUPT_STREAM: u64 = 2;
const DROPOUT_STREAM: u64 = 3;

/// What one micro-batch of a training step needs besides its examples: shared by the trainer
/// and the benchmark, so both run the same step.
pub struct StepContext<'a> {
    /// The forward process.
    pub process: &'a dyn Process,
    /// The network.
    pub model: &'a dyn Denoiser,
    /// The data's shapes and condition fields.
    pub info: &'a DataInfo,
    /// Probability of label dropout.
    pub cond_drop: f64,
    /// Per field or all at once.
    pub cond_drop_mode: CondDrop,
    /// What the network learns.
    pub objective: Objective,
}

/// What a training run fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Objective {
    /// The process's prediction target (the usual diffusion model).
    #[default]
    Denoise,
    /// A noise-aware classifier of condition field `field` (with `classes` classes), trained
    /// by cross-entropy on the process's noised data (for classifier guidance).
    Classify {
        /// The field's index in the data's condition spec.
        field: usize,
        /// Its number of classes.
        classes: usize,
    },
}

impl StepContext<'_> {
    /// The loss of one micro-batch, its examples' randomness drawn from `rows` (one stream per
    /// example): label dropout, corruption, the training-mode forward pass, the masked loss.
    pub fn loss(&self, batch: &Batch, rows: &Rows) -> candle_core::Result<Tensor> {
        let b = batch.x0.dim(0)?;
        let device = batch.x0.device();
        let cond = if self.info.cond.is_empty() || self.objective != Objective::Denoise {
            None
        } else {
            let mut drop_rows = rows.purpose(COND_STREAM);
            let conds: Vec<_> = batch
                .cond
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    drop_condition(c, self.cond_drop, self.cond_drop_mode, drop_rows.row(i))
                })
                .collect();
            if conds.len() != b {
                candle_core::bail!(
                    "a batch of {b} examples came with {} conditions",
                    conds.len()
                );
            }
            Some(self.info.cond.encode(&conds, device)?)
        };
        let (loss_mask, input_mask) = match (&batch.lengths, self.info.length_axis) {
            (Some(lengths), Some(axis)) => {
                let flat = length_mask(lengths, batch.x0.dim(axis + 1)?, device)?;
                let m = position_mask(lengths, &batch.x0.dims()[1..], axis, device)?;
                (Some(m), Some(flat))
            }
            _ => (None, None),
        };
        let mut corrupt_rows = rows.purpose(CORRUPT_STREAM);
        if let (Some(lengths), Some(axis)) = (&batch.lengths, self.info.length_axis) {
            corrupt_rows = corrupt_rows.with_lengths(lengths.clone(), axis);
        }
        let corrupted = {
            let _t = profile::scope("noise");
            self.process.corrupt(&batch.x0, &mut corrupt_rows)?
        };
        let out = {
            let _t = profile::scope("forward");
            let inputs = Inputs {
                x: &corrupted.x_t,
                time: &corrupted.time,
                cond: cond.as_ref(),
                mask: input_mask.as_ref(),
            };
            self.model
                .forward_train(&inputs, &mut rows.purpose(DROPOUT_STREAM))?
        };
        let _t = profile::scope("loss");
        match self.objective {
            Objective::Denoise => self.process.loss(&out, &corrupted, loss_mask.as_ref()),
            Objective::Classify { field, classes } => crate::scorer::cross_entropy(
                &out,
                &crate::scorer::class_targets(&batch.cond, field, classes, device)?,
            ),
        }
    }

    /// The loss (as a number) and the gradients of `vars` for one micro-batch, the loss scaled
    /// by `scale` before the backward pass (1 / grad_accum).
    pub fn gradients(
        &self,
        batch: &Batch,
        rows: &Rows,
        scale: f64,
        vars: &[(String, Var)],
    ) -> candle_core::Result<(f64, Vec<Tensor>)> {
        let loss = self.loss(batch, rows)?;
        let value = crate::tensor_util::scalar_f64(&loss)?;
        let scaled = if scale != 1.0 {
            loss.affine(scale, 0.0)?
        } else {
            loss
        };
        let _t = profile::scope("backward");
        Ok((value, gradients(&scaled.backward()?, vars)?))
    }
}

/// The optimiser, EMA and position of a training run: what a checkpoint holds.
struct RunState {
    opt: AdamW,
    ema: Option<Ema>,
    step: usize,
    seconds: f64,
    /// The sum of the step losses since the last metrics line, and their count.
    window: (f64, usize),
}

impl Trainer<'_> {
    fn checkpoint_dir(&self) -> PathBuf {
        self.run_dir.join("checkpoints")
    }

    /// A fresh optimiser and EMA (from the weights of `init` when set), or (with `resume`)
    /// those of the newest checkpoint that loads.
    fn start(&self, vars: &[(String, Var)], resume: bool) -> anyhow::Result<RunState> {
        let cfg = self.cfg;
        let ckpt_dir = self.checkpoint_dir();
        let found = if resume {
            checkpoint::newest_loadable(&ckpt_dir, |c| self.read_checkpoint(c, vars))?
        } else {
            None
        };
        match (&found, &self.init) {
            (None, Some(source)) => {
                if resume && !self.quiet {
                    eprintln!(
                        "no checkpoint in {}: starting from step 0",
                        ckpt_dir.display()
                    );
                }
                load_init(self.params, source, &self.device, self.quiet)?;
            }
            (None, None) if resume && !self.quiet => eprintln!(
                "no checkpoint in {}: starting from step 0",
                ckpt_dir.display()
            ),
            (Some(_), Some(source)) if !self.quiet => {
                eprintln!(
                    "train.init = {} is not used: this run resumes from its own checkpoint",
                    source.display()
                )
            }
            _ => {}
        }
        // the EMA starts at the weights as they are now: the seeded ones, or the init's
        let adam = AdamWConfig {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        };
        let mut st = RunState {
            opt: AdamW::new(vars.to_vec(), adam)?,
            ema: if cfg.ema.enabled {
                Some(Ema::new(vars, cfg.ema.clone())?)
            } else {
                None
            },
            step: 0,
            seconds: 0.0,
            window: (0.0, 0),
        };
        if let Some((c, (state, t))) = found {
            self.params
                .load(&t, "model.")
                .with_context(|| format!("in {}", c.tensors.display()))?;
            st.opt
                .load_state(&t, "opt.", state.step)
                .with_context(|| format!("in {}", c.tensors.display()))?;
            if let Some(e) = st.ema.as_mut() {
                let shadow = strip_prefix(&t, "ema.");
                for (i, (name, _)) in vars.iter().enumerate() {
                    e.shadow[i] = shadow
                        .get(name)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "{}: tensor `ema.{name}` is missing",
                                c.tensors.display()
                            )
                        })?
                        .clone();
                }
            }
            st.step = state.step;
            st.seconds = state.seconds;
            st.window = (state.window_loss, state.window_steps);
            if !self.quiet {
                eprintln!("resuming from {} (step {})", c.state.display(), st.step);
            }
        }
        // lines past the start (a run killed after logging them) are logged again
        truncate_metrics(&self.run_dir.join("metrics.jsonl"), st.step)?;
        Ok(st)
    }

    /// Checkpoint `c`'s state and tensors, checked against the model before anything is set:
    /// `Ok(Err)` for a file that fails to read or parse or lacks a tensor (torn or damaged: the
    /// caller tries an older checkpoint), `Err` for a checkpoint of another configuration.
    fn read_checkpoint(
        &self,
        c: &Checkpoint,
        vars: &[(String, Var)],
    ) -> anyhow::Result<anyhow::Result<(TrainState, HashMap<String, Tensor>)>> {
        let state = match c.read_state() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        anyhow::ensure!(
            state.config_hash == self.config_hash,
            "cannot resume from {}: it was trained with a different configuration \
             (hash {} vs {}); start a new run with --out",
            c.state.display(),
            &state.config_hash[..12.min(state.config_hash.len())],
            &self.config_hash[..12.min(self.config_hash.len())]
        );
        Ok(self.checked_tensors(c, vars).map(|t| (state, t)))
    }

    /// The tensors of checkpoint `c`, with every one a resume sets present in the model's shape.
    fn checked_tensors(
        &self,
        c: &Checkpoint,
        vars: &[(String, Var)],
    ) -> anyhow::Result<HashMap<String, Tensor>> {
        let t = checkpoint::load_tensors(&c.tensors, &self.device)?;
        let prefixes: &[&str] = if self.cfg.ema.enabled {
            &["model.", "ema.", "opt.m.", "opt.v."]
        } else {
            &["model.", "opt.m.", "opt.v."]
        };
        for (name, var) in vars {
            for p in prefixes {
                let key = format!("{p}{name}");
                let x = t.get(&key).ok_or_else(|| {
                    anyhow::anyhow!("{}: tensor `{key}` is missing", c.tensors.display())
                })?;
                anyhow::ensure!(
                    x.dims() == var.dims(),
                    "{}: tensor `{key}` has shape {:?}, the model expects {:?}",
                    c.tensors.display(),
                    x.dims(),
                    var.dims()
                );
            }
        }
        Ok(t)
    }

    /// One optimiser step: the micro-batches' gradients summed, clipped, applied, the EMA
    /// updated. Returns the step's mean loss and its gradient norm before clipping.
    fn step(
        &self,
        st: &mut RunState,
        order: &mut DataOrder,
        ctx: &StepContext,
        vars: &[(String, Var)],
    ) -> anyhow::Result<(f64, f64, f64)> {
        let cfg = self.cfg;
        let step = st.step;
        let lr = lr_at(cfg.lr_schedule, cfg.lr, cfg.warmup_steps, cfg.steps, step);
        let per_step = cfg.batch_size * cfg.grad_accum;
        let mut grads: Option<Vec<Tensor>> = None;
        let mut step_loss = 0.0;
        for micro in 0..cfg.grad_accum {
            let position = micro * cfg.batch_size;
            let idx = order.indices((step * per_step + position) as u64, cfg.batch_size);
            let batch = self.dataset.batch(&idx, &self.device)?;
            let rows = Rows::training(self.seed, step, position, idx.len());
            let (loss, g) = ctx.gradients(&batch, &rows, 1.0 / cfg.grad_accum as f64, vars)?;
            if !loss.is_finite() {
                return Err(self.diverged(step + 1, "loss", loss));
            }
            step_loss += loss / cfg.grad_accum as f64;
            grads = Some(match grads {
                None => g,
                Some(acc) => acc
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| a.add(b))
                    .collect::<candle_core::Result<_>>()?,
            });
        }
        let mut grads = grads.expect("grad_accum >= 1");
        let norm = if cfg.grad_clip > 0.0 {
            clip_grad_norm(&mut grads, cfg.grad_clip)?
        } else {
            grad_norm(&grads)?
        };
        if !norm.is_finite() {
            return Err(self.diverged(step + 1, "gradient norm", norm));
        }
        st.opt.step(&grads, lr)?;
        if let Some(e) = st.ema.as_mut() {
            e.update(vars, step + 1)?;
        }
        st.step += 1;
        Ok((step_loss, lr, norm))
    }

    /// Writes a checkpoint of the run at its current step (after checking the weights are
    /// finite, so the last good checkpoint stays good) and prunes old ones.
    fn save(&self, st: &RunState, vars: &[(String, Var)], loss: f64) -> anyhow::Result<PathBuf> {
        let total = grad_norm(
            &vars
                .iter()
                .map(|(_, v)| v.as_tensor().clone())
                .collect::<Vec<_>>(),
        )?;
        if !total.is_finite() {
            return Err(self.diverged(st.step, "weight norm", total));
        }
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for (name, v) in vars {
            t.insert(format!("model.{name}"), v.as_tensor().clone());
        }
        if let Some(e) = &st.ema {
            for ((name, _), s) in vars.iter().zip(&e.shadow) {
                t.insert(format!("ema.{name}"), s.clone());
            }
        }
        for (k, v) in st.opt.state() {
            t.insert(format!("opt.{k}"), v);
        }
        let state = TrainState {
            step: st.step,
            config_hash: self.config_hash.clone(),
            loss,
            seconds: st.seconds,
            window_loss: st.window.0,
            window_steps: st.window.1,
        };
        let ckpt_dir = self.checkpoint_dir();
        let c = checkpoint::save(&ckpt_dir, &t, &state)?;
        checkpoint::prune(&ckpt_dir, self.cfg.keep_checkpoints, st.step)?;
        Ok(c.tensors)
    }

    /// Trains to `cfg.steps`, from scratch or (with `resume`) from the newest checkpoint.
    pub fn run(&self, resume: bool) -> anyhow::Result<TrainReport> {
        let cfg = self.cfg;
        cfg.validate()?;
        crate::nn::flush_denormals();
        let _precision = crate::nn::Bf16Compute::set(cfg.precision == Precision::Bf16)
            .context("train.precision = \"bf16\"")?;
        anyhow::ensure!(!self.dataset.is_empty(), "the training data is empty");
        let vars = self.params.vars();
        anyhow::ensure!(!vars.is_empty(), "the model has no parameters");
        let mut st = self.start(&vars, resume)?;
        let start = st.step;
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
                checkpoint: checkpoint::latest(&self.checkpoint_dir()).map(|c| c.tensors),
            });
        }

        let info = self.dataset.info();
        let ctx = StepContext {
            process: self.process,
            model: self.model,
            info: &info,
            cond_drop: cfg.cond_drop,
            cond_drop_mode: cfg.cond_drop_mode,
            objective: self.objective,
        };
        let mut order = DataOrder::new(self.seed, self.dataset.len());
        let metrics_path = self.run_dir.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot open {}", metrics_path.display()))?;
        let mut progress =
            Progress::new("train", "step", cfg.steps as u64, start as u64, self.quiet);
        let began = Instant::now();
        // time spent in the hook (sampling), left out of the training time
        let mut paused = std::time::Duration::ZERO;
        let seconds_before = st.seconds;
        // the logging window continues across a resume, so the means logged are an
        // uninterrupted run's
        let (mut window_loss, mut window_n) = st.window;
        let mut last_loss = f64::NAN;
        let mut last_ckpt = None;
        while st.step < end {
            let (step_loss, lr, norm) = self.step(&mut st, &mut order, &ctx, &vars)?;
            let done = st.step;
            st.seconds = seconds_before + began.elapsed().saturating_sub(paused).as_secs_f64();
            window_loss += step_loss;
            window_n += 1;
            progress.set(done as u64, &format!("loss {step_loss:.4}"));
            if done % cfg.log_every == 0 || done == cfg.steps {
                last_loss = window_loss / window_n as f64;
                let line = MetricsLine {
                    step: done,
                    loss: last_loss,
                    lr,
                    grad_norm: norm,
                    seconds: st.seconds,
                };
                // one write per line: a run killed mid-line leaves at most one torn line, which
                // truncate_metrics drops on resume
                metrics.write_all(format!("{}\n", serde_json::to_string(&line)?).as_bytes())?;
                (window_loss, window_n) = (0.0, 0);
            }
            st.window = (window_loss, window_n);
            if cfg.checkpoint_due(done, end) {
                let loss = if window_n == 0 {
                    last_loss
                } else {
                    window_loss / window_n as f64
                };
                last_ckpt = Some(self.save(&st, &vars, loss)?);
            }
            if let Some(hook) = self.after_step {
                let t0 = Instant::now();
                let line = hook(done, &self.run_dir)?;
                paused += t0.elapsed();
                if let Some(line) = line {
                    progress.println(&line);
                }
            }
            crashpoint::reached(Point::AfterStep(done));
        }
        if window_n > 0 {
            // stopped early (`stop_at`) inside a logging window
            last_loss = window_loss / window_n as f64;
        }
        let secs = began.elapsed().saturating_sub(paused).as_secs_f64();
        let steps_run = end - start;
        let items_per_s = (steps_run * cfg.batch_size * cfg.grad_accum) as f64 / secs.max(1e-9);
        progress.finish(&format!("loss {last_loss:.4}, {items_per_s:.0} examples/s"));
        Ok(TrainReport {
            steps: end,
            steps_run,
            final_loss: last_loss,
            items_per_s,
            checkpoint: last_ckpt,
        })
    }

    fn diverged(&self, step: usize, what: &str, value: f64) -> anyhow::Error {
        let last = checkpoint::latest(&self.checkpoint_dir());
        let keep = match last {
            Some(c) => format!(
                "the last good checkpoint is {} (step {})",
                c.tensors.display(),
                c.step
            ),
            None => "no checkpoint had been written yet".to_string(),
        };
        anyhow::anyhow!(
            "training diverged at step {step}: the {what} is {value}; {keep}. Lower train.lr, \
             enable train.grad_clip, or check the data for NaN/infinite values"
        )
    }
}

/// What [`load_init`] took from the source run.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// The checkpoint read.
    pub checkpoint: PathBuf,
    /// Its step.
    pub step: usize,
    /// Whether its EMA weights were taken (else its raw weights: the run kept no EMA).
    pub ema: bool,
    /// The model's condition embeddings the source lacks or holds in another shape, left at
    /// their fresh initial values.
    pub fresh: Vec<String>,
    /// The source's condition embeddings the model lacks, ignored.
    pub ignored: Vec<String>,
}

/// Whether a parameter is a condition embedding ([`crate::nn::CondEmbedding`] under `cond`).
fn is_condition_embedding(name: &str) -> bool {
    name.starts_with("cond.")
}

/// Sets `params` to the newest weights of the run directory `source` for fine-tuning: its EMA
/// weights if it kept them, else its raw weights. Tensors are matched by name and shape. A
/// tensor of the model that the source lacks or holds in another shape is an error naming it
/// and both shapes, except a condition embedding (`cond.*`: a new condition field or class
/// count), which keeps its fresh initial values; a tensor of the source the model lacks is an
/// error too, except a condition embedding, which is ignored. Nothing is set unless all match.
/// Prints what it did unless `quiet`.
pub fn load_init(
    params: &Params,
    source: &Path,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<InitReport> {
    let dir = source.join("checkpoints");
    let found =
        checkpoint::newest_loadable(&dir, |c| Ok(checkpoint::load_tensors(&c.tensors, device)))
            .with_context(|| format!("train.init = {}", source.display()))?;
    let Some((c, t)) = found else {
        anyhow::bail!(
            "train.init = {}: no checkpoint in {} (expected the directory of a trained run)",
            source.display(),
            dir.display()
        );
    };
    let ema = t.keys().any(|k| k.starts_with("ema."));
    let from = strip_prefix(&t, if ema { "ema." } else { "model." });
    let file = c.tensors.display();
    let same_model = "fine-tuning needs the source's [model] settings (only condition embeddings, cond.*, may differ)";
    let vars = params.vars();
    let (mut fresh, mut ignored, mut notes) = (vec![], vec![], vec![]);
    for (name, var) in &vars {
        match from.get(name) {
            Some(x) if x.dims() == var.dims() => {}
            Some(x) if is_condition_embedding(name) => {
                notes.push(format!("  {name}: fresh initial values (shape {:?} here, {:?} in the source)", var.dims(), x.dims()));
                fresh.push(name.clone());
            }
            None if is_condition_embedding(name) => {
                notes.push(format!("  {name}: fresh initial values (a condition the source does not have)"));
                fresh.push(name.clone());
            }
            Some(x) => anyhow::bail!(
                "train.init: tensor `{name}` has shape {:?} in this model but {:?} in {file}: {same_model}",
                var.dims(),
                x.dims()
            ),
            None => anyhow::bail!(
                "train.init: tensor `{name}` (shape {:?} in this model) is missing from {file}: {same_model}",
                var.dims()
            ),
        }
    }
    let own: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut extra: Vec<(&String, &Tensor)> = from
        .iter()
        .filter(|(n, _)| !own.contains(n.as_str()))
        .collect();
    extra.sort_by(|a, b| a.0.cmp(b.0));
    for (name, x) in extra {
        anyhow::ensure!(
            is_condition_embedding(name),
            "train.init: {file} has tensor `{name}` (shape {:?}) that this model lacks: {same_model}",
            x.dims()
        );
        notes.push(format!(
            "  {name}: ignored (a condition this model does not have)"
        ));
        ignored.push(name.clone());
    }
    for (name, var) in &vars {
        if let Some(x) = from.get(name).filter(|_| !fresh.contains(name)) {
            var.set(&x.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
    }
    if !quiet {
        eprintln!(
            "fine-tuning from {file} (step {}, its {} weights)",
            c.step,
            if ema { "EMA" } else { "raw" }
        );
        for n in &notes {
            eprintln!("{n}");
        }
    }
    Ok(InitReport {
        checkpoint: c.tensors.clone(),
        step: c.step,
        ema,
        fresh,
        ignored,
    })
}

/// Drops metrics lines after `step` (left by a run that went on past its last checkpoint), so
/// a resumed run's log has each step once. Rewrites through a temporary file.
fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<MetricsLine>(l)
                .map(|m| m.step <= step)
                .unwrap_or(false)
        })
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
