//! Classifier guidance (Dhariwal and Nichol 2021) end to end on the quadrants toy: an
//! unconditional model of the four Gaussians, and a noise-aware classifier of the attribute x
//! (left, right) trained by `task = "classifier"` under the same process. The classifier's
//! gradient alone moves the unconditional model's samples to the asked-for half, where the
//! unguided model puts half of them; sampling stays independent of the batch size.

use candle_core::Device;
use std::path::{Path, PathBuf};
use sugarcube_core::config::{ExperimentOf, Task};
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_toy::Toy;

fn experiment() -> anyhow::Result<ExperimentOf<Toy>> {
    let path: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/toy-quadrants.toml");
    ExperimentOf::<Toy>::load(&path)
}

fn fraction_right(points: &[Vec<f32>]) -> f64 {
    points.iter().filter(|p| p[0] > 0.0).count() as f64 / points.len() as f64
}

#[test]
fn a_noise_aware_classifier_steers_an_unconditional_model() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let root = std::env::temp_dir().join(format!("sugarcube-scorer-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let opts = |d: &str| TrainOptions {
        out: Some(root.join(d)),
        quiet: true,
        ..Default::default()
    };

    let mut model = experiment()?;
    model.data.conditional = false;
    model.train.steps = 1000;
    model.train.checkpoint_every = 1000;
    run::train_experiment::<Toy>(&model, &opts("model"), &dev)?;

    let mut clf = experiment()?;
    clf.task = Task::Classifier;
    clf.classifier.field = Some("x".into());
    clf.classifier.hidden = 64;
    clf.classifier.channel_mults = vec![1, 1];
    clf.train.steps = 400;
    clf.train.checkpoint_every = 400;
    clf.train.ema.enabled = false;
    run::train_experiment::<Toy>(&clf, &opts("classifier"), &dev)?;
    let ev = run::eval::<Toy>(
        &root.join("classifier"),
        &SampleRequest {
            n: Some(2000),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let (acc, q1, q4) = (
        ev.get("accuracy").unwrap(),
        ev.get("accuracy_q1").unwrap(),
        ev.get("accuracy_q4").unwrap(),
    );
    eprintln!("classifier accuracy {acc:.3} (least noisy quarter {q1:.3}, noisiest {q4:.3})");
    assert!(
        q1 > 0.97,
        "the classifier tells left from right on lightly noised points: {q1}"
    );
    assert!(
        q4 < q1,
        "and less well on heavily noised ones: {q4} vs {q1}"
    );

    let loaded = run::load_run::<Toy>(&root.join("model"), &dev)?;
    let req = |scale: Option<f64>, batch: usize| SampleRequest {
        n: Some(600),
        cond: vec!["x=right".into()],
        scorer: scale.map(|_| root.join("classifier")),
        scorer_scale: scale,
        batch_size: Some(batch),
        quiet: true,
        ..Default::default()
    };
    // without a scorer the unconditional model takes no condition
    assert!(loaded.generate(&req(None, 600)).is_err());
    let free = loaded
        .generate(&SampleRequest {
            n: Some(600),
            quiet: true,
            ..Default::default()
        })?
        .samples
        .to_vec2::<f32>()?;
    let guided = loaded.generate(&req(Some(4.0), 600))?;
    let points = guided.samples.to_vec2::<f32>()?;
    let (f, g) = (fraction_right(&free), fraction_right(&points));
    eprintln!("fraction on the right: unguided {f:.3}, classifier-guided toward x=right {g:.3}");
    assert!(
        (0.35..0.65).contains(&f),
        "the unconditional model covers both halves: {f}"
    );
    assert!(
        g > 0.95,
        "classifier guidance moves the samples to the right: {g}"
    );
    assert!(
        guided.conditions.iter().all(|c| c.class(0) == Some(1)),
        "each sample records its target"
    );

    // every Gaussian sampler is steered, including from the cosine schedule's last timestep
    // (linspace grids) where the guidance interval keeps the shift finite
    for sampler in ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"] {
        let mut r = req(Some(4.0), 400);
        r.n = Some(400);
        r.sampler = Some(sampler.into());
        let g = fraction_right(&loaded.generate(&r)?.samples.to_vec2::<f32>()?);
        eprintln!("{sampler}: {g:.3} on the right");
        assert!(
            g > 0.95,
            "{sampler}: classifier guidance moves the samples to the right: {g}"
        );
    }

    // the same samples whatever the batch size
    let small = loaded.generate(&req(Some(4.0), 7))?.samples;
    let d = small
        .sub(&guided.samples)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(d < 1e-5, "batch size changed the guided samples by {d}");

    // a classifier run does not sample, and a mismatched scorer is refused
    assert!(run::load_run::<Toy>(&root.join("classifier"), &dev).is_err());
    let e = loaded
        .generate(&SampleRequest {
            n: Some(4),
            scorer: Some(root.join("model")),
            quiet: true,
            ..Default::default()
        })
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("not a classifier run"), "{e:#}");
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
