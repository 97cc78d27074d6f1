//! A seeded random number generator and the dinucleotide-preserving shuffle.
//!
//! [`dinucleotide_shuffle`] draws uniformly among all sequences with the same first letter and
//! the same counts of every overlapping pair of letters (so also the same letter counts and
//! last letter), by the Eulerian-path method of Altschul and Erickson (1985), as
//! `fasta-shuffle-letters -kmer 2` (MEME suite, via uShuffle) does:
//!
//! 1. The sequence is a walk through a multigraph whose vertices are letters and whose edges are
//!    its `n - 1` overlapping pairs.
//! 2. Every vertex other than the last letter picks one of its out-edges at random as its last
//!    exit; the choice is redrawn until the last exits form a tree leading to the last letter
//!    (then an Eulerian walk that leaves each vertex last by that edge exists).
//! 3. The remaining out-edges of every vertex are put in random order, the last exit last, and
//!    the walk from the first letter that takes each vertex's edges in that order spells the
//!    shuffled sequence.
//!
//! Edges are labelled, and every distinct sequence corresponds to the same number of labelled
//! walks (the product of the factorials of the pair counts), so the draw is uniform over
//! distinct sequences. The alphabet is any set of bytes (`N` or lower case included).

/// splitmix64 (Steele, Lea and Flood; Vigna's constants): 64 bits of state, one multiply-xorshift
/// chain per draw. Small and fast; statistically fine for shuffles and sampling, not crypto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator of record `index` under `seed` (one stream per record, so a record's draws
    /// do not depend on the records before it).
    pub fn for_record(seed: u64, index: u64) -> Self {
        let mut g = Self::new(seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
        g.next_u64();
        g
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n`, without modulo bias; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// A coin flip.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// An index drawn with probability proportional to `weights` (non-negative, not all zero;
    /// otherwise uniform).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
        if total.is_nan() || total <= 0.0 {
            return self.below(weights.len());
        }
        let mut u = self.uniform() * total;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w.is_finite() && w > 0.0 {
                last = i;
                if u < w {
                    return i;
                }
                u -= w;
            }
        }
        last
    }
}

/// A uniformly drawn sequence with the same first letter and the same overlapping letter-pair
/// counts as `seq` (see the module doc). Sequences shorter than 3 letters come back unchanged
/// (they have only one such arrangement). Deterministic for a given generator state.
pub fn dinucleotide_shuffle(seq: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let n = seq.len();
    if n < 3 {
        return seq.to_vec();
    }
    // Out-edges of every letter, as the letters they lead to, in sequence order.
    let mut edges: Vec<Vec<u8>> = vec![Vec::new(); 256];
    for pair in seq.windows(2) {
        edges[pair[0] as usize].push(pair[1]);
    }
    let last = seq[n - 1] as usize;
    let vertices: Vec<usize> = (0..256).filter(|&v| !edges[v].is_empty()).collect();

    // Step 2: last exits forming a tree towards `last` (rejection sampling).
    let mut exit = vec![usize::MAX; 256]; // index into edges[v] of v's last exit
    loop {
        for &v in &vertices {
            if v != last {
                exit[v] = rng.below(edges[v].len());
            }
        }
        if exits_reach(&vertices, &edges, &exit, last) {
            break;
        }
    }

    // Step 3: the other edges in random order, the last exit last.
    for &v in &vertices {
        let list = &mut edges[v];
        if v != last {
            let k = list.len() - 1;
            list.swap(exit[v], k);
            rng.shuffle(&mut list[..k]);
        } else {
            rng.shuffle(list);
        }
    }

    let mut next = vec![0usize; 256];
    let mut out = Vec::with_capacity(n);
    let mut v = seq[0];
    out.push(v);
    for _ in 1..n {
        let i = next[v as usize];
        next[v as usize] += 1;
        v = edges[v as usize][i];
        out.push(v);
    }
    out
}

/// Whether following last exits from every vertex ends at `last` (no cycles).
fn exits_reach(vertices: &[usize], edges: &[Vec<u8>], exit: &[usize], last: usize) -> bool {
    // state: 0 unknown, 1 on the current path, 2 reaches `last`.
    let mut state = [0u8; 256];
    state[last] = 2;
    for &start in vertices {
        let mut path = Vec::new();
        let mut v = start;
        while state[v] == 0 {
            state[v] = 1;
            path.push(v);
            v = edges[v][exit[v]] as usize;
        }
        if state[v] == 1 {
            return false;
        }
        for u in path {
            state[u] = 2;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pair_counts(seq: &[u8]) -> HashMap<(u8, u8), usize> {
        let mut m = HashMap::new();
        for w in seq.windows(2) {
            *m.entry((w[0], w[1])).or_insert(0) += 1;
        }
        m
    }

    fn random_dna(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
        (0..n).map(|_| b"ACGT"[rng.below(4)]).collect()
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = SplitMix64::new(7);
        let hits = (0..10_000).filter(|_| r.below(10) == 3).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }

    #[test]
    fn preserves_pairs_and_differs() {
        let mut rng = SplitMix64::new(42);
        for len in [3, 10, 50, 200, 1000] {
            let seq = random_dna(&mut rng, len);
            let shuffled = dinucleotide_shuffle(&seq, &mut rng);
            assert_eq!(shuffled.len(), seq.len());
            assert_eq!(pair_counts(&shuffled), pair_counts(&seq), "len {len}");
            assert_eq!(shuffled[0], seq[0]);
            assert_eq!(shuffled[len - 1], seq[len - 1]);
            if len >= 50 {
                assert_ne!(shuffled, seq, "len {len}");
            }
        }
        // Any bytes, N and lower case included.
        let seq = b"ACGTNNacgtACGTTTGCAnACGGT".to_vec();
        let shuffled = dinucleotide_shuffle(&seq, &mut rng);
        assert_eq!(pair_counts(&shuffled), pair_counts(&seq));
        // Seeded: the same seed gives the same shuffle.
        let seq = random_dna(&mut SplitMix64::new(1), 300);
        let a = dinucleotide_shuffle(&seq, &mut SplitMix64::new(9));
        let b = dinucleotide_shuffle(&seq, &mut SplitMix64::new(9));
        let c = dinucleotide_shuffle(&seq, &mut SplitMix64::new(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(dinucleotide_shuffle(b"AC", &mut rng), b"AC");
        assert_eq!(dinucleotide_shuffle(b"", &mut rng), b"");
    }

    #[test]
    fn uniform_over_arrangements() {
        // Sequences with the pair counts of AACAGCA... all arrangements by brute force.
        let seq = b"ACAGACGA";
        let target = pair_counts(seq);
        let mut all = Vec::new();
        let n = seq.len();
        for code in 0..(1usize << (2 * n)) {
            let s: Vec<u8> = (0..n).map(|i| b"ACGT"[(code >> (2 * i)) & 3]).collect();
            if s[0] == seq[0] && pair_counts(&s) == target {
                all.push(s);
            }
        }
        assert!(all.len() >= 3, "{}", all.len());
        let mut rng = SplitMix64::new(3);
        let draws = 20_000;
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for _ in 0..draws {
            *seen.entry(dinucleotide_shuffle(seq, &mut rng)).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), all.len());
        let expect = draws as f64 / all.len() as f64;
        for s in &all {
            let got = seen[s] as f64;
            // 5 standard deviations of a binomial count.
            let sd = (expect * (1.0 - 1.0 / all.len() as f64)).sqrt();
            assert!((got - expect).abs() < 5.0 * sd, "{got} vs {expect}");
        }
    }
}
