//! Optimisation: AdamW with state that can be saved, learning-rate schedules, gradient-norm
//! clipping and an exponential moving average of the weights.

use crate::nn::output_vec;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Learning-rate shape after the linear warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Half a cosine from the peak down to 0 at the last step (diffusers' default).
    Cosine,
    /// Flat at the peak.
    Constant,
}

/// The learning rate at optimiser step `step` (0-based), as diffusers'
/// `get_cosine_schedule_with_warmup` / `get_constant_schedule_with_warmup`.
pub fn lr_at(kind: LrSchedule, peak: f64, warmup: usize, total: usize, step: usize) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    match kind {
        LrSchedule::Constant => peak,
        LrSchedule::Cosine => {
            let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
            peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}

/// AdamW settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Exponential decay rates of the first and second moments.
    pub betas: [f64; 2],
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW (Loshchilov and Hutter 2019), the same arithmetic as PyTorch's, with public moments so
/// a checkpoint can store and restore them exactly.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: usize,
    cfg: AdamWConfig,
}

impl AdamW {
    /// An optimiser over named variables, with zeroed moments.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| Ok(v.zeros_like()?.detach()))
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            vars,
            m,
            v,
            steps: 0,
            cfg,
        })
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Applies one update with per-variable gradients (in the order of the variables) at `lr`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.steps += 1;
        let k = StepConstants::new(&self.cfg, self.steps, lr);
        for (i, ((_, var), g)) in self.vars.iter().zip(grads).enumerate() {
            let (p, m, v) = match fused_update(var.as_tensor(), g, &self.m[i], &self.v[i], &k)? {
                Some(values) => values,
                None => update_by_ops(var.as_tensor(), g, &self.m[i], &self.v[i], &k)?,
            };
            var.set(&p)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.push((format!("m.{name}"), self.m[i].clone()));
            out.push((format!("v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] (under `prefix`) and the step count.
    pub fn load_state(
        &mut self,
        t: &HashMap<String, Tensor>,
        prefix: &str,
        steps: usize,
    ) -> anyhow::Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (which, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}{which}.{name}");
                let x = t
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("optimizer tensor `{key}` is missing"))?;
                anyhow::ensure!(
                    x.dims() == var.dims(),
                    "optimizer tensor `{key}` has the wrong shape"
                );
                *slot = x.to_dtype(var.dtype())?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The constants of one AdamW step, as the update's `affine`s take them.
struct StepConstants {
    b1: f64,
    b2: f64,
    /// `1 / sqrt(1 - b2^t)`.
    inv_sqrt_bc2: f64,
    eps: f64,
    /// `lr / (1 - b1^t)`.
    step_size: f64,
    /// `1 - lr * weight_decay`.
    decay: f64,
}

impl StepConstants {
    fn new(cfg: &AdamWConfig, step: usize, lr: f64) -> Self {
        let [b1, b2] = cfg.betas;
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        Self {
            b1,
            b2,
            inv_sqrt_bc2: 1.0 / bc2.sqrt(),
            eps: cfg.eps,
            step_size: lr / bc1,
            decay: 1.0 - lr * cfg.weight_decay,
        }
    }
}

/// One AdamW update by candle's ops: the new weights and moments.
fn update_by_ops(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: &StepConstants,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = g.detach();
    let m = m.affine(k.b1, 0.0)?.add(&g.affine(1.0 - k.b1, 0.0)?)?;
    let v = v
        .affine(k.b2, 0.0)?
        .add(&g.sqr()?.affine(1.0 - k.b2, 0.0)?)?;
    let denom = v.sqrt()?.affine(k.inv_sqrt_bc2, k.eps)?;
    let update = m.div(&denom)?.affine(k.step_size, 0.0)?;
    Ok((p.affine(k.decay, 0.0)?.sub(&update)?, m, v))
}

/// The values of a contiguous f32 tensor on the CPU, lent to `f`.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) => Some(f(&data[start..end])),
        _ => None,
    }
}

/// [`update_by_ops`] in one pass over the values on all threads, for contiguous f32 tensors on
/// the CPU (None otherwise): the same f32 operations in the same order (each `affine` is
/// `x * mul + add`, its constants rounded to f32), so the same values bit for bit, in one read
/// of the four inputs instead of a dozen full passes.
fn fused_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    k: &StepConstants,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    use rayon::prelude::*;
    const CHUNK: usize = 16_384;
    let c = |x: f64| x as f32;
    let (b1, one_b1, b2, one_b2) = (c(k.b1), c(1.0 - k.b1), c(k.b2), c(1.0 - k.b2));
    let (inv_sqrt_bc2, eps, step_size, decay) =
        (c(k.inv_sqrt_bc2), c(k.eps), c(k.step_size), c(k.decay));
    let values = with_f32(p, |p| {
        with_f32(g, |g| {
            with_f32(m, |m| {
                with_f32(v, |v| {
                    let n = p.len();
                    if g.len() != n || m.len() != n || v.len() != n {
                        return None;
                    }
                    let (mut np, mut nm, mut nv) = (output_vec(n), output_vec(n), output_vec(n));
                    np.par_chunks_mut(CHUNK)
                        .zip(nm.par_chunks_mut(CHUNK))
                        .zip(nv.par_chunks_mut(CHUNK))
                        .enumerate()
                        .for_each(|(chunk, ((np, nm), nv))| {
                            let at = chunk * CHUNK;
                            for i in 0..np.len() {
                                let (p, g, m, v) = (p[at + i], g[at + i], m[at + i], v[at + i]);
                                let m = (m * b1 + 0.0) + (g * one_b1 + 0.0);
                                let v = (v * b2 + 0.0) + ((g * g) * one_b2 + 0.0);
                                let update =
                                    (m / (v.sqrt() * inv_sqrt_bc2 + eps)) * step_size + 0.0;
                                np[i] = (p * decay + 0.0) - update;
                                nm[i] = m;
                                nv[i] = v;
                            }
                        });
                    Some((np, nm, nv))
                })
            })
        })
    })
    .flatten()
    .flatten()
    .flatten()
    .flatten();
    let Some((np, nm, nv)) = values else {
        return Ok(None);
    };
    let tensor = |data: Vec<f32>| Tensor::from_vec(data, p.shape(), p.device());
    Ok(Some((tensor(np)?, tensor(nm)?, tensor(nv)?)))
}

