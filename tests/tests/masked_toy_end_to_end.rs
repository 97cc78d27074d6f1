//! Masked discrete diffusion (MDLM) end to end on token sequences whose distribution is known:
//! experiments/toy-markov.toml (32 tokens of a fixed 4-state Markov chain) trained for 600 steps
//! (seconds on two cores). The model's likelihood bound on held-out sequences never falls below
//! the data's exact entropy, comes close to it, and is far below the untrained model's; the
//! samples' bigram statistics come close to the chain's, against the data-vs-data floor and far
//! better than the untrained model's.

use candle_core::Device;
use std::path::{Path, PathBuf};
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_toy::Toy;

fn experiment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/toy-markov.toml")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-markov-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

#[test]
fn masked_diffusion_learns_the_markov_chain() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut exp = ExperimentOf::<Toy>::load(&experiment())?;
    exp.train.steps = 600;
    exp.train.checkpoint_every = 600;
    let req = SampleRequest {
        n: Some(500),
        quiet: true,
        ..Default::default()
    };

    let untrained = tmp("untrained");
    run::train_experiment::<Toy>(
        &exp,
        &TrainOptions {
            out: Some(untrained.clone()),
            quiet: true,
            stop_at: Some(1),
            ..Default::default()
        },
        &dev,
    )?;
    let before = run::eval::<Toy>(&untrained, &req, &dev)?;
    let dir = tmp("trained");
    run::train_experiment::<Toy>(
        &exp,
        &TrainOptions {
            out: Some(dir.clone()),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let after = run::eval::<Toy>(&dir, &req, &dev)?;
    let get = |ev: &sugarcube_core::domain::Evaluation, k: &str| {
        ev.get(k).unwrap_or_else(|| panic!("no {k}"))
    };

    let (entropy, bound, bound0) = (
        get(&after, "entropy_bits"),
        get(&after, "nll_bound_bits"),
        get(&before, "nll_bound_bits"),
    );
    let (tv, floor, tv0) = (
        get(&after, "bigram_tv"),
        get(&after, "bigram_tv_floor"),
        get(&before, "bigram_tv"),
    );
    eprintln!("bits/token: entropy {entropy:.4}, bound trained {bound:.4}, untrained {bound0:.4}; bigram TV trained {tv:.4}, floor {floor:.4}, untrained {tv0:.4}");
    assert!(
        bound >= entropy - 0.01,
        "the bound {bound} fell below the entropy {entropy}"
    );
    assert!(
        bound < entropy + 0.15,
        "the bound {bound} is far from the entropy {entropy}"
    );
    assert!(
        bound < bound0 - 0.3,
        "training did not tighten the bound: {bound0} -> {bound}"
    );
    assert!(tv < 0.3 * tv0, "bigrams barely improved: {tv0} -> {tv}");
    assert!(
        tv < 5.0 * floor,
        "bigrams far from the chain's: {tv} vs floor {floor}"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&untrained).ok();
    Ok(())
}
