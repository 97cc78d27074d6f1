//! How close two magnitude spectrograms are.

/// Spectral convergence in dB: `20 log10(|| |S| - |S'| ||_F / || |S| ||_F)` of a reference and
/// an estimate of the same shape (lower is better; -20 dB is a tenth of the reference's norm).
pub fn spectral_convergence_db(reference: &[f32], estimate: &[f32]) -> f64 {
    let n = reference.len().min(estimate.len());
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..n {
        let (r, e) = (reference[i] as f64, estimate[i] as f64);
        num += (r - e) * (r - e);
        den += r * r;
    }
    10.0 * (num / den.max(1e-300)).max(1e-300).log10()
}

/// Log-spectral distance in dB: per frame, the root mean square over bins of the difference of
/// the two power spectra in dB (floored 100 dB below the reference's peak), averaged over
/// frames. `bins` values per frame.
pub fn log_spectral_distance(reference: &[f32], estimate: &[f32], bins: usize) -> f64 {
    let peak = reference.iter().fold(0f32, |a, &b| a.max(b)) as f64;
    let floor = (peak * peak * 1e-10).max(1e-30);
    let db = |m: f32| 10.0 * ((m as f64 * m as f64).max(floor)).log10();
    let frames = reference.len().min(estimate.len()) / bins.max(1);
    let mut total = 0.0;
    for t in 0..frames {
        let s: f64 = (0..bins)
            .map(|k| {
                let i = t * bins + k;
                (db(reference[i]) - db(estimate[i])).powi(2)
            })
            .sum();
        total += (s / bins as f64).sqrt();
    }
    total / frames.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let r = [1.0f32, 0.0, 0.0, 0.0];
        assert!((spectral_convergence_db(&r, &[0.9, 0.0, 0.0, 0.0]) + 20.0).abs() < 1e-5);
        assert_eq!(log_spectral_distance(&r, &r, 2), 0.0);
        // every bin 10x lower in magnitude: 20 dB
        let a = [1.0f32, 2.0];
        let b = [0.1f32, 0.2];
        assert!((log_spectral_distance(&a, &b, 2) - 20.0).abs() < 1e-5);
    }
}
