//! Numerics unchanged: short training runs of every network family with sugarcube's fused CPU
//! kernels (convolution, GroupNorm/LayerNorm, softmax, GELU, bias, upsampling) follow the same
//! loss curve and reach the same weights as with candle's own ops (`nn::set_fused_kernels`).
//! Its own test binary, because the switch is process-wide.

use candle_core::{DType, Device, Tensor};
use sugarcube_core::cond::{CondDrop, CondSpec, Condition, Value};
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{Batch, DataInfo};
use sugarcube_core::nn::{self, Dims, SequenceTransformer, TransformerConfig, UNet, UNetConfig};
use sugarcube_core::optim::gradients;
use sugarcube_core::params::Params;
use sugarcube_core::process::{GaussianConfig, GaussianProcess};
use sugarcube_core::rng::{Rng, Rows};
use sugarcube_core::tensor_util::randn;
use sugarcube_core::train::{Objective, StepContext};

/// Which network to train.
#[derive(Clone, Copy, Debug)]
enum Net {
    UNet2d,
    UNet1d,
    Transformer,
}

/// Trains `steps` plain gradient-descent steps from a fixed seed; returns the losses and the
/// final weights. (Not AdamW: it normalises each gradient entry, so float rounding in a
/// gradient that is zero in exact arithmetic, such as an attention key bias's, becomes a full
/// step of either sign.)
fn train(net: Net, fused: bool, steps: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    nn::set_fused_kernels(fused);
    let dev = Device::Cpu;
    let params = Params::new(5);
    let vb = params.var_builder(DType::F32, &dev);
    let mut rng = Rng::new(6);
    let none = CondSpec::default();
    let classes = CondSpec::classes("class", vec!["a".into(), "b".into(), "c".into()]);
    let (model, x0, spec): (Box<dyn Denoiser>, Tensor, &CondSpec) = match net {
        Net::UNet2d => {
            let cfg = UNetConfig {
                channels: 8,
                channel_mults: vec![1, 2],
                layers_per_block: 1,
                attention_levels: vec![1],
                head_dim: 8,
                groups: 4,
                ..UNetConfig::default()
            };
            (
                Box::new(UNet::new(vb, &cfg, Dims::Two, 1, 1, &classes)?),
                randn(&mut rng, &[4, 1, 8, 8], DType::F32, &dev)?,
                &classes,
            )
        }
        Net::UNet1d => {
            let cfg = UNetConfig {
                channels: 8,
                channel_mults: vec![1, 2],
                layers_per_block: 1,
                attention_levels: vec![],
                mid_attention: false,
                groups: 4,
                ..UNetConfig::default()
            };
            (
                Box::new(UNet::new(vb, &cfg, Dims::One, 4, 4, &none)?),
                randn(&mut rng, &[4, 4, 12], DType::F32, &dev)?,
                &none,
            )
        }
        Net::Transformer => {
            let cfg = TransformerConfig {
                hidden: 16,
                layers: 2,
                heads: 2,
                intermediate: 32,
                max_len: 10,
                dropout: 0.0,
                ..TransformerConfig::default()
            };
            (
                Box::new(SequenceTransformer::new(vb, &cfg, 3, &none)?),
                randn(&mut rng, &[4, 10, 3], DType::F32, &dev)?,
                &none,
            )
        }
    };
    let process = GaussianProcess::new(GaussianConfig::default())?;
    // the trainer's own step, on one fixed batch (classes 0, 1, 2 and the null)
    let cond: Vec<Condition> = if spec.is_empty() {
        vec![]
    } else {
        (0..4)
            .map(|i| {
                if i < 3 {
                    Condition(vec![Value::Class(i)])
                } else {
                    spec.null()
                }
            })
            .collect()
    };
    let info = DataInfo::new(x0.dims()[1..].to_vec()).with_cond(spec.clone());
    let batch = Batch {
        x0,
        cond,
        lengths: None,
    };
    let ctx = StepContext {
        process: &process,
        model: model.as_ref(),
        info: &info,
        cond_drop: 0.0,
        cond_drop_mode: CondDrop::Each,
        objective: Objective::Denoise,
    };
    let vars = params.vars();
    let mut losses = vec![];
    for step in 0..steps {
        let loss = ctx.loss(&batch, &Rows::training(6, step, 0, 4))?;
        losses.push(loss.to_scalar::<f32>()? as f64);
        for ((_, v), g) in vars.iter().zip(gradients(&loss.backward()?, &vars)?) {
            v.set(&v.as_tensor().sub(&g.affine(0.05, 0.0)?)?)?;
        }
    }
    let mut weights = vec![];
    for (_, v) in &vars {
        weights.extend(
            v.as_tensor()
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?,
        );
    }
    nn::set_fused_kernels(true);
    Ok((losses, weights))
}

#[test]
fn fused_kernels_train_like_candle_ops() -> anyhow::Result<()> {
    for net in [Net::UNet2d, Net::UNet1d, Net::Transformer] {
        let (loss_fused, w_fused) = train(net, true, 10)?;
        let (loss_plain, w_plain) = train(net, false, 10)?;
        for (step, (a, b)) in loss_fused.iter().zip(&loss_plain).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-3),
                "{net:?} step {step}: loss {a} (fused) vs {b} (candle)"
            );
        }
        let diff = w_fused
            .iter()
            .zip(&w_plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            diff < 1e-4,
            "{net:?}: weights differ by {diff} after 10 steps"
        );
        // the losses must move, or the comparison says nothing
        assert!(
            loss_fused.iter().any(|l| (l - loss_fused[0]).abs() > 1e-3),
            "{net:?}: {loss_fused:?}"
        );
        println!("{net:?}: losses {loss_fused:?}, largest weight difference {diff:.2e}");
    }
    Ok(())
}
