//! Optimal superposition (Kabsch, Acta Cryst. A32, 1976) by nalgebra's SVD, and the RMSD
//! after it.

use crate::Vec3;
use nalgebra::{Matrix3, Vector3};

/// The rotation `r` and translation `t` that carry `mobile` onto `fixed` (paired points) with
/// the least RMSD: `fixed[k] ~ r mobile[k] + t`.
pub fn kabsch(fixed: &[Vec3], mobile: &[Vec3]) -> (Matrix3<f64>, Vector3<f64>) {
    let v = |p: &Vec3| Vector3::new(p[0], p[1], p[2]);
    let n = fixed.len().max(1) as f64;
    let cf = fixed.iter().fold(Vector3::zeros(), |s, p| s + v(p)) / n;
    let cm = mobile.iter().fold(Vector3::zeros(), |s, p| s + v(p)) / n;
    let mut h = Matrix3::zeros();
    for (f, m) in fixed.iter().zip(mobile) {
        h += (v(m) - cm) * (v(f) - cf).transpose();
    }
    let svd = h.svd(true, true);
    let (u, vt) = (svd.u.expect("computed"), svd.v_t.expect("computed"));
    let mut d = Matrix3::identity();
    if (vt.transpose() * u.transpose()).determinant() < 0.0 {
        d[(2, 2)] = -1.0;
    }
    let r = vt.transpose() * d * u.transpose();
    (r, cf - r * cm)
}

/// The RMSD of `a` and `b` (same length) after the rotation and translation of `b` onto `a`
/// that minimise it.
pub fn rmsd(a: &[Vec3], b: &[Vec3]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "superposition needs point sets of one size"
    );
    let (r, t) = kabsch(a, b);
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            (Vector3::new(x[0], x[1], x[2]) - (r * Vector3::new(y[0], y[1], y[2]) + t))
                .norm_squared()
        })
        .sum();
    (sum / a.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_copies_superpose_exactly() {
        let a: Vec<Vec3> = (0..20)
            .map(|i| [i as f64, (i as f64 * 0.7).sin() * 3.0, (i * i) as f64 * 0.1])
            .collect();
        let (s, c) = (0.6f64.sin(), 0.6f64.cos());
        let b: Vec<Vec3> = a
            .iter()
            .map(|p| {
                [
                    c * p[0] - s * p[1] + 5.0,
                    s * p[0] + c * p[1] - 2.0,
                    p[2] + 1.0,
                ]
            })
            .collect();
        assert!(rmsd(&a, &b) < 1e-9);
        // a mirror image is not a rotation
        let m: Vec<Vec3> = a.iter().map(|p| [p[0], p[1], -p[2]]).collect();
        assert!(rmsd(&a, &m) > 0.1);
    }
}
