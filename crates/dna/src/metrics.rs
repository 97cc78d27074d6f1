//! Set-level metrics for generated sequences: GC content, motif composition, memorization,
//! uniqueness.
//!
//! - **GC content.** [`gc_distance`] is the 1-D Wasserstein (earth mover's) distance between
//!   the per-sequence GC fractions of two sets, `integral |F_a(x) - F_b(x)| dx` over the two
//!   empirical distribution functions (`scipy.stats.wasserstein_distance`), in GC-fraction
//!   units: 0.01 means the distributions are one percentage point of GC apart. It is chosen
//!   over the KS statistic because it grows with the size of a shift instead of saturating;
//!   [`ks_statistic`] is there too.
//! - **Motif composition** as DNA-Diffusion computes it (`compare_motif_list` in
//!   `dnadiffusion/metrics/metrics.py`, removed from the repository in 2025): each set's motif
//!   hit counts are totalled per motif; the motifs kept are those with at least one hit in
//!   either set; a motif with no hit in one set gets count 1 there (the pseudocount, applied to
//!   zeros only); both count vectors are normalised and `KL(generated || reference) =
//!   sum p ln(p / q)` in nats (`scipy.special.rel_entr`). DNA-Diffusion counted hits from
//!   `gimme scan` (all hits in its last version, hits per sequence and motif capped at 20 by
//!   `-n 20`; an earlier version counted sequences with a hit): [`motif_totals`] and
//!   [`motif_presence`] give the two.
//! - **Memorization.** Each generated sequence's highest position-wise identity to any
//!   training sequence: the fraction of equal bases at equal positions (Hamming distance over
//!   the length; same length required, no shifts, no reverse complement, as DNA-Diffusion's
//!   one-hot dot-product similarity). Sequences are packed 2 bits a base, 32 bases a `u64`,
//!   and a word pair's mismatches are `popcount((x | x >> 1) & 0x5555...)` with `x = a ^ b`;
//!   the generated set is split over threads.
//! - **Uniqueness.** The fraction of distinct sequences in a set.

use anyhow::{bail, ensure};
use std::collections::HashSet;

/// GC fraction of a sequence over its A, C, G, T bases; `None` if it has none.
pub fn gc_fraction(seq: &[u8]) -> Option<f64> {
    let (mut gc, mut n) = (0usize, 0usize);
    for &b in seq {
        match b {
            b'G' | b'C' => {
                gc += 1;
                n += 1;
            }
            b'A' | b'T' => n += 1,
            _ => {}
        }
    }
    (n > 0).then(|| gc as f64 / n as f64)
}

/// GC fractions of the sequences that have A, C, G or T bases.
pub fn gc_fractions<S: AsRef<[u8]>>(seqs: &[S]) -> Vec<f64> {
    seqs.iter()
        .filter_map(|s| gc_fraction(s.as_ref()))
        .collect()
}

fn sorted(values: &[f64], what: &str) -> anyhow::Result<Vec<f64>> {
    ensure!(!values.is_empty(), "the {what} sample is empty");
    ensure!(
        values.iter().all(|v| v.is_finite()),
        "the {what} sample has a non-finite value"
    );
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v)
}

/// Walks the merged sorted samples, calling `f(F_a, F_b, width)` on every interval between
/// consecutive distinct values.
fn walk_cdfs(a: &[f64], b: &[f64], mut f: impl FnMut(f64, f64, f64)) {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => x,
        };
        f(i as f64 / na, j as f64 / nb, next - x);
    }
}

/// 1-D Wasserstein-1 distance between two samples (`scipy.stats.wasserstein_distance`).
pub fn wasserstein_1d(a: &[f64], b: &[f64]) -> anyhow::Result<f64> {
    let (a, b) = (sorted(a, "first")?, sorted(b, "second")?);
    let mut d = 0.0;
    walk_cdfs(&a, &b, |fa, fb, w| d += (fa - fb).abs() * w);
    Ok(d)
}

/// Two-sample Kolmogorov-Smirnov statistic `sup |F_a - F_b|` (`scipy.stats.ks_2samp`).
pub fn ks_statistic(a: &[f64], b: &[f64]) -> anyhow::Result<f64> {
    let (a, b) = (sorted(a, "first")?, sorted(b, "second")?);
    let mut d: f64 = 0.0;
    walk_cdfs(&a, &b, |fa, fb, _| d = d.max((fa - fb).abs()));
    Ok(d)
}

