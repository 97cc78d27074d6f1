//! k-mer frequency vectors and the Jensen-Shannon distance between two sets of sequences.
//!
//! A set's k-mer vector has `4^k` entries, indexed by the k-mer read as a base-4 number
//! (A = 0, C = 1, G = 2, T = 3, first base most significant), and counts every overlapping
//! k-mer of every sequence in the set. By default ([`Strands::Forward`]) the counts are plain
//! counts on the given strand, as DNA-Diffusion computes them; [`Strands::Canonical`] counts each
//! k-mer under the smaller index of itself and its reverse complement (strand-symmetric).
//! k-mers containing a byte other than A, C, G, T are skipped.
//!
//! The Jensen-Shannon distance is `sqrt(JSD)` with the divergence in bits, as
//! `scipy.spatial.distance.jensenshannon(p, q, base=2)`: both count vectors are normalised to
//! sum 1, `m = (p + q) / 2` and `JSD = (KL(p || m) + KL(q || m)) / 2`. It lies in [0, 1].

use anyhow::ensure;

/// The largest k supported (4^12 = 16.8 M counts).
pub const MAX_K: usize = 12;

/// Which strands a k-mer count covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strands {
    /// Only the given strand (DNA-Diffusion's plain counts).
    #[default]
    Forward,
    /// A k-mer and its reverse complement count as one (under the smaller index).
    Canonical,
}

/// The index of a k-mer (see the module doc); `None` if it holds a byte other than A, C, G, T.
pub fn kmer_index(kmer: &[u8]) -> Option<usize> {
    let mut i = 0;
    for &b in kmer {
        i = (i << 2) | crate::encode::base_index(b)?;
    }
    Some(i)
}

/// The index of the reverse complement of the k-mer with index `i`.
fn rc_index(mut i: usize, k: usize) -> usize {
    let mut r = 0;
    for _ in 0..k {
        r = (r << 2) | (3 - (i & 3));
        i >>= 2;
    }
    r
}

/// The k-mer count vector (length `4^k`) of a set of sequences.
pub fn kmer_counts<S: AsRef<[u8]>>(
    seqs: &[S],
    k: usize,
    strands: Strands,
) -> anyhow::Result<Vec<u64>> {
    ensure!((1..=MAX_K).contains(&k), "k = {k} is outside 1..={MAX_K}");
    let mask = (1usize << (2 * k)) - 1;
    let mut counts = vec![0u64; 1 << (2 * k)];
    for seq in seqs {
        // Rolling index; `valid` = how many of the last bases were A, C, G or T.
        let mut idx = 0usize;
        let mut valid = 0usize;
        for &b in seq.as_ref() {
            match crate::encode::base_index(b) {
                Some(x) => {
                    idx = ((idx << 2) | x) & mask;
                    valid += 1;
                    if valid >= k {
                        counts[idx] += 1;
                    }
                }
                None => valid = 0,
            }
        }
    }
    if strands == Strands::Canonical {
        for i in 0..counts.len() {
            let r = rc_index(i, k);
            if r < i {
                counts[r] += counts[i];
                counts[i] = 0;
            }
        }
    }
    Ok(counts)
}

/// `counts` normalised to sum 1 (all zeros stays all zeros).
pub fn frequencies(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

/// The Jensen-Shannon distance (base 2) between two non-negative weight vectors of the same
/// length, each normalised to sum 1 first.
pub fn jensen_shannon_distance(p: &[f64], q: &[f64]) -> anyhow::Result<f64> {
    ensure!(
        p.len() == q.len(),
        "vectors of lengths {} and {} differ",
        p.len(),
        q.len()
    );
    ensure!(
        p.iter().chain(q).all(|x| x.is_finite() && *x >= 0.0),
        "weights must be finite and non-negative"
    );
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    ensure!(
        sp > 0.0 && sq > 0.0,
        "a weight vector sums to 0 (no k-mers?)"
    );
    let mut js = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = 0.5 * (a + b);
        if a > 0.0 {
            js += a * (a / m).ln();
        }
        if b > 0.0 {
            js += b * (b / m).ln();
        }
    }
    // Rounding can leave a tiny negative value for identical inputs.
    Ok((js / (2.0 * std::f64::consts::LN_2)).max(0.0).sqrt())
}

/// The Jensen-Shannon distance between the k-mer count vectors of two sets.
pub fn kmer_js_distance<A: AsRef<[u8]>, B: AsRef<[u8]>>(
    a: &[A],
    b: &[B],
    k: usize,
    strands: Strands,
) -> anyhow::Result<f64> {
    let ca = kmer_counts(a, k, strands)?;
    let cb = kmer_counts(b, k, strands)?;
    let to_f = |c: &[u64]| c.iter().map(|&x| x as f64).collect::<Vec<_>>();
    jensen_shannon_distance(&to_f(&ca), &to_f(&cb))
}

