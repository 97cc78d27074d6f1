//! The standard performance workloads: the models every domain trains, at fixed shapes, so that
//! sugarcube can be compared with PyTorch on the same machine (`benches/pytorch_workloads.py`
//! runs the same shapes there).
//!
//! | workload | model | batch | item |
//! |---|---|---|---|
//! | `unet2d_train` | diffusers-style UNet2D 32-64-128, 2 blocks per level, attention at the lowest level and in the middle, 1x32x32 | 32 | image |
//! | `unet1d_dna_train` | 1-D conditional UNet 64-128-256, 2 blocks per level, GroupNorm 8, 4 cell types, 4x200 one-hot | 64 | sequence |
//! | `transformer_angles_train` | FoldingDiff-small: BERT encoder, 6 layers, hidden 192, 6 heads, FFN 384, 128 x 6 angles | 64 | structure |
//! | `unet2d_sample_forward` | the `unet2d_train` model, one forward pass without gradients | 16 | image |
//!
//! A training step is what a training loop does: draw timesteps and noise, noise the batch,
//! forward, weighted loss, backward, AdamW. Each workload runs warm-up steps, then `iters`
//! timed steps, and reports the median; the per-operation breakdown comes from
//! [`crate::profile`] scopes, averaged over the timed steps.

use crate::cond::{CondDrop, CondSpec, Condition, Value};
use crate::denoiser::{Denoiser, Inputs};
use crate::domain::{Batch, DataInfo};
use crate::nn::{Dims, SequenceTransformer, TransformerConfig, UNet, UNetConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::params::Params;
use crate::process::{GaussianConfig, GaussianProcess};
use crate::profile::{self, median};
use crate::rng::{Rng, Rows};
use crate::tensor_util::randn;
use crate::train::{Objective, StepContext};
use candle_core::{DType, Device, Result, Tensor};
use serde::Serialize;
use std::time::Instant;

/// One of the standard workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// UNet2D training step on 1x32x32 images, batch 32.
    Unet2dTrain,
    /// Conditional 1-D UNet training step on 4x200 one-hot DNA, batch 64.
    Unet1dDnaTrain,
    /// FoldingDiff-small transformer training step on 128 x 6 angles, batch 64.
    TransformerAnglesTrain,
    /// UNet2D forward pass without gradients, batch 16.
    Unet2dSampleForward,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 4] = [
        Workload::Unet2dTrain,
        Workload::Unet1dDnaTrain,
        Workload::TransformerAnglesTrain,
        Workload::Unet2dSampleForward,
    ];

    /// The workload's name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Unet2dTrain => "unet2d_train",
            Workload::Unet1dDnaTrain => "unet1d_dna_train",
            Workload::TransformerAnglesTrain => "transformer_angles_train",
            Workload::Unet2dSampleForward => "unet2d_sample_forward",
        }
    }

    /// The workload called `name`, or an error listing the names.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|w| w.name()).collect();
                anyhow::anyhow!(
                    "unknown workload `{name}`; expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// Items (images, sequences, structures) per step.
    pub fn batch_size(self) -> usize {
        match self {
            Workload::Unet2dTrain => 32,
            Workload::Unet1dDnaTrain | Workload::TransformerAnglesTrain => 64,
            Workload::Unet2dSampleForward => 16,
        }
    }
}

/// The diffusers `UNet2DModel` of the image workloads: block_out_channels (32, 64, 128),
/// layers_per_block 2, attention (head dim 8, diffusers' default) in the lowest level and the
/// middle, GroupNorm 32.
pub fn unet2d_config() -> UNetConfig {
    UNetConfig {
        channels: 32,
        channel_mults: vec![1, 2, 4],
        layers_per_block: 2,
        attention_levels: vec![2],
        mid_attention: true,
        head_dim: 8,
        groups: 32,
        ..UNetConfig::default()
    }
}

