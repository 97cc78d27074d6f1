//! Short-time Fourier transforms with torch's conventions (`torch.stft` / `torch.istft`):
//! a periodic Hann window of `win_length` zero-padded (centred) to `n_fft`, frames centred on
//! `t * hop` by reflect-padding the signal with `n_fft / 2` samples each side, one-sided
//! spectra, no normalisation; the inverse overlap-adds and divides by the summed squared
//! window. Real-input FFTs (realfft), planned once, frames spread over all cores.

use anyhow::ensure;
use rayon::prelude::*;
use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// A complex spectrogram: `frames` rows of `bins` values, row-major (`[frame][bin]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Spectrum {
    /// Frequency bins per frame (`n_fft / 2 + 1`).
    pub bins: usize,
    /// Frames.
    pub frames: usize,
    /// `frames * bins` values.
    pub data: Vec<Complex32>,
}

impl Spectrum {
    /// The magnitudes, `[frame][bin]`.
    pub fn magnitude(&self) -> Vec<f32> {
        // sqrt of the squared norm: hypot's overflow care costs 3x and spectra never need it
        self.data.iter().map(|c| c.norm_sqr().sqrt()).collect()
    }
}

/// A planned STFT of one size.
#[derive(Clone)]
pub struct Stft {
    /// FFT size.
    pub n_fft: usize,
    /// Samples between frames.
    pub hop: usize,
    /// The window, `n_fft` long (the Hann window of `win_length`, centred, zeros around).
    pub window: Vec<f32>,
    /// The Hann window's length.
    pub win_length: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stft(n_fft {}, hop {})", self.n_fft, self.hop)
    }
}

/// The periodic Hann window of length `n` (`torch.hann_window(n)`):
/// `0.5 - 0.5 cos(2 pi i / n)`.
pub fn hann_periodic(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos()) as f32)
        .collect()
}

impl Stft {
    /// Plans an STFT with a periodic Hann window of `win_length` (at most `n_fft`).
    pub fn new(n_fft: usize, hop: usize, win_length: usize) -> anyhow::Result<Self> {
        ensure!(n_fft >= 2, "n_fft must be at least 2, got {n_fft}");
        ensure!(hop >= 1, "the hop must be at least 1 sample");
        ensure!(
            (1..=n_fft).contains(&win_length),
            "win_length {win_length} must be in 1..={n_fft}"
        );
        let mut window = vec![0f32; n_fft];
        let left = (n_fft - win_length) / 2;
        window[left..left + win_length].copy_from_slice(&hann_periodic(win_length));
        let mut planner = RealFftPlanner::<f32>::new();
        Ok(Self {
            n_fft,
            hop,
            window,
            win_length,
            forward: planner.plan_fft_forward(n_fft),
            inverse: planner.plan_fft_inverse(n_fft),
        })
    }

    /// Bins per frame.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames of a signal of `len` samples (`1 + len / hop`, centred).
    pub fn frames_of(&self, len: usize) -> usize {
        1 + len / self.hop
    }

    /// The window's nonzero samples: `left..left + win_length` of the `n_fft`.
    fn support(&self) -> std::ops::Range<usize> {
        let left = (self.n_fft - self.win_length) / 2;
        left..left + self.win_length
    }

    /// The STFT of `x` (`torch.stft(x, n_fft, hop, win_length, hann_window(win_length),
    /// center=True, pad_mode="reflect", return_complex=True)`, transposed to `[frame][bin]`).
    /// Reflect padding needs more than `n_fft / 2` samples.
    pub fn forward(&self, x: &[f32]) -> anyhow::Result<Spectrum> {
        let bins = self.bins();
        let frames = self.frames_of(x.len());
        let mut data = vec![Complex32::new(0.0, 0.0); frames * bins];
        self.forward_rows(x, &mut data, |spectrum, row| row.copy_from_slice(spectrum))?;
        Ok(Spectrum { bins, frames, data })
    }

    /// The STFT of `x` frame by frame, without keeping it: `visit(spectrum, row)` gets each
    /// frame's `bins` values and that frame's `rows.len() / frames` items of `rows` (frames in
    /// parallel). What [`Stft::forward`] stores, Griffin-Lim consumes in place.
    pub fn forward_rows<T: Send>(
        &self,
        x: &[f32],
        rows: &mut [T],
        visit: impl Fn(&[Complex32], &mut [T]) + Sync,
    ) -> anyhow::Result<()> {
        let pad = self.n_fft / 2;
        ensure!(
            x.len() > pad,
            "a signal of {} samples is too short for reflect padding by {pad} (n_fft {})",
            x.len(),
            self.n_fft
        );
        let n = x.len();
        let frames = self.frames_of(n);
        ensure!(
            !rows.is_empty() && rows.len().is_multiple_of(frames),
            "{} row items for {frames} frames",
            rows.len()
        );
        // reflect without repeating the edge sample: x[pad], ..., x[1], x[0], x[1], ...
        let at = |j: isize| -> f32 {
            let m = n as isize;
            let mut k = j;
            if k < 0 {
                k = -k;
            }
            if k >= m {
                k = 2 * (m - 1) - k;
            }
            x[k as usize]
        };
        let support = self.support();
        let window = &self.window[support.clone()];
        rows.par_chunks_mut(rows.len() / frames)
            .enumerate()
            .for_each_init(
                || {
                    (
                        self.forward.make_input_vec(),
                        self.forward.make_output_vec(),
                        self.forward.make_scratch_vec(),
                    )
                },
                |(buf, spectrum, scratch), (t, row)| {
                    // only the window's support is nonzero (the FFT leaves its input as garbage,
                    // so the zeros are written every frame)
                    buf[..support.start].fill(0.0);
                    buf[support.end..].fill(0.0);
                    let start = (t * self.hop + support.start) as isize - pad as isize;
                    let inner = &mut buf[support.clone()];
                    if start >= 0 && start as usize + window.len() <= n {
                        let s = start as usize;
                        for ((b, v), w) in inner.iter_mut().zip(&x[s..]).zip(window) {
                            *b = v * w;
                        }
                    } else {
                        for (i, (b, w)) in inner.iter_mut().zip(window).enumerate() {
                            *b = at(start + i as isize) * w;
                        }
                    }
                    self.forward
                        .process_with_scratch(buf, spectrum, scratch)
                        .expect("buffer sizes come from the plan");
                    visit(spectrum, row);
                },
            );
        Ok(())
    }

