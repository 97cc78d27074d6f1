//! bfloat16 compute trains as well as float32: a small image UNet learns to denoise bar images,
//! and a small transformer smooth sequences, from the same seed in both precisions; with
//! bfloat16 the loss falls as far and follows the float32 curve closely (while differing from
//! it, so the bfloat16 kernels did run). Its own test binary, because the precision switch is
//! process-wide.

use candle_core::{DType, Device, Tensor};
use sugarcube_core::cond::{CondDrop, CondSpec};
use sugarcube_core::denoiser::{Denoiser, Inputs};
use sugarcube_core::domain::{Batch, DataInfo};
use sugarcube_core::nn::{self, Dims, SequenceTransformer, TransformerConfig, UNet, UNetConfig};
use sugarcube_core::optim::{gradients, AdamW, AdamWConfig};
use sugarcube_core::params::Params;
use sugarcube_core::process::{GaussianConfig, GaussianProcess};
use sugarcube_core::rng::{Rng, Rows};
use sugarcube_core::train::{Objective, StepContext};

/// 16 images of 8x8 in {-1, 1}: a bright bar, horizontal or vertical, at each row or column.
fn bars(dev: &Device) -> candle_core::Result<Tensor> {
    let mut v = vec![-1f32; 16 * 64];
    for i in 0..16 {
        let (line, vertical) = (i % 8, i >= 8);
        for j in 0..8 {
            let (r, c) = if vertical { (j, line) } else { (line, j) };
            v[i * 64 + r * 8 + c] = 1.0;
        }
    }
    Tensor::from_vec(v, (16, 1, 8, 8), dev)
}

/// 16 sequences of 16 positions and 3 features: sines of different frequencies and phases.
fn waves(dev: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..16 * 16 * 3)
        .map(|i| {
            let (s, p, f) = (i / 48, (i / 3) % 16, i % 3);
            ((p as f32 * (0.2 + 0.05 * s as f32)) + f as f32).sin()
        })
        .collect();
    Tensor::from_vec(v, (16, 16, 3), dev)
}

/// Which network to train.
#[derive(Clone, Copy, Debug)]
enum Net {
    UNet,
    Transformer,
}

/// The losses of `steps` AdamW steps from a fixed seed, with or without bfloat16 compute.
fn train(net: Net, bf16: bool, steps: usize) -> anyhow::Result<Vec<f64>> {
    let _precision = nn::Bf16Compute::set(bf16)?;
    let dev = Device::Cpu;
    let params = Params::new(11);
    let vb = params.var_builder(DType::F32, &dev);
    let (model, x0): (Box<dyn Denoiser>, Tensor) = match net {
        Net::UNet => {
            let cfg = UNetConfig {
                channels: 16,
                channel_mults: vec![1, 2],
                layers_per_block: 1,
                attention_levels: vec![],
                mid_attention: false,
                groups: 4,
                ..UNetConfig::default()
            };
            (
                Box::new(UNet::new(vb, &cfg, Dims::Two, 1, 1, &CondSpec::default())?),
                bars(&dev)?,
            )
        }
        Net::Transformer => {
            let cfg = TransformerConfig {
                hidden: 32,
                layers: 2,
                heads: 2,
                intermediate: 64,
                max_len: 16,
                dropout: 0.0,
                ..TransformerConfig::default()
            };
            (
                Box::new(SequenceTransformer::new(vb, &cfg, 3, &CondSpec::default())?),
                waves(&dev)?,
            )
        }
    };
    let process = GaussianProcess::new(GaussianConfig::default())?;
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    )?;
    let info = DataInfo::new(x0.dims()[1..].to_vec());
    let b = x0.dim(0)?;
    let batch = Batch {
        x0,
        cond: vec![],
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
    let mut losses = vec![];
    for step in 0..steps {
        let loss = ctx.loss(&batch, &Rows::training(12, step, 0, b))?;
        losses.push(loss.to_scalar::<f32>()? as f64);
        opt.step(&gradients(&loss.backward()?, &vars)?, 3e-3)?;
    }
    Ok(losses)
}

