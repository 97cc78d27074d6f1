//! The masked process's sampler: MDLM's ancestral sampler (Sahoo et al. 2024, `_ddpm_update`
//! with the final noise removal), over the grid `t_k = 1 - k (1 - t_min) / steps`.
//!
//! From time `t` to `s < t` each still-masked token stays masked with probability
//! `(1 - alpha(s)) / (1 - alpha(t))` and otherwise takes a value drawn from the SUBS
//! distribution over clean tokens; unmasked tokens never change. At `t_min` the last masked
//! tokens take their most likely value. Each position draws one uniform from its row's stream.

use super::{Observer, StepInfo};
use crate::denoiser::Model;
use crate::process::MaskedProcess;
use crate::rng::Rows;
use candle_core::{DType, Device, Tensor};

/// Draws `[B, L]` token sequences (`shape`), starting from all masks.
pub fn ancestral(
    process: &MaskedProcess,
    model: &dyn Model,
    shape: &[usize],
    steps: usize,
    rows: &mut Rows,
    device: &Device,
    obs: Observer,
) -> anyhow::Result<Tensor> {
    anyhow::ensure!(
        shape.len() == 2,
        "the masked process samples [B, L] tokens, got shape {shape:?}"
    );
    let (b, l) = (shape[0], shape[1]);
    let v = process.vocab;
    let mask = process.mask_id();
    let schedule = process.config.schedule;
    let t_min = process.config.t_min;
    let dt = (1.0 - t_min) / steps as f64;
    let mut x = Tensor::full(mask, (b, l), device)?;
    for k in 0..steps {
        let t = 1.0 - k as f64 * dt;
        let s = if k + 1 == steps { t_min } else { t - dt };
        let probs = process
            .log_probs(&model.predict(&x, t)?, &x)?
            .exp()?
            .to_dtype(DType::F32)?
            .to_vec3::<f32>()?;
        let u = rows.uniform_like(&[b, l], device)?.to_vec2::<f32>()?;
        let stay = (1.0 - schedule.alpha(s)) / (1.0 - schedule.alpha(t));
        let mut tokens = x.to_vec2::<u32>()?;
        for ((row, u_row), p_row) in tokens.iter_mut().zip(&u).zip(&probs) {
            for ((tok, &u), p) in row.iter_mut().zip(u_row).zip(p_row) {
                if *tok != mask || (u as f64) < stay {
                    continue;
                }
                let r = ((u as f64 - stay) / (1.0 - stay)) as f32;
                *tok = inverse_cdf(p, r).min(v - 1) as u32;
            }
        }
        let model_input = x;
        x = Tensor::new(tokens, device)?;
        obs(&StepInfo {
            index: k,
            t,
            x: &x,
            x0: &x,
            model_input: &model_input,
        });
    }
    let lp = process.log_probs(&model.predict(&x, t_min)?, &x)?;
    let best = lp.argmax(candle_core::D::Minus1)?.to_dtype(DType::U32)?;
    let model_input = x;
    obs(&StepInfo {
        index: steps,
        t: t_min,
        x: &best,
        x0: &best,
        model_input: &model_input,
    });
    Ok(best)
}

/// The first category whose cumulative probability exceeds `r` (probabilities summing to 1).
fn inverse_cdf(p: &[f32], r: f32) -> usize {
    let mut acc = 0f32;
    for (i, &q) in p.iter().enumerate() {
        acc += q;
        if r < acc {
            return i;
        }
    }
    p.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::MaskedConfig;

    #[test]
    fn a_confident_model_is_sampled_exactly_and_partial_ones_in_proportion() -> anyhow::Result<()> {
        let p = MaskedProcess::new(MaskedConfig::default(), 3)?;
        let dev = Device::Cpu;
        // position 0 always token 2; position 1 token 0 or 1 with probability 0.25 / 0.75
        let model = |x: &Tensor, _t: f64| -> candle_core::Result<Tensor> {
            let b = x.dim(0)?;
            let row = [[-30f32, -30.0, 0.0], [0.25f32.ln(), 0.75f32.ln(), -30.0]];
            let flat: Vec<f32> = (0..b).flat_map(|_| row.iter().flatten().copied()).collect();
            Tensor::from_vec(flat, (b, 2, 3), x.device())
        };
        let mut calls = 0;
        let out = ancestral(
            &p,
            &model,
            &[2000, 2],
            10,
            &mut Rows::new(0, 0, 2000),
            &dev,
            &mut |_| calls += 1,
        )?;
        assert_eq!(calls, 11);
        let out = out.to_vec2::<u32>()?;
        assert!(out.iter().all(|r| r[0] == 2 && r[1] < 2));
        let ones = out.iter().filter(|r| r[1] == 1).count() as f64 / 2000.0;
        assert!((ones - 0.75).abs() < 0.04, "{ones}");
        // per-row streams: a row's sample does not depend on its batch
        let small = ancestral(
            &p,
            &model,
            &[3, 2],
            10,
            &mut Rows::new(0, 5, 3),
            &dev,
            &mut |_| {},
        )?
        .to_vec2::<u32>()?;
        assert_eq!(small, out[5..8].to_vec());
        Ok(())
    }

    #[test]
    fn inverse_cdf_picks_by_cumulative_mass() {
        assert_eq!(inverse_cdf(&[0.2, 0.3, 0.5], 0.1), 0);
        assert_eq!(inverse_cdf(&[0.2, 0.3, 0.5], 0.3), 1);
        assert_eq!(inverse_cdf(&[0.2, 0.3, 0.5], 0.99), 2);
    }
}
