//! Run directories and the commands over them, generic over a [`Domain`]:
//! `train` (experiment file -> run directory), `sample`, `eval` and `bench`.
//!
//! A run directory holds `config.toml` (the resolved experiment), `data_info.json`,
//! `checkpoints/`, `metrics.jsonl`, `samples/` and `eval.json`.

use crate::checkpoint::{self, write_atomic};
use crate::config::ExperimentOf;
use crate::denoiser::{Denoiser, Guided};
use crate::domain::{DataInfo, Domain, Metric, Split};
use crate::params::Params;
use crate::process::GaussianProcess;
use crate::progress::Progress;
use crate::sampler::{self, RowNoise, SamplerConfig, SamplerKind};
use crate::train::{strip_prefix, TrainReport, Trainer};
use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `train` should run.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Run directory (default `runs/NAME`).
    pub out: Option<PathBuf>,
    /// Continue from the newest checkpoint.
    pub resume: bool,
    /// Override the experiment's seed.
    pub seed: Option<u64>,
    /// No progress display.
    pub quiet: bool,
    /// Stop after this step (with a checkpoint); continue later with `resume`.
    pub stop_at: Option<usize>,
}

/// Trains an experiment; returns the run directory and the report.
pub fn train<Dm: Domain>(experiment: &Path, opts: &TrainOptions, device: &Device) -> anyhow::Result<(PathBuf, TrainReport)> {
    let mut exp = ExperimentOf::<Dm>::load(experiment)?;
    if let Some(s) = opts.seed {
        exp.seed = s;
    }
    train_experiment::<Dm>(&exp, opts, device)
}

