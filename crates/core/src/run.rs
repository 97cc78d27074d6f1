//! Run directories and the commands over them, generic over a [`Domain`]:
//! `train` (experiment file -> run directory), `sample`, `eval` and `bench`.
//!
//! A run directory holds `config.toml` (the resolved experiment), `data_info.json`,
//! `checkpoints/`, `metrics.jsonl`, `samples/` (with `train-step-N/` for the samples drawn
//! while training, `[train] sample_every`) and `eval.json`.

use crate::checkpoint::{self, write_atomic, Checkpoint};
use crate::cond::{CondSpec, Condition, Guidance};
use crate::config::{ExperimentOf, Task};
use crate::denoiser::{Denoiser, Guided, Inputs};
use crate::domain::{DataInfo, Domain, Evaluation, Samples, Split};
use crate::nn::classifier::Classifier;
use crate::params::Params;
use crate::process::ProcessConfig;
use crate::process::{Process, SampleJob};
use crate::progress::Progress;
use crate::rng::{Rng, Rows};
use crate::sampler::{self, SampleConfig};
use crate::scorer::{class_targets, classifier_field, ClassifierScorer};
use crate::train::{strip_prefix, Objective, TrainReport, Trainer};
use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use sha2::Digest;
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
    /// Fine-tune from this run directory (`--init`): overrides the experiment's `[train] init`.
    pub init: Option<PathBuf>,
}

/// Trains an experiment; returns the run directory and the report.
pub fn train<Dm: Domain>(
    experiment: &Path,
    opts: &TrainOptions,
    device: &Device,
) -> anyhow::Result<(PathBuf, TrainReport)> {
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
    let mut exp = exp.clone();
    if let Some(init) = &opts.init {
        exp.train.init = Some(init.clone());
    }
    let exp = &exp;
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
    let ckpts = dir.join("checkpoints");
    if !opts.resume && checkpoint::latest(&ckpts).is_some() {
        anyhow::bail!(
            "{} already holds a trained run: pass --resume to continue it, or --out DIR to start a new one",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create run directory {}", dir.display()))?;
    crate::report::record_machine(&dir)?;
    let dataset = Dm::dataset(&exp.data, Split::Train, exp.seed)?;
    let info = dataset.info();
    let process = exp.process.build(&info)?;
    let params = Params::new(exp.seed);
    let vb = params.var_builder(DType::F32, device);
    let (model, objective): (Box<dyn Denoiser>, Objective) = match exp.task {
        Task::Denoiser => {
            // the [sample] table is checked now, not after training
            process
                .model_calls(&exp.sample)
                .context("in the [sample] table")?;
            (Dm::denoiser(&exp.model, &info, vb)?, Objective::Denoise)
        }
        Task::Classifier => {
            anyhow::ensure!(
                exp.train.sample_every == 0,
                "train.sample_every: a classifier run (task = \"classifier\") does not sample"
            );
            anyhow::ensure!(info.vocab.is_none(), "task = \"classifier\" needs continuous data: a scorer's gradient does not exist for tokens");
            let (field, classes) = classifier_field(&info.cond, exp.classifier.field.as_deref())?;
            let model = Classifier::new(vb, &exp.classifier, &info.item_shape, classes.len())
                .context("in the [classifier] table")?;
            (
                Box::new(model),
                Objective::Classify {
                    field,
                    classes: classes.len(),
                },
            )
        }
    };
    write_atomic(&dir.join("config.toml"), exp.to_toml()?.as_bytes())?;
    write_atomic(
        &dir.join("data_info.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    if !opts.quiet {
        eprintln!(
            "training {} ({} examples, {} parameters) into {}",
            exp.name,
            dataset.len(),
            params.count(),
            dir.display()
        );
    }
    let sample =
        |step: usize, dir: &Path| sample_while_training::<Dm>(exp, &info, step, dir, device);
    let trainer = Trainer {
        cfg: &exp.train,
        process: process.as_ref(),
        dataset: dataset.as_ref(),
        model: model.as_ref(),
        objective,
        params: &params,
        device: device.clone(),
        seed: exp.seed,
        config_hash: exp.train_hash()?,
        run_dir: dir.clone(),
        quiet: opts.quiet,
        stop_at: opts.stop_at,
        after_step: if exp.train.sample_every > 0 {
            Some(&sample)
        } else {
            None
        },
        init: exp.train.init.clone(),
    };
    let report = trainer.run(opts.resume)?;
    Ok((dir, report))
}

/// `[train] sample_every`: after step `step` (whose checkpoint the trainer has just written),
/// draws `sample_n` samples from that checkpoint as `sugarcube sample` does (the experiment's
/// `[sample]` settings and seed, float32) into `RUN_DIR/samples/train-step-NNNNNNNN/`.
fn sample_while_training<Dm: Domain>(
    exp: &ExperimentOf<Dm>,
    info: &DataInfo,
    step: usize,
    dir: &Path,
    device: &Device,
) -> anyhow::Result<Option<String>> {
    if !exp.train.sample_due(step) {
        return Ok(None);
    }
    let _f32 = crate::nn::Bf16Compute::set(false)?;
    let c = Checkpoint::at(&dir.join("checkpoints"), step);
    let run = LoadedRun::<Dm>::from_checkpoint(dir, exp.clone(), info.clone(), &c, device)?;
    let req = SampleRequest {
        n: Some(exp.train.sample_n),
        quiet: true,
        ..Default::default()
    };
    let g = run
        .generate(&req)
        .with_context(|| format!("sampling at step {step} (train.sample_every)"))?;
    let (out, _) = write_generated(&run, &g, Some(&format!("train-step-{step:08}")))?;
    Ok(Some(format!(
        "step {step}: {} samples in {:.1}s into {}",
        g.sampler.n,
        g.seconds,
        out.display()
    )))
}

/// Overrides of the experiment's `[sample]` settings, and what to generate.
#[derive(Clone, Debug, Default)]
pub struct SampleRequest {
    /// How many samples.
    pub n: Option<usize>,
    /// Which sampler (a name the process knows).
    pub sampler: Option<String>,
    /// Sampling steps.
    pub steps: Option<usize>,
    /// Weight of each positive condition.
    pub guidance: Option<f64>,
    /// Weight of each negative condition (default: the positive weight).
    pub not_guidance: Option<f64>,
    /// Positive conditions, each `field=value,...` (`--cond`); none: the domain's defaults.
    pub cond: Vec<String>,
    /// Negative conditions (`--not`).
    pub not: Vec<String>,
    /// Per-sample lengths for variable-length data (`--lengths 50..128` or `64`).
    pub lengths: Option<Lengths>,
    /// Seed (default: the experiment's).
    pub seed: Option<u64>,
    /// Samples per batch.
    pub batch_size: Option<usize>,
    /// A classifier run (`task = "classifier"`) whose gradient steers the sampler
    /// (classifier guidance, `--scorer`).
    pub scorer: Option<PathBuf>,
    /// The scale of the classifier's gradient (`--scorer-scale`, default 1).
    pub scorer_scale: Option<f64>,
    /// No progress display.
    pub quiet: bool,
}

/// The lengths of generated samples along the data's length axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lengths {
    /// Every sample this long.
    Fixed(usize),
    /// Sample `i` draws its length uniformly from `lo..=hi` (from a stream keyed by the seed and
    /// `i`, so lengths do not depend on the batch size).
    Range(usize, usize),
}

impl Lengths {
    /// Parses `N` or `A..B` (inclusive).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "--lengths: expected N or A..B (for example 64 or 50..128), got `{text}`"
            )
        };
        match text.split_once("..") {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim()
                        .trim_start_matches('=')
                        .parse()
                        .map_err(|_| bad())?,
                );
                anyhow::ensure!(a >= 1 && a <= b, "--lengths {text}: expected 1 <= A <= B");
                Ok(Lengths::Range(a, b))
            }
            None => {
                let n: usize = text.trim().parse().map_err(|_| bad())?;
                anyhow::ensure!(n >= 1, "--lengths must be at least 1");
                Ok(Lengths::Fixed(n))
            }
        }
    }

    /// The length of sample `i`.
    pub fn of(&self, seed: u64, i: usize) -> usize {
        match *self {
            Lengths::Fixed(n) => n,
            Lengths::Range(a, b) => {
                a + Rng::stream(seed ^ 0x01E4_67A5, i as u64).below((b - a + 1) as u64) as usize
            }
        }
    }
}

