//! EDM: the preconditioning, training noise levels and samplers of Karras et al. (2022),
//! "Elucidating the Design Space of Diffusion-Based Generative Models", as self-contained math
//! over sigma space (the variance-exploding parametrisation `x = x0 + sigma n`).
//!
//! - [`EdmConfig`]: the paper's settings (sigma_data 0.5, log-normal training sigmas with
//!   P_mean -1.2 / P_std 1.2, the rho-7 grid from 80 down to 0.002, the churn settings).
//! - [`precondition`] and [`loss_weight`]: Table 1 of the paper (NVlabs/edm's `EDMPrecond` in
//!   `training/networks.py`, k-diffusion's `Denoiser.get_scalings` in `k_diffusion/layers.py`).
//! - [`training_pair`]: the network input `c_in x`, the noise input `c_noise` and the
//!   network-space target `(x0 - c_skip x) / c_out` of k-diffusion's `Denoiser.loss`, with which
//!   EDM's weighted loss `lambda(sigma) |D(x; sigma) - x0|^2` (NVlabs/edm's `EDMLoss` in
//!   `training/loss.py`) becomes a plain MSE of the raw network output, since
//!   `lambda c_out^2 = 1`.
//! - [`denoised`]: `D(x; sigma) = c_skip x + c_out F`, and [`Preconditioned`], which wraps a raw
//!   network into a [`SigmaDenoiser`].
//! - [`heun`] (the paper's Algorithm 2; NVlabs/edm's `edm_sampler` in `generate.py`,
//!   k-diffusion's `sample_heun`) and [`euler_ancestral`] (k-diffusion's
//!   `sample_euler_ancestral` with `get_ancestral_step`), short stateless functions over a
//!   [`SigmaDenoiser`] in the style of [`crate::sampler`].
//!
//! Sampling starts from `x = sigma_max z` with `z ~ N(0, I)` drawn by the caller (see
//! [`initial_sample`]), as `edm_sampler` does (`latents * t_steps[0]`), and walks
//! [`EdmConfig::sigmas`], which ends in 0.
//!
//! Where this differs from the references (none changes the mathematics):
//! - The deterministic samplers consume no random numbers: [`heun`] draws churn noise only on
//!   steps where gamma > 0, and [`euler_ancestral`] draws only when it adds noise (sigma_up > 0
//!   and a next sigma above 0). k-diffusion and `edm_sampler` draw a normal tensor every step
//!   and multiply it by zero when unused.
//! - The training target is computed in the closed form
//!   `(sigma / sigma_data x0 - sigma_data n) / sqrt(sigma^2 + sigma_data^2)`, algebraically
//!   `(x0 - c_skip x) / c_out` with `x = x0 + sigma n`, without the cancellation of
//!   `x0 - c_skip x` at small sigma (c_skip is 1 - 1.6e-5 at sigma = 0.002); and the churn
//!   increment `sqrt(sigma_hat^2 - sigma^2)` as `sigma sqrt(gamma (2 + gamma))`.
//! - The sigma grid is float64 throughout, as in `edm_sampler`; k-diffusion's
//!   `get_sigmas_karras` builds its ramp in float32.
//! - The training sigma of a row comes from one standard-normal draw per row, as in `EDMLoss`;
//!   k-diffusion's `rand_log_normal` draws stratified quantiles instead.

use crate::denoiser::Model;
use crate::rng::Rng;
use crate::rng::Rows;
use crate::sampler::{Observer, StepInfo};
use crate::schedule::karras_sigmas;
use crate::tensor_util::{combine, per_row};
use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// EDM's settings, as they would appear in an experiment's `[process]` table. Every key is
/// optional; the defaults are the paper's (Table 1 and its CIFAR-10 sampler).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdmConfig {
    /// Standard deviation of the training data (the preconditioning's sigma_data).
    pub sigma_data: f64,
    /// Mean of ln(sigma) when drawing training noise levels.
    pub p_mean: f64,
    /// Standard deviation of ln(sigma) when drawing training noise levels.
    pub p_std: f64,
    /// The smallest noise level of the sampling grid.
    pub sigma_min: f64,
    /// The largest noise level of the sampling grid (sampling starts at `sigma_max z`).
    pub sigma_max: f64,
    /// The grid's exponent: sigma^(1/rho) is evenly spaced.
    pub rho: f64,
    /// Heun's stochasticity S_churn (0: deterministic).
    pub s_churn: f64,
    /// Churn only where sigma >= s_tmin.
    pub s_tmin: f64,
    /// Churn only where sigma <= s_tmax; None (the default) is no upper limit, the paper's
    /// infinity. Kept as an Option so that it survives JSON, which has no infinity (TOML's
    /// `s_tmax = inf` is also accepted).
    pub s_tmax: Option<f64>,
    /// Scale of the churn noise S_noise.
    pub s_noise: f64,
}

impl Default for EdmConfig {
    fn default() -> Self {
        Self {
            sigma_data: 0.5,
            p_mean: -1.2,
            p_std: 1.2,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: None,
            s_noise: 1.0,
        }
    }
}

fn ensure_finite(key: &str, v: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        v.is_finite(),
        "process.{key} must be a finite number, got {v}"
    );
    Ok(())
}

fn ensure_positive(key: &str, v: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "process.{key} must be positive, got {v}"
    );
    Ok(())
}

fn ensure_non_negative(key: &str, v: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        v.is_finite() && v >= 0.0,
        "process.{key} must be zero or positive, got {v}"
    );
    Ok(())
}

