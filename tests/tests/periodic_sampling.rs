//! `[train] sample_every`: samples drawn while training land in `RUN/samples/train-step-N/`, are
//! exactly what `sugarcube sample` draws from that step's checkpoint, and leave the training
//! run bit for bit as it is without them.

use candle_core::Device;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use sugarcube_core::checkpoint;
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_toy::Toy;

const TINY: &str = r#"
name = "sampling"
domain = "toy"
seed = 2

[data]
dataset = "quadrants"
n = 1000
conditional = true

[model]
hidden = 32
blocks = 1

[process]
schedule = "cosine"
prediction = "v"

[train]
steps = 12
batch_size = 32
warmup_steps = 3
checkpoint_every = 12
keep_checkpoints = 0
log_every = 1

[sample]
sampler = "ddim"
steps = 5
guidance = 2.0
n = 100
"#;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-sampling-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn tensors(path: &Path) -> anyhow::Result<HashMap<String, Vec<f32>>> {
    checkpoint::load_tensors(path, &Device::Cpu)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}

/// (step, loss, lr, grad_norm) of each metrics line: everything but the wall clock.
fn metrics(dir: &Path) -> Vec<(u64, f64, f64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].as_f64().unwrap();
            (
                v["step"].as_u64().unwrap(),
                f("loss"),
                f("lr"),
                f("grad_norm"),
            )
        })
        .collect()
}

#[test]
fn sampling_while_training_changes_nothing_and_matches_sugarcube_sample() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let plain_exp = ExperimentOf::<Toy>::parse(TINY, "tiny")?;
    let mut exp = plain_exp.clone();
    exp.train.sample_every = 5;
    exp.train.sample_n = 6;
    assert_eq!(
        exp.train_hash()?,
        plain_exp.train_hash()?,
        "sampling settings are not part of the configuration hash"
    );

    let plain = tmp("plain");
    run::train_experiment::<Toy>(
        &plain_exp,
        &TrainOptions {
            out: Some(plain.clone()),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let sampled = tmp("sampled");
    let (_, report) = run::train_experiment::<Toy>(
        &exp,
        &TrainOptions {
            out: Some(sampled.clone()),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    assert_eq!(report.steps, 12);

    // the same final checkpoint, bit for bit: weights, EMA, optimiser moments; the same log
    let last = checkpoint::Checkpoint::at(&plain.join("checkpoints"), 12);
    let (a, b) = (
        tensors(&last.tensors)?,
        tensors(&sampled.join("checkpoints/step-00000012.safetensors"))?,
    );
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(v, &b[k], "{k} differs with sampling on");
    }
    assert_eq!(metrics(&plain), metrics(&sampled));

    // a checkpoint at every sampling step, and the domain's files from each
    let steps: Vec<usize> = checkpoint::list(&sampled.join("checkpoints"))
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, vec![5, 10, 12]);
    for step in [5, 10] {
        let out = sampled.join(format!("samples/train-step-{step:08}"));
        for f in [
            "samples.safetensors",
            "samples.csv",
            "samples.png",
            "conditions.json",
        ] {
            assert!(out.join(f).exists(), "{f} missing from {}", out.display());
        }
        let t = checkpoint::load_tensors(&out.join("samples.safetensors"), &dev)?;
        assert_eq!(t["samples"].dims(), &[6, 2]);
    }
    assert!(
        !sampled.join("samples/train-step-00000012").exists(),
        "12 is not a multiple of 5"
    );
    assert!(!plain.join("samples").exists());

    // exactly what `sugarcube sample --n 6` draws from the step-10 checkpoint
    let at10 = tmp("at10");
    std::fs::create_dir_all(at10.join("checkpoints"))?;
    for f in [
        "config.toml",
        "data_info.json",
        "checkpoints/step-00000010.safetensors",
        "checkpoints/step-00000010.json",
    ] {
        std::fs::copy(sampled.join(f), at10.join(f))?;
    }
    let (out, _) = run::sample::<Toy>(
        &at10,
        &SampleRequest {
            n: Some(6),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let from_cli = tensors(&out.join("samples.safetensors"))?;
    let while_training = tensors(&sampled.join("samples/train-step-00000010/samples.safetensors"))?;
    assert_eq!(from_cli["samples"], while_training["samples"]);
    assert_eq!(
        std::fs::read_to_string(out.join("conditions.json"))?,
        std::fs::read_to_string(sampled.join("samples/train-step-00000010/conditions.json"))?
    );

    // the resolved config records the setting; a bad sample_n is an error naming the key
    let cfg = std::fs::read_to_string(sampled.join("config.toml"))?;
    assert!(
        cfg.contains("sample_every = 5") && cfg.contains("sample_n = 6"),
        "{cfg}"
    );
    let mut bad = exp.clone();
    bad.train.sample_n = 0;
    let err = run::train_experiment::<Toy>(
        &bad,
        &TrainOptions {
            out: Some(tmp("bad")),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("train.sample_n"), "{err}");
    for d in [plain, sampled, at10, tmp("bad")] {
        std::fs::remove_dir_all(d).ok();
    }
    Ok(())
}
