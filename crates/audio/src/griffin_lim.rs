//! Phase from magnitude: fast Griffin-Lim (Perraudin, Balazs and Sondergaard, "A fast
//! Griffin-Lim algorithm", WASPAA 2013), with torchaudio's `griffinlim` conventions: the
//! phases start as complex numbers with uniform real and imaginary parts in [0, 1) (seeded
//! here), and each iteration takes `c = STFT(ISTFT(|S| e^{i phase}))`, then
//! `phase = angle(c - momentum / (1 + momentum) * c_prev)`.

use crate::stft::Stft;
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
    let _t = sugarcube_core::profile::scope("griffin_lim");
    let bins = stft.bins();
    anyhow::ensure!(
        magnitude.len() == frames * bins,
        "{} magnitudes for {frames} frames of {bins} bins",
        magnitude.len()
    );
    anyhow::ensure!(frames >= 2, "Griffin-Lim needs at least two frames");
    let mut rng = Rng::named(seed, "griffin-lim");
    // per bin: the current phase (a unit complex number, or the random start) and the previous
    // iteration's rebuilt spectrum, updated in place as each frame's STFT comes out
    let mut state: Vec<(Complex32, Complex32)> = (0..magnitude.len())
        .map(|_| {
            let start = Complex32::new(rng.uniform() as f32, rng.uniform() as f32);
            (start, Complex32::new(0.0, 0.0))
        })
        .collect();
    let alpha = momentum / (1.0 + momentum);
    let len = len.unwrap_or(stft.hop * (frames - 1));
    anyhow::ensure!(
        stft.frames_of(len) == frames,
        "a {len}-sample signal gives {} frames, not {frames}",
        stft.frames_of(len)
    );
    let signal_of = |state: &[(Complex32, Complex32)]| {
        stft.inverse_rows(frames, Some(len), |t, row| {
            let at = t * bins..(t + 1) * bins;
            for ((r, (a, _)), m) in row.iter_mut().zip(&state[at.clone()]).zip(&magnitude[at]) {
                *r = a * *m;
            }
        })
    };
    for _ in 0..iterations {
        let signal = signal_of(&state)?;
        stft.forward_rows(&signal, &mut state, |rebuilt, row| {
            for (r, (a, prev)) in rebuilt.iter().zip(row) {
                let c = r - *prev * alpha;
                *a = c * (1.0 / (c.norm_sqr().sqrt() + 1e-16));
                *prev = *r;
            }
        })?;
    }
    signal_of(&state)
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
