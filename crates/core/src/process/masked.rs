//! Masked (absorbing-state) discrete diffusion over tokens in continuous time: MDLM (Sahoo et
//! al. 2024, "Simple and Effective Masked Diffusion Language Models";
//! github.com/kuleshov-group/mdlm, `diffusion.py` and `noise_schedule.py`).
//!
//! Tokens are `0..V`; the mask token is `V`. At time `t` in [0, 1] each token of a clean
//! sequence is still itself with probability `alpha(t)` and the mask otherwise, with
//! - log-linear: `alpha(t) = 1 - t` (MDLM's default, `LogLinearNoise`);
//! - cosine: `alpha(t) = cos(pi t / 2)` (`CosineNoise`).
//!
//! The network sees the partly masked tokens and the time and outputs `[B, L, V]` logits (a
//! `V + 1`-th column for the mask, if present, is ignored). SUBS parametrisation: no probability
//! on the mask token, and unmasked tokens carried over unchanged. The training loss is the
//! continuous-time ELBO: the cross-entropy of the clean token at masked positions, weighted by
//! `-alpha'(t) / (1 - alpha(t))` (`1 / t` for the log-linear schedule), averaged over real
//! positions.
//!
//! Time coordinate: `t` in [0, 1] (1 is all masked).
//!
//! Differences from MDLM, and why:
//! - MDLM writes the schedules through the total noise `sigma(t) = -log alpha(t)` and adds
//!   `eps = 1e-3` to keep it finite at `t = 1`; written in `alpha` directly no `eps` is needed,
//!   so `alpha(1) = 0` exactly and the likelihood bound needs no prior term.
//! - Training times are drawn independently per example (`t = t_min + (1 - t_min) u`), not
//!   antithetically across the batch, so an example's draw does not depend on its batch.
//! - Tokens are sampled by inverse CDF from one uniform per position (MDLM draws Gumbel noise
//!   per category); both draw exactly from the same categorical distribution.

use super::{Corrupted, Process, SampleJob};
use crate::rng::Rows;
use crate::sampler::SampleConfig;
use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// How fast tokens are masked over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskSchedule {
    /// `alpha(t) = 1 - t`.
    LogLinear,
    /// `alpha(t) = cos(pi t / 2)`.
    Cosine,
}

impl MaskSchedule {
    /// The probability that a token is still unmasked at time `t`.
    pub fn alpha(self, t: f64) -> f64 {
        match self {
            MaskSchedule::LogLinear => 1.0 - t,
            MaskSchedule::Cosine => (std::f64::consts::FRAC_PI_2 * t).cos(),
        }
    }

    /// The ELBO weight `-alpha'(t) / (1 - alpha(t))` of a masked token's cross-entropy.
    pub fn weight(self, t: f64) -> f64 {
        match self {
            MaskSchedule::LogLinear => 1.0 / t,
            MaskSchedule::Cosine => {
                let a = std::f64::consts::FRAC_PI_2 * t;
                std::f64::consts::FRAC_PI_2 * a.sin() / (1.0 - a.cos())
            }
        }
    }
}

/// The `[process]` table of the masked process (`kind = "masked"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskedConfig {
    /// The masking schedule: log_linear (default) or cosine.
    pub schedule: MaskSchedule,
    /// Training times are drawn from [t_min, 1] (MDLM's `sampling_eps`, 1e-3); sampling ends
    /// at t_min, where the last masked tokens are filled by their most likely value.
    pub t_min: f64,
}

impl Default for MaskedConfig {
    fn default() -> Self {
        Self {
            schedule: MaskSchedule::LogLinear,
            t_min: 1e-3,
        }
    }
}

/// MDLM's masked diffusion over tokens `0..vocab` (mask id `vocab`).
#[derive(Clone, Debug)]
pub struct MaskedProcess {
    /// Its settings.
    pub config: MaskedConfig,
    /// Token values (the mask token is this id).
    pub vocab: usize,
}

/// The stream tag of the masking draws (the time comes from the row's main stream).
const MASK_STREAM: u64 = 0x3A5C;

