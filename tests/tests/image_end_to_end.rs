//! The image domain end to end on the UCI 8x8 digits (the committed copy): a tiny conditional
//! UNet trains, samples as PNG files and a class-per-row grid, and is scored by the dataset's own
//! classifier (trained on first use and cached beside the data). Training must improve the
//! samples: against the untrained model (one step), the Fréchet distance falls and the samples
//! land in their requested classes far more often. The run's report renders in a browser.

use candle_core::Device;
use std::path::{Path, PathBuf};
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_image::Image;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-img-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn digits_train_sample_and_score() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let dir = tmp("digits");
    // a private copy of the data, so the classifier cache lands in the temporary folder
    let data = dir.join("digits.csv.gz");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/digits/digits.csv.gz"),
        &data,
    )?;
    let text = format!(
        r#"
name = "digits-tiny"
domain = "image"
[data]
format = "digits_csv"
train = "{}"
size = 8
conditional = true
[model]
channels = 16
channel_mults = [1, 2]
layers_per_block = 1
attention_levels = []
mid_attention = false
groups = 4
[process]
schedule = "cosine"
prediction = "v"
[train]
steps = 400
batch_size = 32
lr = 2e-3
warmup_steps = 20
checkpoint_every = 400
[train.ema]
max_decay = 0.99
[sample]
sampler = "dpmpp_2m"
steps = 8
guidance = 2.0
[eval]
n = 200
[eval.classifier]
epochs = 4
shift = 1
flip = false
"#,
        data.display()
    );
    let exp: ExperimentOf<Image> = ExperimentOf::<Image>::parse(&text, "digits-tiny")?;
    let untrained = dir.join("untrained");
    run::train_experiment::<Image>(
        &exp,
        &TrainOptions {
            out: Some(untrained.clone()),
            quiet: true,
            stop_at: Some(1),
            ..Default::default()
        },
        &dev,
    )?;
    let before = run::eval::<Image>(
        &untrained,
        &SampleRequest {
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let run_dir = dir.join("run");
    run::train_experiment::<Image>(
        &exp,
        &TrainOptions {
            out: Some(run_dir.clone()),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;

    let req = SampleRequest {
        n: Some(20),
        quiet: true,
        ..Default::default()
    };
    let (out, files) = run::sample::<Image>(&run_dir, &req, &dev)?;
    assert!(out.join("grid.png").exists());
    assert_eq!(
        files
            .iter()
            .filter(|f| f.to_string_lossy().contains("sample-"))
            .count(),
        20
    );
    assert!(
        out.join("sample-00003-3.png").exists(),
        "per-sample files carry their class"
    );

    let metrics = run::eval::<Image>(
        &run_dir,
        &SampleRequest {
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let get = |k: &str| metrics.get(k).unwrap_or_else(|| panic!("no {k}"));
    eprintln!("{:?}", metrics.metrics);
    let was = |k: &str| before.get(k).unwrap_or_else(|| panic!("no {k}"));
    eprintln!("untrained: {:?}", before.metrics);
    assert!(
        get("classifier_accuracy") > 0.8,
        "the evaluation classifier is too weak"
    );
    assert!(
        get("fd_floor") < get("fd"),
        "400 training steps cannot beat real data"
    );
    assert!(
        get("fd") < 0.5 * was("fd"),
        "training did not bring the samples closer: fd {} -> {}",
        was("fd"),
        get("fd")
    );
    assert!(
        get("cond_accuracy") > was("cond_accuracy") + 0.3,
        "samples do not follow their classes: {} -> {}",
        was("cond_accuracy"),
        get("cond_accuracy")
    );
    assert!(
        std::fs::read_dir(dir.join(".sugarcube-cache"))?.count() == 1,
        "the classifier is cached"
    );

    // the run's report: the sample grid beside real digits in the same layout, in a browser
    let html = sugarcube_core::report::refresh::<Image>(&run_dir)?;
    let text = std::fs::read_to_string(&html)?;
    for part in ["Samples", "training images", "<td>fd</td>", "cond_accuracy"] {
        assert!(text.contains(part), "the report lacks `{part}`");
    }
    // six training curves; the two grids
    sugarcube_tests::assert_report_renders(&html, 6, 2)?;
    Ok(())
}