impl EdmConfig {
    /// Checks every setting; errors name the key (`process.sigma_data must be positive, ...`).
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure_positive("sigma_data", self.sigma_data)?;
        ensure_finite("p_mean", self.p_mean)?;
        ensure_non_negative("p_std", self.p_std)?;
        ensure_positive("sigma_min", self.sigma_min)?;
        ensure_positive("sigma_max", self.sigma_max)?;
        anyhow::ensure!(
            self.sigma_min < self.sigma_max,
            "process.sigma_min must be below process.sigma_max, got {} and {}",
            self.sigma_min,
            self.sigma_max
        );
        ensure_positive("rho", self.rho)?;
        ensure_non_negative("s_churn", self.s_churn)?;
        ensure_non_negative("s_tmin", self.s_tmin)?;
        if let Some(t) = self.s_tmax {
            anyhow::ensure!(
                t >= self.s_tmin,
                "process.s_tmax must be at least process.s_tmin, got {t} and {}",
                self.s_tmin
            );
        }
        ensure_non_negative("s_noise", self.s_noise)?;
        Ok(())
    }

    /// The sampling grid: `n` noise levels from sigma_max down to sigma_min, evenly spaced in
    /// sigma^(1/rho) (the paper's eq. 5), then a final 0, as k-diffusion's `get_sigmas_karras`
    /// and `edm_sampler` build it: `n + 1` values for `n` steps. `n = 0` gives `[0]` (no steps).
    pub fn sigmas(&self, n: usize) -> Vec<f64> {
        let mut s = karras_sigmas(n, self.sigma_min, self.sigma_max, self.rho);
        s.push(0.0);
        s
    }

    /// The churn settings of [`heun`].
    pub fn churn(&self) -> Churn {
        Churn {
            s_churn: self.s_churn,
            s_tmin: self.s_tmin,
            s_tmax: self.s_tmax.unwrap_or(f64::INFINITY),
            s_noise: self.s_noise,
        }
    }

    /// [`precondition`] at this config's sigma_data.
    pub fn precondition(&self, sigma: f64) -> Precond {
        precondition(sigma, self.sigma_data)
    }

    /// [`loss_weight`] at this config's sigma_data.
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        loss_weight(sigma, self.sigma_data)
    }

    /// [`training_sigma`] with this config's P_mean and P_std.
    pub fn training_sigma(&self, normal: f64) -> f64 {
        training_sigma(normal, self.p_mean, self.p_std)
    }

    /// One training noise level per row, each from one standard-normal draw of `rng`.
    pub fn draw_training_sigmas(&self, rng: &mut Rng, rows: usize) -> Vec<f64> {
        (0..rows)
            .map(|_| self.training_sigma(rng.normal()))
            .collect()
    }
}

/// The preconditioning of the paper's Table 1 at one noise level:
/// `D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Precond {
    /// Skip scaling `sigma_data^2 / (sigma^2 + sigma_data^2)`.
    pub c_skip: f64,
    /// Output scaling `sigma sigma_data / sqrt(sigma^2 + sigma_data^2)`.
    pub c_out: f64,
    /// Input scaling `1 / sqrt(sigma^2 + sigma_data^2)`.
    pub c_in: f64,
    /// Noise-level input `ln(sigma) / 4`.
    pub c_noise: f64,
}

/// The preconditioning at noise level `sigma` for data of standard deviation `sigma_data`
/// (NVlabs/edm `EDMPrecond.forward`, k-diffusion `Denoiser.get_scalings`).
pub fn precondition(sigma: f64, sigma_data: f64) -> Precond {
    let sd2 = sigma_data * sigma_data;
    let total = sigma * sigma + sd2;
    let root = total.sqrt();
    Precond {
        c_skip: sd2 / total,
        c_out: sigma * sigma_data / root,
        c_in: 1.0 / root,
        c_noise: sigma.ln() / 4.0,
    }
}

/// EDM's loss weight `lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`
/// (NVlabs/edm `EDMLoss`), which is `1 / c_out^2`: the weighted denoiser loss equals the plain
/// squared error of the raw network output against [`TrainingPair::target`].
pub fn loss_weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

/// A training noise level from one standard-normal draw: `exp(p_mean + p_std normal)`
/// (ln(sigma) ~ N(P_mean, P_std^2), NVlabs/edm `EDMLoss`).
pub fn training_sigma(normal: f64, p_mean: f64, p_std: f64) -> f64 {
    (p_mean + p_std * normal).exp()
}

/// One training batch in network space.
#[derive(Clone, Debug)]
pub struct TrainingPair {
    /// The network's input `c_in x` with `x = x0 + sigma n`, shaped like x0.
    pub input: Tensor,
    /// The network's noise-level input `c_noise = ln(sigma) / 4`, one per row (make a `[B]`
    /// tensor of it with [`crate::tensor_util::timesteps_tensor`]).
    pub c_noise: Vec<f64>,
    /// What the raw network output F should be: `(x0 - c_skip x) / c_out`; the EDM loss is the
    /// unweighted mean squared error of F against it.
    pub target: Tensor,
}

/// The network input, noise input and target for clean `x0` (`[B, ...]`), standard-normal
/// `noise` of the same shape and one noise level per row (`sigmas.len() == B`), for data of
/// standard deviation `sigma_data`. k-diffusion's `Denoiser.loss` forms the same target as
/// `(x0 - c_skip x) / c_out`; here it is the closed form
/// `(sigma / sigma_data x0 - sigma_data n) / sqrt(sigma^2 + sigma_data^2)`, which avoids the
/// cancellation of `x0 - c_skip x` at small sigma.
pub fn training_pair(
    x0: &Tensor,
    noise: &Tensor,
    sigmas: &[f64],
    sigma_data: f64,
) -> Result<TrainingPair> {
    let rows = x0.dim(0)?;
    if sigmas.len() != rows {
        candle_core::bail!(
            "edm::training_pair: {} sigmas for a batch of {rows} rows",
            sigmas.len()
        );
    }
    let sd = sigma_data;
    let roots: Vec<f64> = sigmas.iter().map(|s| (s * s + sd * sd).sqrt()).collect();
    // c_in x = c_in x0 + c_in sigma n
    let in_x0: Vec<f64> = roots.iter().map(|r| 1.0 / r).collect();
    let in_n: Vec<f64> = sigmas.iter().zip(&roots).map(|(s, r)| s / r).collect();
    // (x0 - c_skip x) / c_out = (sigma / sd) / root x0 - sd / root n
    let t_x0: Vec<f64> = sigmas.iter().zip(&roots).map(|(s, r)| s / sd / r).collect();
    let t_n: Vec<f64> = roots.iter().map(|r| -sd / r).collect();
    Ok(TrainingPair {
        input: combine(&in_x0, x0, &in_n, noise)?,
        c_noise: sigmas.iter().map(|s| s.ln() / 4.0).collect(),
        target: combine(&t_x0, x0, &t_n, noise)?,
    })
}

