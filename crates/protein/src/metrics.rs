//! Local structure checks of backbones: CA-CA spacing, backbone clashes, radius of gyration,
//! Ramachandran histograms and their KL divergence.

use crate::angles::angles;
use crate::geometry::distance as d;
use crate::structure::Backbone;

/// Distances between consecutive CA atoms (3.8 Å for trans peptides, 2.9 Å for cis).
pub fn ca_ca_distances(chain: &Backbone) -> Vec<f64> {
    chain.ca().windows(2).map(|w| d(w[0], w[1])).collect()
}

/// Van der Waals radii of backbone atoms (N, CA, C), Å.
const RADII: [f64; 3] = [1.55, 1.7, 1.7];
/// Two atoms clash when closer than this fraction of their radii's sum.
pub const CLASH_FRACTION: f64 = 0.63;

/// The backbone atom pairs closer than `0.63 (r_i + r_j)` (N 1.55 Å, C 1.7 Å), skipping atoms
/// of the same or adjacent residues, as `(residue, residue, distance)`.
pub fn clashes(chain: &Backbone) -> Vec<(usize, usize, f64)> {
    let atoms = chain.atoms();
    let mut out = vec![];
    for i in 0..atoms.len() {
        for j in i + 1..atoms.len() {
            let (ri, rj) = (i / 3, j / 3);
            if rj <= ri + 1 {
                continue;
            }
            let dist = d(atoms[i], atoms[j]);
            if dist <= CLASH_FRACTION * (RADII[i % 3] + RADII[j % 3]) {
                out.push((ri, rj, dist));
            }
        }
    }
    out
}

/// The radius of gyration of the CA atoms, Å.
pub fn radius_of_gyration(chain: &Backbone) -> f64 {
    let ca = chain.ca();
    let n = ca.len().max(1) as f64;
    let c = ca.iter().fold([0.0; 3], |s, p| {
        [s[0] + p[0] / n, s[1] + p[1] / n, s[2] + p[2] / n]
    });
    (ca.iter().map(|p| d(*p, c).powi(2)).sum::<f64>() / n).sqrt()
}

/// The (phi, psi) pairs of a chain's residues that have both (all but the ends), radians.
pub fn phi_psi(chain: &Backbone) -> Vec<(f64, f64)> {
    let rows = angles(chain);
    let l = rows.len();
    (1..l.saturating_sub(1))
        .map(|i| (rows[i][0], rows[i][1]))
        .collect()
}

/// A normalised 2-D histogram of (phi, psi) pairs over `bins x bins` cells spanning
/// [-pi, pi)^2, row-major by phi.
pub fn ramachandran_histogram(pairs: &[(f64, f64)], bins: usize) -> Vec<f64> {
    let bins = bins.max(1);
    let mut h = vec![0f64; bins * bins];
    let cell = |a: f64| -> usize {
        let t = (crate::angles::wrap(a) + std::f64::consts::PI) / std::f64::consts::TAU;
        ((t * bins as f64) as usize).min(bins - 1)
    };
    for &(phi, psi) in pairs {
        if phi.is_finite() && psi.is_finite() {
            h[cell(phi) * bins + cell(psi)] += 1.0;
        }
    }
    let total: f64 = h.iter().sum();
    if total > 0.0 {
        h.iter_mut().for_each(|v| *v /= total);
    }
    h
}

/// KL(p || q) in nats of two histograms over the same cells, each smoothed by adding
/// `pseudo` (a fraction of one count) to every cell and renormalised, so empty cells do not
/// make it infinite.
pub fn kl_divergence(p: &[f64], q: &[f64], pseudo: f64) -> f64 {
    let norm = |h: &[f64]| -> Vec<f64> {
        let t: f64 = h.iter().map(|v| v + pseudo).sum();
        h.iter().map(|v| (v + pseudo) / t).collect()
    };
    let (p, q) = (norm(p), norm(q));
    p.iter()
        .zip(&q)
        .map(|(a, b)| if *a > 0.0 { a * (a / b).ln() } else { 0.0 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_kl() {
        let h = ramachandran_histogram(&[(-1.0, 2.0), (-1.0, 2.0), (1.0, -2.0)], 4);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(kl_divergence(&h, &h, 1e-6), 0.0);
        let other = ramachandran_histogram(&[(1.0, -2.0)], 4);
        assert!(kl_divergence(&h, &other, 1e-3) > 0.5);
    }
}