impl MaskedProcess {
    /// The process over `vocab` token values.
    pub fn new(config: MaskedConfig, vocab: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            vocab >= 2,
            "the masked process needs at least 2 token values, got {vocab}"
        );
        anyhow::ensure!(
            config.t_min > 0.0 && config.t_min < 1.0,
            "process.t_min must lie in (0, 1), got {}",
            config.t_min
        );
        Ok(Self { config, vocab })
    }

    /// The mask token's id.
    pub fn mask_id(&self) -> u32 {
        self.vocab as u32
    }

    /// Masks each real token of `x0` (`[B, L]` u32) independently with probability
    /// `1 - alpha(t_row)`, drawing one uniform per position from the row's masking stream.
    pub fn mask(&self, x0: &Tensor, t: &[f64], rows: &mut Rows) -> Result<Tensor> {
        let u = rows
            .purpose(MASK_STREAM)
            .uniform_like(x0.dims(), x0.device())?;
        let move_chance: Vec<f64> = t
            .iter()
            .map(|&t| 1.0 - self.config.schedule.alpha(t))
            .collect();
        let threshold = crate::tensor_util::per_row(&move_chance, &u)?;
        let masked = u.broadcast_lt(&threshold)?;
        let mask = Tensor::full(self.mask_id(), x0.dims(), x0.device())?;
        masked.where_cond(&mask, x0)
    }

    /// SUBS log-probabilities `[B, L, V]` of the clean tokens given the network's logits: the
    /// mask token gets none, and at unmasked positions of `x_t` all mass sits on the token seen.
    pub fn log_probs(&self, logits: &Tensor, x_t: &Tensor) -> Result<Tensor> {
        let v = self.vocab;
        let logits = logits.narrow(D::Minus1, 0, v)?.to_dtype(DType::F32)?;
        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let unmasked = x_t.ne(self.mask_id())?.unsqueeze(D::Minus1)?;
        let seen = crate::tensor_util::one_hot(&x_t.minimum(self.mask_id() - 1)?, v)?;
        // log 1 = 0 at the token seen, -inf elsewhere (a large negative number, to keep the
        // arithmetic finite)
        let carried = seen.affine(1e9, -1e9)?;
        unmasked.broadcast_as(lp.shape())?.where_cond(&carried, &lp)
    }

    /// Cross-entropy `-log p(x0)` per position (`[B, L]`), zero where `x_t` is not masked.
    fn masked_nll(&self, logits: &Tensor, x_t: &Tensor, x0: &Tensor) -> Result<Tensor> {
        let lp = self.log_probs(logits, x_t)?;
        let picked = lp
            .gather(&x0.unsqueeze(D::Minus1)?, D::Minus1)?
            .squeeze(D::Minus1)?;
        let masked = x_t.eq(self.mask_id())?.to_dtype(DType::F32)?;
        picked.neg()?.mul(&masked)
    }

    /// Per-row sum of `-w(t) log p(x0)` over masked real positions and the count of real
    /// positions.
    fn row_terms(
        &self,
        logits: &Tensor,
        x_t: &Tensor,
        x0: &Tensor,
        weights: &[f64],
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let mut nll = self.masked_nll(logits, x_t, x0)?;
        let (b, l) = x0.dims2()?;
        let count = match mask {
            Some(m) => {
                let m = m.to_dtype(DType::F32)?.broadcast_as((b, l))?;
                nll = nll.mul(&m)?;
                m.sum(D::Minus1)?
            }
            None => Tensor::full(l as f32, b, x0.device())?,
        };
        let w = Tensor::from_vec(
            weights.iter().map(|&w| w as f32).collect::<Vec<_>>(),
            b,
            x0.device(),
        )?;
        Ok((nll.sum(D::Minus1)?.mul(&w)?, count))
    }
}