/// The gradients of `vars` in a backward pass's store, in the same order; a variable the loss
/// does not depend on gets zeros. They are detached: candle's gradients can still reference the
/// forward pass's graph, and optimiser state built from them would keep every step's activations
/// alive (an unbounded leak).
pub fn gradients(
    store: &candle_core::backprop::GradStore,
    vars: &[(String, Var)],
) -> Result<Vec<Tensor>> {
    vars.iter()
        .map(|(_, v)| match store.get(v.as_tensor()) {
            Some(g) => Ok(g.detach()),
            None => Ok(v.zeros_like()?.detach()),
        })
        .collect()
}

/// The global L2 norm of a set of gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0.0;
    for g in grads {
        total += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

/// EMA settings (diffusers' `EMAModel` with warmup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// Keep an EMA copy of the weights; sampling uses it when present.
    pub enabled: bool,
    /// Upper bound on the decay.
    pub max_decay: f64,
    /// Warmup inverse gamma.
    pub inv_gamma: f64,
    /// Warmup power (3/4 suits short runs, 2/3 long ones).
    pub power: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_decay: 0.9999,
            inv_gamma: 1.0,
            power: 0.75,
        }
    }
}

impl EmaConfig {
    /// The decay after `optimization_step` optimiser steps (1-based, as diffusers counts):
    /// `1 - (1 + s / inv_gamma)^(-power)` with `s = step - 1`, 0 on the first step, capped.
    pub fn decay(&self, optimization_step: usize) -> f64 {
        let s = optimization_step.saturating_sub(1) as f64;
        if s <= 0.0 {
            return 0.0;
        }
        (1.0 - (1.0 + s / self.inv_gamma).powf(-self.power))
            .min(self.max_decay)
            .max(0.0)
    }
}

