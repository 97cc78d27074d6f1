//! `sugarcube audio ...`: clips to spectrogram images and back.

use crate::codec::{clip_of_images, images_of_clip, round_trip};
use crate::render::{ode_to_joy, Renderer};
use crate::wav::Audio;
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
            Command::new("render-notes")
                .about("Render an NSynth-like set of notes (instrument x pitch x velocity) from a General MIDI soundfont, with notes.csv listing them")
                .arg(Arg::new("soundfont").required(true).value_parser(value_parser!(PathBuf)).help("SF2 file (e.g. /usr/share/sounds/sf2/FluidR3_GM.sf2 from Debian's fluid-soundfont-gm)"))
                .arg(Arg::new("out").required(true).value_parser(value_parser!(PathBuf)).help("output folder"))
                .arg(Arg::new("programs").long("programs").default_value("0,24,40,56,73").help("General MIDI programs (0 piano, 24 nylon guitar, 40 violin, 56 trumpet, 73 flute)"))
                .arg(Arg::new("pitches").long("pitches").default_value("48..84").help("MIDI keys, A..B inclusive or a list"))
                .arg(Arg::new("velocities").long("velocities").default_value("100"))
                .arg(Arg::new("hold").long("hold").default_value("0.75").value_parser(value_parser!(f64)).help("seconds held"))
                .arg(Arg::new("release").long("release").default_value("0.25").value_parser(value_parser!(f64)).help("seconds after the note-off"))
                .arg(Arg::new("rate").long("rate").default_value("16000").value_parser(value_parser!(u32))),
        )
        .subcommand(
            Command::new("render-melody")
                .about("Render the first phrase of the Ode to Joy over a bass line from a General MIDI soundfont (the committed music clip)")
                .arg(Arg::new("soundfont").required(true).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("out").required(true).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("program").long("program").default_value("0").value_parser(value_parser!(u8)).help("the melody's General MIDI program"))
                .arg(Arg::new("bass").long("bass").default_value("32").value_parser(value_parser!(u8)).help("the bass line's program"))
                .arg(Arg::new("rate").long("rate").default_value("44100").value_parser(value_parser!(u32))),
        )
        .subcommand(
            Command::new("interpolate")
                .about("Seed interpolation on a trained audio run: frames whose starting noise runs (slerp) from one seed's to another's and whose condition runs from --from-cond to --to-cond, each written as PNG and WAV, and all chained into interpolation.wav with crossfades")
                .arg(Arg::new("run").required(true).value_parser(value_parser!(PathBuf)).help("the run directory"))
                .arg(Arg::new("from-seed").long("from-seed").required(true).value_parser(value_parser!(u64)).help("the first frame is sample 0 of this seed"))
                .arg(Arg::new("to-seed").long("to-seed").required(true).value_parser(value_parser!(u64)).help("the last frame is sample 0 of this seed"))
                .arg(Arg::new("frames").long("frames").default_value("8").value_parser(value_parser!(usize)).help("frames, both ends included"))
                .arg(Arg::new("from-cond").long("from-cond").help("the first frame's condition, e.g. instrument=flute,pitch=60 (default: --to-cond, else the first default)"))
                .arg(Arg::new("to-cond").long("to-cond").help("the last frame's condition (default: --from-cond)"))
                .arg(Arg::new("out").long("out").value_parser(value_parser!(PathBuf)).help("output folder (default RUN/interpolations/seed-A-to-B)"))
                .arg(Arg::new("crossfade").long("crossfade").default_value("0.25").value_parser(value_parser!(f64)).help("seconds of crossfade between neighbouring clips"))
                .arg(Arg::new("sampler").long("sampler").help("a deterministic sampler (default: the run's)"))
                .arg(Arg::new("steps").long("steps").value_parser(value_parser!(usize)))
                .arg(Arg::new("guidance").long("guidance").value_parser(value_parser!(f64)))
                .arg(Arg::new("batch-size").long("batch-size").value_parser(value_parser!(usize)))
                .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue).help("no progress display")),
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