/// Wasserstein distance between the GC-fraction distributions of two sets (module doc).
pub fn gc_distance<A: AsRef<[u8]>, B: AsRef<[u8]>>(a: &[A], b: &[B]) -> anyhow::Result<f64> {
    wasserstein_1d(&gc_fractions(a), &gc_fractions(b))
}

/// Total hits per motif over a set, from `counts[seq][motif]` (see `motif::hit_counts`).
pub fn motif_totals(counts: &[Vec<u32>]) -> Vec<u64> {
    let m = counts.iter().map(Vec::len).max().unwrap_or(0);
    let mut t = vec![0u64; m];
    for row in counts {
        for (k, &c) in row.iter().enumerate() {
            t[k] += c as u64;
        }
    }
    t
}

/// Number of sequences with at least one hit, per motif.
pub fn motif_presence(counts: &[Vec<u32>]) -> Vec<u64> {
    let m = counts.iter().map(Vec::len).max().unwrap_or(0);
    let mut t = vec![0u64; m];
    for row in counts {
        for (k, &c) in row.iter().enumerate() {
            t[k] += (c > 0) as u64;
        }
    }
    t
}

/// DNA-Diffusion's motif-composition divergence `KL(generated || reference)` in nats, from
/// per-motif totals over the same motif list (see the module doc for the pseudocount rule).
pub fn motif_kl(generated: &[u64], reference: &[u64]) -> anyhow::Result<f64> {
    ensure!(
        generated.len() == reference.len(),
        "motif totals over {} and {} motifs differ",
        generated.len(),
        reference.len()
    );
    let kept: Vec<(f64, f64)> = generated
        .iter()
        .zip(reference)
        .filter(|(&g, &r)| g > 0 || r > 0)
        .map(|(&g, &r)| (g.max(1) as f64, r.max(1) as f64))
        .collect();
    if kept.is_empty() {
        bail!("no motif has a hit in either set");
    }
    let sg: f64 = kept.iter().map(|k| k.0).sum();
    let sr: f64 = kept.iter().map(|k| k.1).sum();
    Ok(kept
        .iter()
        .map(|&(g, r)| {
            let (p, q) = (g / sg, r / sr);
            p * (p / q).ln()
        })
        .sum())
}

/// `kl[i][j] = motif_kl(generated[i], reference[j])`: rows are generated classes, columns
/// reference classes.
pub fn motif_kl_matrix(
    generated: &[Vec<u64>],
    reference: &[Vec<u64>],
) -> anyhow::Result<Vec<Vec<f64>>> {
    generated
        .iter()
        .map(|g| reference.iter().map(|r| motif_kl(g, r)).collect())
        .collect()
}

/// Sequences of one length packed 2 bits a base (A 0, C 1, G 2, T 3), 32 bases a word.
#[derive(Clone, Debug)]
pub struct PackedSeqs {
    len: usize,
    words: usize,
    count: usize,
    data: Vec<u64>,
}

impl PackedSeqs {
    /// Packs sequences that all have the same length and only A, C, G, T.
    pub fn new<S: AsRef<[u8]>>(seqs: &[S]) -> anyhow::Result<Self> {
        let len = seqs.first().map_or(0, |s| s.as_ref().len());
        let words = len.div_ceil(32);
        let mut data = vec![0u64; words * seqs.len()];
        for (i, s) in seqs.iter().enumerate() {
            let s = s.as_ref();
            ensure!(
                s.len() == len,
                "sequence {i} has length {}, sequence 0 has {len} (equal lengths needed)",
                s.len()
            );
            let out = &mut data[i * words..(i + 1) * words];
            for (p, &b) in s.iter().enumerate() {
                let Some(x) = crate::encode::base_index(b) else {
                    bail!(
                        "sequence {i}, position {p}: byte {:?} is not A, C, G or T",
                        b as char
                    );
                };
                out[p / 32] |= (x as u64) << (2 * (p % 32));
            }
        }
        Ok(Self {
            len,
            words,
            count: seqs.len(),
            data,
        })
    }

    /// The number of sequences.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The common sequence length.
    pub fn seq_len(&self) -> usize {
        self.len
    }

    fn row(&self, i: usize) -> &[u64] {
        &self.data[i * self.words..(i + 1) * self.words]
    }

    /// Mismatching positions between sequence `i` here and sequence `j` of `other`.
    pub fn hamming(&self, i: usize, other: &PackedSeqs, j: usize) -> u32 {
        word_mismatches(self.row(i), other.row(j), u32::MAX)
    }
}

const LOW_BITS: u64 = 0x5555_5555_5555_5555;

