//! Token sequences with a known distribution: a fixed 4-state Markov chain started from its
//! stationary distribution. Its entropy is known exactly, so a masked diffusion model's
//! likelihood bound can be checked against the truth, and its bigram statistics give a sample
//! quality measure with an exact reference.

use candle_core::{Device, Result, Tensor};
use sugarcube_core::domain::{Batch, DataInfo, Dataset};
use sugarcube_core::rng::Rng;

/// The chain's transition matrix: row `i` is the distribution of the next token after `i`.
/// Chosen by hand so that the states differ in how predictable they are (from nearly
/// deterministic to nearly uniform).
pub const TRANSITIONS: [[f64; 4]; 4] = [
    [0.70, 0.10, 0.10, 0.10],
    [0.05, 0.05, 0.85, 0.05],
    [0.30, 0.30, 0.20, 0.20],
    [0.10, 0.60, 0.10, 0.20],
];

/// Letters used to write tokens 0..4.
pub const LETTERS: [char; 4] = ['a', 'b', 'c', 'd'];

/// The Markov chain of [`TRANSITIONS`].
#[derive(Clone, Debug)]
pub struct MarkovChain {
    /// Transition probabilities.
    pub p: [[f64; 4]; 4],
    /// Its stationary distribution.
    pub stationary: [f64; 4],
}

impl Default for MarkovChain {
    fn default() -> Self {
        Self::new(TRANSITIONS)
    }
}

fn entropy(p: &[f64]) -> f64 {
    p.iter().filter(|&&q| q > 0.0).map(|&q| -q * q.log2()).sum()
}

impl MarkovChain {
    /// The chain of a transition matrix, with its stationary distribution found by power
    /// iteration.
    pub fn new(p: [[f64; 4]; 4]) -> Self {
        let mut pi = [0.25; 4];
        for _ in 0..10_000 {
            let mut next = [0.0; 4];
            for (i, row) in p.iter().enumerate() {
                for (j, q) in row.iter().enumerate() {
                    next[j] += pi[i] * q;
                }
            }
            pi = next;
        }
        Self { p, stationary: pi }
    }

    /// The entropy rate `sum_i pi_i H(P_i)`, in bits per token.
    pub fn entropy_rate(&self) -> f64 {
        self.stationary
            .iter()
            .zip(&self.p)
            .map(|(pi, row)| pi * entropy(row))
            .sum()
    }

    /// The exact entropy of a sequence of `length` tokens, per token, in bits:
    /// `(H(pi) + (length - 1) * rate) / length` (the best any model can do on this data).
    pub fn entropy_per_token(&self, length: usize) -> f64 {
        (entropy(&self.stationary) + (length as f64 - 1.0) * self.entropy_rate()) / length as f64
    }

    /// The probability of each bigram `(i, j)` at any pair of neighbouring positions:
    /// `pi_i P_ij`.
    pub fn bigrams(&self) -> [[f64; 4]; 4] {
        let mut b = [[0.0; 4]; 4];
        for ((row, pi), p) in b.iter_mut().zip(&self.stationary).zip(&self.p) {
            for (cell, q) in row.iter_mut().zip(p) {
                *cell = pi * q;
            }
        }
        b
    }

    fn pick(p: &[f64], rng: &mut Rng) -> u32 {
        let u = rng.uniform();
        let mut acc = 0.0;
        for (i, q) in p.iter().enumerate() {
            acc += q;
            if u < acc {
                return i as u32;
            }
        }
        (p.len() - 1) as u32
    }

    /// `n` sequences of `length` tokens, drawn from `rng`.
    pub fn draw(&self, n: usize, length: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
        (0..n)
            .map(|_| {
                let mut s = Vec::with_capacity(length);
                let mut cur = Self::pick(&self.stationary, rng);
                s.push(cur);
                for _ in 1..length {
                    cur = Self::pick(&self.p[cur as usize], rng);
                    s.push(cur);
                }
                s
            })
            .collect()
    }
}

/// The empirical bigram frequencies of sequences (tokens outside 0..4 are skipped).
pub fn bigram_frequencies(seqs: &[Vec<u32>]) -> [[f64; 4]; 4] {
    let mut counts = [[0.0; 4]; 4];
    let mut total = 0.0;
    for s in seqs {
        for w in s.windows(2) {
            if w[0] < 4 && w[1] < 4 {
                counts[w[0] as usize][w[1] as usize] += 1.0;
                total += 1.0;
            }
        }
    }
    for row in counts.iter_mut() {
        for c in row.iter_mut() {
            *c /= f64::max(total, 1.0);
        }
    }
    counts
}

/// The total variation distance between two bigram distributions.
pub fn total_variation(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> f64 {
    0.5 * a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .sum::<f64>()
}

/// Token sequences held in memory, as the trainer sees them: `[B, L]` u32.
pub struct TokenDataset {
    seqs: Vec<Vec<u32>>,
    info: DataInfo,
}

impl TokenDataset {
    /// Wraps sequences of equal length over `vocab` tokens.
    pub fn new(seqs: Vec<Vec<u32>>, vocab: usize) -> Self {
        let length = seqs.first().map_or(0, |s| s.len());
        let info = DataInfo {
            vocab: Some(vocab),
            ..DataInfo::new(vec![length])
        };
        Self { seqs, info }
    }
}

impl Dataset for TokenDataset {
    fn len(&self) -> usize {
        self.seqs.len()
    }

    fn info(&self) -> DataInfo {
        self.info.clone()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let l = self.info.item_shape[0];
        let mut flat = Vec::with_capacity(indices.len() * l);
        for &i in indices {
            let s = self.seqs.get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "index {i} is out of range for {} sequences",
                    self.seqs.len()
                ))
            })?;
            flat.extend_from_slice(s);
        }
        Ok(Batch {
            x0: Tensor::from_vec(flat, (indices.len(), l), device)?,
            cond: vec![],
            lengths: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stationary_entropy_and_bigrams_agree_with_draws() {
        let c = MarkovChain::default();
        assert!((c.stationary.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // stationary: pi P = pi
        for j in 0..4 {
            let s: f64 = (0..4).map(|i| c.stationary[i] * c.p[i][j]).sum();
            assert!((s - c.stationary[j]).abs() < 1e-12);
        }
        let rate = c.entropy_rate();
        assert!(rate > 1.0 && rate < 1.7, "{rate}");
        assert!(c.entropy_per_token(32) > rate);
        let seqs = c.draw(4000, 32, &mut Rng::new(1));
        let tv = total_variation(&bigram_frequencies(&seqs), &c.bigrams());
        assert!(tv < 0.02, "{tv}");
        // an empirical estimate of the entropy per token from the chain's own likelihood
        let mut nll = 0.0;
        for s in &seqs {
            nll -= c.stationary[s[0] as usize].log2();
            for w in s.windows(2) {
                nll -= c.p[w[0] as usize][w[1] as usize].log2();
            }
        }
        let per_token = nll / (seqs.len() * 32) as f64;
        assert!(
            (per_token - c.entropy_per_token(32)).abs() < 0.02,
            "{per_token}"
        );
    }
}
