//! Reports as a person sees them: small toy runs are trained, sampled and evaluated, their
//! report pages written, and each page opened in headless Chromium, which must load it offline
//! with no console errors, every image loaded and a sensible size (a screenshot is written
//! beside it). Without Chromium the browser half is skipped with a printed reason, except under
//! CI, where it fails.

use candle_core::Device;
use std::path::{Path, PathBuf};
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::report::{self, RunFiles};
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_tests::assert_report_renders;
use sugarcube_toy::Toy;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-report-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// Trains the shipped toy experiment `file` for `steps` steps into a fresh run and evaluates it
/// on `n` samples.
fn small_run(file: &str, steps: usize, n: usize, name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments")
        .join(file);
    let mut exp = ExperimentOf::<Toy>::load(&path)?;
    exp.train.steps = steps;
    exp.train.warmup_steps = exp.train.warmup_steps.min(steps / 4);
    exp.train.log_every = (steps / 20).max(1);
    exp.name = name.into();
    let dir = tmp(name);
    let opts = TrainOptions {
        out: Some(dir.clone()),
        quiet: true,
        ..Default::default()
    };
    run::train_experiment::<Toy>(&exp, &opts, &Device::Cpu)?;
    let req = SampleRequest {
        n: Some(n),
        quiet: true,
        ..Default::default()
    };
    run::eval::<Toy>(&dir, &req, &Device::Cpu)?;
    Ok(dir)
}

#[test]
fn toy_reports_render_in_a_browser() -> anyhow::Result<()> {
    let a = small_run("toy-moons.toml", 400, 600, "moons-a")?;
    let html = report::refresh::<Toy>(&a)?;
    let text = std::fs::read_to_string(&html)?;
    for part in [
        "Experiment",
        "Training",
        "Checkpoints",
        "Evaluation",
        "Samples over training data",
        "<td>sw2</td>",
        "floor (data vs data)",
        "machine",
    ] {
        assert!(text.contains(part), "the report lacks `{part}`");
    }
    assert!(
        !text.contains("src=\"http"),
        "nothing is fetched from the network"
    );
    // six training curves and the scatter
    assert_report_renders(&html, 7, 0)?;

    // two runs overlaid on one page
    let b = small_run("toy-moons.toml", 200, 300, "moons-b")?;
    let runs: Vec<_> = [&a, &b]
        .iter()
        .map(|d| {
            let f = RunFiles::read(d)?;
            let s = report::domain_sections::<Toy>(&f)?;
            Ok((f, s))
        })
        .collect::<anyhow::Result<_>>()?;
    let both = a.join("both.html");
    report::write(&runs, &both)?;
    let text = std::fs::read_to_string(&both)?;
    assert!(text.contains("<title>moons-a vs moons-b</title>"));
    assert!(
        text.contains("moons-b: Samples"),
        "each run's domain sections, named"
    );
    assert_report_renders(&both, 8, 0)?;

    // token data: bigram tables as heat maps
    let m = small_run("toy-markov.toml", 60, 64, "markov")?;
    let html = report::refresh::<Toy>(&m)?;
    let text = std::fs::read_to_string(&html)?;
    assert!(text.contains("Bigram frequencies of the samples"));
    assert_report_renders(&html, 8, 0)?;
    for d in [a, b, m] {
        std::fs::remove_dir_all(d).ok();
    }
    Ok(())
}
