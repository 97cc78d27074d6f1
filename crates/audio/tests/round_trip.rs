//! Real clips through Riffusion's spectrogram images and back: music (a melody rendered from
//! the FluidR3 soundfont's recorded instruments) and read speech (LibriVox, from Debian's
//! pocketsphinx-testdata, resampled from 16 to 44.1 kHz), both committed under datasets/audio,
//! split into 512-frame images, inverted (non-negative least squares, 32 iterations of fast
//! Griffin-Lim with momentum 0.99). Riffusion's own pipeline reaches about -19 dB of spectral
//! convergence on real music at these settings.

fn dataset(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/audio")
        .join(file)
}

#[test]
fn music_survives_riffusion_images() {
    let clip = read_wav(&dataset("music/ode-to-joy-fluidr3.wav")).unwrap();
    let r = round_trip(&SpectrogramParams::riffusion(), &clip, 0).unwrap();
    eprintln!(
        "music: spectral convergence {:.2} dB, log-spectral distance {:.2} dB over {} images",
        r.spectral_convergence_db, r.log_spectral_distance_db, r.images
    );
    assert_eq!(r.images, 2, "6.5 s spans two 5.11 s images");
    assert!(
        r.spectral_convergence_db <= -18.0,
        "{} dB",
        r.spectral_convergence_db
    );
}

use sugarcube_audio::codec::round_trip;
use sugarcube_audio::{read_wav, SpectrogramParams};

#[test]
fn speech_survives_riffusion_images() {
    let clip = read_wav(&dataset(
        "speech/sense_and_sensibility_01_austen_64kb-0880.wav",
    ))
    .unwrap();
    assert_eq!((clip.rate, clip.channels.len()), (16000, 1));
    let p = SpectrogramParams::riffusion();
    let r = round_trip(&p, &clip, 0).unwrap();
    eprintln!(
        "spectral convergence {:.2} dB, log-spectral distance {:.2} dB",
        r.spectral_convergence_db, r.log_spectral_distance_db
    );
    assert!(
        r.spectral_convergence_db <= -18.0,
        "{} dB",
        r.spectral_convergence_db
    );
    assert!(
        r.log_spectral_distance_db < 4.0,
        "{} dB",
        r.log_spectral_distance_db
    );
    // the reconstruction keeps the clip's length (to within a hop) and loudness
    let expected = (clip.seconds() * 44100.0) as usize;
    assert!(r.audio.len() + p.hop >= expected && r.audio.len() <= expected + p.hop);
    let rms = |x: &[f32]| (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    let ratio = rms(&r.audio.channels[0]) / rms(&p.prepare(&clip).channels[0]);
    assert!((0.7..1.3).contains(&ratio), "loudness ratio {ratio}");
    // and the same seed gives the same audio
    assert_eq!(round_trip(&p, &clip, 0).unwrap().audio, r.audio);
}

#[test]
fn every_preset_round_trips() {
    let clip = read_wav(&dataset(
        "speech/sense_and_sensibility_01_austen_64kb-0880.wav",
    ))
    .unwrap();
    for name in ["teticio", "cpu"] {
        let r = round_trip(&SpectrogramParams::preset(name).unwrap(), &clip, 0).unwrap();
        eprintln!("{name}: {:.2} dB", r.spectral_convergence_db);
        assert!(
            r.spectral_convergence_db < -10.0,
            "{name}: {} dB",
            r.spectral_convergence_db
        );
    }
}