/// The precision switch is process-wide: the tests take turns.
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn bf16_trains_like_f32() -> anyhow::Result<()> {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    if !nn::bf16_supported() {
        let err = nn::set_bf16_compute(true).unwrap_err().to_string();
        assert!(err.contains("AVX-512 BF16"), "{err}");
        eprintln!("skipped: this CPU has no AVX-512 BF16 ({err})");
        return Ok(());
    }
    let steps = 150;
    for net in [Net::UNet, Net::Transformer] {
        let (f32_losses, bf16_losses) = (train(net, false, steps)?, train(net, true, steps)?);
        assert_ne!(
            f32_losses, bf16_losses,
            "{net:?}: bfloat16 compute must change the arithmetic"
        );
        let (first, last_f32, last_bf16) = (
            mean(&bf16_losses[..10]),
            mean(&f32_losses[steps - 30..]),
            mean(&bf16_losses[steps - 30..]),
        );
        println!("{net:?} loss: first 10 steps {first:.4}; last 30 steps f32 {last_f32:.4}, bf16 {last_bf16:.4}");
        assert!(
            last_bf16 < 0.5 * first,
            "{net:?}: bfloat16 training must learn: {first:.4} -> {last_bf16:.4}"
        );
        assert!(
            (last_bf16 - last_f32).abs() < 0.1 * last_f32,
            "{net:?}: bfloat16 {last_bf16:.4} vs float32 {last_f32:.4}"
        );
    }
    Ok(())
}

/// In bfloat16 too, a sample's network output does not depend on the batch it is in (what makes
/// `sample --bf16` give the same samples whatever the batch size), for the image UNet, the 1-D
/// UNet (sequences laid side by side) and the transformer.
#[test]
fn bf16_outputs_do_not_depend_on_the_batch() -> anyhow::Result<()> {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    if !nn::bf16_supported() {
        eprintln!("skipped: this CPU has no AVX-512 BF16");
        return Ok(());
    }
    let _precision = nn::Bf16Compute::set(true)?;
    let dev = Device::Cpu;
    let params = Params::new(21);
    let unet = UNetConfig {
        channels: 16,
        channel_mults: vec![1, 2],
        layers_per_block: 1,
        attention_levels: vec![1],
        head_dim: 8,
        groups: 4,
        ..UNetConfig::default()
    };
    let seq = UNetConfig {
        mid_attention: false,
        attention_levels: vec![],
        ..unet.clone()
    };
    let tf = TransformerConfig {
        hidden: 32,
        layers: 2,
        heads: 2,
        intermediate: 64,
        max_len: 16,
        dropout: 0.0,
        ..TransformerConfig::default()
    };
    let cases: Vec<(Box<dyn Denoiser>, Vec<usize>)> = vec![
        (
            Box::new(UNet::new(
                params.var_builder(DType::F32, &dev).pp("a"),
                &unet,
                Dims::Two,
                1,
                1,
                &CondSpec::default(),
            )?),
            vec![20, 1, 8, 8],
        ),
        (
            Box::new(UNet::new(
                params.var_builder(DType::F32, &dev).pp("b"),
                &seq,
                Dims::One,
                4,
                4,
                &CondSpec::default(),
            )?),
            vec![20, 4, 24],
        ),
        (
            Box::new(SequenceTransformer::new(
                params.var_builder(DType::F32, &dev).pp("c"),
                &tf,
                3,
                &CondSpec::default(),
            )?),
            vec![20, 16, 3],
        ),
    ];
    let mut rng = Rng::new(22);
    for (model, shape) in cases {
        let x = sugarcube_core::tensor_util::randn(&mut rng, &shape, DType::F32, &dev)?;
        let t = Tensor::full(500f32, shape[0], &dev)?;
        let all = model.forward(&Inputs::new(&x, &t))?;
        for i in [0, 7, 19] {
            let one = model.forward(&Inputs::new(&x.narrow(0, i, 1)?, &t.narrow(0, i, 1)?))?;
            let (a, b) = (
                one.flatten_all()?.to_vec1::<f32>()?,
                all.narrow(0, i, 1)?.flatten_all()?.to_vec1::<f32>()?,
            );
            assert_eq!(a, b, "{shape:?}: sample {i} alone differs from the batch");
        }
    }
    Ok(())
}
