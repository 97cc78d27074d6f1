//! The audio domain's `sugarcube bench` workloads: Riffusion's two conversions of a real music
//! clip, the first 5.11 s (one image: 512 frames) of the committed "Ode to Joy"
//! (`datasets/audio/music/ode-to-joy-fluidr3.wav`, 44.1 kHz mono, built into the binary), at the
//! `riffusion` preset, with a breakdown by stage.
//! `benches/audio_pipeline.py` runs the same pipeline in PyTorch + torchaudio (Riffusion's own
//! stack) on the same clip.
//!
//! | workload | a step | item |
//! |---|---|---|
//! | `audio_to_image` | WAV bytes -> a 512 x 512 spectrogram PNG with EXIF (`audio to-image`) | the clip |
//! | `audio_to_wav` | the PNG -> inverse mel, 32 fast Griffin-Lim iterations, 16-bit WAV bytes (`audio to-wav`) | the clip |
//!
//! `audio_to_wav` also reports the reconstruction's spectral convergence and log-spectral
//! distance against the clip (dB), so that speed is compared at equal quality.

use crate::codec::{clip_of_images, images_of_clip, reconstruction_quality, SpectrogramParams};
use crate::wav::{encode_wav, parse_wav, Audio, WavFormat};
use sugarcube_core::bench::{time_steps, BreakdownEntry, DomainWorkload, WorkloadResult};

/// The clip every audio workload converts.
const CLIP: &[u8] = include_bytes!("../../../datasets/audio/music/ode-to-joy-fluidr3.wav");
const CLIP_NAME: &str = "ode-to-joy-fluidr3.wav";

/// The clip's first image's worth of samples.
fn clip(p: &SpectrogramParams) -> anyhow::Result<Audio> {
    let mut a = parse_wav(CLIP, CLIP_NAME)?;
    a.channels
        .iter_mut()
        .for_each(|c| c.truncate(p.samples_per_image()));
    Ok(a)
}

/// The audio domain's workloads.
pub fn workloads() -> Vec<DomainWorkload> {
    vec![
        DomainWorkload {
            name: "audio_to_image",
            about: "5.11 s of 44.1 kHz music -> a Riffusion spectrogram PNG",
            run: to_image,
        },
        DomainWorkload {
            name: "audio_to_wav",
            about: "a Riffusion spectrogram PNG -> 5.11 s WAV (32 Griffin-Lim iterations)",
            run: to_wav,
        },
    ]
}

fn result(
    name: &str,
    seconds: f64,
    iters: usize,
    breakdown: Vec<BreakdownEntry>,
) -> WorkloadResult {
    WorkloadResult {
        workload: name.to_string(),
        items_per_s: 1.0 / seconds,
        batch_size: 1,
        parameters: 0,
        ms_per_step: 1e3 * seconds,
        iters: iters.max(1),
        precision: "f32".to_string(),
        breakdown,
        quality: Default::default(),
    }
}

fn to_image(warmup: usize, iters: usize) -> anyhow::Result<WorkloadResult> {
    let p = SpectrogramParams::riffusion();
    let (seconds, breakdown) = time_steps(warmup, iters, || {
        std::hint::black_box(images_of_clip(&p, &clip(&p)?, false)?);
        Ok(())
    })?;
    Ok(result("audio_to_image", seconds, iters, breakdown))
}

fn to_wav(warmup: usize, iters: usize) -> anyhow::Result<WorkloadResult> {
    let p = SpectrogramParams::riffusion();
    let original = p.prepare(&clip(&p)?);
    let images: Vec<(Vec<u8>, String)> = images_of_clip(&p, &original, false)?
        .into_iter()
        .enumerate()
        .map(|(i, png)| (png, format!("image {i}")))
        .collect();
    let mut back = None;
    let (seconds, breakdown) = time_steps(warmup, iters, || {
        let (audio, _) = clip_of_images(&images, &p, None, 0)?;
        std::hint::black_box(encode_wav(&audio, WavFormat::Int16)?);
        back = Some(audio);
        Ok(())
    })?;
    let back = back.expect("at least one step ran");
    let (sc, lsd) = reconstruction_quality(&p, &original, &back)?;
    let mut r = result("audio_to_wav", seconds, iters, breakdown);
    r.quality.insert("spectral_convergence_db".into(), sc);
    r.quality.insert("log_spectral_distance_db".into(), lsd);
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn workloads_run_and_reconstruct() {
        // one untimed-free step each: the pipeline runs end to end and the reconstruction is
        // close to the clip (the round-trip test holds the full bar)
        let r = (super::workloads()[1].run)(0, 1).unwrap();
        assert!(r.ms_per_step > 0.0);
        assert!(
            r.quality["spectral_convergence_db"] < -15.0,
            "{:?}",
            r.quality
        );
        assert!(
            r.breakdown.iter().any(|e| e.name == "griffin_lim"),
            "{:?}",
            r.breakdown
        );
    }
}
