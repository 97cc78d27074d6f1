//! Phase from magnitude: fast Griffin-Lim (Perraudin, Balazs and Sondergaard, "A fast
//! Griffin-Lim algorithm", WASPAA 2013), with torchaudio's `griffinlim` conventions: the
//! phases start as complex numbers with uniform real and imaginary parts in [0, 1) (seeded
//! here), and each iteration takes `c = STFT(ISTFT(|S| e^{i phase}))`, then
//! `phase = angle(c - momentum / (1 + momentum) * c_prev)`.

use crate::stft::{Spectrum, Stft};
use rayon::prelude::*;
use realfft::num_complex::Complex32;
use sugarcube_core::rng::Rng;

/// A signal whose STFT magnitude approximates `magnitude` (`[frame][bin]`, `frames` frames)
/// after `iterations` steps with `momentum` (0.99 in Riffusion; 0 is plain Griffin-Lim). The
/// signal has `len` samples (default `(frames - 1) * hop`). The same seed gives the same
/// signal.
pub fn griffin_lim(
    stft: &Stft,
    magnitude: &[f32],
    frames: usize,
    iterations: usize,
    momentum: f32,
    len: Option<usize>,
    seed: u64,
) -> anyhow::Result<Vec<f32>> {
    let bins = stft.bins();
    anyhow::ensure!(
        magnitude.len() == frames * bins,
        "{} magnitudes for {frames} frames of {bins} bins",
        magnitude.len()
    );
    anyhow::ensure!(frames >= 2, "Griffin-Lim needs at least two frames");
    let mut rng = Rng::named(seed, "griffin-lim");
    let mut angles: Vec<Complex32> = (0..magnitude.len())
        .map(|_| Complex32::new(rng.uniform() as f32, rng.uniform() as f32))
        .collect();
    let mut prev = vec![Complex32::new(0.0, 0.0); magnitude.len()];
    let alpha = momentum / (1.0 + momentum);
    let len = len.unwrap_or(stft.hop * (frames - 1));
    let with_phase = |angles: &[Complex32]| Spectrum {
        bins,
        frames,
        data: magnitude
            .par_iter()
            .zip(angles.par_iter())
            .map(|(m, a)| a * *m)
            .collect(),
    };
    for _ in 0..iterations {
        let signal = stft.inverse(&with_phase(&angles), Some(len))?;
        let rebuilt = stft.forward(&signal)?;
        anyhow::ensure!(
            rebuilt.frames == frames,
            "a {len}-sample signal gives {} frames, not {frames}",
            rebuilt.frames
        );
        angles
            .par_iter_mut()
            .zip(rebuilt.data.par_iter())
            .zip(prev.par_iter())
            .for_each(|((a, r), p)| {
                let c = r - p * alpha;
                *a = c / (c.norm() + 1e-16);
            });
        prev = rebuilt.data;
    }
    stft.inverse(&with_phase(&angles), Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::spectral_convergence_db;

    #[test]
    fn momentum_converges_faster_and_seeds_repeat() {
        let stft = Stft::new(512, 128, 512).unwrap();
        let x: Vec<f32> = (0..8192)
            .map(|i| {
                let t = i as f32 / 16000.0;
                (t * 440.0 * std::f32::consts::TAU).sin() * (1.0 - t)
                    + 0.5 * (t * 1230.0 * std::f32::consts::TAU).sin() * t
            })
            .collect();
        let spec = stft.forward(&x).unwrap();
        let mag = spec.magnitude();
        let sc = |momentum| {
            let y = griffin_lim(&stft, &mag, spec.frames, 32, momentum, Some(x.len()), 7).unwrap();
            spectral_convergence_db(&mag, &stft.forward(&y).unwrap().magnitude())
        };
        let (plain, fast) = (sc(0.0), sc(0.99));
        assert!(fast < plain - 1.5, "fast {fast} dB vs plain {plain} dB");
        assert!(fast < -15.0, "{fast} dB");
        let a = griffin_lim(&stft, &mag, spec.frames, 4, 0.99, None, 3).unwrap();
        let b = griffin_lim(&stft, &mag, spec.frames, 4, 0.99, None, 3).unwrap();
        assert_eq!(a, b);
    }
}
