//! Sliced Wasserstein-2 distance between 2-D point sets.

use sugarcube_core::rng::Rng;

/// The squared 2-Wasserstein distance between the empirical distributions of two sorted 1-D
/// samples of any sizes: the integral over u in (0, 1) of the squared difference of their
/// quantile functions, computed exactly by walking both step functions.
fn w2_squared_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    // Quantile breakpoints in units of 1 / (n m): a's i-th step ends at (i + 1) m, b's at (j + 1) n.
    let (mut i, mut j, mut pos, mut total) = (0, 0, 0usize, 0.0);
    while i < n && j < m {
        let end = ((i + 1) * m).min((j + 1) * n);
        total += (end - pos) as f64 * (a[i] - b[j]).powi(2);
        pos = end;
        if (i + 1) * m == end {
            i += 1;
        }
        if (j + 1) * n == end {
            j += 1;
        }
    }
    total / (n * m) as f64
}

/// The 2-Wasserstein distance between two 1-D samples (any sizes). Panics if either is empty.
pub fn wasserstein2_1d(a: &[f64], b: &[f64]) -> f64 {
    assert!(
        !a.is_empty() && !b.is_empty(),
        "wasserstein2_1d needs two non-empty samples"
    );
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    w2_squared_sorted(&a, &b).sqrt()
}

/// Sliced 2-Wasserstein distance between two 2-D point sets (any sizes): the square root of the
/// mean, over `projections` random unit directions drawn from `Rng::new(seed)`, of the exact
/// squared 1-D W2 between the projected sets. Panics if either set is empty or
/// `projections` is 0.
pub fn sliced_wasserstein2(a: &[[f32; 2]], b: &[[f32; 2]], projections: usize, seed: u64) -> f64 {
    assert!(
        !a.is_empty() && !b.is_empty(),
        "sliced_wasserstein2 needs two non-empty sets"
    );
    assert!(
        projections > 0,
        "sliced_wasserstein2 needs at least one projection"
    );
    let mut rng = Rng::new(seed);
    let project = |points: &[[f32; 2]], (c, s): (f64, f64)| {
        let mut v: Vec<f64> = points
            .iter()
            .map(|p| c * p[0] as f64 + s * p[1] as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let mut total = 0.0;
    for _ in 0..projections {
        let angle = 2.0 * std::f64::consts::PI * rng.uniform();
        let dir = (angle.cos(), angle.sin());
        total += w2_squared_sorted(&project(a, dir), &project(b, dir));
    }
    (total / projections as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ToyKind;

    #[test]
    fn one_dimensional_cases() {
        assert_eq!(wasserstein2_1d(&[1.0, 2.0, 3.0], &[3.0, 1.0, 2.0]), 0.0);
        assert!((wasserstein2_1d(&[0.0, 1.0], &[2.0, 3.0]) - 2.0).abs() < 1e-12);
        // Unequal sizes, {0, 1} against {0, 0.5, 1}: a's quantile is 0 on (0, 1/2], 1 after; b's is 0, 0.5, 1 on thirds:
        // squared differences 0.25 on (1/3, 1/2] and 0.25 on (1/2, 2/3], so W2^2 = 0.25 / 3.
        let w = wasserstein2_1d(&[0.0, 1.0], &[0.0, 0.5, 1.0]);
        assert!((w * w - 0.25 / 3.0).abs() < 1e-12, "{w}");
        // A point set against its own copy repeated: the same distribution.
        assert!(wasserstein2_1d(&[1.0, 5.0], &[5.0, 1.0, 1.0, 5.0]) < 1e-12);
    }

    #[test]
    fn identical_sets_are_at_zero() {
        let (a, _) = ToyKind::Moons.draw(0.05, 500, &mut Rng::new(1));
        assert_eq!(sliced_wasserstein2(&a, &a, 64, 0), 0.0);
    }

    #[test]
    fn a_shift_along_an_axis_gives_d_over_sqrt2() {
        let (a, _) = ToyKind::EightGaussians.draw(0.5, 1000, &mut Rng::new(2));
        let d = 0.8f32;
        let b: Vec<[f32; 2]> = a.iter().map(|p| [p[0] + d, p[1]]).collect();
        let sw = sliced_wasserstein2(&a, &b, 2000, 7);
        // Each projection shifts by d cos(angle); the mean of cos^2 is 1/2.
        let expected = d as f64 / 2f64.sqrt();
        assert!(
            (sw - expected).abs() < 0.02,
            "sw2 {sw}, expected {expected}"
        );
    }

    #[test]
    fn floor_is_small_and_different_shapes_are_far() {
        for kind in ToyKind::ALL {
            let noise = kind.default_noise();
            let (a, _) = kind.draw(noise, 2000, &mut Rng::stream(0, 1));
            let (b, _) = kind.draw(noise, 2000, &mut Rng::stream(0, 2));
            let floor = sliced_wasserstein2(&a, &b, 256, 0);
            assert!(floor < 0.1, "{kind:?}: floor {floor}");
        }
        let (moons, _) = ToyKind::Moons.draw(0.05, 2000, &mut Rng::stream(0, 1));
        let (other, _) = ToyKind::Moons.draw(0.05, 2000, &mut Rng::stream(0, 2));
        let mut rng = Rng::new(9);
        let normal: Vec<[f32; 2]> = (0..2000)
            .map(|_| [rng.normal() as f32, rng.normal() as f32])
            .collect();
        let floor = sliced_wasserstein2(&moons, &other, 256, 0);
        let far = sliced_wasserstein2(&moons, &normal, 256, 0);
        assert!(far > 3.0 * floor, "moons vs normal {far}, floor {floor}");
    }
}
