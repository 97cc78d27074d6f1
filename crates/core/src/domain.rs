//! How a domain plugs into the core: a [`Dataset`] of clean examples, a denoiser preset, a
//! writer for generated samples and its metrics, bundled as a [`Domain`]; the CLI finds domains
//! through [`crate::registry`].

use crate::cond::{CondSpec, Condition};
use crate::denoiser::Denoiser;
use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A batch of clean training examples.
pub struct Batch {
    /// `[B, ...]` examples: float32 for continuous data, u32 tokens (`0..vocab`) for token data.
    pub x0: Tensor,
    /// One condition per example (empty for unconditional data).
    pub cond: Vec<Condition>,
    /// Real positions per example along [`DataInfo::length_axis`] (None: every position real).
    pub lengths: Option<Vec<usize>>,
}

/// What a model needs to know about its data (saved as `data_info.json` in a run directory, so
/// sampling needs no data).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct DataInfo {
    /// Shape of one example (without the batch axis); with a length axis, the longest length.
    pub item_shape: Vec<usize>,
    /// The condition fields (empty: unconditional).
    #[serde(default)]
    pub cond: CondSpec,
    /// For variable-length data, the axis of an item that runs along positions (0 for `[L, F]`,
    /// 1 for `[C, L]`); batches then carry lengths and the denoiser a padding mask.
    #[serde(default)]
    pub length_axis: Option<usize>,
    /// For token data, the number of token values (tokens are `0..vocab`).
    #[serde(default)]
    pub vocab: Option<usize>,
    /// For variable-length data, the shortest and longest training lengths: samples drawn
    /// without `--lengths` take lengths uniformly from this range (sample `i`'s from the
    /// seed's stream `i`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_range: Option<(usize, usize)>,
    /// What the domain needs from its training data to write samples without it (for protein
    /// backbones, the circular means the angles were centred by); the domain's own format.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub stats: serde_json::Value,
}

impl DataInfo {
    /// Unconditional continuous data of one shape.
    pub fn new(item_shape: Vec<usize>) -> Self {
        Self {
            item_shape,
            cond: CondSpec::default(),
            length_axis: None,
            vocab: None,
            length_range: None,
            stats: serde_json::Value::Null,
        }
    }

    /// The same with a condition spec.
    pub fn with_cond(mut self, cond: CondSpec) -> Self {
        self.cond = cond;
        self
    }
}

/// A finite, indexable set of training examples.
pub trait Dataset {
    /// Number of examples.
    fn len(&self) -> usize;
    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shapes and conditions.
    fn info(&self) -> DataInfo;
    /// The examples at `indices`, stacked (variable-length items padded to the longest).
    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch>;
}

/// Which part of the data to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The examples the model trains on.
    Train,
    /// Examples kept apart for evaluation (for generated data: a fresh draw).
    Heldout,
}

/// One named evaluation figure.
pub type Metric = (String, f64);

/// What an evaluation found: flat named figures for `eval.json` (each figure `X` with its
/// data-vs-data floor `X_floor` beside it where one exists, and `X_ratio` for distances), and
/// arrays or tables for `eval-details.json`.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Named figures.
    pub metrics: Vec<Metric>,
    /// Per-class tables, matrices and histograms, keyed by name.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Evaluation {
    /// An evaluation of figures alone.
    pub fn of(metrics: Vec<Metric>) -> Self {
        Self {
            metrics,
            details: Default::default(),
        }
    }

    /// The figure called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Generated samples as a domain receives them.
pub struct Samples<'a> {
    /// `[N, ...]` samples (padded to the longest for variable-length data).
    pub x: &'a Tensor,
    /// Each sample's (first positive) condition; empty for an unconditional model.
    pub conditions: &'a [Condition],
    /// Each sample's length along the length axis, for variable-length data.
    pub lengths: Option<&'a [usize]>,
}

/// A kind of data sugarcube can model. The CLI learns of a domain through one line in its
/// registry ([`crate::registry`]).
pub trait Domain: 'static {
    /// The domain's name in experiment files (`domain = "..."`).
    const NAME: &'static str;
    /// The `[data]` table.
    type Data: DeserializeOwned + Serialize + Clone + std::fmt::Debug;
    /// The `[model]` table (its default: the domain's preset, used when the table is left out).
    type Model: DeserializeOwned + Serialize + Clone + std::fmt::Debug + Default;
    /// The `[eval]` table.
    type Eval: DeserializeOwned + Serialize + Clone + std::fmt::Debug + Default;

    /// Loads (or generates) a split of the data; `seed` is the experiment's.
    fn dataset(data: &Self::Data, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>>;

    /// Builds the denoiser a model table describes, its parameters created through `vb`. For
    /// token data ([`DataInfo::vocab`]) it outputs `[B, L, vocab]` logits.
    fn denoiser(
        model: &Self::Model,
        info: &DataInfo,
        vb: VarBuilder,
    ) -> anyhow::Result<Box<dyn Denoiser>>;

    /// Writes generated samples in the domain's file formats under `dir`; returns the files.
    fn write_samples(
        data: &Self::Data,
        info: &DataInfo,
        samples: &Samples,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>>;

    /// How many samples `eval` draws by default.
    fn eval_samples(eval: &Self::Eval) -> usize;

    /// Scores generated samples against held-out data.
    fn evaluate(
        data: &Self::Data,
        eval: &Self::Eval,
        seed: u64,
        samples: &Samples,
    ) -> anyhow::Result<Evaluation>;

    /// The domain's sections of a run's report (`RUN/report.html`), after the common ones
    /// (experiment, training curves, checkpoints, evaluation): what its users look at, drawn
    /// from the run's files. None by default.
    fn report(
        ctx: &crate::report::ReportContext<Self>,
    ) -> anyhow::Result<Vec<crate::report::Section>>
    where
        Self: Sized,
    {
        let _ = ctx;
        Ok(vec![])
    }

    /// The domain's own `sugarcube bench` workloads (its pipelines outside the model), if any.
    fn workloads() -> Vec<crate::bench::DomainWorkload> {
        vec![]
    }

    /// The domain's own subcommands (`sugarcube NAME ...`), if any.
    fn command() -> Option<clap::Command> {
        None
    }

    /// Runs one of [`Domain::command`]'s subcommands.
    fn run_command(matches: &clap::ArgMatches) -> anyhow::Result<()> {
        let _ = matches;
        anyhow::bail!("the {} domain has no subcommands", Self::NAME)
    }
}