/// The denoiser `D(x; sigma) = c_skip x + c_out F` from the raw network output `raw` (F) at one
/// noise level for the whole batch.
pub fn denoised(raw: &Tensor, x: &Tensor, sigma: f64, sigma_data: f64) -> Result<Tensor> {
    let p = precondition(sigma, sigma_data);
    x.affine(p.c_skip, 0.0)?.add(&raw.affine(p.c_out, 0.0)?)
}

/// [`denoised`] with one noise level per row (`sigmas.len() == B`).
pub fn denoised_rows(raw: &Tensor, x: &Tensor, sigmas: &[f64], sigma_data: f64) -> Result<Tensor> {
    let p: Vec<Precond> = sigmas
        .iter()
        .map(|&s| precondition(s, sigma_data))
        .collect();
    let skip: Vec<f64> = p.iter().map(|p| p.c_skip).collect();
    let out: Vec<f64> = p.iter().map(|p| p.c_out).collect();
    per_row(&skip, x)?
        .broadcast_mul(x)?
        .add(&per_row(&out, raw)?.broadcast_mul(raw)?)
}

/// The clean-sample estimate D(x; sigma) of a noisy batch at noise level sigma (one sigma for
/// the whole batch).
pub trait SigmaDenoiser {
    /// `D(x; sigma)`, shaped like `x`.
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor>;
}

impl<F: Fn(&Tensor, f64) -> Result<Tensor>> SigmaDenoiser for F {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        self(x, sigma)
    }
}

/// A raw network F wrapped into EDM's denoiser: it is called as `predict(c_in x, c_noise)`, so
/// its time input is `ln(sigma) / 4` (about -1.55 to 1.1 on the default grid), and
/// `D = c_skip x + c_out F`. Classifier-free guidance on F (as [`crate::denoiser::Guided`]
/// does) is the same guidance on D, since D is affine in F with a guidance-independent offset.
pub struct Preconditioned<M> {
    /// The raw network.
    pub network: M,
    /// The data's standard deviation.
    pub sigma_data: f64,
}

impl<M: Model + ?Sized> SigmaDenoiser for Preconditioned<&M> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let p = precondition(sigma, self.sigma_data);
        let raw = self.network.predict(&x.affine(p.c_in, 0.0)?, p.c_noise)?;
        denoised(&raw, x, sigma, self.sigma_data)
    }
}

/// The starting point of sampling: `sigma_max z` with `z ~ N(0, I)` of `shape` (`[rows, ...]`)
/// drawn per row from `noise` (so a sample depends only on its index and the seed).
pub fn initial_sample(
    noise: &mut Rows,
    shape: &[usize],
    sigma_max: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    noise.normal(shape, dtype, device)?.affine(sigma_max, 0.0)
}

/// The stochasticity of [`heun`] (the paper's Algorithm 2): on steps with
/// `s_tmin <= sigma <= s_tmax`, noise is raised to `sigma_hat = sigma (1 + gamma)` with
/// `gamma = min(s_churn / N, sqrt(2) - 1)` for N steps, adding fresh noise of scale `s_noise`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// S_churn (0: deterministic).
    pub s_churn: f64,
    /// Lower end of the churned sigma range.
    pub s_tmin: f64,
    /// Upper end of the churned sigma range (infinity: none).
    pub s_tmax: f64,
    /// S_noise.
    pub s_noise: f64,
}

impl Churn {
    /// No churn: the deterministic sampler.
    pub const NONE: Churn = Churn {
        s_churn: 0.0,
        s_tmin: 0.0,
        s_tmax: f64::INFINITY,
        s_noise: 1.0,
    };

