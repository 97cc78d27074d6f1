//! The variance-preserving Gaussian process of DDPM, with epsilon, x0 or v prediction,
//! min-SNR-gamma loss weighting, offset noise and an optional wrap onto the torus
//! (`x_t = wrap(sqrt(ab) x0 + sqrt(1 - ab) eps)`, FoldingDiff's angles). Its samplers are in
//! [`crate::sampler::gaussian`].
//!
//! Time coordinate: the training timestep `t` in `0..T` (fractional between training steps for
//! the sigma-space samplers), as diffusers' models receive it.

use super::{weighted_mean, Corrupted, Process, SampleJob};
use crate::rng::Rows;
use crate::sampler::{gaussian::SamplerKind, SampleConfig};
use crate::schedule::{Schedule, ScheduleConfig};
use crate::tensor_util::{combine, timesteps_tensor, wrap_angles};
use candle_core::{Result, Tensor};
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

/// A Gaussian process's settings, as in an experiment's `[process]` table: the schedule's keys
/// ([`ScheduleConfig`]: `schedule`, `timesteps`, `beta_start`, `beta_end`,
/// `zero_terminal_snr`) beside the process's own, in one flat table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GaussianConfig {
    /// The noise schedule.
    #[serde(flatten)]
    pub schedule: ScheduleConfig,
    /// What the network predicts.
    pub prediction: Prediction,
    /// Per-timestep loss weighting.
    pub weighting: LossWeighting,
    /// Gamma of min-SNR weighting.
    pub min_snr_gamma: f64,
    /// Element-wise loss.
    pub loss: LossKind,
    /// Transition point of the smooth L1 loss.
    pub smooth_l1_beta: f64,
    /// Treat the data as angles: wrap to [-pi, pi) after noising and every sampling step, and
    /// compare wrapped differences in the loss.
    pub wrap: bool,
    /// Offset noise strength (Guttenberg 2023): adds `offset * N(0,1)` per row and channel.
    pub offset_noise: f64,
}

/// The keys of the schedule part of the `[process]` table.
const SCHEDULE_KEYS: [&str; 5] = [
    "schedule",
    "timesteps",
    "beta_start",
    "beta_end",
    "zero_terminal_snr",
];
/// The keys of the Gaussian process's own part.
const OWN_KEYS: [&str; 7] = [
    "prediction",
    "weighting",
    "min_snr_gamma",
    "loss",
    "smooth_l1_beta",
    "wrap",
    "offset_noise",
];

/// The process's own keys, read apart from the schedule's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Own {
    prediction: Prediction,
    weighting: LossWeighting,
    min_snr_gamma: f64,
    loss: LossKind,
    smooth_l1_beta: f64,
    wrap: bool,
    offset_noise: f64,
}

impl Default for Own {
    fn default() -> Self {
        let d = GaussianConfig::default();
        Self {
            prediction: d.prediction,
            weighting: d.weighting,
            min_snr_gamma: d.min_snr_gamma,
            loss: d.loss,
            smooth_l1_beta: d.smooth_l1_beta,
            wrap: d.wrap,
            offset_noise: d.offset_noise,
        }
    }
}

impl GaussianConfig {
    /// Reads the settings from a `[process]` table (without its `kind`): the schedule's keys
    /// and the process's own; any other key is an error that lists the accepted ones.
    pub fn from_table(table: toml::Table) -> std::result::Result<Self, String> {
        let (mut sched, mut own) = (toml::Table::new(), toml::Table::new());
        for (k, v) in table {
            if SCHEDULE_KEYS.contains(&k.as_str()) {
                sched.insert(k, v);
            } else if OWN_KEYS.contains(&k.as_str()) {
                own.insert(k, v);
            } else {
                return Err(format!(
                    "unknown key `process.{k}`: the Gaussian process takes kind, {}, {}",
                    SCHEDULE_KEYS.join(", "),
                    OWN_KEYS.join(", ")
                ));
            }
        }
        let schedule = ScheduleConfig::deserialize(toml::Value::Table(sched))
            .map_err(|e| format!("[process]: {e}"))?;
        let own =
            Own::deserialize(toml::Value::Table(own)).map_err(|e| format!("[process]: {e}"))?;
        Ok(Self {
            schedule,
            prediction: own.prediction,
            weighting: own.weighting,
            min_snr_gamma: own.min_snr_gamma,
            loss: own.loss,
            smooth_l1_beta: own.smooth_l1_beta,
            wrap: own.wrap,
            offset_noise: own.offset_noise,
        })
    }
}

impl Default for GaussianConfig {
    fn default() -> Self {
        Self {
            schedule: ScheduleConfig::default(),
            prediction: Prediction::Epsilon,
            weighting: LossWeighting::None,
            min_snr_gamma: 5.0,
            loss: LossKind::Mse,
            smooth_l1_beta: 1.0,
            wrap: false,
            offset_noise: 0.0,
        }
    }
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
        anyhow::ensure!(
            config.smooth_l1_beta > 0.0,
            "process.smooth_l1_beta must be positive, got {}",
            config.smooth_l1_beta
        );
        anyhow::ensure!(
            config.offset_noise >= 0.0,
            "process.offset_noise must be >= 0, got {}",
            config.offset_noise
        );
        Ok(Self {
            schedule: Schedule::from_config(&config.schedule)?,
            config,
        })
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
                c.weighting
                    .weight(self.schedule.snr(t), c.prediction, c.min_snr_gamma)
            })
            .collect()
    }

    /// Corrupts `x0` at given timesteps with given noise (the deterministic half of `corrupt`).
    pub fn corrupt_with(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Corrupted> {
        Ok(Corrupted {
            x_t: self.add_noise(x0, noise, t)?,
            time: timesteps_tensor(
                &t.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                x0.device(),
            )?,
            target: self.target(x0, noise, t)?,
            weights: self.loss_weights(t),
        })
    }
}

