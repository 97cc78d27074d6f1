//! The STFT and the mel filterbanks against the Python tools' own numbers (torch.stft,
//! librosa/torchaudio filterbanks; fixtures copied from the project's reference set).

use serde_json::Value;
use sugarcube_audio::mel::{MelBank, MelNorm, MelScale};
use sugarcube_audio::stft::Stft;

fn fixture(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn stft_matches_torch() {
    let f = fixture("stft.json");
    let p = &f["params"];
    let n_fft = p["n_fft"].as_u64().unwrap() as usize;
    let hop = p["hop_length"].as_u64().unwrap() as usize;
    let win = p["win_length"].as_u64().unwrap() as usize;
    let x: Vec<f32> = floats(&f["signal"]).iter().map(|&v| v as f32).collect();
    let stft = Stft::new(n_fft, hop, win).unwrap();
    let s = stft.forward(&x).unwrap();
    assert_eq!(s.bins, f["num_freqs"].as_u64().unwrap() as usize);
    assert_eq!(s.frames, f["num_frames"].as_u64().unwrap() as usize);
    // magnitude: [bin][frame]
    let mag = f["magnitude"].as_array().unwrap();
    let peak = f["magnitude_max"].as_f64().unwrap();
    let mut worst = 0f64;
    for (k, row) in mag.iter().enumerate() {
        for (t, v) in floats(row).iter().enumerate() {
            worst = worst.max((s.data[t * s.bins + k].norm() as f64 - v).abs());
        }
    }
    assert!(worst < 2e-5 * peak.max(1.0), "magnitude off by {worst}");
    // complex values of a few frames
    for (t, frame) in f["frames"].as_object().unwrap() {
        let t: usize = t.parse().unwrap();
        let (re, im) = (floats(&frame["real"]), floats(&frame["imag"]));
        for k in 0..s.bins {
            let c = s.data[t * s.bins + k];
            assert!((c.re as f64 - re[k]).abs() < 1e-4, "frame {t} bin {k}");
            assert!((c.im as f64 - im[k]).abs() < 1e-4, "frame {t} bin {k}");
        }
    }
    let back = stft.inverse(&s, Some(x.len())).unwrap();
    let err = x
        .iter()
        .zip(&back)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-6, "round trip {err}");
}

#[test]
fn mel_filterbanks_match_librosa_and_torchaudio() {
    let f = fixture("mel.json");
    let sr = f["sr"].as_u64().unwrap() as u32;
    let n_fft = f["n_fft"].as_u64().unwrap() as usize;
    let n_mels = f["n_mels"].as_u64().unwrap() as usize;
    let (fmin, fmax) = (f["fmin"].as_f64().unwrap(), f["fmax"].as_f64().unwrap());
    for (key, scale, norm) in [
        ("slaney", MelScale::Slaney, MelNorm::Slaney),
        ("htk_nonorm", MelScale::Htk, MelNorm::None),
    ] {
        let bank = MelBank::new(sr, n_fft, n_mels, fmin, fmax, scale, norm).unwrap();
        let points = floats(&f[key]["mel_points_hz"]);
        for (a, b) in bank.points_hz.iter().zip(&points) {
            assert!(
                (a - b).abs() < 1e-6 * (1.0 + b),
                "{key}: band edge {a} vs {b}"
            );
        }
        let dense = bank.dense();
        let rows = f[key]["values"].as_array().unwrap();
        let mut worst = 0f64;
        let mut peak = 0f64;
        for (m, row) in rows.iter().enumerate() {
            for (k, v) in floats(row).iter().enumerate() {
                worst = worst.max((dense[m][k] as f64 - v).abs());
                peak = peak.max(v.abs());
            }
        }
        assert!(
            worst < 1e-6 * peak.max(1e-3) + 1e-9,
            "{key}: off by {worst} (peak {peak})"
        );
    }
}
