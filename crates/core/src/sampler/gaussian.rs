//! The Gaussian family of samplers: short stateless functions that walk a time grid, in the
//! style of k-diffusion's sampling module, each reproducing the matching diffusers scheduler.
//!
//! - [`ddpm`]: ancestral sampling with the "fixed small" posterior variance.
//! - [`ddim`]: DDIM with eta (eta = 0 is deterministic).
//! - [`euler`] and [`heun`]: Karras et al.'s ODE solvers in sigma space, optionally on Karras sigmas.
//! - [`dpmpp_2m`]: DPM-Solver++(2M), multistep second order in lambda = -log sigma.
//!
//! Every sampler sees the network through one wrapper, [`GaussianDenoiser`], that turns its
//! output (epsilon, x0 or v) into a clean-sample estimate and a noise estimate once
//! ([`Denoised`]), with classifier guidance applied there; the sigma-space samplers see any
//! [`SigmaDenoiser`]. Time grids are spelled out by [`Spacing`] (leading, trailing, linspace),
//! as in diffusers. [`sample`] is the Gaussian process's sampling entry point.

use super::{Observer, StepInfo};
use crate::denoiser::{Model, Scorer};
use crate::process::{GaussianProcess, Prediction, SampleJob};
use crate::rng::Rows;
use crate::schedule::{interp, karras_sigmas, linspace, sigma_to_t, Schedule};
use crate::tensor_util::wrap_angles;
use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which sampler to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// DDPM ancestral sampling.
    Ddpm,
    /// DDIM (eta selects the stochasticity).
    Ddim,
    /// Euler's method on the probability-flow ODE in sigma space.
    Euler,
    /// Heun's second-order method (two model calls per step but the last).
    Heun,
    /// DPM-Solver++(2M).
    #[serde(
        rename = "dpmpp_2m",
        alias = "dpmpp-2m",
        alias = "dpm_solver_pp_2m",
        alias = "dpmsolver++"
    )]
    Dpmpp2m,
}

impl SamplerKind {
    /// Names accepted in experiment files and on the command line.
    pub const NAMES: &'static str = "ddpm, ddim, euler, heun, dpmpp_2m";

    /// The sampler's name in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
            SamplerKind::Dpmpp2m => "dpmpp_2m",
        }
    }

    /// Network evaluations for `steps` steps (Heun's last step has no corrector).
    pub fn model_calls(self, steps: usize) -> usize {
        match self {
            SamplerKind::Heun => 2 * steps - 1,
            _ => steps,
        }
    }

    /// Parses a sampler name.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        let v = toml::Value::String(name.to_string());
        v.try_into().map_err(|_| {
            anyhow::anyhow!(
                "unknown sampler `{name}` for the Gaussian process: expected one of {}",
                Self::NAMES
            )
        })
    }

    /// The spacing diffusers uses by default for this scheduler.
    pub fn default_spacing(self) -> Spacing {
        match self {
            SamplerKind::Ddpm | SamplerKind::Ddim => Spacing::Leading,
            _ => Spacing::Linspace,
        }
    }
}

/// How inference timesteps are laid over the training timesteps (Lin et al. 2023, Table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// `0, k, 2k, ...` with k = T // N, reversed: never visits the last training step.
    Leading,
    /// `T - 1, T - 1 - T/N, ...`: starts at the last training step.
    Trailing,
    /// `linspace(0, T - 1, N)` reversed.
    Linspace,
}

/// numpy's `round` (half to even).
fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Descending inference timesteps for `n` steps over `t_max` training steps.
/// `round` rounds linspace values (DDIM, DDPM, DPM-Solver) or keeps them fractional (Euler, Heun).
pub fn timesteps(spacing: Spacing, t_max: usize, n: usize, round: bool) -> Vec<f64> {
    let mut ts: Vec<f64> = match spacing {
        Spacing::Leading => {
            let ratio = (t_max / n) as f64;
            (0..n).map(|i| i as f64 * ratio).collect()
        }
        Spacing::Trailing => {
            let ratio = t_max as f64 / n as f64;
            let mut v = vec![];
            let mut x = t_max as f64;
            let mut k = 0usize;
            while x > 0.0 {
                v.push(round_half_even(x) - 1.0);
                k += 1;
                x = t_max as f64 - k as f64 * ratio;
            }
            v.reverse();
            v
        }
        Spacing::Linspace => linspace(0.0, (t_max - 1) as f64, n)
            .into_iter()
            .map(|v| if round { round_half_even(v) } else { v })
            .collect(),
    };
    ts.reverse();
    ts
}