/// Mismatches between two packed rows; stops early once above `limit`.
#[inline]
fn word_mismatches(a: &[u64], b: &[u64], limit: u32) -> u32 {
    let mut d = 0;
    for (x, y) in a.iter().zip(b) {
        let x = x ^ y;
        d += ((x | (x >> 1)) & LOW_BITS).count_ones();
        if d > limit {
            break;
        }
    }
    d
}

/// Memorization of a generated set against the training set.
#[derive(Clone, Debug, PartialEq)]
pub struct Memorization {
    /// Per generated sequence, its highest identity to any training sequence, in [0, 1].
    pub max_identity: Vec<f64>,
    /// Per generated sequence, the index of that training sequence (the first on ties).
    pub nearest: Vec<usize>,
    /// The mean of `max_identity` (DNA-Diffusion's mean similarity to training).
    pub mean_max_identity: f64,
    /// The identity threshold used.
    pub threshold: f64,
    /// Fraction of generated sequences whose `max_identity` is above `threshold`.
    pub fraction_above: f64,
}

/// Nearest training sequence by position-wise identity for every generated sequence (module
/// doc); `threshold` is typically 0.95. All sequences must have one length.
pub fn memorization<G: AsRef<[u8]>, T: AsRef<[u8]>>(
    generated: &[G],
    training: &[T],
    threshold: f64,
) -> anyhow::Result<Memorization> {
    ensure!(!generated.is_empty(), "no generated sequences");
    ensure!(!training.is_empty(), "no training sequences");
    let g = PackedSeqs::new(generated).map_err(|e| anyhow::anyhow!("generated set: {e}"))?;
    let t = PackedSeqs::new(training).map_err(|e| anyhow::anyhow!("training set: {e}"))?;
    ensure!(
        g.len == t.len,
        "generated sequences have length {}, training sequences {}",
        g.len,
        t.len
    );
    ensure!(g.len > 0, "sequences are empty");
    let n = generated.len();
    let mut best = vec![(u32::MAX, 0usize); n];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(n)
        .max(1);
    let chunk = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (c, out) in best.chunks_mut(chunk).enumerate() {
            let (g, t) = (&g, &t);
            scope.spawn(move || {
                for (k, slot) in out.iter_mut().enumerate() {
                    let row = g.row(c * chunk + k);
                    let mut b = (u32::MAX, 0);
                    for j in 0..t.count() {
                        let d = word_mismatches(row, t.row(j), b.0);
                        if d < b.0 {
                            b = (d, j);
                            if d == 0 {
                                break;
                            }
                        }
                    }
                    *slot = b;
                }
            });
        }
    });
    let len = g.len as f64;
    let max_identity: Vec<f64> = best
        .iter()
        .map(|&(d, _)| (g.len - d as usize) as f64 / len)
        .collect();
    let above = max_identity.iter().filter(|&&x| x > threshold).count();
    Ok(Memorization {
        mean_max_identity: max_identity.iter().sum::<f64>() / n as f64,
        nearest: best.iter().map(|b| b.1).collect(),
        fraction_above: above as f64 / n as f64,
        threshold,
        max_identity,
    })
}

