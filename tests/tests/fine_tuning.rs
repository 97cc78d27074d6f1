//! `[train] init` (`--init`): a run starts from another run's newest weights. The weights before
//! the first step are the source's EMA weights exactly, so the first loss is far below a fresh
//! start's; an unconditional moons run starts a conditional quadrants run (fresh condition
//! embeddings) and the other way round (the source's ignored); a model of another size is an
//! error naming the tensor and both shapes; a resumed run's own checkpoint wins over the init.

use candle_core::{DType, Device};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use sugarcube_core::checkpoint;
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::domain::{Domain, Split};
use sugarcube_core::params::Params;
use sugarcube_core::run::{self, TrainOptions};
use sugarcube_core::train;
use sugarcube_toy::{Toy, ToyData, ToyKind};

const MOONS: &str = r#"
name = "ft-moons"
domain = "toy"
seed = 1

[data]
dataset = "moons"
n = 2000

[model]
hidden = 32
blocks = 1

[process]
# epsilon with min-SNR weighting: the loss a trained model reaches is a third of a fresh one's
# (v prediction's is mostly irreducible on 2-D data)
schedule = "cosine"
prediction = "epsilon"
weighting = "min_snr"

[train]
steps = 200
batch_size = 64
lr = 3e-3
warmup_steps = 10
checkpoint_every = 200
log_every = 1

[train.ema]
max_decay = 0.95

[sample]
sampler = "ddim"
steps = 5
n = 10
"#;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-finetune-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        ..Default::default()
    }
}

fn first_loss(dir: &Path) -> f64 {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["step"], 1);
    v["loss"].as_f64().unwrap()
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A fresh model of `exp` (seeded weights), its parameters returned.
fn fresh(exp: &ExperimentOf<Toy>) -> anyhow::Result<Params> {
    let info = Toy::dataset(&exp.data, Split::Train, exp.seed)?.info();
    let params = Params::new(exp.seed);
    Toy::denoiser(
        &exp.model,
        &info,
        params.var_builder(DType::F32, &Device::Cpu),
    )?;
    Ok(params)
}

fn final_tensors(dir: &Path) -> anyhow::Result<HashMap<String, Vec<f32>>> {
    let c = checkpoint::latest(&dir.join("checkpoints")).unwrap();
    Ok(checkpoint::load_tensors(&c.tensors, &Device::Cpu)?
        .iter()
        .map(|(k, v)| (k.clone(), values(v)))
        .collect())
}