fn maybe_clip(x0: Tensor, clip: Option<f64>) -> Result<Tensor> {
    match clip {
        Some(c) => x0.clamp(-c, c),
        None => Ok(x0),
    }
}

fn maybe_wrap(x: Tensor, wrap: bool) -> Result<Tensor> {
    if wrap {
        wrap_angles(&x)
    } else {
        Ok(x)
    }
}

/// A network output at one noise level, read as the Gaussian process's estimates of the clean
/// sample and of the noise. With classifier guidance the scorer's gradient `g` (already
/// scaled) shifts both: `eps' = eps - sqrt(1 - ab) g`, `x0' = x0 + (1 - ab) / sqrt(ab) g`
/// (Dhariwal and Nichol 2021, Algorithm 2).
pub struct Denoised {
    out: Tensor,
    x_t: Tensor,
    abar: f64,
    prediction: Prediction,
    grad: Option<Tensor>,
}

impl Denoised {
    /// The clean-sample estimate.
    pub fn x0(&self) -> Result<Tensor> {
        let x0 = self
            .prediction
            .to_x0(&self.out, &self.x_t, &vec![self.abar; self.x_t.dim(0)?])?;
        match &self.grad {
            Some(g) => x0.add(&g.affine((1.0 - self.abar) / self.abar.sqrt(), 0.0)?),
            None => Ok(x0),
        }
    }

    /// The noise estimate.
    pub fn eps(&self) -> Result<Tensor> {
        let eps =
            self.prediction
                .to_eps(&self.out, &self.x_t, &vec![self.abar; self.x_t.dim(0)?])?;
        match &self.grad {
            Some(g) => eps.sub(&g.affine((1.0 - self.abar).sqrt(), 0.0)?),
            None => Ok(eps),
        }
    }
}

/// The network as the Gaussian samplers see it: a [`Model`] whose output is the configured
/// prediction, optionally steered by a scorer.
pub struct GaussianDenoiser<'a> {
    model: &'a dyn Model,
    prediction: Prediction,
    scorer: Option<(&'a dyn Scorer, f64)>,
    scorer_max_sigma: f64,
}

impl<'a> GaussianDenoiser<'a> {
    /// A network that outputs `prediction`.
    pub fn new(model: &'a dyn Model, prediction: Prediction) -> Self {
        Self {
            model,
            prediction,
            scorer: None,
            scorer_max_sigma: f64::INFINITY,
        }
    }

    /// The same, steered by `scorer` at `scale` (classifier guidance) at noise levels
    /// `sqrt((1 - ab) / ab)` up to `max_sigma` ([`crate::sampler::SampleConfig::scorer_max_sigma`]).
    pub fn with_scorer(mut self, scorer: Option<(&'a dyn Scorer, f64)>, max_sigma: f64) -> Self {
        self.scorer = scorer;
        self.scorer_max_sigma = max_sigma;
        self
    }

    /// The estimates at the VP input `x_t` (what the network sees) at training time `t` with
    /// cumulative alpha `abar`.
    pub fn denoise(&self, x_t: &Tensor, t: f64, abar: f64) -> Result<Denoised> {
        self.denoise_in_step(x_t, t, abar, ((1.0 - abar) / abar).sqrt())
    }

    /// The same for a call inside a step that started at noise level `step_sigma` (Heun's
    /// corrector): the scorer acts when the step started within its interval, so a step from
    /// pure noise is not steered by its corrector alone.
    pub fn denoise_in_step(
        &self,
        x_t: &Tensor,
        t: f64,
        abar: f64,
        step_sigma: f64,
    ) -> Result<Denoised> {
        let out = self.model.predict(x_t, t)?;
        let grad = match self.scorer {
            Some((scorer, scale)) if scale != 0.0 && step_sigma <= self.scorer_max_sigma => {
                Some(scorer.grad_log_prob(x_t, t)?.affine(scale, 0.0)?)
            }
            _ => None,
        };
        Ok(Denoised {
            out,
            x_t: x_t.clone(),
            abar,
            prediction: self.prediction,
            grad,
        })
    }
}

/// What the sigma-space samplers ([`euler`], [`heun`]) call: the clean-sample estimate of a
/// VE-scaled `x` at noise level `sigma` (grid time `t`), with the input the network saw.
pub trait SigmaDenoiser {
    /// `(x0, model_input)` at `(sigma, t)`.
    fn x0_at(&self, x: &Tensor, sigma: f64, t: f64) -> Result<(Tensor, Tensor)>;