impl Process for MaskedProcess {
    fn kind(&self) -> &'static str {
        "masked"
    }

    fn time_coordinate(&self) -> &'static str {
        "t in [0, 1], the masking time (1: every token masked)"
    }

    /// Row `i` draws its time from its own stream, then its masking uniforms from another.
    fn corrupt(&self, x0: &Tensor, rows: &mut Rows) -> Result<Corrupted> {
        if x0.dtype() != DType::U32 || x0.rank() != 2 {
            candle_core::bail!(
                "the masked process needs [B, L] u32 tokens, got {:?} {:?}",
                x0.dtype(),
                x0.dims()
            );
        }
        let b = x0.dim(0)?;
        let t_min = self.config.t_min;
        let t: Vec<f64> = (0..b)
            .map(|i| t_min + (1.0 - t_min) * rows.row(i).uniform())
            .collect();
        let x_t = self.mask(x0, &t, rows)?;
        Ok(Corrupted {
            x_t,
            time: crate::tensor_util::timesteps_tensor(&t, x0.device())?,
            target: x0.clone(),
            weights: t.iter().map(|&t| self.config.schedule.weight(t)).collect(),
        })
    }

    /// The continuous-time ELBO in nats per real position: the weighted cross-entropy summed
    /// over masked positions, divided by the number of real positions in the batch (MDLM's
    /// token-level average).
    fn loss(&self, output: &Tensor, batch: &Corrupted, mask: Option<&Tensor>) -> Result<Tensor> {
        let (sum, count) =
            self.row_terms(output, &batch.x_t, &batch.target, &batch.weights, mask)?;
        sum.sum_all()?.div(&count.sum_all()?.clamp(1.0, f64::MAX)?)
    }

    fn samplers(&self) -> &'static [&'static str] {
        &["ancestral"]
    }

    fn model_calls(&self, cfg: &SampleConfig) -> anyhow::Result<usize> {
        self.check_sampler(cfg)?;
        Ok(cfg.steps + 1)
    }

    fn sample(&self, job: SampleJob) -> anyhow::Result<Tensor> {
        self.check_sampler(job.cfg)?;
        anyhow::ensure!(job.scorer.is_none(), "classifier guidance by a scorer needs a Gaussian process; the masked process takes classifier-free guidance");
        anyhow::ensure!(
            job.edit.is_none(),
            "starting from data (infill) is not implemented yet for the masked process"
        );
        anyhow::ensure!(
            job.noise.is_none(),
            "the masked process starts from fully masked tokens: it takes no starting noise"
        );
        crate::sampler::masked::ancestral(
            self,
            job.model,
            job.shape,
            job.cfg.steps,
            job.rows,
            job.device,
            job.obs,
        )
    }

    /// The ELBO with `draws` stratified times per row (`t_k = (k + u) / draws`), over all of
    /// (0, 1]: an unbiased estimate of the bound, in nats per real position.
    fn nll_bound(
        &self,
        net: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        x0: &Tensor,
        mask: Option<&Tensor>,
        rows: &mut Rows,
        draws: usize,
    ) -> Result<Option<Vec<f64>>> {
        let b = x0.dim(0)?;
        let mut total = vec![0f64; b];
        let mut count = vec![0f64; b];
        for k in 0..draws {
            let mut draw_rows = rows.purpose(k as u64);
            let t: Vec<f64> = (0..b)
                .map(|i| ((k as f64 + draw_rows.row(i).uniform()) / draws as f64).max(1e-6))
                .collect();
            let x_t = self.mask(x0, &t, &mut draw_rows)?;
            let time = crate::tensor_util::timesteps_tensor(&t, x0.device())?;
            let logits = net(&x_t, &time)?;
            let w: Vec<f64> = t.iter().map(|&t| self.config.schedule.weight(t)).collect();
            let (sum, n) = self.row_terms(&logits, &x_t, x0, &w, mask)?;
            for (i, (s, n)) in sum
                .to_vec1::<f32>()?
                .into_iter()
                .zip(n.to_vec1::<f32>()?)
                .enumerate()
            {
                total[i] += s as f64 / draws as f64;
                count[i] = n as f64;
            }
        }
        Ok(Some(
            total
                .iter()
                .zip(&count)
                .map(|(s, n)| s / n.max(1.0))
                .collect(),
        ))
    }
}

