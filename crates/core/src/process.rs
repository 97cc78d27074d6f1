//! Forward processes: how clean data is corrupted during training and what the network is
//! asked to predict.
//!
//! [`GaussianProcess`] is the variance-preserving process of DDPM, with epsilon, x0 or v
//! prediction, min-SNR-gamma loss weighting, and an optional wrap onto the torus
//! (`x_t = wrap(sqrt(ab) x0 + sqrt(1 - ab) eps)`, FoldingDiff's angles). Discrete processes for
//! token data implement the same [`Process`] trait.

use crate::rng::Rng;
use crate::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use crate::tensor_util::{combine, per_row, randn, timesteps_tensor, wrap_angles};
use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// What the network outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise eps (DDPM).
    Epsilon,
    /// The clean sample x0.
    #[serde(alias = "sample")]
    X0,
    /// The velocity v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans and Ho 2022).
    #[serde(alias = "v_prediction")]
    V,
}

impl Prediction {
    /// Names accepted in experiment files.
    pub const NAMES: &'static str = "epsilon, x0 (alias sample), v (alias v_prediction)";

    /// The clean sample implied by a model output at noise level alpha_bar (one value per row).
    pub fn to_x0(self, out: &Tensor, x_t: &Tensor, abar: &[f64]) -> Result<Tensor> {
        let sa: Vec<f64> = abar.iter().map(|a| a.sqrt()).collect();
        let sb: Vec<f64> = abar.iter().map(|a| (1.0 - a).sqrt()).collect();
        match self {
            Prediction::Epsilon => {
                let a: Vec<f64> = sa.iter().map(|s| 1.0 / s).collect();
                let b: Vec<f64> = sb.iter().zip(&sa).map(|(b, s)| -b / s).collect();
                combine(&a, x_t, &b, out)
            }
            Prediction::X0 => Ok(out.clone()),
            Prediction::V => {
                let nb: Vec<f64> = sb.iter().map(|b| -b).collect();
                combine(&sa, x_t, &nb, out)
            }
        }
    }

    /// The noise implied by a model output at noise level alpha_bar (one value per row).
    pub fn to_eps(self, out: &Tensor, x_t: &Tensor, abar: &[f64]) -> Result<Tensor> {
        let sa: Vec<f64> = abar.iter().map(|a| a.sqrt()).collect();
        let sb: Vec<f64> = abar.iter().map(|a| (1.0 - a).sqrt()).collect();
        match self {
            Prediction::Epsilon => Ok(out.clone()),
            Prediction::X0 => {
                let a: Vec<f64> = sb.iter().map(|b| 1.0 / b).collect();
                let b: Vec<f64> = sa.iter().zip(&sb).map(|(s, b)| -s / b).collect();
                combine(&a, x_t, &b, out)
            }
            Prediction::V => combine(&sa, out, &sb, x_t),
        }
    }
}

/// How per-sample losses are weighted across timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossWeighting {
    /// Every timestep counts the same.
    None,
    /// Min-SNR-gamma (Hang et al. 2023): the x0-space weight min(SNR, gamma), expressed for the
    /// chosen prediction: min(SNR, g)/SNR for epsilon, min(SNR, g)/(SNR + 1) for v.
    MinSnr,
}

impl LossWeighting {
    /// The weight at a given SNR for a prediction type and clamp gamma.
    pub fn weight(self, snr: f64, prediction: Prediction, gamma: f64) -> f64 {
        match self {
            LossWeighting::None => 1.0,
            LossWeighting::MinSnr => {
                let m = snr.min(gamma);
                match prediction {
                    // the limit of min(snr, g)/snr as snr -> 0 is 1
                    Prediction::Epsilon => {
                        if snr > 0.0 {
                            m / snr
                        } else {
                            1.0
                        }
                    }
                    Prediction::V => m / (snr + 1.0),
                    Prediction::X0 => m,
                }
            }
        }
    }
}

/// The element-wise loss between prediction and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Squared error.
    Mse,
    /// Smooth L1 / Huber with transition point `smooth_l1_beta` (PyTorch's `smooth_l1_loss`;
    /// beta 1 is the Huber loss DNA-Diffusion uses).
    SmoothL1,
}

/// A Gaussian process's settings, as in an experiment's `[process]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianConfig {
    /// Beta layout: linear, scaled_linear, cosine, sigmoid.
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
    /// Rescale the schedule to zero terminal SNR (pair it with v prediction).
    #[serde(default)]
    pub zero_terminal_snr: bool,
    /// What the network predicts.
    #[serde(default = "default_prediction")]
    pub prediction: Prediction,
    /// Per-timestep loss weighting.
    #[serde(default = "default_weighting")]
    pub weighting: LossWeighting,
    /// Gamma of min-SNR weighting.
    #[serde(default = "default_gamma")]
    pub min_snr_gamma: f64,
    /// Element-wise loss.
    #[serde(default = "default_loss")]
    pub loss: LossKind,
    /// Transition point of the smooth L1 loss.
    #[serde(default = "default_beta")]
    pub smooth_l1_beta: f64,
    /// Treat the data as angles: wrap to [-pi, pi) after noising and compare wrapped differences.
    #[serde(default)]
    pub wrap: bool,
    /// Offset noise strength (Guttenberg 2023): adds `offset * N(0,1)` per row and channel.
    #[serde(default)]
    pub offset_noise: f64,
}

