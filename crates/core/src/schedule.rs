//! Noise schedules: the discrete tables of betas and cumulative alphas that every process and
//! sampler reads, built exactly as diffusers builds them (so presets and reference vectors agree),
//! plus Karras sigmas and the interpolation helpers the sigma-space samplers need.
//!
//! Everything here is float64; tensors are only touched by processes and samplers.

use serde::{Deserialize, Serialize};

/// How the betas of a discrete schedule are laid out over the training timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `betas = linspace(beta_start, beta_end, T)` (DDPM).
    Linear,
    /// `betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (Stable Diffusion).
    ScaledLinear,
    /// Glide's cosine schedule (`squaredcos_cap_v2`): `alpha_bar(s) = cos^2((s + 0.008)/1.008 * pi/2)`,
    /// betas capped at 0.999. `beta_start`/`beta_end` are ignored.
    #[serde(alias = "squaredcos_cap_v2")]
    Cosine,
    /// `betas = sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start` (GeoDiff).
    Sigmoid,
}

impl BetaSchedule {
    /// Names accepted in experiment files.
    pub const NAMES: &'static str =
        "linear, scaled_linear, cosine (alias squaredcos_cap_v2), sigmoid";
}

/// A schedule's settings, as written in an experiment's `[process]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Beta layout.
    #[serde(default = "default_schedule")]
    pub schedule: BetaSchedule,
    /// Number of training timesteps T.
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// First beta (linear, scaled_linear, sigmoid).
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// Last beta (linear, scaled_linear, sigmoid).
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// Rescale to zero terminal SNR (Lin et al. 2023, Algorithm 1).
    #[serde(default)]
    pub zero_terminal_snr: bool,
}

fn default_schedule() -> BetaSchedule {
    BetaSchedule::Linear
}
fn default_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            timesteps: default_timesteps(),
            beta_start: default_beta_start(),
            beta_end: default_beta_end(),
            zero_terminal_snr: false,
        }
    }
}

/// A discrete noise schedule over training timesteps `t = 0..T-1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// `betas[t]`.
    pub betas: Vec<f64>,
    /// `alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])`, written alpha_bar(t).
    pub alphas_cumprod: Vec<f64>,
}

/// `linspace(a, b, n)` in float64, with the end points exact.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            (0..n)
                .map(|i| if i == n - 1 { b } else { a + step * i as f64 })
                .collect()
        }
    }
}

