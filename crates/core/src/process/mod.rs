//! Forward processes: how clean data is corrupted in training, what the network is asked to
//! predict, and how samples are drawn back (each process owns its samplers).
//!
//! - [`gaussian::GaussianProcess`]: the variance-preserving process of DDPM (epsilon, x0 or v
//!   prediction, min-SNR weighting, offset noise, an optional wrap onto the torus for angles);
//!   samplers DDPM, DDIM, Euler, Heun, DPM-Solver++(2M).
//! - [`edm::EdmProcess`]: EDM (Karras et al. 2022): sigma-space preconditioning, log-normal
//!   training sigmas, Heun and Euler-ancestral samplers on the rho = 7 grid.
//! - [`masked::MaskedProcess`]: masked (absorbing-state) discrete diffusion over tokens in
//!   continuous time (MDLM, Sahoo et al. 2024); its ancestral sampler.
//!
//! Each process defines its own time coordinate, the float per row a denoiser receives
//! ([`Process::time_coordinate`]). The `[process]` table of an experiment picks one with
//! `kind` (default `"gaussian"`).

pub mod edm;
pub mod gaussian;
pub mod masked;

use crate::denoiser::{Model, Scorer};
use crate::domain::DataInfo;
use crate::rng::Rows;
use crate::sampler::{Observer, SampleConfig};
use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

pub use edm::{EdmConfig, EdmProcess};
pub use gaussian::{GaussianConfig, GaussianProcess, LossKind, LossWeighting, Prediction};
pub use masked::{MaskSchedule, MaskedConfig, MaskedProcess};

/// One corrupted training batch.
#[derive(Debug, Clone)]
pub struct Corrupted {
    /// The network's input: the noised batch (float32, or u32 tokens).
    pub x_t: Tensor,
    /// `[B]` float32: each row's time in the process's coordinate, the network's time input.
    pub time: Tensor,
    /// What the network should output (float32, or the clean u32 tokens).
    pub target: Tensor,
    /// Per-row loss weights.
    pub weights: Vec<f64>,
}

/// Starting a sampling run from data instead of noise (editing): at `strength` in (0, 1] of
/// the way from clean to pure noise, optionally keeping the positions where `keep` is 1 equal
/// to `x0` (inpainting, motif scaffolding, infill). The seam for editing; processes that do not
/// edit yet say so with an error.
#[derive(Clone, Debug)]
pub struct Edit {
    /// The data to start from, `[B, ...]` like the samples.
    pub x0: Tensor,
    /// How far towards noise to go before denoising (1 = from pure noise).
    pub strength: f64,
    /// 1 where the sample must keep `x0`, 0 where it is generated; None keeps nothing.
    pub keep: Option<Tensor>,
}

/// Everything a process needs to draw one batch of samples.
pub struct SampleJob<'a> {
    /// The `[sample]` settings.
    pub cfg: &'a SampleConfig,
    /// The network (already bound to the batch's conditions and padding, with guidance).
    pub model: &'a dyn Model,
    /// One random stream per row (starting noise, then per-step noise).
    pub rows: &'a mut Rows,
    /// `[B, ...]` shape of the batch (padded to the longest row for variable lengths).
    pub shape: &'a [usize],
    /// Where tensors live.
    pub device: &'a Device,
    /// Classifier guidance: a scorer and its scale.
    pub scorer: Option<(&'a dyn Scorer, f64)>,
    /// Start from data instead of noise.
    pub edit: Option<&'a Edit>,
    /// The starting noise, `[B, ...]` standard normal, instead of each row's first draw from
    /// `rows` (seed interpolation); None draws it. Processes that start from no noise (the
    /// masked process starts fully masked) reject it.
    pub noise: Option<&'a Tensor>,
    /// Called after each network evaluation.
    pub obs: Observer<'a>,
}

/// A forward process, used in both directions: by the trainer ([`Process::corrupt`],
/// [`Process::loss`]) and by sampling ([`Process::sample`]).
pub trait Process {
    /// The process's name in experiment files (`[process] kind`).
    fn kind(&self) -> &'static str;

