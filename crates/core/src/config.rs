//! Experiment files: one TOML file per experiment with the tables `[data]`, `[model]`
//! (domain-specific), `[process]`, `[train]`, `[sample]` and `[eval]`.
//!
//! Unknown keys, wrong types and missing files are errors that name the file, the line and the
//! key, and say what was expected.

use crate::domain::Domain;
use crate::nn::classifier::ClassifierConfig;
use crate::process::ProcessConfig;
use crate::sampler::SampleConfig;
use crate::train::TrainConfig;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::Path;

/// An experiment, generic over its domain's `[data]`, `[model]` and `[eval]` tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment<D, M, E> {
    /// Short name; the default run directory is `runs/NAME`.
    pub name: String,
    /// One line saying what the experiment is.
    #[serde(default)]
    pub description: String,
    /// Which domain (toy, image, ...).
    pub domain: String,
    /// Seed for weights, data order, noise and sampling.
    #[serde(default)]
    pub seed: u64,
    /// What the run trains: a diffusion model (`"denoiser"`, the default) or a noise-aware
    /// classifier for classifier guidance (`"classifier"`, described by `[classifier]`).
    #[serde(default)]
    pub task: Task,
    /// The data.
    pub data: D,
    /// The network (the domain's preset when the table is left out).
    #[serde(default)]
    pub model: M,
    /// The classifier's network, for `task = "classifier"`.
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// The forward process (`kind` = gaussian, masked; default gaussian).
    #[serde(default)]
    pub process: ProcessConfig,
    /// Training settings.
    #[serde(default)]
    pub train: TrainConfig,
    /// Sampling settings.
    #[serde(default)]
    pub sample: SampleConfig,
    /// Evaluation settings.
    #[serde(default)]
    pub eval: E,
}

/// What an experiment trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A diffusion model: the domain's `[model]` under the `[process]`.
    #[default]
    Denoiser,
    /// A noise-aware classifier of one condition field on the process's noised data
    /// (`[classifier]`), used by `sugarcube sample --scorer RUN`.
    Classifier,
}

/// The experiment type of a domain.
pub type ExperimentOf<Dm> =
    Experiment<<Dm as Domain>::Data, <Dm as Domain>::Model, <Dm as Domain>::Eval>;

/// Just the keys needed to choose a domain.
#[derive(Deserialize)]
struct Header {
    domain: Option<String>,
}

/// Reads a file into a string, with an error that names it.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))
}

/// The `domain` key of an experiment file.
pub fn domain_of(path: &Path) -> anyhow::Result<String> {
    let text = read_text(path)?;
    let h: Header =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    h.domain.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: missing key `domain` (a string such as \"toy\")",
            path.display()
        )
    })
}

impl<D, M, E> Experiment<D, M, E>
where
    D: serde::de::DeserializeOwned + Serialize,
    M: serde::de::DeserializeOwned + Serialize + Default,
    E: serde::de::DeserializeOwned + Serialize + Default,
{
    /// Parses an experiment file; errors carry the file, line, key and the expectation.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = read_text(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses experiment text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
    }

    /// The resolved configuration (every default filled in) as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// SHA-256 of the resolved configuration's training-relevant part: a checkpoint may only
    /// be resumed under the same hash. Sampling and evaluation settings are left out, and so
    /// are `[train]`'s `sample_every`, `sample_n` and `init` ([`TrainConfig::for_hash`]).
    pub fn train_hash(&self) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct TrainPart<'a, D, M> {
            seed: u64,
            data: &'a D,
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a M>,
            process: &'a ProcessConfig,
            train: &'a TrainConfig,
            // only for classifiers, so denoiser runs keep the hashes they had
            #[serde(skip_serializing_if = "Option::is_none")]
            classifier: Option<&'a ClassifierConfig>,
        }
        let classifier = self.task == Task::Classifier;
        let train = self.train.for_hash();
        let part = TrainPart {
            seed: self.seed,
            data: &self.data,
            model: (!classifier).then_some(&self.model),
            process: &self.process,
            train: &train,
            classifier: classifier.then_some(&self.classifier),
        };
        let text = toml::to_string(&part)?;
        Ok(format!("{:x}", sha2::Sha256::digest(text.as_bytes())))
    }
}