/// The two ends of a seed interpolation ([`LoadedRun::interpolate`]).
#[derive(Clone, Debug, Default)]
pub struct InterpolationEnds {
    /// The seed whose sample 0's starting noise is the first frame's.
    pub from_seed: u64,
    /// The seed whose sample 0's starting noise is the last frame's.
    pub to_seed: u64,
    /// Frames, the two ends included (at least 2).
    pub frames: usize,
    /// The first frame's condition (`field=value,...`); default: `to_cond`, else the
    /// domain's first default condition.
    pub from_cond: Option<String>,
    /// The last frame's condition; default: `from_cond`.
    pub to_cond: Option<String>,
}

/// The frames of a seed interpolation.
pub struct Interpolation {
    /// `[K, ...]` samples, the first frame first.
    pub frames: Tensor,
    /// Each frame's position between the ends (0 at the first, 1 at the last).
    pub weights: Vec<f64>,
    /// The first frame's condition (None for an unconditional model).
    pub from: Option<Condition>,
    /// The last frame's condition.
    pub to: Option<Condition>,
    /// The sampler settings used.
    pub sampler: SampleConfig,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A trained run, loaded for sampling.
pub struct LoadedRun<Dm: Domain> {
    /// The run directory.
    pub dir: PathBuf,
    /// Its experiment.
    pub exp: ExperimentOf<Dm>,
    /// Data shapes and conditions.
    pub info: DataInfo,
    /// The network, holding the EMA weights when the run kept them.
    pub model: Box<dyn Denoiser>,
    /// The process it was trained with.
    pub process: Box<dyn Process>,
    /// The checkpoint step loaded.
    pub step: usize,
    device: Device,
}

/// A run directory's experiment and data description.
fn read_run<Dm: Domain>(dir: &Path) -> anyhow::Result<(ExperimentOf<Dm>, DataInfo)> {
    let cfg = dir.join("config.toml");
    anyhow::ensure!(
        cfg.exists(),
        "{} is not a run directory: it has no config.toml",
        dir.display()
    );
    let exp = ExperimentOf::<Dm>::load(&cfg)?;
    let info_path = dir.join("data_info.json");
    let info: DataInfo = serde_json::from_str(
        &std::fs::read_to_string(&info_path)
            .with_context(|| format!("cannot read {}", info_path.display()))?,
    )
    .with_context(|| format!("{} is not valid", info_path.display()))?;
    Ok((exp, info))
}

/// The network weights of checkpoint `c`: its EMA weights when the run kept them.
fn checkpoint_weights(c: &Checkpoint, device: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    let t = checkpoint::load_tensors(&c.tensors, device)?;
    let prefix = if t.keys().any(|k| k.starts_with("ema.")) {
        "ema."
    } else {
        "model."
    };
    Ok(strip_prefix(&t, prefix))
}

/// Loads the newest checkpoint of a run that loads (EMA weights when present); a damaged one
/// is reported and skipped ([`checkpoint::newest_loadable`]).
pub fn load_run<Dm: Domain>(dir: &Path, device: &Device) -> anyhow::Result<LoadedRun<Dm>> {
    let (exp, info) = read_run::<Dm>(dir)?;
    anyhow::ensure!(
        exp.task == Task::Denoiser,
        "{} is a classifier run (task = \"classifier\"): it does not sample; steer another run with --scorer {}",
        dir.display(),
        dir.display()
    );
    let found = checkpoint::newest_loadable(&dir.join("checkpoints"), |c| {
        Ok(LoadedRun::<Dm>::from_checkpoint(
            dir,
            exp.clone(),
            info.clone(),
            c,
            device,
        ))
    })?;
    let (_, run) = found.ok_or_else(|| {
        anyhow::anyhow!("{} has no checkpoint yet: train it first", dir.display())
    })?;
    Ok(run)
}

impl<Dm: Domain> LoadedRun<Dm> {
    /// The run in `dir` at checkpoint `c` (EMA weights when present).
    pub fn from_checkpoint(
        dir: &Path,
        exp: ExperimentOf<Dm>,
        info: DataInfo,
        c: &Checkpoint,
        device: &Device,
    ) -> anyhow::Result<Self> {
        // plain tensors, not variables: sampling builds no autograd graph, so each step's
        // activations are freed as soon as they are used
        let vb =
            candle_nn::VarBuilder::from_tensors(checkpoint_weights(c, device)?, DType::F32, device);
        let model = Dm::denoiser(&exp.model, &info, vb)
            .with_context(|| format!("loading {}", c.tensors.display()))?;
        let process = exp.process.build(&info)?;
        Ok(LoadedRun {
            dir: dir.to_path_buf(),
            exp,
            info,
            model,
            process,
            step: c.step,
            device: device.clone(),
        })
    }
}

/// A trained noise-aware classifier (a run with `task = "classifier"`), for classifier guidance.
pub struct LoadedClassifier {
    /// The run directory.
    pub dir: PathBuf,
    /// The process it was trained under (its time coordinate must match the sampled model's).
    pub process: ProcessConfig,
    /// Its data's shapes and conditions.
    pub info: DataInfo,
    /// The network.
    pub classifier: Classifier,
    /// The index of the predicted field in `info.cond`.
    pub field: usize,
    /// The checkpoint step loaded.
    pub step: usize,
}

/// Loads a classifier run's newest checkpoint that loads.
pub fn load_classifier<Dm: Domain>(
    dir: &Path,
    device: &Device,
) -> anyhow::Result<LoadedClassifier> {
    let (exp, info) = read_run::<Dm>(dir)?;
    anyhow::ensure!(
        exp.task == Task::Classifier,
        "{} is not a classifier run: its experiment has no `task = \"classifier\"`",
        dir.display()
    );
    let (field, classes) = classifier_field(&info.cond, exp.classifier.field.as_deref())?;
    let found = checkpoint::newest_loadable(&dir.join("checkpoints"), |c| {
        Ok(checkpoint_weights(c, device).and_then(|w| {
            let vb = candle_nn::VarBuilder::from_tensors(w, DType::F32, device);
            Classifier::new(vb, &exp.classifier, &info.item_shape, classes.len())
                .with_context(|| format!("loading {}", c.tensors.display()))
        }))
    })?;
    let (c, classifier) = found.ok_or_else(|| {
        anyhow::anyhow!("{} has no checkpoint yet: train it first", dir.display())
    })?;
    Ok(LoadedClassifier {
        dir: dir.to_path_buf(),
        process: exp.process.clone(),
        info,
        classifier,
        field,
        step: c.step,
    })
}

/// Generated samples with their settings.
pub struct Generated {
    /// `[N, ...]` samples (padded to the longest for variable lengths).
    pub samples: Tensor,
    /// Each sample's first positive condition (sample i takes default i mod K without
    /// `--cond`); empty for an unconditional model.
    pub conditions: Vec<Condition>,
    /// The guidance used.
    pub guidance: Guidance,
    /// The fields `conditions` and `guidance` are expressed in (the model's, or the scorer's
    /// for an unconditional model steered by a classifier).
    pub spec: CondSpec,
    /// The classifier run that steered the sampler, and its scale.
    pub scorer: Option<(PathBuf, f64)>,
    /// Each sample's length, for variable-length data.
    pub lengths: Option<Vec<usize>>,
    /// The sampler settings used (with the sampler's name resolved).
    pub sampler: SampleConfig,
    /// The seed used.
    pub seed: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Generated {
    /// The view a domain's writer and evaluation take.
    pub fn view(&self) -> Samples<'_> {
        Samples {
            x: &self.samples,
            conditions: &self.conditions,
            lengths: self.lengths.as_deref(),
        }
    }
}

impl<Dm: Domain> LoadedRun<Dm> {
    /// The experiment's sampler settings with the request's overrides, the sampler's name
    /// resolved to the process's default when none is given.
    pub fn sampler_config(&self, req: &SampleRequest) -> SampleConfig {
        let mut c = self.exp.sample.clone();
        if let Some(v) = req.n {
            c.n = v;
        }
        if let Some(v) = &req.sampler {
            c.sampler = Some(v.clone());
        }
        if c.sampler.is_none() {
            c.sampler = Some(self.process.samplers()[0].to_string());
        }
        if let Some(v) = req.steps {
            c.steps = v;
        }
        if let Some(v) = req.guidance {
            c.guidance = v;
        }
        if let Some(v) = req.not_guidance {
            c.not_guidance = Some(v);
        }
        if let Some(v) = req.batch_size {
            c.batch_size = v;
        }
        c
    }

