//! FoldingDiff's six internal angles per residue (`angles_and_coords.py`,
//! `EXHAUSTIVE_ANGLES`), in radians in [-pi, pi], for residues `i = 0..L`:
//!
//! | column | angle | undefined (0) at |
//! | --- | --- | --- |
//! | `phi` | dihedral C(i-1), N(i), CA(i), C(i) | `i = 0` |
//! | `psi` | dihedral N(i), CA(i), C(i), N(i+1) | `i = L-1` |
//! | `omega` | dihedral CA(i), C(i), N(i+1), CA(i+1) | `i = L-1` |
//! | `tau` | angle N(i+1), CA(i+1), C(i+1) | `i = L-1` |
//! | `ca_c_n` | angle CA(i), C(i), N(i+1) | `i = L-1` |
//! | `c_n_ca` | angle C(i), N(i+1), CA(i+1) | `i = L-1` |
//!
//! As in FoldingDiff, `tau` in row `i` belongs to residue `i + 1`, so that row `i` holds what
//! placing residue `i + 1` needs apart from its `phi` (row `i + 1`). FoldingDiff marks the
//! undefined entries NaN (dihedrals) or 0 (angles); here all are 0 and [`defined`] says which
//! are real.

use crate::geometry::{cross, dot, sub};
use crate::structure::Backbone;
use crate::Vec3;

/// The columns' names, in order.
pub const NAMES: [&str; 6] = ["phi", "psi", "omega", "tau", "ca_c_n", "c_n_ca"];

/// The angle at `b` between `a` and `c`, radians in [0, pi].
pub fn bond_angle(a: Vec3, b: Vec3, c: Vec3) -> f64 {
    let (u, v) = (sub(a, b), sub(c, b));
    cross(u, v)
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .atan2(dot(u, v))
}

/// The dihedral angle of `a, b, c, d` (IUPAC sign convention), radians in [-pi, pi].
pub fn dihedral(a: Vec3, b: Vec3, c: Vec3, d: Vec3) -> f64 {
    let (b0, b1, b2) = (sub(a, b), sub(c, b), sub(d, c));
    let n = dot(b1, b1).sqrt().max(1e-12);
    let b1n = [b1[0] / n, b1[1] / n, b1[2] / n];
    let v = sub(
        b0,
        [
            b1n[0] * dot(b0, b1n),
            b1n[1] * dot(b0, b1n),
            b1n[2] * dot(b0, b1n),
        ],
    );
    let w = sub(
        b2,
        [
            b1n[0] * dot(b2, b1n),
            b1n[1] * dot(b2, b1n),
            b1n[2] * dot(b2, b1n),
        ],
    );
    let x = dot(v, w);
    let y = dot(cross(b1n, v), w);
    y.atan2(x)
}

/// The six angles of each residue, `[L][6]` in [`NAMES`] order.
pub fn angles(chain: &Backbone) -> Vec<[f64; 6]> {
    let r = &chain.residues;
    let l = r.len();
    (0..l)
        .map(|i| {
            let mut row = [0f64; 6];
            if i > 0 {
                row[0] = dihedral(r[i - 1].c, r[i].n, r[i].ca, r[i].c);
            }
            if i + 1 < l {
                let next = &r[i + 1];
                row[1] = dihedral(r[i].n, r[i].ca, r[i].c, next.n);
                row[2] = dihedral(r[i].ca, r[i].c, next.n, next.ca);
                row[3] = bond_angle(next.n, next.ca, next.c);
                row[4] = bond_angle(r[i].ca, r[i].c, next.n);
                row[5] = bond_angle(r[i].c, next.n, next.ca);
            }
            row
        })
        .collect()
}

/// Whether entry `column` of row `i` of a length-`len` chain is a real angle.
pub fn defined(i: usize, column: usize, len: usize) -> bool {
    if column == 0 {
        i > 0
    } else {
        i + 1 < len
    }
}

/// `x` wrapped to [-pi, pi).
pub fn wrap(x: f64) -> f64 {
    let t = std::f64::consts::TAU;
    (x + std::f64::consts::PI).rem_euclid(t) - std::f64::consts::PI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_geometry() {
        let pi = std::f64::consts::PI;
        assert!((bond_angle([1.0, 0.0, 0.0], [0.0; 3], [0.0, 1.0, 0.0]) - pi / 2.0).abs() < 1e-12);
        // trans and cis
        let (a, b, c) = ([1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]);
        assert!((dihedral(a, b, c, [0.0, -1.0, 0.0]).abs() - pi).abs() < 1e-12);
        assert!(dihedral(a, b, c, [0.0, 1.0, 0.0]).abs() < 1e-12);
        // seen down b->c, d lies 90 degrees counter-clockwise of a: negative
        assert!((dihedral(a, b, c, [0.0, 0.0, 1.0]) + pi / 2.0).abs() < 1e-12);
        assert!((wrap(3.0 * pi / 2.0) + pi / 2.0).abs() < 1e-12);
    }
}