fn default_schedule() -> BetaSchedule {
    ScheduleConfig::default().schedule
}
fn default_timesteps() -> usize {
    ScheduleConfig::default().timesteps
}
fn default_beta_start() -> f64 {
    ScheduleConfig::default().beta_start
}
fn default_beta_end() -> f64 {
    ScheduleConfig::default().beta_end
}

impl GaussianConfig {
    /// The schedule part of these settings.
    pub fn schedule_config(&self) -> ScheduleConfig {
        ScheduleConfig {
            schedule: self.schedule,
            timesteps: self.timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            zero_terminal_snr: self.zero_terminal_snr,
        }
    }
}

fn default_prediction() -> Prediction {
    Prediction::Epsilon
}
fn default_weighting() -> LossWeighting {
    LossWeighting::None
}
fn default_gamma() -> f64 {
    5.0
}
fn default_beta() -> f64 {
    1.0
}
fn default_loss() -> LossKind {
    LossKind::Mse
}

impl Default for GaussianConfig {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            timesteps: default_timesteps(),
            beta_start: default_beta_start(),
            beta_end: default_beta_end(),
            zero_terminal_snr: false,
            prediction: default_prediction(),
            weighting: default_weighting(),
            min_snr_gamma: default_gamma(),
            loss: default_loss(),
            smooth_l1_beta: default_beta(),
            wrap: false,
            offset_noise: 0.0,
        }
    }
}

/// One corrupted training batch.
#[derive(Debug, Clone)]
pub struct Corrupted {
    /// The noised input x_t, shaped like x0.
    pub x_t: Tensor,
    /// Integer timesteps, one per row.
    pub timesteps: Vec<usize>,
    /// The same timesteps as a `[B]` float32 tensor, the network's time input.
    pub t: Tensor,
    /// What the network should output.
    pub target: Tensor,
    /// Per-row loss weights.
    pub weights: Vec<f64>,
}

/// A forward process used in training.
pub trait Process {
    /// Draws a timestep and noise per row and corrupts `x0` (`[B, ...]`).
    fn corrupt(&self, x0: &Tensor, rng: &mut Rng) -> Result<Corrupted>;
    /// The scalar training loss of a network output against a corrupted batch.
    fn loss(&self, output: &Tensor, batch: &Corrupted) -> Result<Tensor>;
}

/// The variance-preserving Gaussian process.
#[derive(Clone, Debug)]
pub struct GaussianProcess {
    /// Its discrete schedule.
    pub schedule: Schedule,
    /// Its settings.
    pub config: GaussianConfig,
}

impl GaussianProcess {
    /// Builds the process a config describes.
    pub fn new(config: GaussianConfig) -> anyhow::Result<Self> {
        Ok(Self { schedule: Schedule::from_config(&config.schedule_config())?, config })
    }

    fn abar(&self, t: &[usize]) -> Vec<f64> {
        t.iter().map(|&t| self.schedule.alphas_cumprod[t]).collect()
    }

    /// `sqrt(ab_t) x0 + sqrt(1 - ab_t) noise`, one timestep per row (diffusers' `add_noise`),
    /// wrapped onto the torus when the process says so.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let ab = self.abar(t);
        let a: Vec<f64> = ab.iter().map(|a| a.sqrt()).collect();
        let b: Vec<f64> = ab.iter().map(|a| (1.0 - a).sqrt()).collect();
        let x = combine(&a, x0, &b, noise)?;
        if self.config.wrap {
            wrap_angles(&x)
        } else {
            Ok(x)
        }
    }

    /// The v-prediction target `sqrt(ab_t) noise - sqrt(1 - ab_t) x0` (diffusers' `get_velocity`).
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let ab = self.abar(t);
        let a: Vec<f64> = ab.iter().map(|a| a.sqrt()).collect();
        let b: Vec<f64> = ab.iter().map(|a| -(1.0 - a).sqrt()).collect();
        combine(&a, noise, &b, x0)
    }

    /// The training target for the configured prediction.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        match self.config.prediction {
            Prediction::Epsilon => Ok(noise.clone()),
            Prediction::X0 => Ok(x0.clone()),
            Prediction::V => self.velocity(x0, noise, t),
        }
    }

    /// Per-row loss weights at these timesteps.
    pub fn loss_weights(&self, t: &[usize]) -> Vec<f64> {
        t.iter()
            .map(|&t| {
                let c = &self.config;
                c.weighting.weight(self.schedule.snr(t), c.prediction, c.min_snr_gamma)
            })
            .collect()
    }

    /// Corrupts `x0` at given timesteps with given noise (the deterministic half of `corrupt`).
    pub fn corrupt_with(&self, x0: &Tensor, noise: &Tensor, t: Vec<usize>) -> Result<Corrupted> {
        Ok(Corrupted {
            x_t: self.add_noise(x0, noise, &t)?,
            t: timesteps_tensor(&t.iter().map(|&v| v as f64).collect::<Vec<_>>(), x0.device())?,
            target: self.target(x0, noise, &t)?,
            weights: self.loss_weights(&t),
            timesteps: t,
        })
    }
}