    /// gamma at noise level `sigma` on a grid of `steps` steps (0 outside [s_tmin, s_tmax]).
    pub fn gamma(&self, sigma: f64, steps: usize) -> f64 {
        if self.s_churn > 0.0 && self.s_tmin <= sigma && sigma <= self.s_tmax {
            (self.s_churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        }
    }
}

impl Default for Churn {
    fn default() -> Self {
        Self::NONE
    }
}

/// The probability-flow ODE's slope `(x - D) / sigma` (k-diffusion's `to_d`).
fn slope(x: &Tensor, den: &Tensor, sigma: f64) -> Result<Tensor> {
    x.sub(den)?.affine(1.0 / sigma, 0.0)
}

/// EDM's sampler (the paper's Algorithm 2; NVlabs/edm `edm_sampler`, k-diffusion
/// `sample_heun`) over `sigmas` (descending, ending in 0, as [`EdmConfig::sigmas`]), from
/// `x = sigma_max z`. Each step optionally churns (see [`Churn`]; noise from `noise` is drawn
/// only when gamma > 0), takes an Euler step from sigma_hat to the next sigma, and corrects it
/// with the slope there (Heun) unless the next sigma is 0. Reports every denoiser call:
/// `t` is the sigma it was called at, `model_input` the x it was given, `x` the sample after
/// the call (the Euler prediction, then the corrected step), `x0` the denoised estimate.
pub fn heun(
    denoiser: &dyn SigmaDenoiser,
    mut x: Tensor,
    sigmas: &[f64],
    churn: &Churn,
    noise: &mut Rows,
    obs: Observer,
) -> Result<Tensor> {
    let steps = sigmas.len().saturating_sub(1);
    let mut call = 0;
    for i in 0..steps {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let gamma = churn.gamma(sigma, steps);
        let sigma_hat = sigma * (1.0 + gamma);
        if gamma > 0.0 {
            // sqrt(sigma_hat^2 - sigma^2) without the cancellation
            let scale = sigma * (gamma * (2.0 + gamma)).sqrt() * churn.s_noise;
            let z = noise.normal(x.dims(), x.dtype(), x.device())?;
            x = x.add(&z.affine(scale, 0.0)?)?;
        }
        let dt = sigma_next - sigma_hat;
        let den = denoiser.denoise(&x, sigma_hat)?;
        let d = slope(&x, &den, sigma_hat)?;
        let x_euler = x.add(&d.affine(dt, 0.0)?)?;
        obs(&StepInfo {
            index: call,
            t: sigma_hat,
            x: &x_euler,
            x0: &den,
            model_input: &x,
        });
        call += 1;
        if sigma_next == 0.0 {
            x = x_euler;
            continue;
        }
        let den2 = denoiser.denoise(&x_euler, sigma_next)?;
        let d2 = slope(&x_euler, &den2, sigma_next)?;
        let next = x.add(&d.add(&d2)?.affine(0.5 * dt, 0.0)?)?;
        obs(&StepInfo {
            index: call,
            t: sigma_next,
            x: &next,
            x0: &den2,
            model_input: &x_euler,
        });
        call += 1;
        x = next;
    }
    Ok(x)
}

/// k-diffusion's `get_ancestral_step`: the noise level `sigma_down` to step down to
/// deterministically and the fresh noise `sigma_up` to add, so that
/// `sigma_down^2 + sigma_up^2 = sigma_to^2`; `eta` scales the ancestral (DDPM-like) noise,
/// `eta = 0` gives `(sigma_to, 0)`.
pub fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let to2 = sigma_to * sigma_to;
    let from2 = sigma_from * sigma_from;
    let up = (eta * (to2 * (from2 - to2) / from2).sqrt()).min(sigma_to);
    // (the max only guards rounding; k-diffusion has none)
    let down = (to2 - up * up).max(0.0).sqrt();
    (down, up)
}

/// Ancestral sampling with Euler steps (k-diffusion's `sample_euler_ancestral`) over `sigmas`
/// (descending, ending in 0), from `x = sigma_max z`: each step calls the denoiser at sigma,
/// takes an Euler step to [`ancestral_step`]'s sigma_down and adds `s_noise sigma_up` fresh
/// noise from `noise`, except on the last step to 0 (and never when sigma_up is 0, so
/// `eta = 0` is deterministic Euler and draws nothing). Reports each call as [`heun`] does.
pub fn euler_ancestral(
    denoiser: &dyn SigmaDenoiser,
    mut x: Tensor,
    sigmas: &[f64],
    eta: f64,
    s_noise: f64,
    noise: &mut Rows,
    obs: Observer,
) -> Result<Tensor> {
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let den = denoiser.denoise(&x, sigma)?;
        let (down, up) = ancestral_step(sigma, sigma_next, eta);
        let d = slope(&x, &den, sigma)?;
        let mut next = x.add(&d.affine(down - sigma, 0.0)?)?;
        if sigma_next > 0.0 && up > 0.0 {
            let z = noise.normal(x.dims(), x.dtype(), x.device())?;
            next = next.add(&z.affine(s_noise * up, 0.0)?)?;
        }
        obs(&StepInfo {
            index: i,
            t: sigma,
            x: &next,
            x0: &den,
            model_input: &x,
        });
        x = next;
    }
    Ok(x)
}

/// EDM as a forward process (`[process] kind = "edm"`): training draws `ln sigma ~
/// N(p_mean, p_std^2)` per row, feeds the network `c_in x` at time `c_noise`, and regresses its
/// output onto `(x0 - c_skip x) / c_out` with unit weight (EDM's `lambda(sigma) c_out^2 = 1`);
/// sampling runs [`heun`] (default) or [`euler_ancestral`] (`sample.eta`, default 1 when set to
/// 0 is deterministic Euler) on the rho-spaced grid of `sample.steps` sigmas.
///
/// Time coordinate: `c_noise = ln(sigma) / 4`.
#[derive(Clone, Debug)]
pub struct EdmProcess {
    /// Its settings.
    pub config: EdmConfig,
}

impl EdmProcess {
    /// The process a config describes (validated).
    pub fn new(config: EdmConfig) -> anyhow::Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    fn sampler(&self, cfg: &crate::sampler::SampleConfig) -> anyhow::Result<&'static str> {
        match cfg.sampler.as_deref() {
            None | Some("heun") => Ok("heun"),
            Some("euler_ancestral") => Ok("euler_ancestral"),
            Some(other) => anyhow::bail!(
                "unknown sampler `{other}` for the EDM process: expected heun or euler_ancestral"
            ),
        }
    }
}