/// The 1-D DNA UNet: channels 64-128-256, 2 residual blocks per level, GroupNorm 8, no attention.
pub fn unet1d_dna_config() -> UNetConfig {
    UNetConfig {
        channels: 64,
        channel_mults: vec![1, 2, 4],
        layers_per_block: 2,
        attention_levels: vec![],
        mid_attention: false,
        groups: 8,
        ..UNetConfig::default()
    }
}

/// One row of a per-operation breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct BreakdownEntry {
    /// The profiled region (see [`crate::profile`]).
    pub name: String,
    /// Milliseconds per step.
    pub ms_per_step: f64,
    /// Share of the step's time (regions nest, so shares can sum to more than 1).
    pub share: f64,
    /// Calls per step.
    pub calls_per_step: f64,
}

/// A workload's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadResult {
    /// The workload's name.
    pub workload: String,
    /// Items per second at the median step time.
    pub items_per_s: f64,
    /// Items per step.
    pub batch_size: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Median milliseconds per step.
    pub ms_per_step: f64,
    /// Timed steps.
    pub iters: usize,
    /// Compute precision of the products: "f32", or "bf16" ([`crate::nn::set_bf16_compute`]).
    pub precision: String,
    /// Where a step's time goes.
    pub breakdown: Vec<BreakdownEntry>,
    /// Figures of the workload's output beside its speed (a domain workload's quality, for
    /// comparing at equal quality), by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub quality: std::collections::BTreeMap<String, f64>,
}

/// A workload a domain contributes (`sugarcube bench --workload NAME`): one of its own
/// pipelines, timed by [`time_steps`] like the standard workloads. Domains list theirs in
/// [`crate::domain::Domain::workloads`].
#[derive(Clone, Copy)]
pub struct DomainWorkload {
    /// The name on the command line and in reports.
    pub name: &'static str,
    /// One line: what a step does and what an item is.
    pub about: &'static str,
    /// Runs it: `warmup` untimed steps, then `iters` timed ones.
    pub run: fn(warmup: usize, iters: usize) -> anyhow::Result<WorkloadResult>,
}

/// Times `step`: `warmup` untimed calls, then `iters` (at least 1) timed ones with the
/// [`crate::profile`] scopes recording. Returns the median seconds per step and where a step's
/// time went.
pub fn time_steps(
    warmup: usize,
    iters: usize,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Vec<BreakdownEntry>)> {
    let iters = iters.max(1);
    for _ in 0..warmup {
        step()?;
    }
    let was = profile::enabled();
    profile::take();
    profile::enable(true);
    let mut times = Vec::with_capacity(iters);
    let outcome = (0..iters).try_for_each(|_| {
        let began = Instant::now();
        step()?;
        times.push(began.elapsed().as_secs_f64());
        anyhow::Ok(())
    });
    profile::enable(was);
    outcome?;
    let total: f64 = times.iter().sum();
    let breakdown = profile::take()
        .into_iter()
        .map(|e| BreakdownEntry {
            ms_per_step: 1e3 * e.seconds / iters as f64,
            share: e.seconds / total,
            calls_per_step: e.calls as f64 / iters as f64,
            name: e.name,
        })
        .collect();
    Ok((median(times), breakdown))
}

/// A model plus what one step of the workload feeds it.
struct Setup {
    params: Params,
    model: Box<dyn Denoiser>,
    batch: Batch,
    info: DataInfo,
    process: GaussianProcess,
}