    /// The same for a call inside a step that started at `step_sigma` (a corrector).
    fn x0_in_step(
        &self,
        x: &Tensor,
        sigma: f64,
        t: f64,
        step_sigma: f64,
    ) -> Result<(Tensor, Tensor)> {
        let _ = step_sigma;
        self.x0_at(x, sigma, t)
    }
}

impl SigmaDenoiser for GaussianDenoiser<'_> {
    /// A discrete-time model sees `x / sqrt(sigma^2 + 1)` (diffusers' `scale_model_input`).
    fn x0_at(&self, x: &Tensor, sigma: f64, t: f64) -> Result<(Tensor, Tensor)> {
        self.x0_in_step(x, sigma, t, sigma)
    }

    fn x0_in_step(
        &self,
        x: &Tensor,
        sigma: f64,
        t: f64,
        step_sigma: f64,
    ) -> Result<(Tensor, Tensor)> {
        let x_in = x.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)?;
        let d = self.denoise_in_step(&x_in, t, 1.0 / (sigma * sigma + 1.0), step_sigma)?;
        Ok((d.x0()?, x_in))
    }
}

/// The DDPM posterior q(x_{prev} | x_t, x0) between two training timesteps, as diffusers'
/// `DDPMScheduler.step`: `(coef_x0, coef_xt, variance)` with the "fixed small" variance
/// clamped to at least 1e-20. `prev < 0` means the final step to clean data.
pub fn ddpm_posterior(s: &Schedule, t: usize, prev: i64) -> (f64, f64, f64) {
    let a_t = s.alphas_cumprod[t];
    let a_prev = s.alpha_bar(prev);
    let beta_t = 1.0 - a_t / a_prev;
    let coef_x0 = a_prev.sqrt() * beta_t / (1.0 - a_t);
    let coef_xt = (a_t / a_prev).sqrt() * (1.0 - a_prev) / (1.0 - a_t);
    let variance = ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20);
    (coef_x0, coef_xt, variance)
}

/// Options shared by the variance-preserving samplers (DDPM, DDIM).
#[derive(Clone, Copy, Debug)]
pub struct VpOptions {
    /// Clamp predicted x0.
    pub clip: Option<f64>,
    /// Wrap onto [-pi, pi) after every step (angles).
    pub wrap: bool,
}

/// DDPM ancestral sampling over descending integer `timesteps`; the previous timestep of each
/// step is the next entry (-1 after the last), as in diffusers.
pub fn ddpm(
    model: &GaussianDenoiser,
    s: &Schedule,
    mut x: Tensor,
    timesteps: &[f64],
    opts: VpOptions,
    noise: &mut Rows,
    obs: Observer,
) -> Result<Tensor> {
    for (i, &tf) in timesteps.iter().enumerate() {
        let t = tf as usize;
        let prev = timesteps.get(i + 1).map(|p| *p as i64).unwrap_or(-1);
        let d = model.denoise(&x, tf, s.alphas_cumprod[t])?;
        let x0 = maybe_clip(d.x0()?, opts.clip)?;
        let (c0, ct, var) = ddpm_posterior(s, t, prev);
        let mean = x0.affine(c0, 0.0)?.add(&x.affine(ct, 0.0)?)?;
        let next = if t > 0 {
            let z = noise.normal(x.dims(), x.dtype(), x.device())?;
            mean.add(&z.affine(var.sqrt(), 0.0)?)?
        } else {
            mean
        };
        let model_input = x;
        x = maybe_wrap(next, opts.wrap)?;
        obs(&StepInfo {
            index: i,
            t: tf,
            x: &x,
            x0: &x0,
            model_input: &model_input,
        });
    }
    Ok(x)
}

