//! Fundamental frequency by YIN (de Cheveigné and Kawahara, "YIN, a fundamental frequency
//! estimator for speech and music", JASA 111(4), 2002): per frame, the cumulative mean
//! normalised difference function, the first dip below an absolute threshold (0.1) followed to
//! its minimum, refined by parabolic interpolation; a clip's pitch is the median over its
//! voiced frames.

/// YIN's settings.
#[derive(Clone, Copy, Debug)]
pub struct Yin {
    /// Lowest frequency searched, Hz.
    pub fmin: f64,
    /// Highest frequency searched, Hz.
    pub fmax: f64,
    /// The absolute threshold on the normalised difference.
    pub threshold: f64,
}

impl Default for Yin {
    fn default() -> Self {
        Self {
            fmin: 50.0,
            fmax: 2000.0,
            threshold: 0.1,
        }
    }
}

/// A frequency in Hz as a (fractional) MIDI key: `69 + 12 log2(f / 440)`.
pub fn midi_of_hz(hz: f64) -> f64 {
    69.0 + 12.0 * (hz / 440.0).log2()
}

/// A MIDI key's frequency in Hz.
pub fn hz_of_midi(key: f64) -> f64 {
    440.0 * 2f64.powf((key - 69.0) / 12.0)
}

impl Yin {
    /// The frame's fundamental in Hz, or None when no period passes the threshold (unvoiced or
    /// silent). `frame` should hold at least two periods of `fmin`.
    pub fn frame(&self, frame: &[f32], rate: u32) -> Option<f64> {
        let tau_min = ((rate as f64 / self.fmax).floor() as usize).max(2);
        let tau_max = ((rate as f64 / self.fmin).ceil() as usize).min(frame.len() / 2);
        if tau_max <= tau_min + 2 {
            return None;
        }
        let w = frame.len() - tau_max;
        let energy: f64 = frame[..w].iter().map(|v| (*v as f64).powi(2)).sum();
        if energy <= 1e-12 * w as f64 {
            return None;
        }
        // difference function d(tau) and its cumulative mean normalisation
        let mut d = vec![0f64; tau_max + 1];
        for (tau, dt) in d.iter_mut().enumerate().skip(1) {
            *dt = (0..w)
                .map(|j| {
                    let e = frame[j] as f64 - frame[j + tau] as f64;
                    e * e
                })
                .sum();
        }
        let mut cmnd = vec![1f64; tau_max + 1];
        let mut running = 0.0;
        for tau in 1..=tau_max {
            running += d[tau];
            cmnd[tau] = if running > 0.0 {
                d[tau] * tau as f64 / running
            } else {
                1.0
            };
        }
        let mut tau = tau_min;
        let found = loop {
            if tau >= tau_max {
                break None;
            }
            if cmnd[tau] < self.threshold {
                while tau + 1 < tau_max && cmnd[tau + 1] < cmnd[tau] {
                    tau += 1;
                }
                break Some(tau);
            }
            tau += 1;
        }?;
        // parabolic interpolation around the minimum
        let (a, b, c) = (cmnd[found - 1], cmnd[found], cmnd[found + 1]);
        let denom = a - 2.0 * b + c;
        let shift = if denom.abs() > 1e-12 {
            0.5 * (a - c) / denom
        } else {
            0.0
        };
        Some(rate as f64 / (found as f64 + shift.clamp(-1.0, 1.0)))
    }

    /// The median fundamental over frames of `2 * rate / fmin` samples every quarter frame,
    /// within `seconds` (None: the whole clip); None when no frame is voiced.
    pub fn clip(&self, x: &[f32], rate: u32, seconds: Option<f64>) -> Option<f64> {
        let end = seconds.map_or(x.len(), |s| ((s * rate as f64) as usize).min(x.len()));
        let len = (2.0 * rate as f64 / self.fmin).ceil() as usize + 2;
        let hop = (len / 4).max(1);
        let mut f0: Vec<f64> = (0..)
            .map(|i| i * hop)
            .take_while(|s| s + len <= end)
            .filter_map(|s| self.frame(&x[s..s + len], rate))
            .collect();
        if f0.is_empty() {
            return None;
        }
        f0.sort_by(|a, b| a.total_cmp(b));
        Some(f0[f0.len() / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_harmonic_tones() {
        let yin = Yin::default();
        for key in [40.0, 48.0, 60.0, 69.0, 84.0, 90.0] {
            let f = hz_of_midi(key);
            // a missing fundamental is still heard: harmonics 2 to 5 only
            let x: Vec<f32> = (0..16000)
                .map(|i| {
                    let t = i as f64 / 16000.0;
                    (2..6)
                        .map(|h| (std::f64::consts::TAU * f * h as f64 * t).sin() / h as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            let est = yin.clip(&x, 16000, None).unwrap();
            assert!((midi_of_hz(est) - key).abs() < 0.1, "key {key}: {est} Hz");
        }
        assert!(yin.clip(&vec![0.0; 16000], 16000, None).is_none());
        assert!((midi_of_hz(440.0) - 69.0).abs() < 1e-12);
    }
}