    /// The conditions a request asks for, parsed against `spec` (the model's condition fields,
    /// or a scorer's for an unconditional model steered by one).
    pub fn guidance(
        &self,
        req: &SampleRequest,
        cfg: &SampleConfig,
        spec: &CondSpec,
    ) -> anyhow::Result<Guidance> {
        let parse = |texts: &[String], flag: &str| -> anyhow::Result<Vec<Condition>> {
            texts
                .iter()
                .map(|t| spec.parse(t).with_context(|| format!("{flag} {t}")))
                .collect()
        };
        if spec.is_empty() {
            anyhow::ensure!(
                req.cond.is_empty() && req.not.is_empty(),
                "{} is unconditional: it takes no --cond or --not",
                self.dir.display()
            );
        }
        let positive = parse(&req.cond, "--cond")?;
        let negative = parse(&req.not, "--not")?;
        anyhow::ensure!(
            negative.is_empty() || !self.info.cond.is_empty(),
            "--not needs a conditional model"
        );
        Ok(Guidance {
            positive,
            negative,
            scale: cfg.guidance,
            negative_scale: cfg.not_guidance.unwrap_or(cfg.guidance),
        })
    }

    /// Loads the classifier a request steers with and checks it fits this run: the same item
    /// shape, the same Gaussian schedule (the time both networks read), and for a conditional
    /// model a field of the same name and classes.
    fn scorer(&self, req: &SampleRequest) -> anyhow::Result<Option<LoadedClassifier>> {
        let Some(dir) = &req.scorer else {
            anyhow::ensure!(
                req.scorer_scale.is_none(),
                "--scorer-scale needs --scorer RUN_DIR"
            );
            return Ok(None);
        };
        let c = load_classifier::<Dm>(dir, &self.device)
            .with_context(|| format!("--scorer {}", dir.display()))?;
        anyhow::ensure!(
            c.info.item_shape == self.info.item_shape,
            "--scorer {}: the classifier reads items of shape {:?}, this run makes {:?}",
            dir.display(),
            c.info.item_shape,
            self.info.item_shape
        );
        let same_time = match (&c.process, &self.exp.process) {
            (ProcessConfig::Gaussian(a), ProcessConfig::Gaussian(b)) => a.schedule == b.schedule,
            _ => false,
        };
        anyhow::ensure!(
            same_time,
            "--scorer {}: classifier guidance needs the classifier and this run trained under the same Gaussian \
             [process] schedule (they read the same timesteps); the classifier's is {:?}, this run's {:?}",
            dir.display(),
            c.process,
            self.exp.process
        );
        if !self.info.cond.is_empty() {
            let f = &c.info.cond.fields[c.field];
            let (_, mine) = self.info.cond.field(&f.name).with_context(|| {
                format!(
                    "--scorer {}: it predicts `{}`, a field this model does not have",
                    dir.display(),
                    f.name
                )
            })?;
            anyhow::ensure!(
                mine.kind == f.kind,
                "--scorer {}: its field `{}` has other classes than this model's ({:?} vs {:?})",
                dir.display(),
                f.name,
                f.kind,
                mine.kind
            );
        }
        Ok(Some(c))
    }