impl Process for GaussianProcess {
    fn kind(&self) -> &'static str {
        "gaussian"
    }

    fn time_coordinate(&self) -> &'static str {
        "the training timestep t in 0..T (fractional between steps for sigma-space samplers)"
    }

    /// Row `i` draws its timestep, then its noise, from its own stream; offset noise comes from
    /// another stream of the same row.
    fn corrupt(&self, x0: &Tensor, rows: &mut Rows) -> Result<Corrupted> {
        let b = x0.dim(0)?;
        let t_max = self.schedule.len() as u64;
        let t: Vec<usize> = (0..b).map(|i| rows.row(i).below(t_max) as usize).collect();
        let mut noise = rows.normal(x0.dims(), x0.dtype(), x0.device())?;
        if self.config.offset_noise > 0.0 && x0.rank() >= 2 {
            let mut shape = vec![1usize; x0.rank()];
            shape[0] = b;
            shape[1] = x0.dim(1)?;
            let offset = rows
                .purpose(OFFSET_STREAM)
                .normal(&shape, x0.dtype(), x0.device())?;
            noise = noise.broadcast_add(&offset.affine(self.config.offset_noise, 0.0)?)?;
        }
        self.corrupt_with(x0, &noise, &t)
    }

    fn loss(&self, output: &Tensor, batch: &Corrupted, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut diff = output.sub(&batch.target)?;
        if self.config.wrap {
            diff = wrap_angles(&diff)?;
        }
        let elementwise = match self.config.loss {
            LossKind::Mse => diff.sqr()?,
            LossKind::SmoothL1 => smooth_l1(&diff, self.config.smooth_l1_beta)?,
        };
        weighted_mean(&elementwise, mask, &batch.weights)
    }

    fn samplers(&self) -> &'static [&'static str] {
        &["dpmpp_2m", "ddpm", "ddim", "euler", "heun"]
    }

    fn model_calls(&self, cfg: &SampleConfig) -> anyhow::Result<usize> {
        Ok(self.sampler_kind(cfg)?.model_calls(cfg.steps))
    }

    /// DDPM and DDIM with eta > 0 add fresh noise every step; the others do not.
    fn deterministic(&self, cfg: &SampleConfig) -> anyhow::Result<bool> {
        Ok(match self.sampler_kind(cfg)? {
            SamplerKind::Ddpm => false,
            SamplerKind::Ddim => cfg.eta == 0.0,
            _ => true,
        })
    }

    fn sample(&self, job: SampleJob) -> anyhow::Result<Tensor> {
        crate::sampler::gaussian::sample(self, job)
    }
}

/// The stream tag of offset noise (apart from the main noise, so turning it on does not move
/// the other draws).
const OFFSET_STREAM: u64 = 0x000F_F5E7;

impl GaussianProcess {
    /// The sampler a `[sample]` table names (the process's default, DPM-Solver++(2M), when it
    /// names none).
    pub fn sampler_kind(&self, cfg: &SampleConfig) -> anyhow::Result<SamplerKind> {
        match &cfg.sampler {
            None => Ok(SamplerKind::Dpmpp2m),
            Some(name) => SamplerKind::parse(name),
        }
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
        let t = [10usize, 700];
        let xt = p.add_noise(&x0, &eps, &t)?;
        let ab = p.abar(&t);
        let v = p.velocity(&x0, &eps, &t)?;
        for (pred, out) in [
            (Prediction::Epsilon, &eps),
            (Prediction::X0, &x0),
            (Prediction::V, &v),
        ] {
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
        let cfg = GaussianConfig {
            wrap: true,
            ..Default::default()
        };
        let p = GaussianProcess::new(cfg).unwrap();
        let target = Tensor::new(&[[3.1f32]], &dev)?;
        let out = Tensor::new(&[[-3.1f32]], &dev)?;
        let batch = Corrupted {
            x_t: out.clone(),
            time: Tensor::new(&[0f32], &dev)?,
            target,
            weights: vec![1.0],
        };
        let l = p.loss(&out, &batch, None)?.to_scalar::<f32>()?;
        let short = (2.0 * std::f32::consts::PI - 6.2).powi(2);
        assert!((l - short).abs() < 1e-4, "{l} vs {short}");
        Ok(())
    }

    #[test]
    fn padded_positions_do_not_count_in_the_loss() -> Result<()> {
        let dev = Device::Cpu;
        let p = GaussianProcess::new(GaussianConfig::default()).unwrap();
        // rows [L = 3, F = 1]; row 0 has 2 real positions, row 1 all 3
        let target = Tensor::new(&[[[1f32], [2.0], [100.0]], [[1.0], [1.0], [1.0]]], &dev)?;
        let out = Tensor::zeros((2, 3, 1), candle_core::DType::F32, &dev)?;
        let batch = Corrupted {
            x_t: out.clone(),
            time: Tensor::new(&[0f32, 0.0], &dev)?,
            target,
            weights: vec![1.0, 1.0],
        };
        let mask = Tensor::new(&[[[1f32], [1.0], [0.0]], [[1.0], [1.0], [1.0]]], &dev)?;
        let l = p.loss(&out, &batch, Some(&mask))?.to_scalar::<f32>()?;
        assert!((l - (2.5 + 1.0) / 2.0).abs() < 1e-6, "{l}");
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