/// The distances for `k` = 1..=`max_k` and their mean: `(per_k, mean)`.
pub fn kmer_js_profile<A: AsRef<[u8]>, B: AsRef<[u8]>>(
    a: &[A],
    b: &[B],
    max_k: usize,
    strands: Strands,
) -> anyhow::Result<(Vec<f64>, f64)> {
    ensure!(max_k >= 1, "max_k must be at least 1");
    let per_k = (1..=max_k)
        .map(|k| kmer_js_distance(a, b, k, strands))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mean = per_k.iter().sum::<f64>() / per_k.len() as f64;
    Ok((per_k, mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two small sets sharing some 30-base stretches (Python's random.Random(1)).
    const A: [&str; 3] = [
        "CAGATTTTCATATTATGCAGAAAATCTACTTCGCCTGATACGAGTCGGTTATCTTCGGAT",
        "ACTGTATAGTCCCACCTGGTGATCCTATGCTTGTGAGTACCCAGAAAATAGCGACGGACC",
        "GCGGTGTTAAGTGTCGAGCTACATCACTTCTCATGTAGCCAGAAGGCTGCAACTCATCGA",
    ];
    const B: [&str; 3] = [
        "CAGATTTTCATATTATGCAGAAAATCTACTCTCTATGTAGTGACCGCGTCGATGTCAAAC",
        "CCCGGGGGGAGCTCAGATATGATCCTATGCTTGTGAGTACCCAGAAAATAGCGACGGACC",
        "AACATTGATTATACCCTTAGCAACATTAAGAAAATGAAGATAATAGGTCTCTGCAATCAA",
    ];

    #[test]
    fn counts() {
        assert_eq!(kmer_index(b"A"), Some(0));
        assert_eq!(kmer_index(b"CG"), Some(6));
        assert_eq!(kmer_index(b"TTT"), Some(63));
        assert_eq!(kmer_index(b"ANT"), None);
        assert_eq!(
            rc_index(kmer_index(b"AAC").unwrap(), 3),
            kmer_index(b"GTT").unwrap()
        );
        let c = kmer_counts(&["ACGTNAC", "AC"], 2, Strands::Forward).unwrap();
        assert_eq!(c.iter().sum::<u64>(), 5); // AC CG GT | AC | AC
        assert_eq!(c[kmer_index(b"AC").unwrap()], 3);
        let c = kmer_counts(&["AAAC"], 2, Strands::Canonical).unwrap();
        // AA and its rc TT both under AA; AC (rc GT) under AC.
        assert_eq!(c[kmer_index(b"AA").unwrap()], 2);
        assert_eq!(c[kmer_index(b"AC").unwrap()], 1);
        assert_eq!(c.iter().sum::<u64>(), 3);
        assert!(kmer_counts(&["A"], 0, Strands::Forward).is_err());
        assert!(kmer_counts(&["A"], 13, Strands::Forward).is_err());
    }

    /// Reference values from `scipy.spatial.distance.jensenshannon(p, q, base=2)` (scipy
    /// 1.17.1, numpy 2.4.6) on count vectors built by an independent Python k-mer counter
    /// (`itertools.product("ACGT", repeat=k)` order; canonical = min(kmer, revcomp)), printed by
    /// `scripts/dna-references.py`.
    #[test]
    fn js_matches_scipy() {
        let d = jensen_shannon_distance(&[1.0, 2.0, 3.0, 0.0], &[0.0, 1.0, 1.0, 2.0]).unwrap();
        assert!((d - JS_SMALL).abs() < 1e-12, "{d}");
        assert_eq!(
            jensen_shannon_distance(&[1.0, 0.0], &[0.0, 3.0]).unwrap(),
            1.0
        );
        assert_eq!(
            jensen_shannon_distance(&[1.0, 2.0], &[2.0, 4.0]).unwrap(),
            0.0
        );
        assert!(jensen_shannon_distance(&[0.0, 0.0], &[1.0, 1.0]).is_err());
        assert!(jensen_shannon_distance(&[1.0], &[1.0, 1.0]).is_err());

        let k6 = kmer_js_distance(&A, &B, 6, Strands::Forward).unwrap();
        assert!((k6 - JS_K6).abs() < 1e-12, "{k6}");
        let (per_k, mean) = kmer_js_profile(&A, &B, 7, Strands::Forward).unwrap();
        for (k, (&got, &want)) in per_k.iter().zip(&JS_PER_K).enumerate() {
            assert!((got - want).abs() < 1e-12, "k = {}: {got} vs {want}", k + 1);
        }
        assert!((mean - JS_MEAN).abs() < 1e-12);
        let c2 = kmer_js_distance(&A, &B, 2, Strands::Canonical).unwrap();
        assert!((c2 - JS_K2_CANONICAL).abs() < 1e-12, "{c2}");
    }

    const JS_SMALL: f64 = 0.6068614799822469;
    const JS_K6: f64 = 0.7814818995040087;
    const JS_PER_K: [f64; 7] = [
        0.06743548714764103,
        0.12134523177482068,
        0.3233031474483635,
        0.5974441874478852,
        0.7441271314711256,
        0.7814818995040087,
        0.7957162450762009,
    ];
    const JS_MEAN: f64 = 0.4901219042671494;
    const JS_K2_CANONICAL: f64 = 0.09392310709624752;
}