impl super::Process for EdmProcess {
    fn kind(&self) -> &'static str {
        "edm"
    }

    fn time_coordinate(&self) -> &'static str {
        "c_noise = ln(sigma) / 4, EDM's noise conditioning"
    }

    /// Row `i` draws its training sigma (one normal), then its noise, from its own stream.
    fn corrupt(&self, x0: &Tensor, rows: &mut Rows) -> Result<super::Corrupted> {
        let b = x0.dim(0)?;
        let sigmas: Vec<f64> = (0..b)
            .map(|i| self.config.training_sigma(rows.row(i).normal()))
            .collect();
        let noise = rows.normal(x0.dims(), x0.dtype(), x0.device())?;
        let pair = training_pair(x0, &noise, &sigmas, self.config.sigma_data)?;
        Ok(super::Corrupted {
            x_t: pair.input,
            time: crate::tensor_util::timesteps_tensor(&pair.c_noise, x0.device())?,
            target: pair.target,
            weights: vec![1.0; b],
        })
    }

    fn loss(
        &self,
        output: &Tensor,
        batch: &super::Corrupted,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        super::weighted_mean(&output.sub(&batch.target)?.sqr()?, mask, &batch.weights)
    }

    fn samplers(&self) -> &'static [&'static str] {
        &["heun", "euler_ancestral"]
    }

    fn model_calls(&self, cfg: &crate::sampler::SampleConfig) -> anyhow::Result<usize> {
        anyhow::ensure!(cfg.steps >= 1, "sample.steps must be at least 1");
        Ok(match self.sampler(cfg)? {
            "heun" => 2 * cfg.steps - 1,
            _ => cfg.steps,
        })
    }

    /// Heun without churn adds no noise after the start; Euler ancestral does.
    fn deterministic(&self, cfg: &crate::sampler::SampleConfig) -> anyhow::Result<bool> {
        Ok(self.sampler(cfg)? == "heun" && self.config.s_churn == 0.0)
    }

    fn sample(&self, job: super::SampleJob) -> anyhow::Result<Tensor> {
        let kind = self.sampler(job.cfg)?;
        anyhow::ensure!(job.cfg.steps >= 1, "sample.steps must be at least 1");
        anyhow::ensure!(
            job.scorer.is_none(),
            "classifier guidance by a scorer is implemented for the Gaussian process only"
        );
        anyhow::ensure!(
            job.edit.is_none(),
            "starting from data (editing) is not implemented yet for the EDM process"
        );
        let sigmas = self.config.sigmas(job.cfg.steps);
        let x = match job.noise {
            Some(z) => {
                anyhow::ensure!(
                    z.dims() == job.shape,
                    "the starting noise has shape {:?}, the batch {:?}",
                    z.dims(),
                    job.shape
                );
                z.to_dtype(DType::F32)?.affine(self.config.sigma_max, 0.0)?
            }
            None => initial_sample(
                job.rows,
                job.shape,
                self.config.sigma_max,
                DType::F32,
                job.device,
            )?,
        };
        let d = Preconditioned {
            network: job.model,
            sigma_data: self.config.sigma_data,
        };
        Ok(match kind {
            "heun" => heun(&d, x, &sigmas, &self.config.churn(), job.rows, job.obs)?,
            _ => euler_ancestral(&d, x, &sigmas, 1.0, self.config.s_noise, job.rows, job.obs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: Device = Device::Cpu;

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn randn(seed: u64, shape: &[usize]) -> Tensor {
        Rows::new(seed, 0, shape[0])
            .normal(shape, DType::F64, &DEV)
            .unwrap()
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn defaults_are_the_papers_and_round_trip_through_toml() {
        let c = EdmConfig::default();
        assert_eq!((c.sigma_data, c.p_mean, c.p_std), (0.5, -1.2, 1.2));
        assert_eq!((c.sigma_min, c.sigma_max, c.rho), (0.002, 80.0, 7.0));
        assert_eq!(
            (c.s_churn, c.s_tmin, c.s_tmax, c.s_noise),
            (0.0, 0.0, None, 1.0)
        );
        assert_eq!(c.churn(), Churn::NONE);
        c.validate().unwrap();

        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<EdmConfig>(&text).unwrap(), c, "{text}");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            serde_json::from_str::<EdmConfig>(&json).unwrap(),
            c,
            "{json}"
        );
        let churned = EdmConfig {
            s_churn: 40.0,
            s_tmin: 0.05,
            s_tmax: Some(50.0),
            s_noise: 1.003,
            ..c.clone()
        };
        let text = toml::to_string(&churned).unwrap();
        assert_eq!(
            toml::from_str::<EdmConfig>(&text).unwrap(),
            churned,
            "{text}"
        );

        // every key optional; TOML's inf is accepted for s_tmax
        let parsed: EdmConfig = toml::from_str("sigma_data = 1.0\ns_tmax = inf\n").unwrap();
        assert_eq!(parsed.sigma_data, 1.0);
        assert_eq!(parsed.s_tmax, Some(f64::INFINITY));
        assert_eq!(parsed.churn().s_tmax, f64::INFINITY);
        parsed.validate().unwrap();
        assert!(
            toml::from_str::<EdmConfig>("sigma_dat = 1.0").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let err = |c: EdmConfig| c.validate().unwrap_err().to_string();
        let d = EdmConfig::default;
        assert_eq!(
            err(EdmConfig {
                sigma_data: 0.0,
                ..d()
            }),
            "process.sigma_data must be positive, got 0"
        );
        assert!(err(EdmConfig { p_std: -1.0, ..d() }).starts_with("process.p_std "));
        assert!(err(EdmConfig {
            p_mean: f64::NAN,
            ..d()
        })
        .starts_with("process.p_mean "));
        assert!(err(EdmConfig {
            sigma_min: -0.1,
            ..d()
        })
        .starts_with("process.sigma_min "));
        assert!(err(EdmConfig {
            sigma_max: f64::INFINITY,
            ..d()
        })
        .starts_with("process.sigma_max "));
        assert!(err(EdmConfig {
            sigma_min: 90.0,
            ..d()
        })
        .starts_with("process.sigma_min must be below"));
        assert!(err(EdmConfig { rho: 0.0, ..d() }).starts_with("process.rho "));
        assert!(err(EdmConfig {
            s_churn: -1.0,
            ..d()
        })
        .starts_with("process.s_churn "));
        assert!(err(EdmConfig {
            s_tmin: 1.0,
            s_tmax: Some(0.5),
            ..d()
        })
        .starts_with("process.s_tmax "));
        assert!(err(EdmConfig {
            s_tmax: Some(f64::NAN),
            ..d()
        })
        .starts_with("process.s_tmax "));
        assert!(err(EdmConfig {
            s_noise: -1.0,
            ..d()
        })
        .starts_with("process.s_noise "));
    }

    #[test]
    fn preconditioning_identities() {
        let sd = 0.5;
        for sigma in [0.002, 0.1, 0.5, 1.0, 80.0] {
            let p = precondition(sigma, sd);
            let lam = loss_weight(sigma, sd);
            assert!(
                rel(lam * p.c_out * p.c_out, 1.0) < 1e-14,
                "lambda c_out^2 at {sigma}"
            );
            assert!(rel(p.c_skip, sd * sd * p.c_in * p.c_in) < 1e-14);
            assert!(rel(p.c_out, sigma * sd * p.c_in) < 1e-14);
            // unit variance of the network input and of the target (EDM's Appendix B.6)
            assert!(rel(p.c_in * p.c_in * (sd * sd + sigma * sigma), 1.0) < 1e-14);
            let target_var = ((1.0 - p.c_skip).powi(2) * sd * sd
                + p.c_skip.powi(2) * sigma * sigma)
                / p.c_out.powi(2);
            assert!(
                rel(target_var, 1.0) < 1e-12,
                "target variance {target_var} at {sigma}"
            );
            assert_eq!(p.c_noise, sigma.ln() / 4.0);
        }
        let c = EdmConfig::default();
        assert_eq!(c.training_sigma(0.0), (-1.2f64).exp());
        assert!(rel(c.training_sigma(1.0), 1.0) < 1e-15);
        let drawn = c.draw_training_sigmas(&mut Rng::new(3), 4);
        let mut rng = Rng::new(3);
        let again: Vec<f64> = (0..4).map(|_| c.training_sigma(rng.normal())).collect();
        assert_eq!(drawn, again);
    }

    #[test]
    fn exact_network_recovers_x0_and_the_loss_is_plain_mse() -> Result<()> {
        let sd = 0.5;
        let shape = [4, 3, 2];
        let x0 = randn(1, &shape).affine(sd, 0.0)?;
        let n = randn(2, &shape);
        let sigmas = [0.002, 0.3, 2.0, 80.0];
        let pair = training_pair(&x0, &n, &sigmas, sd)?;
        let sig = per_row(&sigmas, &x0)?;
        let x = x0.add(&sig.broadcast_mul(&n)?)?;

        // the network input, and the target against k-diffusion's (x0 - c_skip x) / c_out
        let p: Vec<Precond> = sigmas.iter().map(|&s| precondition(s, sd)).collect();
        let c_in: Vec<f64> = p.iter().map(|p| p.c_in).collect();
        let c_skip: Vec<f64> = p.iter().map(|p| p.c_skip).collect();
        let inv_out: Vec<f64> = p.iter().map(|p| 1.0 / p.c_out).collect();
        let input = per_row(&c_in, &x)?.broadcast_mul(&x)?;
        let direct = x0.sub(&per_row(&c_skip, &x)?.broadcast_mul(&x)?)?;
        let direct = per_row(&inv_out, &direct)?.broadcast_mul(&direct)?;
        assert!(max_abs_diff(&pair.input, &input) < 1e-14);
        assert!(
            max_abs_diff(&pair.target, &direct) < 1e-11,
            "{}",
            max_abs_diff(&pair.target, &direct)
        );
        assert_eq!(
            pair.c_noise,
            sigmas.iter().map(|s| s.ln() / 4.0).collect::<Vec<_>>()
        );

        // an exact network gives D = x0, per row and (row by row) with one sigma for the batch
        let d = denoised_rows(&pair.target, &x, &sigmas, sd)?;
        assert!(max_abs_diff(&d, &x0) < 1e-12, "{}", max_abs_diff(&d, &x0));
        for (i, &s) in sigmas.iter().enumerate() {
            let di = denoised(&pair.target.narrow(0, i, 1)?, &x.narrow(0, i, 1)?, s, sd)?;
            assert!(max_abs_diff(&di, &x0.narrow(0, i, 1)?) < 1e-12);
        }

        // for any network output F: lambda |D(F) - x0|^2 = |F - target|^2, row by row
        let f = randn(3, &shape);
        let d = denoised_rows(&f, &x, &sigmas, sd)?;
        for (i, &s) in sigmas.iter().enumerate() {
            let weighted = loss_weight(s, sd)
                * d.narrow(0, i, 1)?
                    .sub(&x0.narrow(0, i, 1)?)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
            let plain = f
                .narrow(0, i, 1)?
                .sub(&pair.target.narrow(0, i, 1)?)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
            assert!(
                rel(weighted, plain) < 1e-9,
                "row {i}: {weighted} vs {plain}"
            );
        }

        // the wrapper feeds c_in x and c_noise to the raw network
        let exact = |inp: &Tensor, c_noise: f64| -> Result<Tensor> {
            let sigma = (4.0 * c_noise).exp();
            let p = precondition(sigma, sd);
            // F = (x0 - c_skip x) / c_out with x = inp / c_in and x0 = row 1's x0
            let x = inp.affine(1.0 / p.c_in, 0.0)?;
            x0.narrow(0, 1, 1)?
                .sub(&x.affine(p.c_skip, 0.0)?)?
                .affine(1.0 / p.c_out, 0.0)
        };
        let wrapped = Preconditioned {
            network: &exact,
            sigma_data: sd,
        };
        let d = wrapped.denoise(&x.narrow(0, 1, 1)?, 0.3)?;
        assert!(max_abs_diff(&d, &x0.narrow(0, 1, 1)?) < 1e-12);

        assert!(
            training_pair(&x0, &n, &sigmas[..3], sd).is_err(),
            "one sigma per row"
        );
        Ok(())
    }

    #[test]
    fn grid_end_points_and_length() {
        let c = EdmConfig::default();
        for n in [2, 10, 18, 256] {
            let s = c.sigmas(n);
            assert_eq!(s.len(), n + 1);
            assert!(
                rel(s[0], 80.0) < 1e-14 && rel(s[n - 1], 0.002) < 1e-12,
                "{} {}",
                s[0],
                s[n - 1]
            );
            assert_eq!(s[n], 0.0);
            assert!(s.windows(2).all(|w| w[0] > w[1]), "strictly descending");
        }
        assert_eq!(c.sigmas(1), vec![80.0, 0.0]);
        assert_eq!(c.sigmas(0), vec![0.0]);
    }

    #[test]
    fn ancestral_steps_split_the_next_variance() {
        for (from, to) in [(80.0, 42.4), (1.0, 0.5), (0.02, 0.002)] {
            let (down, up) = ancestral_step(from, to, 1.0);
            assert!(rel(down * down + up * up, to * to) < 1e-12);
            assert!(down < to && up < to);
            // eta = 1 is DDPM-like: sigma_up^2 = sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2
            assert!(rel(up * up, to * to * (from * from - to * to) / (from * from)) < 1e-12);
            assert_eq!(ancestral_step(from, to, 0.0), (to, 0.0));
            assert_eq!(
                ancestral_step(from, to, 100.0),
                (0.0, to),
                "sigma_up is capped at sigma_to"
            );
        }
        assert_eq!(ancestral_step(0.002, 0.0, 1.0), (0.0, 0.0));
    }

    #[test]
    fn churn_gamma() {
        let ch = Churn {
            s_churn: 40.0,
            s_tmin: 0.05,
            s_tmax: 50.0,
            s_noise: 1.0,
        };
        assert_eq!(ch.gamma(1.0, 256), 40.0 / 256.0);
        assert_eq!(ch.gamma(1.0, 18), std::f64::consts::SQRT_2 - 1.0);
        assert_eq!(ch.gamma(0.01, 256), 0.0);
        assert_eq!(ch.gamma(80.0, 256), 0.0);
        assert_eq!(ch.gamma(50.0, 256), 40.0 / 256.0, "the range is inclusive");
        assert_eq!(Churn::NONE.gamma(1.0, 18), 0.0);
    }

    // ---- the exact Gaussian denoiser: data x0 ~ N(0, S^2) per element ----------------------

    const S: f64 = 0.5;

    /// E[x0 | x0 + sigma n = x] for x0 ~ N(0, S^2): x S^2 / (S^2 + sigma^2).
    fn gaussian(x: &Tensor, sigma: f64) -> Result<Tensor> {
        x.affine(S * S / (S * S + sigma * sigma), 0.0)
    }

    /// What a step does to the variance of a linear per-element sampler with this denoiser:
    /// the slope is `x k(sigma)` with `k(sigma) = sigma / (S^2 + sigma^2)`.
    fn k(sigma: f64) -> f64 {
        sigma / (S * S + sigma * sigma)
    }

    /// 16384 elements: the standard error of a variance estimate is sqrt(2 / 16384) = 1.1%.
    const SHAPE: [usize; 2] = [32, 512];

    fn second_moment(t: &Tensor) -> f64 {
        let v = values(t);
        v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64
    }

    fn ignore(_: &StepInfo) {}

    #[test]
    fn deterministic_heun_is_the_ode_solution_and_draws_nothing() -> Result<()> {
        let c = EdmConfig::default();
        for (steps, bias_tol) in [(18, 0.12), (64, 0.01)] {
            let sigmas = c.sigmas(steps);
            let mut noise = Rows::new(11, 0, SHAPE[0]);
            let x_t = initial_sample(&mut noise, &SHAPE, c.sigma_max, DType::F64, &DEV)?;
            let mut calls = vec![];
            let out = heun(
                &gaussian,
                x_t.clone(),
                &sigmas,
                &Churn::NONE,
                &mut noise,
                &mut |i: &StepInfo| {
                    assert_eq!(i.index, calls.len());
                    calls.push(i.t)
                },
            )?;
            // 2N - 1 calls: a predictor at every sigma, a corrector at every sigma but 0
            assert_eq!(calls.len(), 2 * steps - 1);
            assert_eq!(calls[0], 80.0);
            assert_eq!(calls[1], sigmas[1]);
            assert_eq!(*calls.last().unwrap(), sigmas[steps - 1]);
            // no random numbers were used: the stream continues where initial_sample left it
            let mut fresh = Rows::new(11, 0, SHAPE[0]);
            fresh.normal(&SHAPE, DType::F64, &DEV)?;
            let next = fresh.normal(&SHAPE, DType::F64, &DEV)?;
            assert_eq!(
                values(&noise.normal(&SHAPE, DType::F64, &DEV)?),
                values(&next)
            );

            // the sampler is linear per element: every element is scaled by one gain, the
            // product of the Heun steps' gains on this ODE
            let mut gain = 1.0;
            for w in sigmas.windows(2) {
                let (a, b) = (w[0], w[1]);
                let euler = 1.0 + (b - a) * k(a);
                gain *= if b == 0.0 {
                    euler
                } else {
                    1.0 + (b - a) * 0.5 * (k(a) + euler * k(b))
                };
            }
            let expected = x_t.affine(gain, 0.0)?;
            assert!(
                max_abs_diff(&out, &expected) < 1e-12,
                "{steps} steps: {}",
                max_abs_diff(&out, &expected)
            );

            // the variance: the exact ODE maps sigma_max^2 to S^2 sigma_max^2 / (S^2 + sigma_max^2);
            // normalise by the drawn x_T's own second moment so only discretisation is left
            // (18 steps: +11.4%, 64 steps: +0.73%)
            let var =
                second_moment(&out) / second_moment(&x_t) * (S * S + c.sigma_max * c.sigma_max);
            eprintln!(
                "heun {steps} steps: gain {gain:.6}, normalised variance {var:.5} (S^2 = {})",
                S * S
            );
            assert!(rel(var, S * S) < bias_tol, "{steps} steps: variance {var}");
        }
        Ok(())
    }

    #[test]
    fn euler_ancestral_draws_the_gaussian() -> Result<()> {
        // first order with big ancestral jumps: 18 steps are 46% off; 1000 steps -1.2%
        let c = EdmConfig::default();
        let steps = 1000;
        let sigmas = c.sigmas(steps);
        let mut noise = Rows::new(12, 0, SHAPE[0]);
        let x_t = initial_sample(&mut noise, &SHAPE, c.sigma_max, DType::F64, &DEV)?;
        let mut calls = 0;
        let out = euler_ancestral(
            &gaussian,
            x_t,
            &sigmas,
            1.0,
            1.0,
            &mut noise,
            &mut |i: &StepInfo| {
                assert_eq!(i.index, calls);
                assert_eq!(i.t, sigmas[calls]);
                calls += 1
            },
        )?;
        assert_eq!(calls, steps);

        // the variance the discretised sampler should reach
        let mut predicted = c.sigma_max * c.sigma_max;
        for w in sigmas.windows(2) {
            let (down, up) = ancestral_step(w[0], w[1], 1.0);
            predicted = (1.0 + (down - w[0]) * k(w[0])).powi(2) * predicted
                + if w[1] > 0.0 { up * up } else { 0.0 };
        }
        assert!(rel(predicted, S * S) < 0.013, "predicted {predicted}");
        let var = second_moment(&out);
        eprintln!(
            "euler_ancestral {steps} steps: variance {var:.5}, predicted {predicted:.5}, S^2 = {}",
            S * S
        );
        // 4 standard errors of the estimate (sqrt(2 / 16384) = 1.1%), plus the -1.2% bias
        assert!(
            rel(var, predicted) < 0.045,
            "variance {var} vs predicted {predicted}"
        );
        assert!(rel(var, S * S) < 0.06, "variance {var} vs {}", S * S);

        // eta = 0 is deterministic Euler and draws nothing
        let mut a = Rows::new(13, 0, 2);
        let x = Tensor::new(&[[80.0f64, -40.0], [8.0, 1.0]], &DEV)?;
        let det = euler_ancestral(
            &gaussian,
            x.clone(),
            &c.sigmas(5),
            0.0,
            1.0,
            &mut a,
            &mut ignore,
        )?;
        let mut b = Rows::new(13, 0, 2);
        assert_eq!(
            values(&a.normal(&[2, 3], DType::F64, &DEV)?),
            values(&b.normal(&[2, 3], DType::F64, &DEV)?)
        );
        let mut gain = 1.0;
        for w in c.sigmas(5).windows(2) {
            gain *= 1.0 + (w[1] - w[0]) * k(w[0]);
        }
        assert!(max_abs_diff(&det, &x.affine(gain, 0.0)?) < 1e-12);
        Ok(())
    }

    #[test]
    fn churned_heun_stays_correct() -> Result<()> {
        // EDM's ImageNet-64 settings (S_churn 40, S_min 0.05, S_max 50) with S_noise 1 over
        // 256 steps: discretisation +0.39%
        let c = EdmConfig {
            s_churn: 40.0,
            s_tmin: 0.05,
            s_tmax: Some(50.0),
            ..EdmConfig::default()
        };
        c.validate().unwrap();
        let ch = c.churn();
        let steps = 256;
        let sigmas = c.sigmas(steps);
        let mut noise = Rows::new(14, 0, SHAPE[0]);
        let x_t = initial_sample(&mut noise, &SHAPE, c.sigma_max, DType::F64, &DEV)?;
        let mut ts = vec![];
        let out = heun(
            &gaussian,
            x_t,
            &sigmas,
            &ch,
            &mut noise,
            &mut |i: &StepInfo| ts.push(i.t),
        )?;
        assert_eq!(ts.len(), 2 * steps - 1);
        let gamma = 40.0 / 256.0;
        assert_eq!(
            ts[0], 80.0,
            "80 is above s_tmax: no churn on the first step"
        );
        let churned = sigmas.iter().position(|&s| s <= 50.0).unwrap();
        assert_eq!(
            ts[2 * churned],
            sigmas[churned] * (1.0 + gamma),
            "predictor at sigma_hat"
        );

        let mut predicted = c.sigma_max * c.sigma_max;
        for w in sigmas.windows(2) {
            let (a, b) = (w[0], w[1]);
            let g = ch.gamma(a, steps);
            let ah = a * (1.0 + g);
            predicted += ah * ah - a * a;
            let euler = 1.0 + (b - ah) * k(ah);
            let gain = if b == 0.0 {
                euler
            } else {
                1.0 + (b - ah) * 0.5 * (k(ah) + euler * k(b))
            };
            predicted *= gain * gain;
        }
        assert!(rel(predicted, S * S) < 0.005, "predicted {predicted}");
        let var = second_moment(&out);
        eprintln!(
            "churned heun {steps} steps: variance {var:.5}, predicted {predicted:.5}, S^2 = {}",
            S * S
        );
        // 4 standard errors of the estimate plus the bias
        assert!(
            rel(var, predicted) < 0.045,
            "variance {var} vs predicted {predicted}"
        );
        assert!(rel(var, S * S) < 0.05, "variance {var} vs {}", S * S);
        Ok(())
    }
}
