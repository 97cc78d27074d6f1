//! Mel filterbanks as torchaudio builds them (`torchaudio.functional.melscale_fbanks`, the
//! same filters as librosa's `filters.mel` for the same scale and norm): triangles between
//! `n_mels + 2` points evenly spaced on the mel scale, over the FFT bin centres
//! `linspace(0, sr / 2, n_fft / 2 + 1)`. Stored sparsely: each filter is non-zero on one run
//! of bins.

use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// The mel scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelScale {
    /// HTK: `m = 2595 log10(1 + f / 700)`.
    Htk,
    /// Slaney (the Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), logarithmic
    /// above (27 mels per factor 6.4).
    Slaney,
}

/// How each filter is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelNorm {
    /// Peak 1.
    None,
    /// Slaney's area normalisation: each filter times `2 / (f[i + 2] - f[i])`.
    Slaney,
}

const SLANEY_SP: f64 = 200.0 / 3.0;
const SLANEY_MIN_LOG_HZ: f64 = 1000.0;
const SLANEY_MIN_LOG_MEL: f64 = SLANEY_MIN_LOG_HZ / SLANEY_SP;

fn slaney_step() -> f64 {
    6.4f64.ln() / 27.0
}

impl MelScale {
    /// Hz to mels.
    pub fn mel(self, hz: f64) -> f64 {
        match self {
            MelScale::Htk => 2595.0 * (1.0 + hz / 700.0).log10(),
            MelScale::Slaney => {
                if hz < SLANEY_MIN_LOG_HZ {
                    hz / SLANEY_SP
                } else {
                    SLANEY_MIN_LOG_MEL + (hz / SLANEY_MIN_LOG_HZ).ln() / slaney_step()
                }
            }
        }
    }

    /// Mels to Hz.
    pub fn hz(self, mel: f64) -> f64 {
        match self {
            MelScale::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
            MelScale::Slaney => {
                if mel < SLANEY_MIN_LOG_MEL {
                    mel * SLANEY_SP
                } else {
                    SLANEY_MIN_LOG_HZ * (slaney_step() * (mel - SLANEY_MIN_LOG_MEL)).exp()
                }
            }
        }
    }
}

/// A mel filterbank: `n_mels` filters over `n_freqs` FFT bins.
#[derive(Clone, Debug, PartialEq)]
pub struct MelBank {
    /// FFT bins (`n_fft / 2 + 1`).
    pub n_freqs: usize,
    /// Per filter: its first non-zero bin and its weights from there.
    pub filters: Vec<(usize, Vec<f32>)>,
    /// The `n_mels + 2` band edges in Hz.
    pub points_hz: Vec<f64>,
}

impl MelBank {
    /// The filterbank of `n_mels` filters from `fmin` to `fmax` Hz for `n_fft`-point FFTs at
    /// `sr` Hz.
    pub fn new(
        sr: u32,
        n_fft: usize,
        n_mels: usize,
        fmin: f64,
        fmax: f64,
        scale: MelScale,
        norm: MelNorm,
    ) -> anyhow::Result<Self> {
        ensure!(n_mels >= 1, "a filterbank needs at least one filter");
        ensure!(
            0.0 <= fmin && fmin < fmax && fmax <= sr as f64 / 2.0 + 1e-9,
            "mel range {fmin}..{fmax} Hz must lie in 0..{} Hz (half the rate {sr})",
            sr as f64 / 2.0
        );
        let n_freqs = n_fft / 2 + 1;
        // torchaudio: linspace(0, sample_rate // 2, n_freqs)
        let top = (sr / 2) as f64;
        let freq = |k: usize| {
            if n_freqs == 1 {
                0.0
            } else {
                top * k as f64 / (n_freqs - 1) as f64
            }
        };
        let (m0, m1) = (scale.mel(fmin), scale.mel(fmax));
        let points_hz: Vec<f64> = (0..n_mels + 2)
            .map(|i| scale.hz(m0 + (m1 - m0) * i as f64 / (n_mels + 1) as f64))
            .collect();
        let filters = (0..n_mels)
            .map(|m| {
                let (lo, mid, hi) = (points_hz[m], points_hz[m + 1], points_hz[m + 2]);
                let enorm = match norm {
                    MelNorm::None => 1.0,
                    MelNorm::Slaney => 2.0 / (hi - lo),
                };
                // only the bins within lo..hi can be nonzero (a bin either side for rounding)
                let step = if n_freqs > 1 {
                    top / (n_freqs - 1) as f64
                } else {
                    1.0
                };
                let k_lo = ((lo / step).floor() as usize)
                    .saturating_sub(1)
                    .min(n_freqs);
                let k_hi = (((hi / step).ceil() as usize).saturating_add(2)).min(n_freqs);
                let w: Vec<(usize, f32)> = (k_lo..k_hi)
                    .filter_map(|k| {
                        let f = freq(k);
                        let down = (f - lo) / (mid - lo);
                        let up = (hi - f) / (hi - mid);
                        let v = down.min(up).max(0.0) * enorm;
                        (v > 0.0).then_some((k, v as f32))
                    })
                    .collect();
                match (w.first(), w.last()) {
                    (Some(&(a, _)), Some(&(b, _))) => {
                        let mut dense = vec![0f32; b - a + 1];
                        for (k, v) in w {
                            dense[k - a] = v;
                        }
                        (a, dense)
                    }
                    _ => (0, vec![]),
                }
            })
            .collect();
        Ok(Self {
            n_freqs,
            filters,
            points_hz,
        })
    }

    /// Filters.
    pub fn n_mels(&self) -> usize {
        self.filters.len()
    }

    /// The dense matrix, `[n_mels][n_freqs]`.
    pub fn dense(&self) -> Vec<Vec<f32>> {
        self.filters
            .iter()
            .map(|(a, w)| {
                let mut row = vec![0f32; self.n_freqs];
                row[*a..*a + w.len()].copy_from_slice(w);
                row
            })
            .collect()
    }

    /// Mel values of one spectrum frame (`n_freqs` magnitudes or powers) into `out`.
    pub fn apply_frame(&self, frame: &[f32], out: &mut [f32]) {
        for (o, (a, w)) in out.iter_mut().zip(&self.filters) {
            *o = w.iter().zip(&frame[*a..]).map(|(x, y)| x * y).sum();
        }
    }

    /// `F^T v` for one frame of mel values: spreads them back over the bins.
    pub fn transpose_frame(&self, mel: &[f32], out: &mut [f32]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for (v, (a, w)) in mel.iter().zip(&self.filters) {
            for (o, x) in out[*a..].iter_mut().zip(w) {
                *o += v * x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_invert() {
        for s in [MelScale::Htk, MelScale::Slaney] {
            for hz in [0.0, 100.0, 999.0, 1000.0, 4321.0, 20000.0] {
                assert!((s.hz(s.mel(hz)) - hz).abs() < 1e-6 * (1.0 + hz));
            }
        }
        assert!((MelScale::Slaney.mel(1000.0) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(MelBank::new(16000, 512, 40, 0.0, 9000.0, MelScale::Htk, MelNorm::None).is_err());
        assert!(MelBank::new(16000, 512, 0, 0.0, 8000.0, MelScale::Htk, MelNorm::None).is_err());
    }
}