/// DDIM (Song et al. 2021) as diffusers' `DDIMScheduler` with `set_alpha_to_one`: the previous
/// timestep is always `t - T // N`, and the direction term uses the unclipped epsilon.
#[allow(clippy::too_many_arguments)]
pub fn ddim(
    model: &GaussianDenoiser,
    s: &Schedule,
    mut x: Tensor,
    timesteps: &[f64],
    eta: f64,
    opts: VpOptions,
    noise: &mut Rows,
    obs: Observer,
) -> Result<Tensor> {
    let stride = (s.len() / timesteps.len()) as i64;
    for (i, &tf) in timesteps.iter().enumerate() {
        let t = tf as usize;
        let prev = t as i64 - stride;
        let a_t = s.alphas_cumprod[t];
        let a_prev = s.alpha_bar(prev);
        let d = model.denoise(&x, tf, a_t)?;
        let x0 = maybe_clip(d.x0()?, opts.clip)?;
        let eps = d.eps()?;
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = eta * variance.sqrt();
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let mut next = x0.affine(a_prev.sqrt(), 0.0)?.add(&eps.affine(dir, 0.0)?)?;
        if eta > 0.0 {
            let z = noise.normal(x.dims(), x.dtype(), x.device())?;
            next = next.add(&z.affine(std, 0.0)?)?;
        }
        let model_input = x;
        x = maybe_wrap(next, opts.wrap)?;
        obs(&StepInfo {
            index: i,
            t: tf,
            x: &x,
            x0: &x0,
            model_input: &model_input,
        });
    }
    Ok(x)
}

/// Euler's method in sigma space (diffusers' `EulerDiscreteScheduler`, no churn).
/// `sigmas` has one more entry than `timesteps` (the final 0).
pub fn euler(
    model: &dyn SigmaDenoiser,
    mut x: Tensor,
    sigmas: &[f64],
    timesteps: &[f64],
    obs: Observer,
) -> Result<Tensor> {
    for (i, &t) in timesteps.iter().enumerate() {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let (x0, x_in) = model.x0_at(&x, s, t)?;
        let d = x.sub(&x0)?.affine(1.0 / s, 0.0)?;
        x = x.add(&d.affine(s_next - s, 0.0)?)?;
        obs(&StepInfo {
            index: i,
            t,
            x: &x,
            x0: &x0,
            model_input: &x_in,
        });
    }
    Ok(x)
}

/// Heun's method in sigma space (diffusers' `HeunDiscreteScheduler`): an Euler predictor, then a
/// corrector at the next sigma that averages the two slopes; the last step, to sigma 0, is plain
/// Euler. Reports every model call (predictors and correctors).
pub fn heun(
    model: &dyn SigmaDenoiser,
    mut x: Tensor,
    sigmas: &[f64],
    timesteps: &[f64],
    obs: Observer,
) -> Result<Tensor> {
    let mut call = 0;
    for (i, &t) in timesteps.iter().enumerate() {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let (x0, x_in) = model.x0_at(&x, s, t)?;
        let d = x.sub(&x0)?.affine(1.0 / s, 0.0)?;
        let x_pred = x.add(&d.affine(s_next - s, 0.0)?)?;
        obs(&StepInfo {
            index: call,
            t,
            x: &x_pred,
            x0: &x0,
            model_input: &x_in,
        });
        call += 1;
        if s_next == 0.0 {
            x = x_pred;
            continue;
        }
        let t_next = timesteps[i + 1];
        let (x0c, x_inc) = model.x0_in_step(&x_pred, s_next, t_next, s)?;
        let d2 = x_pred.sub(&x0c)?.affine(1.0 / s_next, 0.0)?;
        let slope = d.add(&d2)?.affine(0.5, 0.0)?;
        x = x.add(&slope.affine(s_next - s, 0.0)?)?;
        obs(&StepInfo {
            index: call,
            t: t_next,
            x: &x,
            x0: &x0c,
            model_input: &x_inc,
        });
        call += 1;
    }
    Ok(x)
}

