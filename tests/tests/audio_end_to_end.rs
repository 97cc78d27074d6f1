//! The audio domain end to end on the 50 committed notes (datasets/audio/notes: five
//! instruments at ten pitches, rendered from FluidR3_GM): train a small conditional UNet on
//! their cpu-preset spectrograms briefly, with three (instrument, pitch) pairs held out, and
//! check that training brought the generated spectrograms toward real notes (Fréchet distance
//! in the instrument classifier's features, distance to the nearest real spectrogram); that the evaluation reports every figure, for all notes and for
//! the held-out pairs; that samples are spectrogram PNGs that decode with their EXIF and WAV
//! files; and that the run's report renders in a browser with its players.

use candle_core::Device;
use std::path::Path;
use sugarcube_audio::domain::HeldoutPairs;
use sugarcube_audio::AudioNotes;
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::run::{self, SampleRequest, TrainOptions};

#[test]
fn training_generates_notes_at_the_requested_pitch() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let root = std::env::temp_dir().join(format!("sugarcube-audio-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root)?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut exp = ExperimentOf::<AudioNotes>::load(&repo.join("experiments/audio-notes.toml"))?;
    // a copy of the committed notes, so the evaluation classifier's cache stays in the temp dir
    let notes = root.join("notes");
    std::fs::create_dir_all(&notes)?;
    for e in std::fs::read_dir(repo.join("datasets/audio/notes"))? {
        let p = e?.path();
        if p.is_file() {
            std::fs::copy(&p, notes.join(p.file_name().unwrap()))?;
        }
    }
    exp.data.notes = notes;
    exp.data.heldout_pairs = HeldoutPairs::Count(3);
    exp.model.channels = 16;
    exp.model.patch_size = 1;
    exp.train.batch_size = 16;
    exp.train.warmup_steps = 20;
    exp.sample.steps = 12;
    exp.eval.n = 50;
    exp.eval.classifier_epochs = 30;
    let opts = |d: &str| TrainOptions {
        out: Some(root.join(d)),
        quiet: true,
        ..Default::default()
    };
    let mut untrained = exp.clone();
    untrained.train.steps = 1;
    untrained.train.checkpoint_every = 1;
    run::train_experiment::<AudioNotes>(&untrained, &opts("untrained"), &dev)?;
    exp.train.steps = 400;
    exp.train.checkpoint_every = 400;
    run::train_experiment::<AudioNotes>(&exp, &opts("trained"), &dev)?;

    let req = SampleRequest {
        quiet: true,
        ..Default::default()
    };
    let before = run::eval::<AudioNotes>(&root.join("untrained"), &req, &dev)?;
    let after = run::eval::<AudioNotes>(&root.join("trained"), &req, &dev)?;
    let get = |e: &sugarcube_core::domain::Evaluation, k: &str| {
        e.get(k).unwrap_or_else(|| panic!("eval.json lacks {k}"))
    };
    for k in [
        "pitch_accuracy",
        "pitch_accuracy_floor",
        "instrument_accuracy",
        "classifier_accuracy",
        "fd",
        "fd_floor",
        "nearest_train_ratio",
        "heldout_pitch_accuracy",
        "heldout_instrument_accuracy",
        "heldout_fd",
        "heldout_nearest_train_ratio",
    ] {
        get(&after, k);
    }
    for k in [
        "pitch_accuracy",
        "instrument_accuracy",
        "fd",
        "nearest_train_ratio",
    ] {
        eprintln!(
            "{k}: untrained {:.3}, trained {:.3}",
            get(&before, k),
            get(&after, k)
        );
    }
    eprintln!(
        "floors: pitch {:.3}, classifier {:.3}, fd {:.3}; held-out pairs: pitch {:.3}, instrument {:.3}",
        get(&after, "pitch_accuracy_floor"),
        get(&after, "classifier_accuracy"),
        get(&after, "fd_floor"),
        get(&after, "heldout_pitch_accuracy"),
        get(&after, "heldout_instrument_accuracy")
    );
    assert!(
        get(&after, "pitch_accuracy_floor") >= 0.9,
        "real held-out notes keep their pitch through the codec"
    );
    // this brief run learns what notes look like, not yet which pitch was asked for (the
    // experiment's 15 minutes are for that: README)
    assert!(
        get(&after, "fd") < 0.2 * get(&before, "fd"),
        "training brings the notes toward real ones in the classifier's features"
    );
    assert!(
        get(&after, "nearest_train_ratio") < 0.6 * get(&before, "nearest_train_ratio"),
        "and toward real spectrograms pixel for pixel"
    );

    // samples are spectrogram PNGs (their parameters in EXIF) and the WAVs they decode to
    let (_, files) = run::sample::<AudioNotes>(
        &root.join("trained"),
        &SampleRequest {
            n: Some(2),
            cond: vec!["instrument=violin,pitch=60".into()],
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let png = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "png"))
        .expect("a PNG");
    assert!(
        png.to_string_lossy().contains("violin-60"),
        "{}",
        png.display()
    );
    let (px, exif) = sugarcube_audio::codec::read_image(&std::fs::read(png)?, "sample")?;
    assert_eq!((px.height, px.width), (64, 64));
    assert_eq!(exif.expect("EXIF parameters").0.preset, "cpu");
    let wav = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "wav"))
        .expect("a WAV");
    let audio = sugarcube_audio::read_wav(wav)?;
    assert_eq!(audio.rate, 16000);
    assert!(audio.seconds() > 0.9);

    // seed interpolation: the ends are the two seeds' own samples, and neighbouring frames
    // are closer to each other than the ends are
    let trained = root.join("trained");
    let cond = "instrument=violin,pitch=60";
    let ends = run::InterpolationEnds {
        from_seed: 1,
        to_seed: 2,
        frames: 5,
        from_cond: Some(cond.into()),
        to_cond: None,
    };
    let files = sugarcube_audio::domain::interpolate(
        &trained,
        &req,
        &ends,
        &root.join("interpolation"),
        0.25,
    )?;
    let loaded = run::load_run::<AudioNotes>(&trained, &dev)?;
    for (seed, frame) in [(1, 0), (2, 4)] {
        let own = loaded.generate(&SampleRequest {
            n: Some(1),
            seed: Some(seed),
            cond: vec![cond.into()],
            quiet: true,
            ..Default::default()
        })?;
        let gap = own
            .samples
            .sub(&files.interpolation.frames.narrow(0, frame, 1)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(
            gap < 1e-4,
            "frame {frame} is seed {seed}'s sample (gap {gap})"
        );
    }
    let dist = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let im = &files.images;
    let ends_apart = dist(&im[0], &im[4]);
    let steps: Vec<f64> = im.windows(2).map(|w| dist(&w[0], &w[1])).collect();
    eprintln!("interpolation: neighbours {steps:.2?}, ends {ends_apart:.2}");
    assert!(
        steps.iter().all(|&d| d < ends_apart),
        "neighbouring frames {steps:?} are closer than the ends {ends_apart}"
    );
    let one = sugarcube_audio::read_wav(&files.frames[0].1)?.len();
    let chained = sugarcube_audio::read_wav(&files.chained)?;
    assert_eq!(chained.len(), 5 * one - 4 * (0.25 * 16000.0) as usize);
    // between two conditions too; a sampler that adds noise every step is refused
    let two = sugarcube_audio::domain::interpolate(
        &trained,
        &req,
        &run::InterpolationEnds {
            to_cond: Some("instrument=flute,pitch=72".into()),
            frames: 3,
            ..ends.clone()
        },
        &root.join("interpolation-cond"),
        0.25,
    )?;
    assert_eq!(two.frames.len(), 3);
    let ddpm = SampleRequest {
        sampler: Some("ddpm".into()),
        ..req.clone()
    };
    let err = sugarcube_audio::domain::interpolate(&trained, &ddpm, &ends, &root.join("x"), 0.25)
        .err()
        .expect("ddpm is refused");
    assert!(err.to_string().contains("deterministic"), "{err}");

    // the run's report renders in a browser, players and all
    let html = sugarcube_core::report::refresh::<AudioNotes>(&root.join("trained"))?;
    let text = std::fs::read_to_string(&html)?;
    assert!(
        text.contains("Generated notes"),
        "the report lacks its notes"
    );
    assert!(text.contains("<audio"), "the report lacks players");
    sugarcube_tests::assert_report_renders(&html, 6, 4)?;
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