/// An exponential moving average of a set of variables.
pub struct Ema {
    /// Settings.
    pub cfg: EmaConfig,
    /// The averaged values, in the order of the variables.
    pub shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at the variables' current values.
    pub fn new(vars: &[(String, Var)], cfg: EmaConfig) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(_, v)| Ok(v.as_tensor().copy()?.detach()))
            .collect::<Result<_>>()?;
        Ok(Self { cfg, shadow })
    }

    /// One update after optimiser step `optimization_step` (1-based).
    pub fn update(&mut self, vars: &[(String, Var)], optimization_step: usize) -> Result<()> {
        let d = self.cfg.decay(optimization_step);
        for (s, (_, v)) in self.shadow.iter_mut().zip(vars) {
            *s = s
                .affine(d, 0.0)?
                .add(&v.as_tensor().detach().affine(1.0 - d, 0.0)?)?
                .detach();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn warmup_then_cosine() {
        assert_eq!(lr_at(LrSchedule::Cosine, 1.0, 10, 110, 0), 0.0);
        assert!((lr_at(LrSchedule::Cosine, 1.0, 10, 110, 5) - 0.5).abs() < 1e-12);
        assert!((lr_at(LrSchedule::Cosine, 1.0, 10, 110, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(LrSchedule::Cosine, 1.0, 10, 110, 60) - 0.5).abs() < 1e-12);
        assert!(lr_at(LrSchedule::Cosine, 1.0, 10, 110, 110).abs() < 1e-12);
    }

    #[test]
    fn ema_decay_formula() {
        let c = EmaConfig::default();
        assert_eq!(c.decay(1), 0.0);
        assert!((c.decay(2) - (1.0 - 2f64.powf(-0.75))).abs() < 1e-12);
        assert_eq!(c.decay(100_000_000), 0.9999);
    }

    #[test]
    fn adamw_matches_hand_computation() -> Result<()> {
        // one step from w = 1 with g = 0.5, lr 0.1, wd 0.01: torch gives 1*(1-0.001) - 0.1*1 = 0.899
        let v = Var::from_tensor(&Tensor::new(&[1.0f64], &Device::Cpu)?)?;
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), v.clone())], cfg)?;
        opt.step(&[Tensor::new(&[0.5f64], &Device::Cpu)?], 0.1)?;
        let w = v.as_tensor().to_vec1::<f64>()?[0];
        assert!((w - 0.899).abs() < 1e-6, "{w}");
        let _ = DType::F32;
        Ok(())
    }

    /// The fused f32 update gives the candle-op update's weights and moments bit for bit, over
    /// several steps (bias corrections changing), with weight decay, on a tensor spanning
    /// several chunks.
    #[test]
    fn fused_update_matches_the_ops() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(3);
        let n = 40_000;
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut p = Tensor::from_vec(rng.normal_vec(n), n, &dev)?;
        let (mut m, mut v) = (p.zeros_like()?, p.zeros_like()?);
        for step in 1..=3 {
            let g = Tensor::from_vec(rng.normal_vec(n), n, &dev)?;
            let k = StepConstants::new(&cfg, step, 1e-3);
            let fused = fused_update(&p, &g, &m, &v, &k)?.expect("contiguous f32");
            let ops = update_by_ops(&p, &g, &m, &v, &k)?;
            for (a, b) in [(&fused.0, &ops.0), (&fused.1, &ops.1), (&fused.2, &ops.2)] {
                assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?, "step {step}");
            }
            (p, m, v) = fused;
        }
        Ok(())
    }

    #[test]
    fn clipping_caps_the_norm() -> Result<()> {
        let mut g = vec![Tensor::new(&[3.0f32, 4.0], &Device::Cpu)?];
        let n = clip_grad_norm(&mut g, 1.0)?;
        assert!((n - 5.0).abs() < 1e-6);
        assert!((grad_norm(&g)? - 1.0).abs() < 1e-5);
        Ok(())
    }
}