/// DPM-Solver++(2M) (Lu et al. 2022) as diffusers' `DPMSolverMultistepScheduler` with
/// `solver_order=2`, midpoint, `final_sigmas_type="zero"`: the first and last steps are first
/// order; the model sees the unscaled x at integer timesteps.
pub fn dpmpp_2m(
    model: &GaussianDenoiser,
    mut x: Tensor,
    sigmas: &[f64],
    timesteps: &[f64],
    obs: Observer,
) -> Result<Tensor> {
    let alpha_sigma = |s: f64| {
        let a = 1.0 / (s * s + 1.0).sqrt();
        (a, s * a)
    };
    let mut prev: Option<(Tensor, f64)> = None; // (x0, lambda) of the previous step
    for (i, &t) in timesteps.iter().enumerate() {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(s);
        let x0 = model.denoise(&x, t, alpha_s * alpha_s)?.x0()?;
        let lambda_s = alpha_s.ln() - sigma_s.ln();
        let model_input = x.clone();
        x = if s_next == 0.0 {
            x0.clone()
        } else {
            let (alpha_t, sigma_t) = alpha_sigma(s_next);
            let lambda_t = alpha_t.ln() - sigma_t.ln();
            let h = lambda_t - lambda_s;
            let coef = -alpha_t * ((-h).exp() - 1.0);
            let base = x.affine(sigma_t / sigma_s, 0.0)?;
            match &prev {
                None => base.add(&x0.affine(coef, 0.0)?)?,
                Some((x0_prev, lambda_prev)) => {
                    let r0 = (lambda_s - lambda_prev) / h;
                    let d1 = x0.sub(x0_prev)?.affine(1.0 / r0, 0.0)?;
                    base.add(&x0.affine(coef, 0.0)?)?
                        .add(&d1.affine(0.5 * coef, 0.0)?)?
                }
            }
        };
        obs(&StepInfo {
            index: i,
            t,
            x: &x,
            x0: &x0,
            model_input: &model_input,
        });
        prev = Some((x0, lambda_s));
    }
    Ok(x)
}

/// The `(sigmas, timesteps)` grid of a sigma-space sampler, with the final sigma 0 appended.
/// DPM-Solver++ uses `n + 1` linspace/leading points minus the last and rounds Karras
/// timesteps; Euler and Heun keep them fractional.
pub fn sigma_grid(
    s: &Schedule,
    kind: SamplerKind,
    spacing: Spacing,
    n: usize,
    karras: bool,
) -> (Vec<f64>, Vec<f64>) {
    let t_max = s.len();
    let train = s.sigmas();
    let dpm = kind == SamplerKind::Dpmpp2m;
    let mut ts = if dpm && spacing != Spacing::Trailing {
        let mut v = timesteps(spacing, t_max, n + 1, true);
        v.pop();
        if spacing == Spacing::Leading {
            // diffusers: step_ratio = T // (n + 1)
            let ratio = (t_max / (n + 1)) as f64;
            v = (1..=n).rev().map(|i| i as f64 * ratio).collect();
        }
        v
    } else {
        timesteps(spacing, t_max, n, dpm)
    };
    let mut sigmas: Vec<f64> = ts.iter().map(|&t| interp(t, &train)).collect();
    if karras {
        let (lo, hi) = (*sigmas.last().unwrap(), sigmas[0]);
        sigmas = karras_sigmas(n, lo, hi, 7.0);
        let log_sigmas: Vec<f64> = train.iter().map(|v| v.ln()).collect();
        ts = sigmas
            .iter()
            .map(|&sg| {
                let t = sigma_to_t(sg, &log_sigmas);
                if dpm {
                    round_half_even(t)
                } else {
                    t
                }
            })
            .collect();
    }
    sigmas.push(0.0);
    (sigmas, ts)
}

/// The noise scale a sampler starts from: 1 for DDPM/DDIM/DPM-Solver (variance preserving),
/// sigma_max for Euler/Heun with linspace or trailing spacing, sqrt(sigma_max^2 + 1) with leading.
pub fn init_noise_sigma(kind: SamplerKind, spacing: Spacing, sigmas: &[f64]) -> f64 {
    match kind {
        SamplerKind::Euler | SamplerKind::Heun => {
            let m = sigmas.iter().cloned().fold(0.0, f64::max);
            if spacing == Spacing::Leading {
                (m * m + 1.0).sqrt()
            } else {
                m
            }
        }
        _ => 1.0,
    }
}