#[test]
fn fine_tuning_starts_from_the_source_weights() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let source_exp = ExperimentOf::<Toy>::parse(MOONS, "moons")?;
    let source = tmp("source");
    run::train_experiment::<Toy>(&source_exp, &opts(&source), &dev)?;
    let ema =
        checkpoint::load_tensors(&source.join("checkpoints/step-00000200.safetensors"), &dev)?;

    // the same model, another seed: every weight before step 1 is the source's EMA weight
    let mut exp = source_exp.clone();
    exp.seed = 7;
    exp.train.steps = 10;
    exp.train.checkpoint_every = 10;
    let params = fresh(&exp)?;
    let report = train::load_init(&params, &source, &dev, true)?;
    assert!(
        report.ema && report.step == 200 && report.fresh.is_empty() && report.ignored.is_empty(),
        "{report:?}"
    );
    for (name, t) in params.tensors() {
        assert_eq!(values(&t), values(&ema[&format!("ema.{name}")]), "{name}");
    }

    // the first step's loss is far below a fresh start's
    let scratch = tmp("scratch");
    run::train_experiment::<Toy>(&exp, &opts(&scratch), &dev)?;
    let tuned = tmp("tuned");
    run::train_experiment::<Toy>(
        &exp,
        &TrainOptions {
            init: Some(source.clone()),
            ..opts(&tuned)
        },
        &dev,
    )?;
    let (l_scratch, l_tuned) = (first_loss(&scratch), first_loss(&tuned));
    eprintln!("first-step loss: from scratch {l_scratch:.4}, fine-tuned {l_tuned:.4}");
    assert!(
        l_tuned < 0.6 * l_scratch,
        "fine-tuned {l_tuned} vs scratch {l_scratch}"
    );
    let cfg = std::fs::read_to_string(tuned.join("config.toml"))?;
    assert!(
        cfg.contains("init = "),
        "the resolved config records the init:\n{cfg}"
    );

    // resumed, a run's own checkpoint wins: 5 steps + resume (init still set) = 10 straight
    let split = tmp("split");
    let with_init = TrainOptions {
        init: Some(source.clone()),
        ..opts(&split)
    };
    run::train_experiment::<Toy>(
        &exp,
        &TrainOptions {
            stop_at: Some(5),
            ..with_init.clone()
        },
        &dev,
    )?;
    run::train_experiment::<Toy>(
        &exp,
        &TrainOptions {
            resume: true,
            ..with_init
        },
        &dev,
    )?;
    assert_eq!(final_tensors(&split)?, final_tensors(&tuned)?);

    // conditional quadrants from unconditional moons: fresh condition embeddings, the rest loaded
    let mut quad = exp.clone();
    quad.data = ToyData {
        dataset: ToyKind::Quadrants,
        conditional: true,
        ..quad.data.clone()
    };
    let params = fresh(&quad)?;
    let seeded = params.tensors();
    let report = train::load_init(&params, &source, &dev, true)?;
    assert_eq!(
        report.fresh,
        vec!["cond.x.weight".to_string(), "cond.y.weight".to_string()]
    );
    for (name, t) in params.tensors() {
        let want = if name.starts_with("cond.") {
            values(&seeded[&name])
        } else {
            values(&ema[&format!("ema.{name}")])
        };
        assert_eq!(values(&t), want, "{name}");
    }
    let quad_dir = tmp("quadrants");
    let (_, r) = run::train_experiment::<Toy>(
        &quad,
        &TrainOptions {
            init: Some(source.clone()),
            ..opts(&quad_dir)
        },
        &dev,
    )?;
    assert!(r.final_loss.is_finite() && r.steps == 10);

    // and back: an unconditional model from the conditional run ignores its condition tables
    let back = fresh(&exp)?;
    let report = train::load_init(&back, &quad_dir, &dev, true)?;
    assert_eq!(
        report.ignored,
        vec!["cond.x.weight".to_string(), "cond.y.weight".to_string()]
    );
    assert!(report.fresh.is_empty());

    // another model size: an error naming the tensor and both shapes, nothing set
    let mut wide = exp.clone();
    wide.model.hidden = 48;
    let params = fresh(&wide)?;
    let before = params.tensors();
    let err = train::load_init(&params, &source, &dev, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.init")
            && err.contains("blocks.0.fc1.bias")
            && err.contains("[48]")
            && err.contains("[32]"),
        "{err}"
    );
    for (name, t) in params.tensors() {
        assert_eq!(
            values(&t),
            values(&before[&name]),
            "{name} was set by a failed init"
        );
    }
    let err = run::train_experiment::<Toy>(
        &wide,
        &TrainOptions {
            init: Some(source.clone()),
            ..opts(&tmp("wide"))
        },
        &dev,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("blocks.0.fc1.bias"), "{err:#}");
    // more blocks in the source than in the model: the source's extra tensors are an error too
    let mut deep = source_exp.clone();
    deep.model.blocks = 2;
    let err = train::load_init(&fresh(&deep)?, &source, &dev, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.1.") && err.contains("missing"),
        "{err}"
    );
    let err = train::load_init(
        &fresh(&exp)?,
        &{
            let deep_dir = tmp("deep");
            let mut d = deep.clone();
            d.train.steps = 2;
            run::train_experiment::<Toy>(&d, &opts(&deep_dir), &dev)?;
            deep_dir
        },
        &dev,
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("blocks.1.") && err.contains("lacks"), "{err}");
    // not a run directory
    let err = train::load_init(&fresh(&exp)?, &tmp("nothing"), &dev, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.init") && err.contains("no checkpoint"),
        "{err}"
    );

    for d in [
        "source",
        "scratch",
        "tuned",
        "split",
        "quadrants",
        "wide",
        "deep",
        "nothing",
    ] {
        std::fs::remove_dir_all(tmp(d)).ok();
    }
    Ok(())
}