    /// What the `[B]` time input of the denoiser means for this process.
    fn time_coordinate(&self) -> &'static str;

    /// Draws a time and noise per row (from that row's stream) and corrupts `x0` (`[B, ...]`).
    fn corrupt(&self, x0: &Tensor, rows: &mut Rows) -> Result<Corrupted>;

    /// The scalar training loss of a network output against a corrupted batch. `mask`, when
    /// given, broadcasts against the element-wise loss (1 at real positions, 0 at padding), and
    /// padded positions do not count.
    fn loss(&self, output: &Tensor, batch: &Corrupted, mask: Option<&Tensor>) -> Result<Tensor>;

    /// The names of the samplers this process offers, the default first.
    fn samplers(&self) -> &'static [&'static str];

    /// Network evaluations one batch takes with these settings (for progress bars).
    fn model_calls(&self, cfg: &SampleConfig) -> anyhow::Result<usize>;

    /// Whether sampling with these settings is a deterministic function of the starting noise
    /// (no fresh noise after the first draw): what seed interpolation needs.
    fn deterministic(&self, cfg: &SampleConfig) -> anyhow::Result<bool> {
        let _ = cfg;
        Ok(false)
    }

    /// Draws one batch of samples.
    fn sample(&self, job: SampleJob) -> anyhow::Result<Tensor>;

    /// An upper bound on the negative log-likelihood of `x0` under the model, in nats per real
    /// position, one value per row, estimated with `draws` times per row from `rows`; None
    /// for processes without one. `net` maps `(x_t, time)` to the network output.
    fn nll_bound(
        &self,
        net: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        x0: &Tensor,
        mask: Option<&Tensor>,
        rows: &mut Rows,
        draws: usize,
    ) -> Result<Option<Vec<f64>>> {
        let _ = (net, x0, mask, rows, draws);
        Ok(None)
    }
}

/// The `[process]` table: which process, and its settings. Without `kind` it is the Gaussian
/// process, so older experiment files keep their meaning.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcessConfig {
    /// The variance-preserving Gaussian process.
    Gaussian(GaussianConfig),
    /// Masked (absorbing-state) discrete diffusion over tokens.
    Masked(MaskedConfig),
    /// EDM (Karras et al. 2022): sigma-space preconditioning, log-normal training sigmas.
    Edm(EdmConfig),
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig::Gaussian(GaussianConfig::default())
    }
}

/// The process kinds accepted in experiment files.
pub const KINDS: &str = "gaussian, edm, masked";

impl<'de> Deserialize<'de> for ProcessConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.remove("kind") {
            None => "gaussian".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "process.kind must be a string ({KINDS}), got {v}"
                )))
            }
        };
        match kind.as_str() {
            "gaussian" => GaussianConfig::from_table(table)
                .map(ProcessConfig::Gaussian)
                .map_err(D::Error::custom),
            "masked" => MaskedConfig::deserialize(toml::Value::Table(table))
                .map(ProcessConfig::Masked)
                .map_err(|e| D::Error::custom(format!("[process] (kind = \"masked\"): {e}"))),
            "edm" => EdmConfig::deserialize(toml::Value::Table(table))
                .map(ProcessConfig::Edm)
                .map_err(|e| D::Error::custom(format!("[process] (kind = \"edm\"): {e}"))),
            other => Err(D::Error::custom(format!(
                "unknown process.kind `{other}`: expected one of {KINDS}"
            ))),
        }
    }
}