fn cumprod_one_minus(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

impl Schedule {
    /// Builds the schedule a config describes; errors name the offending setting.
    pub fn from_config(c: &ScheduleConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            c.timesteps >= 2,
            "process.timesteps must be at least 2, got {}",
            c.timesteps
        );
        if c.schedule != BetaSchedule::Cosine {
            anyhow::ensure!(
                c.beta_start > 0.0 && c.beta_end > 0.0 && c.beta_start < 1.0 && c.beta_end < 1.0,
                "process.beta_start and process.beta_end must lie in (0, 1), got {} and {}",
                c.beta_start,
                c.beta_end
            );
        }
        let s = Self::new(c.schedule, c.timesteps, c.beta_start, c.beta_end);
        Ok(if c.zero_terminal_snr {
            s.rescaled_zero_terminal_snr()
        } else {
            s
        })
    }

    /// Builds a schedule of `t_max` steps.
    pub fn new(kind: BetaSchedule, t_max: usize, beta_start: f64, beta_end: f64) -> Self {
        let betas = match kind {
            BetaSchedule::Linear => linspace(beta_start, beta_end, t_max),
            BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), t_max)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::Cosine => {
                let abar = |s: f64| {
                    ((s + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                        .cos()
                        .powi(2)
                };
                (0..t_max)
                    .map(|i| {
                        let t1 = i as f64 / t_max as f64;
                        let t2 = (i + 1) as f64 / t_max as f64;
                        (1.0 - abar(t2) / abar(t1)).min(0.999)
                    })
                    .collect()
            }
            BetaSchedule::Sigmoid => linspace(-6.0, 6.0, t_max)
                .into_iter()
                .map(|x| 1.0 / (1.0 + (-x).exp()) * (beta_end - beta_start) + beta_start)
                .collect(),
        };
        Self::from_betas(betas)
    }

    /// A schedule from explicit betas.
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let alphas_cumprod = cumprod_one_minus(&betas);
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// Rescales to zero terminal SNR (Lin et al. 2023, Algorithm 1), as diffusers'
    /// `rescale_zero_terminal_snr`: the last alpha_bar becomes exactly 0 and the first is kept.
    pub fn rescaled_zero_terminal_snr(&self) -> Self {
        let sqrt_ab: Vec<f64> = self.alphas_cumprod.iter().map(|a| a.sqrt()).collect();
        let first = sqrt_ab[0];
        let last = *sqrt_ab.last().unwrap();
        let scale = first / (first - last);
        let ab: Vec<f64> = sqrt_ab
            .iter()
            .map(|s| ((s - last) * scale).powi(2))
            .collect();
        let mut betas = Vec::with_capacity(ab.len());
        betas.push(1.0 - ab[0]);
        for i in 1..ab.len() {
            betas.push(1.0 - ab[i] / ab[i - 1]);
        }
        Self::from_betas(betas)
    }

    /// Number of training timesteps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// alpha_bar(t) at an integer timestep; `t < 0` means "before the first step" (1.0).
    pub fn alpha_bar(&self, t: i64) -> f64 {
        if t < 0 {
            1.0
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    /// Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at timestep t.
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        a / (1.0 - a)
    }

    /// The VE noise level sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) for every training step.
    /// A zero terminal alpha_bar (zero-SNR schedules) counts as 2^-24, as in diffusers'
    /// sigma-space schedulers, so sigma_max stays finite.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|&a| {
                let a = if a == 0.0 { 2f64.powi(-24) } else { a };
                ((1.0 - a) / a).sqrt()
            })
            .collect()
    }

    /// The fractional timestep whose log-sigma matches `sigma`, interpolating linearly in
    /// log-sigma between neighbouring training steps (diffusers' `_sigma_to_t`).
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigmas: Vec<f64> = self.sigmas().iter().map(|s| s.ln()).collect();
        sigma_to_t(sigma, &log_sigmas)
    }
}

/// numpy `interp(x, arange(len(ys)), ys)`: linear interpolation, clamped at the ends.
pub fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last];
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    ys[i] + (ys[i + 1] - ys[i]) * w
}

/// diffusers' `_sigma_to_t` against a table of ascending log-sigmas.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // last index whose log-sigma is <= log_sigma (0 when none), clipped to len - 2
    let mut low = 0usize;
    for (i, ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls >= 0.0 {
            low = i;
        }
    }
    let low = low.min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Karras et al. (2022) sigmas: `n` values from `sigma_max` down to `sigma_min`, evenly spaced in
/// `sigma^(1/rho)`. No trailing zero is appended.
pub fn karras_sigmas(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_float_not_integer_division() {
        let s = Schedule::new(BetaSchedule::Cosine, 1000, 0.0, 0.0);
        assert!(s.betas.iter().all(|b| *b > 0.0 && *b <= 0.999));
        assert!((s.betas[999] - 0.999).abs() < 1e-12);
    }

    #[test]
    fn zero_snr_ends_at_zero() {
        let s = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).rescaled_zero_terminal_snr();
        assert_eq!(s.alphas_cumprod[999], 0.0);
        assert_eq!(s.betas[999], 1.0);
    }

    #[test]
    fn sigmoid_is_monotone_between_bounds() {
        let s = Schedule::new(BetaSchedule::Sigmoid, 100, 1e-4, 0.02);
        assert!(s.betas.windows(2).all(|w| w[0] < w[1]));
        assert!(s.betas[0] > 1e-4 && s.betas[99] < 0.02);
    }

    #[test]
    fn karras_end_points() {
        let k = karras_sigmas(10, 0.002, 80.0, 7.0);
        assert!((k[0] - 80.0).abs() < 1e-9 && (k[9] - 0.002).abs() < 1e-12);
    }

    #[test]
    fn sigma_to_t_inverts_training_sigmas() {
        let s = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
        let sig = s.sigmas();
        for t in [0usize, 10, 500, 999] {
            assert!((s.sigma_to_t(sig[t]) - t as f64).abs() < 1e-9);
        }
    }
}