impl Process for GaussianProcess {
    fn corrupt(&self, x0: &Tensor, rng: &mut Rng) -> Result<Corrupted> {
        let b = x0.dim(0)?;
        let t: Vec<usize> = (0..b).map(|_| rng.below(self.schedule.len() as u64) as usize).collect();
        let mut noise = randn(rng, x0.dims(), x0.dtype(), x0.device())?;
        if self.config.offset_noise > 0.0 && x0.rank() >= 2 {
            let mut shape = vec![1usize; x0.rank()];
            shape[0] = b;
            shape[1] = x0.dim(1)?;
            let offset = randn(rng, &shape, x0.dtype(), x0.device())?;
            noise = noise.broadcast_add(&offset.affine(self.config.offset_noise, 0.0)?)?;
        }
        self.corrupt_with(x0, &noise, t)
    }

    fn loss(&self, output: &Tensor, batch: &Corrupted) -> Result<Tensor> {
        let mut diff = output.sub(&batch.target)?;
        if self.config.wrap {
            diff = wrap_angles(&diff)?;
        }
        let elementwise = match self.config.loss {
            LossKind::Mse => diff.sqr()?,
            LossKind::SmoothL1 => smooth_l1(&diff, self.config.smooth_l1_beta)?,
        };
        let b = elementwise.dim(0)?;
        let per_row_loss = elementwise.reshape((b, ()))?.mean(D::Minus1)?;
        let w = per_row(&batch.weights, &per_row_loss)?;
        per_row_loss.mul(&w)?.mean_all()
    }
}

/// PyTorch's `smooth_l1_loss` element-wise, with no reduction.
pub fn smooth_l1(diff: &Tensor, beta: f64) -> Result<Tensor> {
    let abs = diff.abs()?;
    let quadratic = diff.sqr()?.affine(0.5 / beta, 0.0)?;
    let linear = abs.affine(1.0, -0.5 * beta)?;
    let small = abs.lt(beta)?;
    small.where_cond(&quadratic, &linear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn conversions_invert_each_other() -> Result<()> {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.1]], &dev)?;
        let eps = Tensor::new(&[[1.0f64, 0.5], [-0.7, 0.2]], &dev)?;
        let p = GaussianProcess::new(GaussianConfig::default()).unwrap();
        let t = vec![10usize, 700];
        let xt = p.add_noise(&x0, &eps, &t)?;
        let ab = p.abar(&t);
        let v = p.velocity(&x0, &eps, &t)?;
        for (pred, out) in [(Prediction::Epsilon, &eps), (Prediction::X0, &x0), (Prediction::V, &v)] {
            let x0r = pred.to_x0(out, &xt, &ab)?;
            let er = pred.to_eps(out, &xt, &ab)?;
            let d0 = x0r.sub(&x0)?.abs()?.max_all()?.to_scalar::<f64>()?;
            let de = er.sub(&eps)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(d0 < 1e-10 && de < 1e-10, "{pred:?}: {d0} {de}");
        }
        Ok(())
    }

    #[test]
    fn wrapped_loss_sees_short_way_round() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = GaussianConfig { wrap: true, ..Default::default() };
        let p = GaussianProcess::new(cfg).unwrap();
        let target = Tensor::new(&[[3.1f32]], &dev)?;
        let out = Tensor::new(&[[-3.1f32]], &dev)?;
        let batch = Corrupted {
            x_t: out.clone(),
            timesteps: vec![0],
            t: Tensor::new(&[0f32], &dev)?,
            target,
            weights: vec![1.0],
        };
        let l = p.loss(&out, &batch)?.to_scalar::<f32>()?;
        let short = (2.0 * std::f32::consts::PI - 6.2).powi(2);
        assert!((l - short).abs() < 1e-4, "{l} vs {short}");
        Ok(())
    }

    #[test]
    fn smooth_l1_matches_definition() -> Result<()> {
        let d = Tensor::new(&[-2.0f64, -0.5, 0.0, 0.25, 3.0], &Device::Cpu)?;
        let v = smooth_l1(&d, 1.0)?.to_vec1::<f64>()?;
        assert_eq!(v, vec![1.5, 0.125, 0.0, 0.03125, 2.5]);
        Ok(())
    }
}