    /// Draws samples. Sample i uses random stream i of the seed, its length from a stream of
    /// its own, and (without `--cond`) default condition i mod K, so the result does not depend
    /// on the batch size.
    pub fn generate(&self, req: &SampleRequest) -> anyhow::Result<Generated> {
        crate::nn::flush_denormals();
        let cfg = self.sampler_config(req);
        anyhow::ensure!(cfg.n >= 1, "the number of samples must be at least 1");
        anyhow::ensure!(cfg.batch_size >= 1, "sample.batch_size must be at least 1");
        let seed = req.seed.unwrap_or(self.exp.seed);
        let scorer = self.scorer(req)?;
        let scale = req.scorer_scale.unwrap_or(1.0);
        anyhow::ensure!(
            scale.is_finite(),
            "--scorer-scale must be a number, got {scale}"
        );
        anyhow::ensure!(
            cfg.scorer_max_sigma > 0.0,
            "sample.scorer_max_sigma must be positive, got {}",
            cfg.scorer_max_sigma
        );
        // the samples' conditions: the model's fields, or for an unconditional model steered by
        // a classifier the classifier's (sample i then aims at class i mod K)
        let spec = match &scorer {
            Some(c) if self.info.cond.is_empty() => &c.info.cond,
            _ => &self.info.cond,
        };
        let guidance = self.guidance(req, &cfg, spec)?;
        let defaults = spec.defaults();
        let scorer_field = match &scorer {
            Some(c) => Some(spec.field(&c.info.cond.fields[c.field].name)?.0),
            None => None,
        };
        let lengths: Option<Vec<usize>> = match (&req.lengths, self.info.length_axis) {
            (Some(l), Some(axis)) => {
                let max = self.info.item_shape[axis];
                let v: Vec<usize> = (0..cfg.n).map(|i| l.of(seed, i)).collect();
                if let Some(&too_long) = v.iter().find(|&&n| n > max) {
                    anyhow::bail!(
                        "--lengths: {too_long} is longer than the model's longest length {max}"
                    );
                }
                Some(v)
            }
            (Some(_), None) => anyhow::bail!(
                "--lengths: this data has one fixed shape {:?}",
                self.info.item_shape
            ),
            (None, Some(_)) => self.info.length_range.map(|(lo, hi)| {
                (0..cfg.n)
                    .map(|i| Lengths::Range(lo, hi).of(seed, i))
                    .collect()
            }),
            (None, None) => None,
        };
        let calls_per_batch = self.process.model_calls(&cfg)? as u64;
        let batches = cfg.n.div_ceil(cfg.batch_size);
        let mut progress = Progress::new(
            "sample",
            "call",
            calls_per_batch * batches as u64,
            0,
            req.quiet,
        );
        let began = Instant::now();
        let mut parts = vec![];
        let mut conditions = vec![];
        let mut done_calls = 0u64;
        for first in (0..cfg.n).step_by(cfg.batch_size) {
            let b = cfg.batch_size.min(cfg.n - first);
            let per_row: Vec<Vec<Condition>> = (first..first + b)
                .map(|i| guidance.positive_for(spec, &defaults, i))
                .collect();
            let terms = per_row.first().map_or(0, |p| p.len());
            let positive: Vec<(Vec<Condition>, f64)> = (0..terms)
                .map(|k| {
                    (
                        per_row.iter().map(|p| p[k].clone()).collect(),
                        guidance.scale,
                    )
                })
                .collect();
            let negative: Vec<(Vec<Condition>, f64)> = guidance
                .negative
                .iter()
                .map(|n| (vec![n.clone(); b], guidance.negative_scale))
                .collect();
            conditions.extend(per_row.iter().filter_map(|p| p.first().cloned()));
            let mut shape = vec![b];
            shape.extend(&self.info.item_shape);
            let mut rows = Rows::new(seed, first, b);
            let mut mask = None;
            if let (Some(all), Some(axis)) = (&lengths, self.info.length_axis) {
                let own = all[first..first + b].to_vec();
                shape[axis + 1] = *own.iter().max().expect("a batch has rows");
                mask = Some(crate::tensor_util::length_mask(
                    &own,
                    shape[axis + 1],
                    &self.device,
                )?);
                rows = rows.with_lengths(own, axis);
            }
            let bound = match (&scorer, scorer_field) {
                (Some(c), Some(field)) => {
                    let firsts: Vec<Condition> = per_row
                        .iter()
                        .map(|p| p.first().cloned().unwrap_or_else(|| spec.null()))
                        .collect();
                    let targets =
                        class_targets(&firsts, field, c.classifier.classes(), &self.device)?;
                    Some(ClassifierScorer {
                        classifier: &c.classifier,
                        targets,
                        mask: mask.clone(),
                    })
                }
                _ => None,
            };
            let (positive, negative) = if self.info.cond.is_empty() {
                (vec![], vec![])
            } else {
                (positive, negative)
            };
            let guided = Guided::new(
                self.model.as_ref(),
                &self.info.cond,
                &positive,
                &negative,
                b,
                mask,
                &self.device,
            )?;
            let mut obs = |_: &sampler::StepInfo| {
                done_calls += 1;
                progress.set(done_calls, "");
            };
            let job = SampleJob {
                cfg: &cfg,
                model: &guided,
                rows: &mut rows,
                shape: &shape,
                device: &self.device,
                scorer: bound
                    .as_ref()
                    .map(|s| (s as &dyn crate::denoiser::Scorer, scale)),
                edit: None,
                noise: None,
                obs: &mut obs,
            };
            parts.push(self.process.sample(job)?);
        }
        let seconds = began.elapsed().as_secs_f64();
        progress.finish(&format!("{} samples in {seconds:.1}s", cfg.n));
        let samples = match (&lengths, self.info.length_axis) {
            (Some(_), Some(axis)) => pad_cat(&parts, axis + 1)?,
            _ => Tensor::cat(&parts, 0)?,
        };
        let spec = spec.clone();
        let scorer = scorer.map(|c| (c.dir, scale));
        Ok(Generated {
            samples,
            conditions,
            guidance,
            spec,
            scorer,
            lengths,
            sampler: cfg,
            seed,
            seconds,
        })
    }

