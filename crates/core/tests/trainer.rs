//! Trainer behaviour on a tiny model: exact resume and the NaN guard.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use sugarcube_core::cond::{CondSpec, Condition, Value};
use sugarcube_core::denoiser::{Denoiser, Inputs};
use sugarcube_core::domain::{Batch, DataInfo, Dataset};
use sugarcube_core::params::Params;
use sugarcube_core::process::{GaussianConfig, GaussianProcess};
use sugarcube_core::train::{Objective, TrainConfig, Trainer};

struct Points(Vec<[f32; 2]>);

impl Dataset for Points {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn info(&self) -> DataInfo {
        DataInfo::new(vec![2]).with_cond(CondSpec::classes("class", vec!["a".into(), "b".into()]))
    }
    fn batch(&self, idx: &[usize], device: &Device) -> Result<Batch> {
        let x: Vec<f32> = idx.iter().flat_map(|&i| self.0[i]).collect();
        let cond = idx
            .iter()
            .map(|&i| Condition(vec![Value::Class((i % 2) as u32)]))
            .collect();
        Ok(Batch {
            x0: Tensor::from_vec(x, (idx.len(), 2), device)?,
            cond,
            lengths: None,
        })
    }
}

struct Tiny {
    a: Linear,
    b: Linear,
    emb: Linear,
}

impl Tiny {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            a: candle_nn::linear(3, 16, vb.pp("a"))?,
            b: candle_nn::linear(16, 2, vb.pp("b"))?,
            emb: candle_nn::linear_no_bias(3, 16, vb.pp("emb"))?,
        })
    }
}

impl Denoiser for Tiny {
    fn forward(&self, i: &Inputs) -> Result<Tensor> {
        let t = i.time.affine(1.0 / 1000.0, 0.0)?.unsqueeze(1)?;
        let h = self.a.forward(&Tensor::cat(&[i.x, &t], 1)?)?;
        let h = h
            .broadcast_add(&self.emb.forward(&i.cond.unwrap().fields[0])?)?
            .silu()?;
        self.b.forward(&h)
    }
}

fn data() -> Points {
    Points(
        (0..50)
            .map(|i| [(i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()])
            .collect(),
    )
}

fn train(
    dir: &std::path::Path,
    cfg: &TrainConfig,
    resume: bool,
    stop_at: Option<usize>,
) -> anyhow::Result<Params> {
    let dev = Device::Cpu;
    let params = Params::new(9);
    let model = Tiny::new(params.var_builder(DType::F32, &dev))?;
    let process = GaussianProcess::new(GaussianConfig::default())?;
    let data = data();
    let t = Trainer {
        cfg,
        process: &process,
        dataset: &data,
        model: &model,
        objective: Objective::Denoise,
        params: &params,
        device: dev,
        seed: 4,
        config_hash: "test".into(),
        run_dir: dir.to_path_buf(),
        quiet: true,
        stop_at,
        after_step: None,
        init: None,
    };
    t.run(resume)?;
    Ok(params)
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-trainer-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn resume_continues_the_same_run() -> anyhow::Result<()> {
    let mut cfg = TrainConfig {
        steps: 40,
        batch_size: 8,
        warmup_steps: 5,
        checkpoint_every: 7,
        ..Default::default()
    };
    cfg.grad_accum = 2;
    let straight_dir = tmp("straight");
    let straight = train(&straight_dir, &cfg, false, None)?;
    let split_dir = tmp("split");
    train(&split_dir, &cfg, false, Some(20))?;
    let resumed = train(&split_dir, &cfg, true, None)?;
    for ((na, a), (nb, b)) in straight.tensors().iter().zip(resumed.tensors().iter()) {
        assert_eq!(na, nb);
        let (a, b) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(a, b, "weights of {na} differ after resume");
    }
    // the EMA and the optimiser moments in the final checkpoints agree too
    let dev = Device::Cpu;
    let last =
        |d: &std::path::Path| sugarcube_core::checkpoint::latest(&d.join("checkpoints")).unwrap();
    let ta = sugarcube_core::checkpoint::load_tensors(&last(&straight_dir).tensors, &dev)?;
    let tb = sugarcube_core::checkpoint::load_tensors(&last(&split_dir).tensors, &dev)?;
    assert_eq!(ta.len(), tb.len());
    for (k, a) in &ta {
        let b = &tb[k];
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            "{k}"
        );
    }
    // metrics.jsonl has each logged step once
    let lines = std::fs::read_to_string(split_dir.join("metrics.jsonl"))?;
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=4).map(|i| i * 10).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn gradient_accumulation_draws_the_same_numbers_as_one_batch() -> anyhow::Result<()> {
    // every example's timestep, noise and label dropout come from a stream keyed by (seed, step,
    // position), so two micro-batches of 8 train as one batch of 16 (up to the order of float sums)
    let one = TrainConfig {
        steps: 12,
        batch_size: 16,
        warmup_steps: 2,
        checkpoint_every: 12,
        ..Default::default()
    };
    let two = TrainConfig {
        batch_size: 8,
        grad_accum: 2,
        ..one.clone()
    };
    let a = train(&tmp("one-batch"), &one, false, None)?;
    let b = train(&tmp("two-micro"), &two, false, None)?;
    let mut worst = 0f32;
    for ((na, x), (_, y)) in a.tensors().iter().zip(b.tensors().iter()) {
        let (x, y) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            y.flatten_all()?.to_vec1::<f32>()?,
        );
        let d = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        worst = worst.max(d);
        assert!(
            d < 1e-4,
            "{na} differs by {d} between one batch and two micro-batches"
        );
    }
    // and a different data order (another seed) would differ by far more
    eprintln!("largest weight difference, 16 vs 2 x 8: {worst:e}");
    Ok(())
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_checkpoint() -> anyhow::Result<()> {
    let dir = tmp("nan");
    let calm = TrainConfig {
        steps: 10,
        batch_size: 8,
        warmup_steps: 0,
        checkpoint_every: 5,
        ..Default::default()
    };
    train(&dir, &calm, false, None)?;
    // resume with an absurd learning rate and no clipping: the weights blow up within a few steps
    let wild = TrainConfig {
        steps: 200,
        lr: 1e30,
        grad_clip: 0.0,
        checkpoint_every: 1,
        ..calm
    };
    let err = train(&dir, &wild, true, None)
        .err()
        .expect("training must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("diverged at step"), "{msg}");
    let good = sugarcube_core::checkpoint::latest(&dir.join("checkpoints"))
        .expect("a checkpoint survives");
    assert_eq!(good.step, 10, "the last good checkpoint was replaced");
    assert!(msg.contains(&format!("(step {})", good.step)), "{msg}");
    let failed_step: usize = msg
        .split("diverged at step ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()?;
    assert!(good.step < failed_step);
    for (k, t) in sugarcube_core::checkpoint::load_tensors(&good.tensors, &Device::Cpu)? {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{k} is not finite in the kept checkpoint"
        );
    }
    Ok(())
}