impl MaskedProcess {
    fn check_sampler(&self, cfg: &SampleConfig) -> anyhow::Result<()> {
        match cfg.sampler.as_deref() {
            None | Some("ancestral") => {}
            Some(other) => anyhow::bail!(
                "unknown sampler `{other}` for the masked process: expected ancestral"
            ),
        }
        anyhow::ensure!(cfg.steps >= 1, "sample.steps must be at least 1");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn process() -> MaskedProcess {
        MaskedProcess::new(MaskedConfig::default(), 4).unwrap()
    }

    #[test]
    fn schedules_and_weights() {
        for s in [MaskSchedule::LogLinear, MaskSchedule::Cosine] {
            assert!((s.alpha(0.0) - 1.0).abs() < 1e-12 && s.alpha(1.0).abs() < 1e-12);
            for t in [0.1, 0.5, 0.9] {
                // weight = -alpha'(t) / (1 - alpha(t)), alpha' by central differences
                let h = 1e-6;
                let d = (s.alpha(t + h) - s.alpha(t - h)) / (2.0 * h);
                let w = -d / (1.0 - s.alpha(t));
                assert!(
                    (s.weight(t) - w).abs() < 1e-6 * w,
                    "{s:?} {t}: {} vs {w}",
                    s.weight(t)
                );
            }
        }
        assert!((MaskSchedule::LogLinear.weight(0.25) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn masking_rate_follows_alpha() -> Result<()> {
        let p = process();
        let x0 = Tensor::zeros((4, 5000), DType::U32, &Device::Cpu)?;
        let t = [0.0, 0.25, 0.5, 1.0];
        let x_t = p.mask(&x0, &t, &mut Rows::new(1, 0, 4))?.to_vec2::<u32>()?;
        for (row, &t) in x_t.iter().zip(&t) {
            let frac = row.iter().filter(|&&v| v == 4).count() as f64 / row.len() as f64;
            assert!((frac - t).abs() < 0.02, "t {t}: masked {frac}");
            assert!(row.iter().all(|&v| v == 0 || v == 4));
        }
        Ok(())
    }

    #[test]
    fn subs_carries_unmasked_tokens_and_ignores_the_mask_logit() -> Result<()> {
        let p = process();
        let dev = Device::Cpu;
        let x_t = Tensor::new(&[[2u32, 4]], &dev)?;
        // five logits per position: the fifth (mask) must be ignored
        let logits = Tensor::new(
            &[[[0f32, 0.0, 0.0, 0.0, 50.0], [1.0, 2.0, 3.0, 4.0, 50.0]]],
            &dev,
        )?;
        let lp = p.log_probs(&logits, &x_t)?.to_vec3::<f32>()?;
        assert_eq!(lp[0][0][2], 0.0);
        assert!(lp[0][0][0] < -1e8);
        let probs: Vec<f64> = lp[0][1].iter().map(|v| (*v as f64).exp()).collect();
        let z: f64 = [1f64, 2.0, 3.0, 4.0].iter().map(|v| v.exp()).sum();
        for (k, p) in probs.iter().enumerate() {
            assert!((p - ((k + 1) as f64).exp() / z).abs() < 1e-6);
        }
        Ok(())
    }

    #[test]
    fn loss_counts_masked_positions_with_the_elbo_weight() -> Result<()> {
        let p = process();
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[1u32, 2, 3]], &dev)?;
        let x_t = Tensor::new(&[[1u32, 4, 4]], &dev)?;
        let logits = Tensor::zeros((1, 3, 4), DType::F32, &dev)?; // uniform: -log p = ln 4
        let batch = Corrupted {
            x_t,
            time: Tensor::new(&[0.5f32], &dev)?,
            target: x0,
            weights: vec![2.0],
        };
        let l = p.loss(&logits, &batch, None)?.to_scalar::<f32>()? as f64;
        assert!((l - 2.0 * 2.0 * 4f64.ln() / 3.0).abs() < 1e-5, "{l}");
        // the third position is padding: it does not count
        let mask = Tensor::new(&[[1f32, 1.0, 0.0]], &dev)?;
        let l = p.loss(&logits, &batch, Some(&mask))?.to_scalar::<f32>()? as f64;
        assert!((l - 2.0 * 4f64.ln() / 2.0).abs() < 1e-5, "{l}");
        Ok(())
    }

    #[test]
    fn the_bound_of_a_uniform_model_is_log_vocab() -> Result<()> {
        // a network that knows nothing puts 1/V on every token: the ELBO is exactly ln V per
        // token whatever the times drawn (E[w(t) (1 - alpha(t))] integrates to 1)
        let p = process();
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0u32, 1, 2, 3, 0, 1, 2, 3]; 256], &dev)?;
        let net = |x: &Tensor, _: &Tensor| {
            Tensor::zeros((x.dim(0)?, x.dim(1)?, 4), DType::F32, x.device())
        };
        let nll = p
            .nll_bound(&net, &x0, None, &mut Rows::new(3, 0, 256), 32)?
            .unwrap();
        let mean = nll.iter().sum::<f64>() / nll.len() as f64;
        assert!((mean - 4f64.ln()).abs() < 0.05 * 4f64.ln(), "{mean}");
        Ok(())
    }
}