/// Trains an already parsed experiment.
pub fn train_experiment<Dm: Domain>(
    exp: &ExperimentOf<Dm>,
    opts: &TrainOptions,
    device: &Device,
) -> anyhow::Result<(PathBuf, TrainReport)> {
    exp.train.validate()?;
    let dir = opts.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
    let ckpts = dir.join("checkpoints");
    if !opts.resume && checkpoint::latest(&ckpts).is_some() {
        anyhow::bail!(
            "{} already holds a trained run: pass --resume to continue it, or --out DIR to start a new one",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    let process = GaussianProcess::new(exp.process.clone())?;
    let dataset = Dm::dataset(&exp.data, Split::Train, exp.seed)?;
    let info = dataset.info();
    let params = Params::new(exp.seed);
    let model = Dm::denoiser(&exp.model, &info, params.var_builder(DType::F32, device))?;
    write_atomic(&dir.join("config.toml"), exp.to_toml()?.as_bytes())?;
    write_atomic(&dir.join("data_info.json"), serde_json::to_string_pretty(&info)?.as_bytes())?;
    if !opts.quiet {
        eprintln!(
            "training {} ({} examples, {} parameters) into {}",
            exp.name,
            dataset.len(),
            params.count(),
            dir.display()
        );
    }
    let trainer = Trainer {
        cfg: &exp.train,
        process: &process,
        dataset: dataset.as_ref(),
        model: model.as_ref(),
        params: &params,
        device: device.clone(),
        seed: exp.seed,
        config_hash: exp.train_hash()?,
        run_dir: dir.clone(),
        quiet: opts.quiet,
        stop_at: opts.stop_at,
    };
    let report = trainer.run(opts.resume)?;
    Ok((dir, report))
}

/// Overrides of the experiment's `[sample]` settings.
#[derive(Clone, Debug, Default)]
pub struct SampleRequest {
    /// How many samples.
    pub n: Option<usize>,
    /// Which sampler.
    pub sampler: Option<SamplerKind>,
    /// Sampling steps.
    pub steps: Option<usize>,
    /// Guidance scale.
    pub guidance: Option<f64>,
    /// Seed (default: the experiment's).
    pub seed: Option<u64>,
    /// Samples per batch.
    pub batch_size: Option<usize>,
    /// No progress display.
    pub quiet: bool,
}

/// A trained run, loaded for sampling.
pub struct LoadedRun<Dm: Domain> {
    /// The run directory.
    pub dir: PathBuf,
    /// Its experiment.
    pub exp: ExperimentOf<Dm>,
    /// Data shapes and classes.
    pub info: DataInfo,
    /// The network, holding the EMA weights when the run kept them.
    pub model: Box<dyn Denoiser>,
    /// The process it was trained with.
    pub process: GaussianProcess,
    /// The checkpoint step loaded.
    pub step: usize,
    device: Device,
}

/// Loads the newest checkpoint of a run (EMA weights when present).
pub fn load_run<Dm: Domain>(dir: &Path, device: &Device) -> anyhow::Result<LoadedRun<Dm>> {
    let cfg = dir.join("config.toml");
    anyhow::ensure!(cfg.exists(), "{} is not a run directory: it has no config.toml", dir.display());
    let exp = ExperimentOf::<Dm>::load(&cfg)?;
    let info_path = dir.join("data_info.json");
    let info: DataInfo = serde_json::from_str(
        &std::fs::read_to_string(&info_path).with_context(|| format!("cannot read {}", info_path.display()))?,
    )
    .with_context(|| format!("{} is not valid", info_path.display()))?;
    let c = checkpoint::latest(&dir.join("checkpoints"))
        .ok_or_else(|| anyhow::anyhow!("{} has no checkpoint yet: train it first", dir.display()))?;
    let t = checkpoint::load_tensors(&c.tensors, device)?;
    let prefix = if t.keys().any(|k| k.starts_with("ema.")) { "ema." } else { "model." };
    // plain tensors, not variables: sampling builds no autograd graph, so each step's
    // activations are freed as soon as they are used
    let vb = candle_nn::VarBuilder::from_tensors(strip_prefix(&t, prefix), DType::F32, device);
    let model = Dm::denoiser(&exp.model, &info, vb).with_context(|| format!("loading {}", c.tensors.display()))?;
    let process = GaussianProcess::new(exp.process.clone())?;
    Ok(LoadedRun { dir: dir.to_path_buf(), exp, info, model, process, step: c.step, device: device.clone() })
}

/// Generated samples with their settings.
pub struct Generated {
    /// `[N, ...]` samples.
    pub samples: Tensor,
    /// Class ids when the model is conditional (sample i has class i mod K).
    pub labels: Option<Vec<u32>>,
    /// The sampler settings used.
    pub sampler: SamplerConfig,
    /// The seed used.
    pub seed: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl<Dm: Domain> LoadedRun<Dm> {
    /// The experiment's sampler settings with the request's overrides.
    pub fn sampler_config(&self, req: &SampleRequest) -> SamplerConfig {
        let mut c = self.exp.sample.clone();
        if let Some(v) = req.n {
            c.n = v;
        }
        if let Some(v) = req.sampler {
            c.sampler = v;
        }
        if let Some(v) = req.steps {
            c.steps = v;
        }
        if let Some(v) = req.guidance {
            c.guidance = v;
        }
        if let Some(v) = req.batch_size {
            c.batch_size = v;
        }
        c
    }

    /// Draws samples. Sample i uses noise stream i of the seed and class i mod K, so the result
    /// does not depend on the batch size.
    pub fn generate(&self, req: &SampleRequest) -> anyhow::Result<Generated> {
        let cfg = self.sampler_config(req);
        anyhow::ensure!(cfg.n >= 1, "the number of samples must be at least 1");
        anyhow::ensure!(cfg.batch_size >= 1, "sample.batch_size must be at least 1");
        let seed = req.seed.unwrap_or(self.exp.seed);
        let classes = self.info.num_classes;
        let labels: Option<Vec<u32>> = classes.map(|k| (0..cfg.n).map(|i| (i % k) as u32).collect());
        let calls_per_batch = cfg.sampler.model_calls(cfg.steps) as u64;
        let batches = cfg.n.div_ceil(cfg.batch_size);
        let mut progress = Progress::new("sample", "call", calls_per_batch * batches as u64, 0, req.quiet);
        let began = Instant::now();
        let mut parts = vec![];
        let mut done_calls = 0u64;
        for first in (0..cfg.n).step_by(cfg.batch_size) {
            let b = cfg.batch_size.min(cfg.n - first);
            let cond = match &labels {
                Some(l) => Some(Tensor::from_vec(l[first..first + b].to_vec(), b, &self.device)?),
                None => None,
            };
            let guided = Guided {
                denoiser: self.model.as_ref(),
                cond,
                null_class: classes.unwrap_or(0) as u32,
                scale: cfg.guidance,
            };
            let mut noise = RowNoise::new(seed, first, b);
            let mut shape = vec![b];
            shape.extend(&self.info.item_shape);
            let mut obs = |_: &sampler::StepInfo| {
                done_calls += 1;
                progress.set(done_calls, "");
            };
            let x = sampler::sample(&cfg, &self.process, &guided, &mut noise, &shape, &self.device, &mut obs)?;
            parts.push(x);
        }
        let seconds = began.elapsed().as_secs_f64();
        progress.finish(&format!("{} samples in {seconds:.1}s", cfg.n));
        Ok(Generated { samples: Tensor::cat(&parts, 0)?, labels, sampler: cfg, seed, seconds })
    }
}

/// Samples from a run and writes them under `RUN/samples/SAMPLER-STEPS-gW-seedS-nN/` (with
/// `-bf16` appended when drawn with bfloat16 compute, [`crate::nn::Bf16Compute`]): the domain's
/// files plus `samples.safetensors` (`samples`, and `labels` when conditional).
pub fn sample<Dm: Domain>(dir: &Path, req: &SampleRequest, device: &Device) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let run = load_run::<Dm>(dir, device)?;
    let g = run.generate(req)?;
    write_generated(&run, &g)
}

/// Writes generated samples into the run's samples folder; returns the folder and its files.
fn write_generated<Dm: Domain>(run: &LoadedRun<Dm>, g: &Generated) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let out = run.dir.join("samples").join(format!(
        "{}-{}steps-g{}-seed{}-n{}{}",
        g.sampler.sampler.name(),
        g.sampler.steps,
        g.sampler.guidance,
        g.seed,
        g.sampler.n,
        if crate::nn::bf16_compute() { "-bf16" } else { "" }
    ));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut t = HashMap::new();
    t.insert("samples".to_string(), g.samples.clone());
    if let Some(l) = &g.labels {
        t.insert("labels".to_string(), Tensor::from_vec(l.clone(), l.len(), &Device::Cpu)?);
    }
    let raw = out.join("samples.safetensors");
    checkpoint::save_tensors(&raw, &t)?;
    let mut files = Dm::write_samples(&run.exp.data, &run.info, &g.samples, g.labels.as_deref(), &out)?;
    files.insert(0, raw);
    Ok((out, files))
}

/// Samples `n` from a run (default: the domain's evaluation size), keeps the samples in the
/// run's samples folder, scores them, writes `RUN/eval.json` (a flat object of named metrics)
/// and returns the metrics.
pub fn eval<Dm: Domain>(dir: &Path, req: &SampleRequest, device: &Device) -> anyhow::Result<Vec<Metric>> {
    let run = load_run::<Dm>(dir, device)?;
    let mut req = req.clone();
    if req.n.is_none() {
        req.n = Some(Dm::eval_samples(&run.exp.eval));
    }
    let g = run.generate(&req)?;
    write_generated(&run, &g)?;
    let mut metrics =
        Dm::evaluate(&run.exp.data, &run.exp.eval, run.exp.seed, &g.samples, g.labels.as_deref())?;
    metrics.push(("samples".into(), g.sampler.n as f64));
    metrics.push(("sampling_steps".into(), g.sampler.steps as f64));
    metrics.push(("guidance".into(), g.sampler.guidance));
    metrics.push(("checkpoint_step".into(), run.step as f64));
    let obj: serde_json::Map<String, serde_json::Value> =
        metrics.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
    write_atomic(&dir.join("eval.json"), serde_json::to_string_pretty(&obj)?.as_bytes())?;
    Ok(metrics)
}

/// One benchmark figure.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// What was measured.
    pub workload: String,
    /// Examples (training) or samples (sampling) per second.
    pub items_per_s: f64,
    /// Optimiser steps or network evaluations per second.
    pub steps_per_s: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Seconds measured.
    pub seconds: f64,
}

