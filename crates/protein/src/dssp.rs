//! Secondary structure by DSSP's hydrogen-bond rules (Kabsch and Sander, Biopolymers 22,
//! 1983), on the backbone alone:
//!
//! - amide H placed 1.0 Å from N opposite the previous residue's C=O (DSSP's rule); carbonyl
//!   O from the file when given, else by ideal geometry ([`crate::pdb::carbonyl_oxygens`]);
//! - an H-bond from N-H of `j` to C=O of `i` when
//!   `E = 27.888 (1/r_ON + 1/r_CH - 1/r_OH - 1/r_CN) < -0.5` kcal/mol, each N-H and each C=O
//!   keeping its two best partners, as DSSP does (pairs with CA more than 9 Å apart skipped);
//! - n-turns at `i` (n = 3, 4, 5) when N-H of `i + n` bonds C=O of `i`; two consecutive
//!   4-turns make an alpha helix (H) of residues `i + 1 ..= i + 4`, likewise 3-turns a 3-10
//!   helix (G) and 5-turns a pi helix (I), H taking precedence;
//! - parallel and antiparallel bridges by DSSP's patterns (partners at least three residues
//!   apart); a residue in any bridge is strand (DSSP's E in ladders, B alone).
//!
//! Reduced to three states: helix (H, G, I), strand (E, B), other. DSSP also marks as E the
//! residues of a beta bulge (a gap of up to one and four residues between two ladders), which
//! have no bridge of their own; here they stay coil.

use crate::geometry::distance as d;
use crate::structure::Backbone;
use crate::Vec3;

/// Three-state secondary structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ss {
    /// Helix (DSSP's H, G, I).
    Helix,
    /// Strand (DSSP's E, B).
    Strand,
    /// Anything else.
    Coil,
}

impl Ss {
    /// `H`, `E` or `-`.
    pub fn letter(self) -> char {
        match self {
            Ss::Helix => 'H',
            Ss::Strand => 'E',
            Ss::Coil => '-',
        }
    }

    /// The three-state class of a DSSP letter.
    pub fn of_dssp(c: char) -> Ss {
        match c {
            'H' | 'G' | 'I' => Ss::Helix,
            'E' | 'B' => Ss::Strand,
            _ => Ss::Coil,
        }
    }
}

/// The two best H-bond partners of one group: (partner, energy).
#[derive(Clone, Copy, Debug)]
struct Best([(usize, f64); 2]);

impl Best {
    fn new() -> Self {
        Best([(usize::MAX, 0.0); 2])
    }
    fn offer(&mut self, who: usize, e: f64) {
        if e < self.0[0].1 {
            self.0[1] = self.0[0];
            self.0[0] = (who, e);
        } else if e < self.0[1].1 {
            self.0[1] = (who, e);
        }
    }
    fn has(&self, who: usize) -> bool {
        self.0.iter().any(|&(w, e)| w == who && e < -0.5)
    }
}

/// The three-state secondary structure of each residue; `oxygens` are the carbonyl O atoms
/// (one per residue) when known.
pub fn secondary_structure(chain: &Backbone, oxygens: Option<&[Vec3]>) -> Vec<Ss> {
    let r = &chain.residues;
    let n = r.len();
    let placed;
    let o: &[Vec3] = match oxygens {
        Some(o) if o.len() == n => o,
        _ => {
            placed = crate::pdb::carbonyl_oxygens(chain);
            &placed
        }
    };
    // amide hydrogens (none on the first residue or on prolines)
    let h: Vec<Option<Vec3>> = (0..n)
        .map(|i| {
            if i == 0 || r[i].name == "PRO" {
                return None;
            }
            let (c, op) = (r[i - 1].c, o[i - 1]);
            let len = d(c, op).max(1e-9);
            Some([
                r[i].n[0] + (c[0] - op[0]) / len,
                r[i].n[1] + (c[1] - op[1]) / len,
                r[i].n[2] + (c[2] - op[2]) / len,
            ])
        })
        .collect();
    // acceptors[j]: best C=O partners of N-H j; donors[i]: best N-H partners of C=O i
    let mut acceptors = vec![Best::new(); n];
    let mut donors = vec![Best::new(); n];
    for j in 0..n {
        let Some(hj) = h[j] else { continue };
        for i in 0..n {
            if i.abs_diff(j) < 2 || d(r[i].ca, r[j].ca) > 9.0 {
                continue;
            }
            let (on, ch, oh, cn) = (
                d(o[i], r[j].n),
                d(r[i].c, hj),
                d(o[i], hj),
                d(r[i].c, r[j].n),
            );
            if on.min(ch).min(oh).min(cn) < 0.5 {
                continue;
            }
            let e = (27.888 * (1.0 / on + 1.0 / ch - 1.0 / oh - 1.0 / cn)).max(-9.9);
            acceptors[j].offer(i, e);
            donors[i].offer(j, e);
        }
    }
    // N-H of a bonds C=O of b
    let bond = |a: usize, b: usize| a < n && b < n && acceptors[a].has(b) && donors[b].has(a);
    let turn = |k: usize, i: usize| bond(i + k, i);
    let mut ss = vec![Ss::Coil; n];
    let mut helix = vec![false; n];
    for k in [4usize, 3, 5] {
        for i in 1..n {
            if turn(k, i - 1) && turn(k, i) {
                for x in helix.iter_mut().skip(i).take(k) {
                    *x = true;
                }
            }
        }
    }
    // bridges: each residue's partners
    let mut bridge: Vec<Vec<usize>> = vec![vec![]; n];
    for i in 1..n.saturating_sub(1) {
        for j in i + 3..n.saturating_sub(1) {
            let parallel = (bond(i + 1, j) && bond(j, i - 1)) || (bond(j + 1, i) && bond(i, j - 1));
            let anti = (bond(i, j) && bond(j, i)) || (bond(i + 1, j - 1) && bond(j + 1, i - 1));
            if parallel || anti {
                bridge[i].push(j);
                bridge[j].push(i);
            }
        }
    }
    for i in 0..n {
        if helix[i] {
            ss[i] = Ss::Helix;
        } else if !bridge[i].is_empty() {
            // E in a ladder, B alone: both are strand in three states
            ss[i] = Ss::Strand;
        }
    }
    ss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters() {
        assert_eq!(Ss::of_dssp('G'), Ss::Helix);
        assert_eq!(Ss::of_dssp('B'), Ss::Strand);
        assert_eq!(Ss::of_dssp('T'), Ss::Coil);
        assert_eq!(Ss::Strand.letter(), 'E');
    }
}