/// The fraction of distinct sequences in a set (1 when all differ; 0 for an empty set).
pub fn uniqueness<S: AsRef<[u8]>>(seqs: &[S]) -> f64 {
    if seqs.is_empty() {
        return 0.0;
    }
    let distinct: HashSet<&[u8]> = seqs.iter().map(|s| s.as_ref()).collect();
    distinct.len() as f64 / seqs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::SplitMix64;

    use crate::testutil::random_dna;

    #[test]
    fn gc_and_distances_match_scipy() {
        assert_eq!(gc_fraction(b"GGCA"), Some(0.75));
        assert_eq!(gc_fraction(b"GCNN"), Some(1.0));
        assert_eq!(gc_fraction(b"NN"), None);
        // scipy.stats.wasserstein_distance / ks_2samp(...).statistic (scipy 1.17.1), printed by
        // scripts/dna-references.py.
        let a = [0.1, 0.4, 0.4, 0.55, 0.9];
        let b = [0.3, 0.35, 0.6, 0.8];
        assert!((wasserstein_1d(&a, &b).unwrap() - W1_AB).abs() < 1e-12);
        assert!((ks_statistic(&a, &b).unwrap() - KS_AB).abs() < 1e-12);
        assert_eq!(wasserstein_1d(&a, &a).unwrap(), 0.0);
        assert!(wasserstein_1d(&a, &[]).is_err());
        assert!(ks_statistic(&[f64::NAN], &a).is_err());
        // GC fractions 0.5, 0.25, 1.0 vs 0.75, 0.5.
        let d = gc_distance(&["ACGT", "AATG", "GCGC"], &["GGCA", "ATGC"]).unwrap();
        assert!((d - W1_GC).abs() < 1e-12, "{d}");
        // A shift by c moves W1 by c.
        let shifted: Vec<f64> = a.iter().map(|x| x + 0.05).collect();
        assert!((wasserstein_1d(&a, &shifted).unwrap() - 0.05).abs() < 1e-12);
    }

    const W1_AB: f64 = 0.1175;
    const KS_AB: f64 = 0.3;
    const W1_GC: f64 = 0.20833333333333331;

    #[test]
    fn motif_kl_follows_dna_diffusion() {
        let counts = vec![vec![2, 0, 1, 0], vec![1, 0, 0, 0], vec![0, 0, 3, 0]];
        assert_eq!(motif_totals(&counts), [3, 0, 4, 0]);
        assert_eq!(motif_presence(&counts), [2, 0, 2, 0]);
        // Reference: a numpy re-implementation of compare_motif_list (union of motifs with a
        // hit, zeros replaced by 1, rel_entr summed).
        let g = [3, 0, 4, 0, 10];
        let r = [5, 0, 0, 2, 1];
        assert!((motif_kl(&g, &r).unwrap() - KL_GR).abs() < 1e-12);
        assert!((motif_kl(&r, &g).unwrap() - KL_RG).abs() < 1e-12);
        assert_eq!(motif_kl(&g, &g).unwrap(), 0.0);
        assert!(motif_kl(&[0, 0], &[0, 0]).is_err());
        assert!(motif_kl(&[1], &[1, 2]).is_err());
        let m = motif_kl_matrix(
            &[g.to_vec(), r.to_vec()],
            &[g.to_vec(), r.to_vec(), r.to_vec()],
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].len(), 3);
        assert!((m[0][1] - KL_GR).abs() < 1e-12 && (m[1][0] - KL_RG).abs() < 1e-12);
        assert_eq!(m[1][2], 0.0);
    }

    const KL_GR: f64 = 0.7704863929157272;
    const KL_RG: f64 = 0.7210964056528242;

    #[test]
    fn memorization_matches_brute_force() {
        let mut rng = SplitMix64::new(11);
        for len in [1, 31, 32, 33, 200] {
            let train: Vec<Vec<u8>> = (0..40).map(|_| random_dna(&mut rng, len)).collect();
            let mut gen: Vec<Vec<u8>> = (0..25).map(|_| random_dna(&mut rng, len)).collect();
            gen[3] = train[17].clone();
            let mut near = train[5].clone();
            near[len - 1] = if near[len - 1] == b'A' { b'C' } else { b'A' };
            gen[4] = near;
            let m = memorization(&gen, &train, 0.95).unwrap();
            for (i, g) in gen.iter().enumerate() {
                let brute = train
                    .iter()
                    .map(|t| g.iter().zip(t).filter(|(a, b)| a == b).count())
                    .max()
                    .unwrap();
                assert_eq!(
                    m.max_identity[i],
                    brute as f64 / len as f64,
                    "len {len} seq {i}"
                );
                let j = m.nearest[i];
                assert_eq!(
                    g.iter().zip(&train[j]).filter(|(a, b)| a == b).count(),
                    brute
                );
            }
            assert_eq!(m.max_identity[3], 1.0);
            if len > 1 {
                assert_eq!(m.nearest[3], 17); // (with one base, an earlier copy ties)
            }
            if len == 200 {
                assert_eq!(m.max_identity[4], 199.0 / 200.0);
                assert_eq!(m.fraction_above, 2.0 / 25.0);
            }
        }
        assert!(memorization(&["ACGT"], &["ACG"], 0.95).is_err());
        assert!(memorization(&["ACGN"], &["ACGT"], 0.95).is_err());
        assert!(memorization(&["ACGT", "AC"], &["ACGT"], 0.95).is_err());
        let empty: [&str; 0] = [];
        assert!(memorization(&empty, &["ACGT"], 0.95).is_err());
    }

    #[test]
    fn uniqueness_counts_distinct() {
        assert_eq!(uniqueness(&["ACGT", "ACGT", "TTTT", "GGGG"]), 0.75);
        let empty: [&str; 0] = [];
        assert_eq!(uniqueness(&empty), 0.0);
    }
}