/// Measures training throughput (`steps` optimiser steps, set-up included) and sampling
/// throughput (`n` samples) for an experiment's model, in a temporary run directory.
pub fn bench<Dm: Domain>(experiment: &Path, steps: usize, n: usize, device: &Device) -> anyhow::Result<Vec<BenchResult>> {
    let mut exp = ExperimentOf::<Dm>::load(experiment)?;
    let dir = std::env::temp_dir().join(format!("sugarcube-bench-{}-{}", exp.name, std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    exp.train.steps = steps.max(1);
    exp.train.checkpoint_every = exp.train.steps;
    exp.train.keep_checkpoints = 1;
    let opts = TrainOptions { out: Some(dir.clone()), quiet: true, ..Default::default() };
    let began = Instant::now();
    train_experiment::<Dm>(&exp, &opts, device)?;
    let train_secs = began.elapsed().as_secs_f64();
    let per_step = exp.train.batch_size * exp.train.grad_accum;
    let mut out = vec![BenchResult {
        workload: format!("{}_train", exp.name),
        items_per_s: (steps * per_step) as f64 / train_secs,
        steps_per_s: steps as f64 / train_secs,
        batch_size: per_step,
        seconds: train_secs,
    }];
    let run = load_run::<Dm>(&dir, device)?;
    let req = SampleRequest { n: Some(n), quiet: true, ..Default::default() };
    let g = run.generate(&req)?;
    let calls = g.sampler.sampler.model_calls(g.sampler.steps) * n.div_ceil(g.sampler.batch_size);
    out.push(BenchResult {
        workload: format!("{}_sample_{}{}", exp.name, g.sampler.sampler.name(), g.sampler.steps),
        items_per_s: n as f64 / g.seconds,
        steps_per_s: calls as f64 / g.seconds,
        batch_size: g.sampler.batch_size.min(n),
        seconds: g.seconds,
    });
    std::fs::remove_dir_all(&dir).ok();
    Ok(out)
}