fn interpolate(m: &ArgMatches) -> anyhow::Result<()> {
    use sugarcube_core::run::{InterpolationEnds, SampleRequest};
    let run = m.get_one::<PathBuf>("run").expect("required");
    let ends = InterpolationEnds {
        from_seed: *m.get_one::<u64>("from-seed").expect("required"),
        to_seed: *m.get_one::<u64>("to-seed").expect("required"),
        frames: *m.get_one::<usize>("frames").expect("defaulted"),
        from_cond: m.get_one::<String>("from-cond").cloned(),
        to_cond: m.get_one::<String>("to-cond").cloned(),
    };
    let req = SampleRequest {
        sampler: m.get_one::<String>("sampler").cloned(),
        steps: m.get_one::<usize>("steps").copied(),
        guidance: m.get_one::<f64>("guidance").copied(),
        batch_size: m.get_one::<usize>("batch-size").copied(),
        quiet: m.get_flag("quiet"),
        ..Default::default()
    };
    let out = m.get_one::<PathBuf>("out").cloned().unwrap_or_else(|| {
        run.join("interpolations")
            .join(format!("seed-{}-to-{}", ends.from_seed, ends.to_seed))
    });
    let files = crate::domain::interpolate(
        run,
        &req,
        &ends,
        &out,
        *m.get_one::<f64>("crossfade").expect("defaulted"),
    )?;
    let it = &files.interpolation;
    println!(
        "{} frames from seed {} to seed {} ({} {} steps, {:.1} s) in {}",
        files.frames.len(),
        ends.from_seed,
        ends.to_seed,
        it.sampler.sampler_name(),
        it.sampler.steps,
        it.seconds,
        out.display()
    );
    println!("wrote {}", files.chained.display());
    Ok(())
}

/// `A..B` (inclusive) or `a,b,c` as numbers in 0..=127.
fn midi_list(text: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    let bad = || {
        anyhow::anyhow!(
            "--{what} `{text}`: expected A..B or a comma-separated list of numbers in 0..=127"
        )
    };
    let v: Vec<u8> = if let Some((a, b)) = text.split_once("..") {
        let (a, b): (u8, u8) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        (a..=b).collect()
    } else {
        text.split(',')
            .map(|x| x.trim().parse::<u8>().map_err(|_| bad()))
            .collect::<anyhow::Result<_>>()?
    };
    anyhow::ensure!(!v.is_empty() && v.iter().all(|&x| x <= 127), bad());
    Ok(v)
}

fn render_notes(m: &ArgMatches) -> anyhow::Result<()> {
    let r = Renderer::open(
        m.get_one::<PathBuf>("soundfont").expect("required"),
        *m.get_one::<u32>("rate").expect("defaulted"),
    )?;
    let out = m.get_one::<PathBuf>("out").expect("required");
    let programs = midi_list(
        m.get_one::<String>("programs").expect("defaulted"),
        "programs",
    )?;
    let pitches = midi_list(
        m.get_one::<String>("pitches").expect("defaulted"),
        "pitches",
    )?;
    let velocities = midi_list(
        m.get_one::<String>("velocities").expect("defaulted"),
        "velocities",
    )?;
    let (hold, release) = (
        *m.get_one::<f64>("hold").expect("defaulted"),
        *m.get_one::<f64>("release").expect("defaulted"),
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut csv = String::from("file,instrument,program,pitch,velocity\n");
    let total = programs.len() * pitches.len() * velocities.len();
    let mut done = 0;
    for &program in &programs {
        let name: String = r
            .program_name(program)
            .unwrap_or_else(|| format!("program{program}"))
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        for &pitch in &pitches {
            for &velocity in &velocities {
                let samples = r.note(program, pitch, velocity.max(1), hold, release)?;
                let file = format!("{name}-{pitch:03}-{velocity:03}.wav");
                write_wav(
                    &out.join(&file),
                    &Audio {
                        rate: r.rate,
                        channels: vec![samples],
                    },
                    WavFormat::Int16,
                )?;
                csv.push_str(&format!("{file},{name},{program},{pitch},{velocity}\n"));
                done += 1;
                if done % 50 == 0 || done == total {
                    eprintln!("rendered {done}/{total} notes");
                }
            }
        }
    }
    write_atomic(&out.join("notes.csv"), csv.as_bytes())?;
    println!("wrote {total} notes and notes.csv to {}", out.display());
    Ok(())
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
        Some(("interpolate", m)) => interpolate(m),
        Some(("render-notes", m)) => render_notes(m),
        Some(("render-melody", m)) => {
            let r = Renderer::open(
                m.get_one::<PathBuf>("soundfont").expect("required"),
                *m.get_one::<u32>("rate").expect("defaulted"),
            )?;
            let out = m.get_one::<PathBuf>("out").expect("required");
            let programs = [
                (0, *m.get_one::<u8>("program").expect("defaulted")),
                (1, *m.get_one::<u8>("bass").expect("defaulted")),
            ];
            let samples = r.render(&programs, &ode_to_joy(), 6.5)?;
            write_wav(
                out,
                &Audio {
                    rate: r.rate,
                    channels: vec![samples],
                },
                WavFormat::Int16,
            )?;
            println!("wrote {} (6.5 s at {} Hz)", out.display(), r.rate);
            Ok(())
        }
        _ => unreachable!("subcommand_required"),
    }
}