    /// The inverse (`torch.istft(..., center=True, length=len)`): windowed overlap-add divided
    /// by the summed squared window, the centre padding trimmed; `len` defaults to
    /// `(frames - 1) * hop`.
    pub fn inverse(&self, spec: &Spectrum, len: Option<usize>) -> anyhow::Result<Vec<f32>> {
        ensure!(
            spec.bins == self.bins(),
            "a spectrum of {} bins for an STFT of {}",
            spec.bins,
            self.bins()
        );
        self.inverse_rows(spec.frames, len, |t, buf| {
            buf.copy_from_slice(&spec.data[t * spec.bins..(t + 1) * spec.bins])
        })
    }

    /// The inverse of the spectrum whose frame `t` `fill(t, row)` writes (`bins` values, frames
    /// in parallel), as [`Stft::inverse`].
    pub fn inverse_rows(
        &self,
        frames: usize,
        len: Option<usize>,
        fill: impl Fn(usize, &mut [Complex32]) + Sync,
    ) -> anyhow::Result<Vec<f32>> {
        let pad = self.n_fft / 2;
        let len = len.unwrap_or(self.hop * frames.saturating_sub(1));
        let mut out = vec![0f32; len];
        if frames == 0 {
            return Ok(out);
        }
        // inverse FFT of every frame, windowed (in parallel); only the window's support is kept
        let n_fft = self.n_fft;
        let support = self.support();
        let width = support.len();
        let window = &self.window[support.clone()];
        let scale = 1.0 / n_fft as f32;
        let mut kept = vec![0f32; frames * width];
        kept.par_chunks_mut(width).enumerate().for_each_init(
            || {
                (
                    self.inverse.make_input_vec(),
                    self.inverse.make_output_vec(),
                    self.inverse.make_scratch_vec(),
                )
            },
            |(buf, signal, scratch), (t, out)| {
                fill(t, buf);
                // a real signal's DC and Nyquist bins are real: drop what is not
                buf[0].im = 0.0;
                if n_fft.is_multiple_of(2) {
                    buf[n_fft / 2].im = 0.0;
                }
                self.inverse
                    .process_with_scratch(buf, signal, scratch)
                    .expect("buffer sizes come from the plan");
                for ((o, v), w) in out.iter_mut().zip(&signal[support.clone()]).zip(window) {
                    *o = v * w * scale;
                }
            },
        );
        // overlap-add straight into the output, blocks of it in parallel: each output sample
        // sums the frames whose window covers it, divided by their summed squared window
        let hop = self.hop;
        let win_sq: Vec<f32> = window.iter().map(|w| w * w).collect();
        const BLOCK: usize = 4096;
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(ci, chunk)| {
                // padded-signal positions j0..j1; frame t's support covers
                // t * hop + support.start .. + width
                let j0 = ci * BLOCK + pad;
                let j1 = j0 + chunk.len();
                let mut norm = vec![0f32; chunk.len()];
                let first = support.start + width;
                let t_lo = if j0 + 1 > first {
                    (j0 + 1 - first).div_ceil(hop)
                } else {
                    0
                };
                let t_hi = (j1.saturating_sub(1 + support.start) / hop).min(frames - 1);
                for t in t_lo..=t_hi {
                    let s = t * hop + support.start;
                    let (a, b) = (j0.max(s), j1.min(s + width));
                    if a >= b {
                        continue;
                    }
                    let f = &kept[t * width..(t + 1) * width];
                    for j in a..b {
                        chunk[j - j0] += f[j - s];
                        norm[j - j0] += win_sq[j - s];
                    }
                }
                for (o, n) in chunk.iter_mut().zip(&norm) {
                    *o = if *n > 1e-11 { *o / n } else { 0.0 };
                }
            });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_reconstruction() {
        for (n_fft, hop, win) in [(512, 128, 512), (400, 100, 300), (2048, 441, 1024)] {
            let s = Stft::new(n_fft, hop, win).unwrap();
            let x: Vec<f32> = (0..5000)
                .map(|i| ((i as f32 * 0.013).sin() + (i as f32 * 0.31).cos()) * 0.4)
                .collect();
            let y = s.inverse(&s.forward(&x).unwrap(), Some(x.len())).unwrap();
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 2e-6, "n_fft {n_fft} hop {hop} win {win}: {err}");
        }
    }

    #[test]
    fn short_signals_are_errors() {
        let s = Stft::new(512, 128, 512).unwrap();
        assert!(s.forward(&[0.0; 256]).is_err());
        assert!(Stft::new(512, 0, 512).is_err());
        assert!(Stft::new(512, 128, 600).is_err());
    }
}
