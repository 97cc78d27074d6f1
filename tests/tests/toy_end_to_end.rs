//! End to end on toy data: the shipped experiments/toy-moons.toml trains (about a minute on two
//! cores), and its samples land close to the data distribution: the sliced Wasserstein-2
//! distance to fresh data is within a small multiple of the data-vs-data floor and far below
//! that of the untrained model. Sampling is independent of the batch size.

use candle_core::Device;
use std::path::{Path, PathBuf};
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_toy::Toy;

fn experiment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/toy-moons.toml")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-e2e-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn metric(m: &sugarcube_core::domain::Evaluation, k: &str) -> f64 {
    m.get(k).unwrap_or_else(|| panic!("no metric {k}"))
}

#[test]
fn moons_train_to_the_data_distribution() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let exp = ExperimentOf::<Toy>::load(&experiment())?;

    // the untrained model: one step (warmup makes its learning rate 0)
    let untrained_dir = tmp("untrained");
    run::train::<Toy>(
        &experiment(),
        &TrainOptions {
            out: Some(untrained_dir.clone()),
            quiet: true,
            stop_at: Some(1),
            ..Default::default()
        },
        &dev,
    )?;
    let req = SampleRequest {
        quiet: true,
        ..Default::default()
    };
    let before = run::eval::<Toy>(&untrained_dir, &req, &dev)?;

    let dir = tmp("moons");
    let (_, report) = run::train::<Toy>(
        &experiment(),
        &TrainOptions {
            out: Some(dir.clone()),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    assert_eq!(report.steps, exp.train.steps);
    let after = run::eval::<Toy>(&dir, &req, &dev)?;

    let (sw2, floor, sw2_before) = (
        metric(&after, "sw2"),
        metric(&after, "sw2_floor"),
        metric(&before, "sw2"),
    );
    eprintln!("sw2 trained {sw2:.4}, floor {floor:.4}, untrained {sw2_before:.4}");
    assert!(
        sw2 < 2.0 * floor,
        "trained samples are far from the data: sw2 {sw2} vs floor {floor}"
    );
    assert!(
        sw2 < 0.3 * sw2_before,
        "training did not help enough: {sw2} vs untrained {sw2_before}"
    );

    // the same seed gives the same samples whatever the batch size
    let loaded = run::load_run::<Toy>(&dir, &dev)?;
    let small = SampleRequest {
        n: Some(37),
        batch_size: Some(5),
        quiet: true,
        ..Default::default()
    };
    let large = SampleRequest {
        n: Some(37),
        batch_size: Some(37),
        quiet: true,
        ..Default::default()
    };
    let a = loaded.generate(&small)?.samples.to_vec2::<f32>()?;
    let b = loaded.generate(&large)?.samples.to_vec2::<f32>()?;
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "batch size changed the samples by {worst}");
    // and a prefix of a longer run is the shorter run
    let c = loaded
        .generate(&SampleRequest {
            n: Some(10),
            quiet: true,
            ..Default::default()
        })?
        .samples
        .to_vec2::<f32>()?;
    let worst = c
        .iter()
        .flatten()
        .zip(a.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "n changed the first samples by {worst}");
    Ok(())
}
