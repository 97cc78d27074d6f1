//! Samplers, grouped by the process they serve, each a short stateless function over a
//! denoiser in the style of k-diffusion's sampling module:
//!
//! - [`gaussian`]: DDPM, DDIM, Euler, Heun and DPM-Solver++(2M) for the Gaussian process,
//!   each reproducing the matching diffusers scheduler;
//! - [`masked`]: MDLM's ancestral sampler for the masked process.
//!
//! A process picks among its own samplers ([`crate::process::Process::sample`]); this module
//! holds what they share: the `[sample]` settings and the per-step report.

pub mod gaussian;
pub mod masked;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use gaussian::{SamplerKind, Spacing};

/// A sampling run's settings, as in an experiment's `[sample]` table. `sampler`, `spacing`,
/// `eta`, `karras` and `clip` are read by the processes that use them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// Which sampler, by name (the process's default when absent): the Gaussian process has
    /// ddpm, ddim, euler, heun, dpmpp_2m; the masked process ancestral.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    /// Number of sampling steps (Heun makes about twice as many model calls).
    pub steps: usize,
    /// Timestep spacing of the Gaussian samplers; None takes the sampler's diffusers default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spacing: Option<Spacing>,
    /// DDIM's eta (0 deterministic, 1 DDPM-like).
    pub eta: f64,
    /// Use Karras sigmas (rho 7) with euler, heun and dpmpp_2m.
    pub karras: bool,
    /// Clamp the predicted x0 to [-clip, clip] (ddpm, ddim); None leaves it unclipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<f64>,
    /// Classifier-free guidance: the weight of each positive condition (1 = plain conditional).
    pub guidance: f64,
    /// The weight of each negative condition (`--not`); None takes `guidance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_guidance: Option<f64>,
    /// Samples per batch (memory only: results do not depend on it).
    pub batch_size: usize,
    /// Samples to draw by default.
    pub n: usize,
    /// Classifier guidance (`--scorer`) acts only at noise levels `sigma = sqrt((1 - ab) / ab)`
    /// up to this value (guidance in a limited interval, Kynkäänniemi et al. 2024). Above it
    /// the shift `(1 - ab) / sqrt(ab) * grad` amplifies a learned classifier's gradient, which
    /// does not vanish at pure noise as the true one does, far past the data's scale (a
    /// 20,000-fold factor at the cosine schedule's last timestep, ab = 2.4e-9). Default 20.
    pub scorer_max_sigma: f64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            sampler: None,
            steps: 50,
            spacing: None,
            eta: 0.0,
            karras: false,
            clip: None,
            guidance: 1.0,
            not_guidance: None,
            batch_size: 256,
            n: 1000,
            scorer_max_sigma: 20.0,
        }
    }
}

impl SampleConfig {
    /// The sampler's name for folder names and reports (`default` when the process picks).
    pub fn sampler_name(&self) -> &str {
        self.sampler.as_deref().unwrap_or("default")
    }
}

/// What a sampler reports after each model call (for progress bars, tests and trajectories).
pub struct StepInfo<'a> {
    /// Model-call index, from 0.
    pub index: usize,
    /// The time the model was called at (in the process's coordinate).
    pub t: f64,
    /// The sample after this step.
    pub x: &'a Tensor,
    /// The model's clean-sample estimate at this step (after any clipping).
    pub x0: &'a Tensor,
    /// The input the model saw (sigma-space samplers scale it).
    pub model_input: &'a Tensor,
}

/// A callback after each model call.
pub type Observer<'a> = &'a mut dyn FnMut(&StepInfo);