impl ProcessConfig {
    /// Builds the process for data described by `info`; errors name the setting at fault.
    pub fn build(&self, info: &DataInfo) -> anyhow::Result<Box<dyn Process>> {
        match self {
            ProcessConfig::Gaussian(c) => {
                anyhow::ensure!(
                    info.vocab.is_none(),
                    "the data is tokens (vocabulary {}), which the Gaussian process cannot noise: use [process] kind = \"masked\"",
                    info.vocab.unwrap_or(0)
                );
                Ok(Box::new(GaussianProcess::new(c.clone())?))
            }
            ProcessConfig::Edm(c) => {
                anyhow::ensure!(
                    info.vocab.is_none(),
                    "the data is tokens, which EDM cannot noise: use [process] kind = \"masked\""
                );
                Ok(Box::new(EdmProcess::new(c.clone())?))
            }
            ProcessConfig::Masked(c) => {
                let vocab = info.vocab.ok_or_else(|| {
                    anyhow::anyhow!("[process] kind = \"masked\" needs token data, but this data is continuous (shape {:?})", info.item_shape)
                })?;
                Ok(Box::new(MaskedProcess::new(c.clone(), vocab)?))
            }
        }
    }

    /// The Gaussian settings, when this is the Gaussian process.
    pub fn gaussian(&self) -> Option<&GaussianConfig> {
        match self {
            ProcessConfig::Gaussian(c) => Some(c),
            _ => None,
        }
    }
}

/// Per-row loss of an element-wise loss tensor `[B, ...]`, averaged over real positions
/// (`mask` broadcasting against it, or every position), then weighted per row and averaged over
/// rows.
pub fn weighted_mean(
    elementwise: &Tensor,
    mask: Option<&Tensor>,
    weights: &[f64],
) -> Result<Tensor> {
    let b = elementwise.dim(0)?;
    let per_row_loss = match mask {
        None => elementwise.reshape((b, ()))?.mean(candle_core::D::Minus1)?,
        Some(m) => {
            let m = m
                .to_dtype(elementwise.dtype())?
                .broadcast_as(elementwise.shape())?;
            let sum = elementwise
                .mul(&m)?
                .reshape((b, ()))?
                .sum(candle_core::D::Minus1)?;
            let count = m
                .reshape((b, ()))?
                .sum(candle_core::D::Minus1)?
                .clamp(1.0, f64::MAX)?;
            sum.div(&count)?
        }
    };
    let w = crate::tensor_util::per_row(weights, &per_row_loss)?;
    per_row_loss.mul(&w)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        process: ProcessConfig,
    }

    #[test]
    fn kind_defaults_to_gaussian_and_unknown_keys_are_errors() {
        let h: Holder =
            toml::from_str("[process]\nschedule = \"cosine\"\nprediction = \"v\"").unwrap();
        let g = h.process.gaussian().unwrap();
        assert_eq!(g.schedule.schedule, crate::schedule::BetaSchedule::Cosine);
        assert_eq!(g.prediction, Prediction::V);
        let e = toml::from_str::<Holder>("[process]\nschedual = \"cosine\"")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("schedual") && e.contains("timesteps") && e.contains("prediction"),
            "{e}"
        );
        let h: Holder =
            toml::from_str("[process]\nkind = \"masked\"\nschedule = \"cosine\"").unwrap();
        assert!(matches!(
            h.process,
            ProcessConfig::Masked(MaskedConfig {
                schedule: MaskSchedule::Cosine,
                ..
            })
        ));
        let e = toml::from_str::<Holder>("[process]\nkind = \"masked\"\nprediction = \"v\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("prediction"), "{e}");
        let e = toml::from_str::<Holder>("[process]\nkind = \"vae\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("gaussian, edm, masked"), "{e}");
        let h: Holder = toml::from_str("[process]\nkind = \"edm\"\nsigma_data = 0.6").unwrap();
        assert!(
            matches!(h.process, ProcessConfig::Edm(EdmConfig { sigma_data, .. }) if sigma_data == 0.6)
        );
        // the resolved form round-trips, with its kind written out
        let text = toml::to_string(&Holder2 {
            process: ProcessConfig::default(),
        })
        .unwrap();
        assert!(text.contains("kind = \"gaussian\""), "{text}");
        let back: Holder = toml::from_str(&text).unwrap();
        assert_eq!(back.process, ProcessConfig::default());
    }

    #[derive(Serialize)]
    struct Holder2 {
        process: ProcessConfig,
    }
}