    /// Seed interpolation, as Riffusion interpolates between seeds and prompts: `frames`
    /// samples whose starting noise runs along the great circle ([`crate::tensor_util::slerp`])
    /// from the noise that sample 0 of `from_seed` starts from to that of `to_seed`, and whose
    /// condition runs linearly from `from` to `to` (the encodings are blended, and the learned
    /// embedding is linear in the encoding, so the embeddings are interpolated). Frame 0 is the
    /// sample `sugarcube sample --seed FROM -n 1 --cond FROM` draws, the last frame the same
    /// for `to`. Needs a deterministic sampler (no fresh noise after the start), so that the
    /// frames change only as their start and condition do. Data with a length axis is drawn
    /// at its full length.
    pub fn interpolate(
        &self,
        req: &SampleRequest,
        ends: &InterpolationEnds,
    ) -> anyhow::Result<Interpolation> {
        crate::nn::flush_denormals();
        let cfg = self.sampler_config(req);
        anyhow::ensure!(
            ends.frames >= 2,
            "--frames must be at least 2 (the two ends), got {}",
            ends.frames
        );
        anyhow::ensure!(cfg.batch_size >= 1, "sample.batch_size must be at least 1");
        anyhow::ensure!(
            self.process.deterministic(&cfg)?,
            "interpolation needs a deterministic sampler, and `{}` adds fresh noise every step \
             (with these settings): use --sampler ddim (eta 0), dpmpp_2m, euler or heun",
            cfg.sampler_name()
        );
        anyhow::ensure!(
            req.scorer.is_none() && req.not.is_empty() && req.cond.is_empty(),
            "interpolation takes its two conditions as --from-cond and --to-cond, and no --cond, --not or --scorer"
        );
        let spec = &self.info.cond;
        let parse = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<Condition>> {
            match text {
                None => Ok(None),
                Some(t) => {
                    anyhow::ensure!(
                        !spec.is_empty(),
                        "{} is unconditional: it takes no {flag}",
                        self.dir.display()
                    );
                    Ok(Some(spec.parse(t).with_context(|| format!("{flag} {t}"))?))
                }
            }
        };
        let (from, to) = (
            parse(&ends.from_cond, "--from-cond")?,
            parse(&ends.to_cond, "--to-cond")?,
        );
        let default = spec.defaults().into_iter().next();
        let from = from.or_else(|| to.clone()).or(default);
        let to = to.or_else(|| from.clone());
        let mut item = vec![1];
        item.extend(&self.info.item_shape);
        let start = |seed: u64| -> anyhow::Result<Vec<f32>> {
            Ok(Rows::new(seed, 0, 1)
                .normal(&item, DType::F32, &self.device)?
                .flatten_all()?
                .to_vec1()?)
        };
        let (za, zb) = (start(ends.from_seed)?, start(ends.to_seed)?);
        let weights: Vec<f64> = (0..ends.frames)
            .map(|k| k as f64 / (ends.frames - 1) as f64)
            .collect();
        let encoded = match (&from, &to) {
            (Some(a), Some(b)) => Some((
                spec.encode(std::slice::from_ref(a), &self.device)?,
                spec.encode(std::slice::from_ref(b), &self.device)?,
            )),
            _ => None,
        };
        let calls = self.process.model_calls(&cfg)? as u64;
        let batches = ends.frames.div_ceil(cfg.batch_size) as u64;
        let mut progress = Progress::new("interpolate", "call", calls * batches, 0, req.quiet);
        let began = Instant::now();
        let mut done = 0u64;
        let mut parts = vec![];
        for first in (0..ends.frames).step_by(cfg.batch_size) {
            let w = &weights[first..(first + cfg.batch_size).min(ends.frames)];
            let b = w.len();
            let noise: Vec<f32> = w
                .iter()
                .flat_map(|&t| crate::tensor_util::slerp(&za, &zb, t))
                .collect();
            let mut shape = vec![b];
            shape.extend(&self.info.item_shape);
            let noise = Tensor::from_vec(noise, shape.as_slice(), &self.device)?;
            let (positive, null) = match &encoded {
                Some((ea, eb)) => {
                    let fields = ea
                        .fields
                        .iter()
                        .zip(&eb.fields)
                        .map(|(a, c)| {
                            let rows = w
                                .iter()
                                .map(|&t| a.affine(1.0 - t, 0.0)?.add(&c.affine(t, 0.0)?))
                                .collect::<candle_core::Result<Vec<_>>>()?;
                            Tensor::cat(&rows, 0)
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    (
                        vec![(crate::cond::CondBatch { fields }, cfg.guidance)],
                        Some(spec.encode(&vec![spec.null(); b], &self.device)?),
                    )
                }
                None => (vec![], None),
            };
            let guided = Guided {
                denoiser: self.model.as_ref(),
                positive,
                negative: vec![],
                null,
                mask: None,
            };
            let mut rows = Rows::new(ends.from_seed, first, b);
            let mut obs = |_: &sampler::StepInfo| {
                done += 1;
                progress.set(done, "");
            };
            parts.push(self.process.sample(SampleJob {
                cfg: &cfg,
                model: &guided,
                rows: &mut rows,
                shape: &shape,
                device: &self.device,
                scorer: None,
                edit: None,
                noise: Some(&noise),
                obs: &mut obs,
            })?);
        }
        let seconds = began.elapsed().as_secs_f64();
        progress.finish(&format!("{} frames in {seconds:.1}s", ends.frames));
        Ok(Interpolation {
            frames: Tensor::cat(&parts, 0)?,
            weights,
            from,
            to,
            sampler: cfg,
            seconds,
        })
    }

    /// The model's bound on the negative log-likelihood of held-out data, in bits per real
    /// position (None for processes without one): over the first `n` held-out examples, with
    /// the examples' own conditions, 16 stratified times per example.
    pub fn nll_bound_bits(&self, n: usize) -> anyhow::Result<Option<f64>> {
        let held = Dm::dataset(&self.exp.data, Split::Heldout, self.exp.seed)?;
        let n = n.min(held.len());
        let (mut total, mut count) = (0.0, 0usize);
        for first in (0..n).step_by(256) {
            let idx: Vec<usize> = (first..n.min(first + 256)).collect();
            let batch = held.batch(&idx, &self.device)?;
            let cond = if self.info.cond.is_empty() {
                None
            } else {
                Some(self.info.cond.encode(&batch.cond, &self.device)?)
            };
            let mask = match (&batch.lengths, self.info.length_axis) {
                (Some(l), Some(axis)) => Some(crate::tensor_util::length_mask(
                    l,
                    batch.x0.dim(axis + 1)?,
                    &self.device,
                )?),
                _ => None,
            };
            let net = |x: &Tensor, time: &Tensor| {
                self.model
                    .forward(&Inputs {
                        x,
                        time,
                        cond: cond.as_ref(),
                        mask: mask.as_ref(),
                    })
                    .map(|t| t.detach())
            };
            let mut rows = Rows::new(self.exp.seed ^ 0xE1B0, first, idx.len());
            match self
                .process
                .nll_bound(&net, &batch.x0, mask.as_ref(), &mut rows, 16)?
            {
                None => return Ok(None),
                Some(v) => {
                    total += v.iter().sum::<f64>();
                    count += v.len();
                }
            }
        }
        Ok(Some(total / count.max(1) as f64 / std::f64::consts::LN_2))
    }
}

/// Concatenates batches along the rows, padding each with zeros along `axis` to the longest.
fn pad_cat(parts: &[Tensor], axis: usize) -> anyhow::Result<Tensor> {
    let max = parts
        .iter()
        .map(|p| p.dim(axis))
        .collect::<candle_core::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let padded = parts
        .iter()
        .map(|p| {
            let l = p.dim(axis)?;
            if l == max {
                Ok(p.clone())
            } else {
                let mut shape = p.dims().to_vec();
                shape[axis] = max - l;
                Tensor::cat(&[p, &Tensor::zeros(shape, p.dtype(), p.device())?], axis)
            }
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&padded, 0)?)
}

/// Samples from a run and writes them under
/// `RUN/samples/SAMPLER-STEPSsteps-gW-seedS-nN[-cHASH][-bf16]/` (`-cHASH` names the conditions
/// asked for with `--cond`/`--not`; `-bf16` when drawn with bfloat16 compute,
/// [`crate::nn::Bf16Compute`]): the domain's files plus `samples.safetensors` (`samples`, and
/// `lengths` for variable-length data) and `conditions.json` (each sample's condition).
pub fn sample<Dm: Domain>(
    dir: &Path,
    req: &SampleRequest,
    device: &Device,
) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let run = load_run::<Dm>(dir, device)?;
    let g = run.generate(req)?;
    write_generated(&run, &g, None)
}

/// Writes generated samples into `RUN/samples/NAME/` (without a name, the one `sample`'s
/// settings give); returns the folder and its files.
fn write_generated<Dm: Domain>(
    run: &LoadedRun<Dm>,
    g: &Generated,
    name: Option<&str>,
) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let spec = &g.spec;
    let out = run.dir.join("samples").join(match name {
        Some(n) => n.to_string(),
        None => settings_folder(spec, g),
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut t = HashMap::new();
    t.insert("samples".to_string(), g.samples.clone());
    if let Some(l) = &g.lengths {
        t.insert(
            "lengths".to_string(),
            Tensor::from_vec(
                l.iter().map(|&v| v as u32).collect::<Vec<_>>(),
                l.len(),
                &Device::Cpu,
            )?,
        );
    }
    let raw = out.join("samples.safetensors");
    checkpoint::save_tensors(&raw, &t)?;
    let mut files = vec![raw];
    if !spec.is_empty() {
        let listing = serde_json::json!({
            "positive": g.guidance.positive.iter().map(|c| spec.format(c)).collect::<Vec<_>>(),
            "negative": g.guidance.negative.iter().map(|c| spec.format(c)).collect::<Vec<_>>(),
            "guidance": g.guidance.scale,
            "not_guidance": g.guidance.negative_scale,
            "scorer": g.scorer.as_ref().map(|(d, _)| d.display().to_string()),
            "scorer_scale": g.scorer.as_ref().map(|(_, s)| *s),
            "samples": g.conditions.iter().map(|c| spec.format(c)).collect::<Vec<_>>(),
        });
        let path = out.join("conditions.json");
        write_atomic(&path, serde_json::to_string_pretty(&listing)?.as_bytes())?;
        files.push(path);
    }
    files.extend(Dm::write_samples(
        &run.exp.data,
        &run.info,
        &g.view(),
        &out,
    )?);
    Ok((out, files))
}

/// The samples folder name of `sample`'s settings:
/// `SAMPLER-STEPSsteps-gW-seedS-nN[-cHASH][-bf16]`.
fn settings_folder(spec: &crate::cond::CondSpec, g: &Generated) -> String {
    let conds = if g.guidance.positive.is_empty() && g.guidance.negative.is_empty() {
        String::new()
    } else {
        let text: Vec<String> = g
            .guidance
            .positive
            .iter()
            .map(|c| spec.format(c))
            .chain(
                g.guidance
                    .negative
                    .iter()
                    .map(|c| format!("not {}", spec.format(c))),
            )
            .collect();
        let h = sha2::Sha256::digest(format!("{text:?}{}", g.guidance.negative_scale).as_bytes());
        format!("-c{:x}", h)[..10].to_string()
    };
    let scorer = match &g.scorer {
        Some((dir, scale)) => {
            let h = sha2::Sha256::digest(dir.display().to_string().as_bytes());
            format!("-s{scale}-{}", &format!("{h:x}")[..8])
        }
        None => String::new(),
    };
    format!(
        "{}-{}steps-g{}-seed{}-n{}{}{}{}",
        g.sampler.sampler_name(),
        g.sampler.steps,
        g.sampler.guidance,
        g.seed,
        g.sampler.n,
        conds,
        scorer,
        if crate::nn::bf16_compute() {
            "-bf16"
        } else {
            ""
        }
    )
}

/// Samples `n` from a run (default: the domain's evaluation size), keeps the samples in the
/// run's samples folder, scores them, writes `RUN/eval.json` (a flat object of named figures,
/// each with its floor beside it where one exists) and `RUN/eval-details.json` (tables and
/// matrices), and returns the evaluation. For processes with a likelihood bound it adds
/// `nll_bound_bits`, the bound in bits per position on held-out data.
pub fn eval<Dm: Domain>(
    dir: &Path,
    req: &SampleRequest,
    device: &Device,
) -> anyhow::Result<Evaluation> {
    let cfg = dir.join("config.toml");
    anyhow::ensure!(
        cfg.exists(),
        "{} is not a run directory: it has no config.toml",
        dir.display()
    );
    if ExperimentOf::<Dm>::load(&cfg)?.task == Task::Classifier {
        return eval_classifier::<Dm>(dir, req, device);
    }
    let run = load_run::<Dm>(dir, device)?;
    let mut req = req.clone();
    if req.n.is_none() {
        req.n = Some(Dm::eval_samples(&run.exp.eval));
    }
    let g = run.generate(&req)?;
    write_generated(&run, &g, None)?;
    let mut ev = Dm::evaluate(&run.exp.data, &run.exp.eval, run.exp.seed, &g.view())?;
    if let Some(bits) = run.nll_bound_bits(g.sampler.n)? {
        ev.metrics.push(("nll_bound_bits".into(), bits));
    }
    ev.metrics.push(("samples".into(), g.sampler.n as f64));
    ev.metrics
        .push(("sampling_steps".into(), g.sampler.steps as f64));
    ev.metrics.push(("guidance".into(), g.sampler.guidance));
    ev.metrics.push(("checkpoint_step".into(), run.step as f64));
    write_evaluation(dir, &ev)?;
    Ok(ev)
}

/// Writes `RUN/eval.json` (the flat figures) and, when there are any, `RUN/eval-details.json`.
pub fn write_evaluation(dir: &Path, ev: &Evaluation) -> anyhow::Result<()> {
    let obj: serde_json::Map<String, serde_json::Value> = ev
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    write_atomic(
        &dir.join("eval.json"),
        serde_json::to_string_pretty(&obj)?.as_bytes(),
    )?;
    if !ev.details.is_empty() {
        write_atomic(
            &dir.join("eval-details.json"),
            serde_json::to_string_pretty(&ev.details)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// Scores a classifier run on held-out data noised by its process at random times (one per
/// example, from the experiment's seed): `accuracy` overall, `accuracy_q1` .. `accuracy_q4` by
/// quarter of the drawn times (q1 least noisy), and `chance` (1 / classes); the quarters'
/// time ranges go to eval-details.json.
fn eval_classifier<Dm: Domain>(
    dir: &Path,
    req: &SampleRequest,
    device: &Device,
) -> anyhow::Result<Evaluation> {
    let c = load_classifier::<Dm>(dir, device)?;
    let exp = ExperimentOf::<Dm>::load(&dir.join("config.toml"))?;
    let held = Dm::dataset(&exp.data, Split::Heldout, exp.seed)?;
    let info = held.info();
    let process = exp.process.build(&info)?;
    let n = req.n.unwrap_or(Dm::eval_samples(&exp.eval)).min(held.len());
    anyhow::ensure!(n >= 1, "the held-out data of {} is empty", dir.display());
    let mut scored: Vec<(f32, bool)> = Vec::with_capacity(n);
    for first in (0..n).step_by(256) {
        let idx: Vec<usize> = (first..n.min(first + 256)).collect();
        let batch = held.batch(&idx, device)?;
        let mut rows = Rows::new(exp.seed ^ 0xC1A5_51F1, first, idx.len());
        let mut mask = None;
        if let (Some(l), Some(axis)) = (&batch.lengths, info.length_axis) {
            rows = rows.with_lengths(l.clone(), axis);
            mask = Some(crate::tensor_util::length_mask(
                l,
                batch.x0.dim(axis + 1)?,
                device,
            )?);
        }
        let noised = process.corrupt(&batch.x0, &mut rows)?;
        let logits = c
            .classifier
            .logits(&noised.x_t, &noised.time, mask.as_ref(), None)?;
        let predicted = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
        let times = noised.time.to_vec1::<f32>()?;
        for (i, cond) in batch.cond.iter().enumerate() {
            if let Some(y) = cond.class(c.field) {
                scored.push((times[i], predicted[i] == y));
            }
        }
    }
    anyhow::ensure!(
        !scored.is_empty(),
        "no held-out example of {} has a label for the classifier's field",
        dir.display()
    );
    let accuracy =
        |s: &[(f32, bool)]| s.iter().filter(|x| x.1).count() as f64 / s.len().max(1) as f64;
    let mut metrics = vec![("accuracy".to_string(), accuracy(&scored))];
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut quarters = vec![];
    for q in 0..4 {
        let part = &scored[q * scored.len() / 4..(q + 1) * scored.len() / 4];
        metrics.push((format!("accuracy_q{}", q + 1), accuracy(part)));
        if let (Some(lo), Some(hi)) = (part.first(), part.last()) {
            quarters.push(serde_json::json!({ "time_from": lo.0, "time_to": hi.0, "examples": part.len(), "accuracy": accuracy(part) }));
        }
    }
    metrics.push(("chance".to_string(), 1.0 / c.classifier.classes() as f64));
    metrics.push(("examples".to_string(), scored.len() as f64));
    metrics.push(("checkpoint_step".to_string(), c.step as f64));
    let mut ev = Evaluation::of(metrics);
    ev.details.insert(
        "accuracy_by_time".into(),
        serde_json::Value::Array(quarters),
    );
    write_evaluation(dir, &ev)?;
    Ok(ev)
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
pub fn bench<Dm: Domain>(
    experiment: &Path,
    steps: usize,
    n: usize,
    device: &Device,
) -> anyhow::Result<Vec<BenchResult>> {
    let mut exp = ExperimentOf::<Dm>::load(experiment)?;
    let dir = std::env::temp_dir().join(format!(
        "sugarcube-bench-{}-{}",
        exp.name,
        std::process::id()
    ));
    std::fs::remove_dir_all(&dir).ok();
    exp.train.steps = steps.max(1);
    exp.train.checkpoint_every = exp.train.steps;
    exp.train.keep_checkpoints = 1;
    let opts = TrainOptions {
        out: Some(dir.clone()),
        quiet: true,
        ..Default::default()
    };
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
    let req = SampleRequest {
        n: Some(n),
        quiet: true,
        ..Default::default()
    };
    let g = run.generate(&req)?;
    let calls = run.process.model_calls(&g.sampler)? * n.div_ceil(g.sampler.batch_size);
    out.push(BenchResult {
        workload: format!(
            "{}_sample_{}{}",
            exp.name,
            g.sampler.sampler_name(),
            g.sampler.steps
        ),
        items_per_s: n as f64 / g.seconds,
        steps_per_s: calls as f64 / g.seconds,
        batch_size: g.sampler.batch_size.min(n),
        seconds: g.seconds,
    });
    std::fs::remove_dir_all(&dir).ok();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_parse_and_do_not_depend_on_the_batch() {
        assert_eq!(Lengths::parse("64").unwrap(), Lengths::Fixed(64));
        assert_eq!(Lengths::parse("50..128").unwrap(), Lengths::Range(50, 128));
        assert_eq!(Lengths::parse("50..=128").unwrap(), Lengths::Range(50, 128));
        for bad in ["", "0", "9..3", "a..b", "1..", "-3"] {
            assert!(Lengths::parse(bad).is_err(), "{bad}");
        }
        let l = Lengths::Range(50, 128);
        let all: Vec<usize> = (0..500).map(|i| l.of(3, i)).collect();
        assert!(all.iter().all(|&n| (50..=128).contains(&n)));
        assert!(
            all.contains(&50) && all.contains(&128),
            "both ends are reachable"
        );
        assert_eq!(l.of(3, 17), all[17]);
        assert_ne!(
            (0..20).map(|i| l.of(4, i)).collect::<Vec<_>>(),
            all[..20].to_vec(),
            "the seed matters"
        );
    }
}