/// Draws a batch with the Gaussian process's configured sampler, starting from standard
/// normal noise drawn per row (scaled to the sampler's initial sigma).
pub fn sample(process: &GaussianProcess, job: SampleJob) -> anyhow::Result<Tensor> {
    let cfg = job.cfg;
    let kind = process.sampler_kind(cfg)?;
    anyhow::ensure!(cfg.steps >= 1, "sample.steps must be at least 1");
    let s = &process.schedule;
    anyhow::ensure!(
        cfg.steps <= s.len(),
        "sample.steps is {} but the schedule has only {} training timesteps",
        cfg.steps,
        s.len()
    );
    anyhow::ensure!(
        job.edit.is_none(),
        "starting from data (editing) is not implemented yet for the Gaussian process's samplers"
    );
    let spacing = cfg.spacing.unwrap_or(kind.default_spacing());
    let wrap = process.config.wrap;
    let model = GaussianDenoiser::new(job.model, process.config.prediction)
        .with_scorer(job.scorer, cfg.scorer_max_sigma);
    let z = match job.noise {
        Some(z) => {
            anyhow::ensure!(
                z.dims() == job.shape,
                "the starting noise has shape {:?}, the batch {:?}",
                z.dims(),
                job.shape
            );
            z.to_dtype(DType::F32)?
        }
        None => job.rows.normal(job.shape, DType::F32, job.device)?,
    };
    let vp = VpOptions {
        clip: cfg.clip,
        wrap,
    };
    let x = match kind {
        SamplerKind::Ddpm | SamplerKind::Ddim => {
            let ts = timesteps(spacing, s.len(), cfg.steps, true);
            let x = maybe_wrap(z, wrap)?;
            if kind == SamplerKind::Ddpm {
                ddpm(&model, s, x, &ts, vp, job.rows, job.obs)?
            } else {
                ddim(&model, s, x, &ts, cfg.eta, vp, job.rows, job.obs)?
            }
        }
        kind => {
            anyhow::ensure!(
                !wrap,
                "sampler `{}` works in sigma space and cannot keep angles wrapped: use ddpm or ddim",
                kind.name()
            );
            let (sigmas, ts) = sigma_grid(s, kind, spacing, cfg.steps, cfg.karras);
            let x = z.affine(init_noise_sigma(kind, spacing, &sigmas), 0.0)?;
            match kind {
                SamplerKind::Euler => euler(&model, x, &sigmas, &ts, job.obs)?,
                SamplerKind::Heun => heun(&model, x, &sigmas, &ts, job.obs)?,
                _ => dpmpp_2m(&model, x, &sigmas, &ts, job.obs)?,
            }
        }
    };
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        let lead = timesteps(Spacing::Leading, 1000, 20, true);
        assert_eq!(lead[0], 950.0);
        assert_eq!(*lead.last().unwrap(), 0.0);
        let trail = timesteps(Spacing::Trailing, 1000, 20, true);
        assert_eq!(trail[0], 999.0);
        assert_eq!(*trail.last().unwrap(), 49.0);
        assert_eq!(trail.len(), 20);
        let lin = timesteps(Spacing::Linspace, 1000, 20, true);
        assert_eq!(&lin[..3], &[999.0, 946.0, 894.0]);
    }

    #[test]
    fn names_round_trip_through_the_parser() {
        for k in [
            SamplerKind::Ddpm,
            SamplerKind::Ddim,
            SamplerKind::Euler,
            SamplerKind::Heun,
            SamplerKind::Dpmpp2m,
        ] {
            assert_eq!(SamplerKind::parse(k.name()).unwrap(), k);
        }
        assert_eq!(SamplerKind::Heun.model_calls(10), 19);
    }

    #[test]
    fn numpy_rounding() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(499.5), 500.0);
        assert_eq!(round_half_even(-0.5), -0.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }

    #[test]
    fn row_noise_ignores_batch_size() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let all = Rows::new(5, 0, 4).normal(&[4, 3], DType::F32, &dev)?;
        let tail = Rows::new(5, 2, 2).normal(&[2, 3], DType::F32, &dev)?;
        assert_eq!(
            all.narrow(0, 2, 2)?.to_vec2::<f32>()?,
            tail.to_vec2::<f32>()?
        );
        Ok(())
    }
}
