//! Backbone coordinates from internal angles by NeRF (Natural Extension Reference Frame,
//! Parsons et al., J. Comput. Chem. 26, 2005), as FoldingDiff's `nerf.py` builds chains: the
//! first residue's N, CA, C at fixed coordinates, then each next atom placed from the three
//! before it by a bond length, a bond angle and a dihedral.

use crate::geometry::{cross, sub, unit};
use crate::Vec3;

/// Backbone bond lengths, Å.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BondLengths {
    /// N-CA.
    pub n_ca: f64,
    /// CA-C.
    pub ca_c: f64,
    /// C-N (the peptide bond).
    pub c_n: f64,
}

impl BondLengths {
    /// FoldingDiff's (`nerf.py`): N-CA 1.46, CA-C 1.54, C-N 1.34.
    pub const FOLDINGDIFF: Self = Self {
        n_ca: 1.46,
        ca_c: 1.54,
        c_n: 1.34,
    };
    /// Engh and Huber's ideal values: N-CA 1.458, CA-C 1.525, C-N 1.329.
    pub const ENGH_HUBER: Self = Self {
        n_ca: 1.458,
        ca_c: 1.525,
        c_n: 1.329,
    };
}

/// FoldingDiff's first residue (from crambin, 1CRN, a threonine): N, CA, C.
pub const INIT: [Vec3; 3] = [
    [17.047, 14.099, 3.625],
    [16.967, 12.784, 4.338],
    [15.685, 12.755, 5.133],
];

/// The atom `d` bonded to `c` at `length`, with angle `b-c-d` = `angle` and dihedral
/// `a-b-c-d` = `torsion` (radians).
pub fn place(a: Vec3, b: Vec3, c: Vec3, length: f64, angle: f64, torsion: f64) -> Vec3 {
    let bc = unit(sub(c, b));
    let n = unit(cross(sub(b, a), bc));
    let m = cross(n, bc);
    let d2 = [
        -length * angle.cos(),
        length * angle.sin() * torsion.cos(),
        length * angle.sin() * torsion.sin(),
    ];
    [
        c[0] + bc[0] * d2[0] + m[0] * d2[1] + n[0] * d2[2],
        c[1] + bc[1] * d2[0] + m[1] * d2[1] + n[1] * d2[2],
        c[2] + bc[2] * d2[0] + m[2] * d2[1] + n[2] * d2[2],
    ]
}

/// N, CA, C of every residue (`3 L` atoms) from the angle rows of [`crate::angles::angles`]
/// (row `i` places residue `i + 1`). The first residue is [`INIT`] with its N-CA-C angle
/// kept; `lengths` sets every later bond.
pub fn build(rows: &[[f64; 6]], lengths: BondLengths) -> Vec<Vec3> {
    let mut atoms: Vec<Vec3> = INIT.to_vec();
    if rows.is_empty() {
        return vec![];
    }
    for i in 0..rows.len() - 1 {
        let [_, psi, omega, tau, ca_c_n, c_n_ca] = rows[i];
        let phi_next = rows[i + 1][0];
        let k = atoms.len();
        let (n, ca, c) = (atoms[k - 3], atoms[k - 2], atoms[k - 1]);
        let n1 = place(n, ca, c, lengths.c_n, ca_c_n, psi);
        let ca1 = place(ca, c, n1, lengths.n_ca, c_n_ca, omega);
        let c1 = place(c, n1, ca1, lengths.ca_c, tau, phi_next);
        atoms.extend([n1, ca1, c1]);
    }
    atoms
}