fn setup(w: Workload, device: &Device) -> anyhow::Result<Setup> {
    let params = Params::new(0);
    let vb = params.var_builder(DType::F32, device);
    let mut rng = Rng::new(1);
    let b = w.batch_size();
    let epsilon = GaussianProcess::new(GaussianConfig::default())?;
    let unconditional = |x0: Tensor| Batch {
        x0,
        cond: vec![],
        lengths: None,
    };
    Ok(match w {
        Workload::Unet2dTrain | Workload::Unet2dSampleForward => Setup {
            model: Box::new(UNet::new(
                vb,
                &unet2d_config(),
                Dims::Two,
                1,
                1,
                &CondSpec::default(),
            )?),
            params,
            batch: unconditional(
                randn(&mut rng, &[b, 1, 32, 32], DType::F32, device)?.clamp(-1f32, 1f32)?,
            ),
            info: DataInfo::new(vec![1, 32, 32]),
            process: epsilon,
        },
        Workload::Unet1dDnaTrain => {
            let (classes, len) = (4, 200);
            // one-hot with 0 replaced by -1, as DNA-Diffusion feeds it
            let mut onehot = vec![-1f32; b * 4 * len];
            for row in 0..b {
                for pos in 0..len {
                    let base = rng.below(4) as usize;
                    onehot[(row * 4 + base) * len + pos] = 1.0;
                }
            }
            let cond: Vec<Condition> = (0..b)
                .map(|_| Condition(vec![Value::Class(rng.below(classes as u64) as u32)]))
                .collect();
            let spec =
                CondSpec::classes("cell_type", (0..classes).map(|i| i.to_string()).collect());
            Setup {
                model: Box::new(UNet::new(vb, &unet1d_dna_config(), Dims::One, 4, 4, &spec)?),
                params,
                batch: Batch {
                    x0: Tensor::from_vec(onehot, (b, 4, len), device)?,
                    cond,
                    lengths: None,
                },
                info: DataInfo::new(vec![4, len]).with_cond(spec),
                process: epsilon,
            }
        }
        Workload::TransformerAnglesTrain => {
            let cfg = TransformerConfig {
                dropout: 0.0,
                ..TransformerConfig::foldingdiff_small()
            };
            let (len, features) = (128, 6);
            let angles: Vec<f32> = (0..b * len * features)
                .map(|_| ((2.0 * rng.uniform() - 1.0) * std::f64::consts::PI) as f32)
                .collect();
            Setup {
                model: Box::new(SequenceTransformer::new(
                    vb,
                    &cfg,
                    features,
                    &CondSpec::default(),
                )?),
                params,
                batch: unconditional(Tensor::from_vec(angles, (b, len, features), device)?),
                info: DataInfo::new(vec![len, features]),
                process: epsilon,
            }
        }
    })
}

/// Runs one workload: `warmup` untimed steps, then `iters` timed ones (at least 1).
pub fn run(
    w: Workload,
    device: &Device,
    warmup: usize,
    iters: usize,
) -> anyhow::Result<WorkloadResult> {
    let iters = iters.max(1);
    let s = setup(w, device)?;
    crate::nn::flush_denormals();
    let vars = s.params.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWConfig::default())?;
    // the trainer's own micro-batch step (label dropout as the trainer's default)
    let ctx = StepContext {
        process: &s.process,
        model: s.model.as_ref(),
        info: &s.info,
        cond_drop: 0.1,
        cond_drop_mode: CondDrop::Each,
        objective: Objective::Denoise,
    };
    let mut iteration = 0usize;
    let mut step = || -> Result<()> {
        iteration += 1;
        if w == Workload::Unet2dSampleForward {
            let t = Tensor::full(500f32, w.batch_size(), device)?;
            let _f = profile::scope("forward");
            s.model.forward(&Inputs::new(&s.batch.x0, &t))?.detach();
            return Ok(());
        }
        let rows = Rows::training(2, iteration, 0, w.batch_size());
        let (_, grads) = ctx.gradients(&s.batch, &rows, 1.0, &vars)?;
        let _t = profile::scope("optimizer");
        opt.step(&grads, 2e-4)
    };
    let (med, breakdown) = time_steps(warmup, iters, || Ok(step()?))?;
    Ok(WorkloadResult {
        workload: w.name().to_string(),
        items_per_s: w.batch_size() as f64 / med,
        batch_size: w.batch_size(),
        parameters: s.params.count(),
        ms_per_step: 1e3 * med,
        iters,
        precision: if crate::nn::bf16_compute() {
            "bf16"
        } else {
            "f32"
        }
        .to_string(),
        breakdown,
        quality: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()).unwrap(), w);
        }
        let err = Workload::parse("nope").unwrap_err().to_string();
        assert!(err.contains("unet2d_train"), "{err}");
    }
}
