//! YIN on real instrument notes: the committed subset of notes rendered from the FluidR3
//! soundfont's recorded samples (datasets/audio/notes, five instruments over three octaves),
//! each note's fundamental estimated from its held part. `SUGARCUBE_NOTES` points the test at
//! another rendered set (a folder with notes.csv).

use sugarcube_audio::codec::round_trip;
use sugarcube_audio::pitch::{midi_of_hz, Yin};
use sugarcube_audio::{read_wav, SpectrogramParams};

#[test]
fn yin_names_the_pitch_of_rendered_notes() {
    let dir = std::env::var_os("SUGARCUBE_NOTES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/audio/notes")
        });
    let csv = std::fs::read_to_string(dir.join("notes.csv")).unwrap();
    let (mut right, mut total, mut through_cpu) = (0, 0, 0);
    let mut misses = vec![];
    let cpu = SpectrogramParams::cpu();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (file, pitch): (&str, f64) = (f[0], f[3].parse().unwrap());
        let clip = read_wav(&dir.join(file)).unwrap();
        let est = Yin::default().clip(&clip.channels[0], clip.rate, Some(0.75));
        total += 1;
        match est {
            Some(hz) if (midi_of_hz(hz) - pitch).abs() < 1.0 => right += 1,
            other => misses.push(format!("{file}: {other:?}")),
        }
        // and after the CPU preset's wav -> image -> wav round trip (the codec's ceiling)
        let back = round_trip(&cpu, &clip, 0).unwrap().audio;
        if let Some(hz) = Yin::default().clip(&back.channels[0], back.rate, Some(0.75)) {
            through_cpu += ((midi_of_hz(hz) - pitch).abs() < 1.0) as usize;
        }
    }
    let cpu_rate = through_cpu as f64 / total as f64;
    eprintln!("after the cpu preset's round trip: {through_cpu} of {total}");
    assert!(cpu_rate >= 0.9, "the cpu preset loses pitch: {cpu_rate}");
    let rate = right as f64 / total as f64;
    eprintln!("{right} of {total} notes within a semitone; missed {misses:?}");
    assert!(total >= 20);
    assert!(rate >= 0.95, "{rate}: {misses:?}");
}
