//! `sugarcube audio ...`: clips to spectrogram images and back.

use crate::codec::{clip_of_images, images_of_clip, round_trip};
use crate::wav::{read_wav, write_wav, WavFormat};
use crate::SpectrogramParams;
use anyhow::Context;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use std::path::{Path, PathBuf};
use std::time::Instant;
use sugarcube_core::checkpoint::write_atomic;

/// The `audio` command and its subcommands.
pub fn command() -> Command {
    let preset = || {
        Arg::new("preset")
            .long("preset")
            .default_value("riffusion")
            .help("spectrogram parameters: riffusion, teticio or cpu")
    };
    let seed = || {
        Arg::new("seed")
            .long("seed")
            .default_value("0")
            .value_parser(value_parser!(u64))
            .help("seed of Griffin-Lim's starting phases")
    };
    let iters = || {
        Arg::new("iters")
            .long("iters")
            .value_parser(value_parser!(usize))
            .help("Griffin-Lim iterations (default: the parameters', 32)")
    };
    Command::new("audio")
        .about("Audio clips to spectrogram images and back")
        .subcommand_required(true)
        .subcommand(
            Command::new("to-image")
                .about("Write a WAV clip as spectrogram images (OUT.png, or OUT-000.png, OUT-001.png, ... when it spans several)")
                .arg(Arg::new("input").required(true).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("output").required(true).value_parser(value_parser!(PathBuf)))
                .arg(preset())
                .arg(Arg::new("wide").long("wide").action(ArgAction::SetTrue).help("one image of the whole clip instead of one per frames_per_image frames")),
        )
        .subcommand(
            Command::new("to-wav")
                .about("Reconstruct a WAV clip from spectrogram images (joined in order), with the parameters in their EXIF tags, else --preset's")
                .arg(Arg::new("paths").required(true).num_args(2..).value_parser(value_parser!(PathBuf)).help("IN.png [IN2.png ...] OUT.wav"))
                .arg(preset())
                .arg(iters())
                .arg(seed())
                .arg(Arg::new("float").long("float").action(ArgAction::SetTrue).help("write 32-bit float samples (default 16-bit)")),
        )
        .subcommand(
            Command::new("roundtrip")
                .about("WAV -> images -> WAV: print the spectral convergence and log-spectral distance of the reconstruction")
                .arg(Arg::new("input").required(true).value_parser(value_parser!(PathBuf)))
                .arg(preset())
                .arg(iters())
                .arg(seed())
                .arg(Arg::new("out").long("out").value_parser(value_parser!(PathBuf)).help("also write the reconstruction here")),
        )
}

fn preset(m: &ArgMatches) -> anyhow::Result<SpectrogramParams> {
    SpectrogramParams::preset(m.get_one::<String>("preset").expect("defaulted"))
}

/// `OUT.png` for one image, `OUT-000.png`, `OUT-001.png`, ... for several.
fn image_paths(out: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = out
        .extension()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "png".into());
    (0..n)
        .map(|i| out.with_file_name(format!("{stem}-{i:03}.{ext}")))
        .collect()
}

/// Runs `sugarcube audio ...`.
pub fn run(matches: &ArgMatches) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("to-image", m)) => {
            let input = m.get_one::<PathBuf>("input").expect("required");
            let out = m.get_one::<PathBuf>("output").expect("required");
            let p = preset(m)?;
            let audio = read_wav(input)?;
            let images = images_of_clip(&p, &audio, m.get_flag("wide"))
                .with_context(|| format!("cannot convert {}", input.display()))?;
            for (path, png) in image_paths(out, images.len()).iter().zip(&images) {
                write_atomic(path, png)?;
                println!("wrote {}", path.display());
            }
            println!(
                "{:.2} s of {} at {} Hz as {} {} image(s), {} frames each at most",
                audio.seconds(),
                input.display(),
                p.sample_rate,
                images.len(),
                p.preset,
                p.frames_per_image
            );
            Ok(())
        }
        Some(("to-wav", m)) => {
            let paths: Vec<&PathBuf> = m.get_many::<PathBuf>("paths").expect("required").collect();
            let (out, inputs) = paths.split_last().expect("at least two");
            let images = inputs
                .iter()
                .map(|p| {
                    std::fs::read(p)
                        .map(|b| (b, p.display().to_string()))
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let started = Instant::now();
            let (audio, used) = clip_of_images(
                &images,
                &preset(m)?,
                m.get_one::<usize>("iters").copied(),
                *m.get_one::<u64>("seed").expect("defaulted"),
            )?;
            let format = if m.get_flag("float") {
                WavFormat::Float32
            } else {
                WavFormat::Int16
            };
            write_wav(out, &audio, format)?;
            println!(
                "wrote {} ({:.2} s at {} Hz, parameters: {}, {} Griffin-Lim iterations, {:.2} s)",
                out.display(),
                audio.seconds(),
                audio.rate,
                used.preset,
                used.griffin_lim_iters,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Some(("roundtrip", m)) => {
            let input = m.get_one::<PathBuf>("input").expect("required");
            let mut p = preset(m)?;
            if let Some(&n) = m.get_one::<usize>("iters") {
                p.griffin_lim_iters = n;
            }
            let audio = read_wav(input)?;
            let started = Instant::now();
            let r = round_trip(&p, &audio, *m.get_one::<u64>("seed").expect("defaulted"))
                .with_context(|| format!("cannot round-trip {}", input.display()))?;
            println!(
                "{}: {:.2} s, {} {} image(s), {} Griffin-Lim iterations (momentum {}), {:.2} s",
                input.display(),
                audio.seconds(),
                r.images,
                p.preset,
                p.griffin_lim_iters,
                p.momentum,
                started.elapsed().as_secs_f64()
            );
            println!("spectral convergence   {:.2} dB", r.spectral_convergence_db);
            println!(
                "log-spectral distance  {:.2} dB",
                r.log_spectral_distance_db
            );
            if let Some(out) = m.get_one::<PathBuf>("out") {
                write_wav(out, &r.audio, WavFormat::Int16)?;
                println!("wrote {}", out.display());
            }
            Ok(())
        }
        _ => unreachable!("subcommand_required"),
    }
}
