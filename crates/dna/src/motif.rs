//! JASPAR count matrices, log-odds PWMs, exact p-values and two-strand scanning.
//!
//! **Format.** [`parse_jaspar`] reads the JASPAR text format: a header `>MA0140.3 GATA1::TAL1`
//! (ID, then the name after a tab or spaces), then four rows `A [ 206 318 ... ]` for A, C, G, T
//! (any order; each once). Rows without the letter and brackets (the bare `.pfm` layout) are
//! taken as A, C, G, T in that order. Blank lines are skipped; counts may be fractional.
//!
//! **Log-odds.** [`CountMatrix::pwm`] follows FIMO (`--motif-pseudo 0.1`): a total pseudocount
//! `a` is spread over the letters by the background `b`, so with column counts `c` summing to
//! `N`, `p(x) = (c(x) + a * b(x)) / (N + a)`, and the score of letter `x` is `log2(p(x) / b(x))`
//! bits. [`DEFAULT_PSEUDOCOUNT`] is 0.1 and the background is uniform unless given. `N` is each
//! column's own total; FIMO, reading a MEME file, uses one `nsites` for all columns, so for the
//! few JASPAR matrices whose column totals differ (here MA0142.1 and MA1419.2) its log-odds of
//! rare letters, and so its p-values, differ slightly (under 0.5 % in a test at p < 1e-3).
//!
//! **Exact p-values** follow MEME 5's `scale_score_matrix` and `get_pv_lookup` (as FIMO uses
//! them): with `lo` and `hi` the smallest and largest log-odds entries of the whole matrix, the
//! offset is `o = floor(lo)` and the scale `k = floor(R / (hi - o))`, both integers (so a log-odds
//! of 0 maps back to 0), with `R` = [`PSSM_RANGE`] = 1000 (MEME's value since 2013). Every entry
//! `s` becomes the integer `round((s - o) * k)` in `0..=R`, so a word's scaled score lies in
//! `0..=w * R`. The distribution of the scaled score of a random word drawn from the background
//! is computed exactly by dynamic programming over the columns (a convolution of the per-column
//! distributions, at most `4 * w * w * R` steps), and `pvalue[s] = P(score >= s)`. The p-value
//! of a window is that of its scaled score (the sum of its scaled entries), so it is exact for
//! the integer-scaled matrix and equal to FIMO's; the window's bit score, reported exactly as
//! the sum of unrounded log-odds, differs from the scaled one by at most `w / 2` steps of
//! `1 / k` bits (FIMO reports the scaled score converted back, `s / k + w * o`, which
//! [`Pwm::scaled_to_bits`] gives). A window is a hit when its p-value is below the threshold
//! (FIMO's `--thresh`, strict), i.e. when its scaled score reaches [`Pwm::threshold`].
//!
//! **Checked against FIMO** (the `matches_fimo` test): on a 2000-base random sequence, all 52
//! hits of the nine bundled matrices at p < 1e-3 agree with MEME 5's FIMO (via pymemesuite)
//! given the same log-odds, in position, strand, score (4 decimals) and p-value (7 digits).
//!
//! **Strands.** The reverse strand is scanned with the reverse complement of the matrix (same
//! score distribution); a hit on either strand is reported at its leftmost position on the
//! given sequence. Windows holding a byte other than `A`, `C`, `G`, `T` are skipped. Both
//! strands count separately, so a palindromic site can give two hits, as in FIMO.

use anyhow::{bail, ensure, Context};
use std::path::Path;

/// MEME's integer range of one scaled PSSM column (`PSSM_RANGE` in MEME's `pssm.h`).
pub const PSSM_RANGE: u32 = 1000;
/// FIMO's default total pseudocount (`--motif-pseudo`).
pub const DEFAULT_PSEUDOCOUNT: f64 = 0.1;
/// The uniform background.
pub const UNIFORM: [f64; 4] = [0.25; 4];
/// The bundled marker matrices (JASPAR 2024; see `data/README.md` for provenance).
pub const MARKERS_JASPAR: &str = include_str!("../data/markers.jaspar");

pub use crate::encode::{base_index, reverse_complement};

/// A position frequency (count) matrix: one `[A, C, G, T]` count array per column.
#[derive(Clone, Debug, PartialEq)]
pub struct CountMatrix {
    /// The matrix ID, e.g. `MA0140.3`.
    pub id: String,
    /// The factor name, e.g. `GATA1::TAL1` (the ID when the header has none).
    pub name: String,
    /// Counts per column, in A, C, G, T order.
    pub counts: Vec<[f64; 4]>,
}

/// Parses JASPAR-format text; `source` names the input in errors (`source:line: ...`).
pub fn parse_jaspar(text: &str, source: &str) -> anyhow::Result<Vec<CountMatrix>> {
    struct Pending {
        id: String,
        name: String,
        line: usize,
        rows: [Option<Vec<f64>>; 4],
        bare_rows: usize,
    }
    fn finish(p: Pending, source: &str) -> anyhow::Result<CountMatrix> {
        let missing: Vec<char> = (0..4)
            .filter(|&i| p.rows[i].is_none())
            .map(|i| b"ACGT"[i] as char)
            .collect();
        ensure!(
            missing.is_empty(),
            "{source}:{}: matrix {} has no row for {}",
            p.line,
            p.id,
            missing
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows: Vec<Vec<f64>> = p.rows.into_iter().map(|r| r.unwrap_or_default()).collect();
        let w = rows[0].len();
        ensure!(w > 0, "{source}:{}: matrix {} has no columns", p.line, p.id);
        for (i, r) in rows.iter().enumerate() {
            ensure!(
                r.len() == w,
                "{source}:{}: matrix {}: row {} has {} columns, row A has {w}",
                p.line,
                p.id,
                b"ACGT"[i] as char,
                r.len()
            );
        }
        let counts: Vec<[f64; 4]> = (0..w)
            .map(|j| [rows[0][j], rows[1][j], rows[2][j], rows[3][j]])
            .collect();
        for (j, c) in counts.iter().enumerate() {
            ensure!(
                c.iter().sum::<f64>() > 0.0,
                "{source}:{}: matrix {}: column {} has no counts",
                p.line,
                p.id,
                j + 1
            );
        }
        Ok(CountMatrix {
            id: p.id,
            name: p.name,
            counts,
        })
    }

    let mut out = Vec::new();
    let mut pending: Option<Pending> = None;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('>') {
            if let Some(p) = pending.take() {
                out.push(finish(p, source)?);
            }
            let header = header.trim();
            let mut parts = header.splitn(2, char::is_whitespace);
            let id = parts.next().unwrap_or("").to_string();
            ensure!(
                !id.is_empty(),
                "{source}:{lineno}: header without a matrix ID"
            );
            let name = parts.next().map(str::trim).filter(|s| !s.is_empty());
            let name = name.unwrap_or(&id).to_string();
            pending = Some(Pending {
                id,
                name,
                line: lineno,
                rows: Default::default(),
                bare_rows: 0,
            });
            continue;
        }
        let Some(p) = pending.as_mut() else {
            bail!("{source}:{lineno}: matrix row before any '>' header");
        };
        // `A [ 1 2 3 ]`, `A 1 2 3`, or bare `1 2 3`.
        let first = line.as_bytes()[0].to_ascii_uppercase();
        let (slot, rest) = if first.is_ascii_alphabetic() {
            let Some(slot) = base_index(first) else {
                bail!(
                    "{source}:{lineno}: row label '{}' is not A, C, G or T",
                    line.chars().next().unwrap_or(' ')
                );
            };
            (slot, &line[1..])
        } else {
            ensure!(
                p.bare_rows < 4,
                "{source}:{lineno}: matrix {} has more than four rows",
                p.id
            );
            p.bare_rows += 1;
            (p.bare_rows - 1, line)
        };
        ensure!(
            p.rows[slot].is_none(),
            "{source}:{lineno}: matrix {} has a second row for {}",
            p.id,
            b"ACGT"[slot] as char
        );
        let rest = rest.trim();
        let inner = match (rest.strip_prefix('['), rest.ends_with(']')) {
            (Some(r), true) => &r[..r.len() - 1],
            (None, false) => rest,
            _ => bail!("{source}:{lineno}: unbalanced '[' ']' in matrix row"),
        };
        let mut values = Vec::new();
        for tok in inner.split_whitespace() {
            let v: f64 = tok
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .with_context(|| {
                    format!("{source}:{lineno}: '{tok}' is not a non-negative count")
                })?;
            values.push(v);
        }
        ensure!(
            !values.is_empty(),
            "{source}:{lineno}: matrix row without counts"
        );
        p.rows[slot] = Some(values);
    }
    if let Some(p) = pending.take() {
        out.push(finish(p, source)?);
    }
    Ok(out)
}

/// Reads a JASPAR-format file (see [`parse_jaspar`]).
pub fn read_jaspar(path: &Path) -> anyhow::Result<Vec<CountMatrix>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_jaspar(&text, &path.display().to_string())
}

/// The bundled marker matrices from `data/markers.jaspar`.
pub fn markers() -> anyhow::Result<Vec<CountMatrix>> {
    parse_jaspar(MARKERS_JASPAR, "data/markers.jaspar")
}

/// The matrix whose name or ID equals `key`, ignoring case.
pub fn find<'a>(matrices: &'a [CountMatrix], key: &str) -> anyhow::Result<&'a CountMatrix> {
    matrices
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(key) || m.id.eq_ignore_ascii_case(key))
        .with_context(|| {
            let names: Vec<&str> = matrices.iter().map(|m| m.name.as_str()).collect();
            format!("no motif named {key} (have {})", names.join(", "))
        })
}

impl CountMatrix {
    /// The number of columns.
    pub fn width(&self) -> usize {
        self.counts.len()
    }

    /// Column `j`'s letter probabilities (counts over their sum, no pseudocount).
    pub fn column_probs(&self, j: usize) -> [f64; 4] {
        let c = self.counts[j];
        let total: f64 = c.iter().sum();
        c.map(|x| x / total)
    }

    /// The most frequent letter of every column.
    pub fn consensus(&self) -> Vec<u8> {
        self.counts
            .iter()
            .map(|c| {
                let mut best = 0;
                for i in 1..4 {
                    if c[i] > c[best] {
                        best = i;
                    }
                }
                b"ACGT"[best]
            })
            .collect()
    }

    /// The log-odds PWM for `background` (A, C, G, T; positive, summing to 1) with a total
    /// pseudocount spread by the background (see the module doc), and its p-value table.
    pub fn pwm(&self, background: [f64; 4], pseudocount: f64) -> anyhow::Result<Pwm> {
        ensure!(
            background.iter().all(|&b| b.is_finite() && b > 0.0)
                && (background.iter().sum::<f64>() - 1.0).abs() < 1e-6,
            "motif {}: background {background:?} must be positive and sum to 1",
            self.id
        );
        ensure!(
            pseudocount.is_finite() && pseudocount >= 0.0,
            "motif {}: pseudocount {pseudocount} must be non-negative",
            self.id
        );
        let mut log_odds = Vec::with_capacity(self.width());
        for (j, c) in self.counts.iter().enumerate() {
            let n: f64 = c.iter().sum();
            let mut col = [0.0; 4];
            for x in 0..4 {
                let p = (c[x] + pseudocount * background[x]) / (n + pseudocount);
                ensure!(
                    p > 0.0,
                    "motif {}: column {} gives letter {} probability 0; use a pseudocount > 0",
                    self.id,
                    j + 1,
                    b"ACGT"[x] as char
                );
                col[x] = (p / background[x]).log2();
            }
            log_odds.push(col);
        }
        Ok(Pwm::from_log_odds(
            &self.id, &self.name, log_odds, background,
        ))
    }

    /// [`CountMatrix::pwm`] with the uniform background and FIMO's pseudocount 0.1.
    pub fn default_pwm(&self) -> Pwm {
        // Cannot fail: the background is valid and the pseudocount positive.
        match self.pwm(UNIFORM, DEFAULT_PSEUDOCOUNT) {
            Ok(p) => p,
            Err(e) => unreachable!("{e}"),
        }
    }
}

/// The strand of a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strand {
    /// The motif reads left to right on the given sequence.
    Forward,
    /// The motif reads on the reverse complement.
    Reverse,
}

/// One motif occurrence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Leftmost position of the window on the given sequence (0-based).
    pub start: usize,
    /// Strand of the motif.
    pub strand: Strand,
    /// Log-odds score in bits (the exact sum, not rounded).
    pub score: f64,
    /// The window's scaled integer score (its p-value's argument).
    pub scaled: u32,
    /// Exact p-value of the window's scaled score under the background.
    pub pvalue: f64,
}

/// A score threshold for a p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// The smallest scaled score whose p-value is below the requested one.
    pub scaled: u32,
    /// The same threshold in bits (`scaled / scale + w * offset`; within rounding of exact
    /// bit scores).
    pub bits: f64,
    /// The p-value of a window scoring exactly `scaled` (below the requested p-value).
    pub pvalue: f64,
}

/// A log-odds position weight matrix with its integer scaling and exact p-value table.
#[derive(Clone, Debug)]
pub struct Pwm {
    /// The matrix ID.
    pub id: String,
    /// The factor name.
    pub name: String,
    /// Log-odds in bits per column, A, C, G, T.
    pub log_odds: Vec<[f64; 4]>,
    /// The background the log-odds and p-values refer to.
    pub background: [f64; 4],
    /// Scaled integer scores per column, each in `0..=PSSM_RANGE`.
    pub scaled: Vec<[u32; 4]>,
    /// Scaled units per bit, the integer `floor(PSSM_RANGE / (hi - offset))`.
    pub scale: f64,
    /// The offset of the scaling per column, `floor(lo)` of the smallest log-odds entry `lo`.
    pub offset: f64,
    /// `pvalues[s]` = P(scaled score >= s) for s in `0..=w * PSSM_RANGE`.
    pub pvalues: Vec<f64>,
    /// Scanning tables, forward and reverse complement: `scaled` as i64 with a fifth entry,
    /// for a byte other than A, C, G, T, so negative that any window holding one scores < 0.
    scan_fwd: Vec<[i64; 5]>,
    scan_rev: Vec<[i64; 5]>,
}

impl Pwm {
    /// Builds the scaled matrix and p-value table from log-odds in bits.
    pub fn from_log_odds(
        id: &str,
        name: &str,
        log_odds: Vec<[f64; 4]>,
        background: [f64; 4],
    ) -> Pwm {
        let lo = log_odds
            .iter()
            .flatten()
            .cloned()
            .fold(f64::INFINITY, f64::min);
        let hi = log_odds
            .iter()
            .flatten()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        // As MEME 5: integer offset and scale; a flat matrix gets lo = hi - 1.
        let lo = if hi > lo { lo } else { hi - 1.0 };
        let offset = lo.floor();
        let scale = (PSSM_RANGE as f64 / (hi - offset)).floor().max(1.0);
        let scaled: Vec<[u32; 4]> = log_odds
            .iter()
            .map(|col| col.map(|s| (((s - offset) * scale).round() as u32).min(PSSM_RANGE)))
            .collect();
        let pdf = score_pdf(&scaled, background);
        let mut pvalues = vec![0.0; pdf.len()];
        let mut acc = 0.0;
        for s in (0..pdf.len()).rev() {
            acc += pdf[s];
            pvalues[s] = acc.min(1.0);
        }
        let w = scaled.len();
        let invalid = -((w as i64 + 1) * PSSM_RANGE as i64 + 1);
        let table = |c: [u32; 4]| [c[0] as i64, c[1] as i64, c[2] as i64, c[3] as i64, invalid];
        let scan_fwd = scaled.iter().map(|&c| table(c)).collect();
        let scan_rev = (0..w)
            .map(|i| {
                let c = scaled[w - 1 - i];
                table([c[3], c[2], c[1], c[0]])
            })
            .collect();
        Pwm {
            id: id.to_string(),
            name: name.to_string(),
            log_odds,
            background,
            scaled,
            scale,
            offset,
            pvalues,
            scan_fwd,
            scan_rev,
        }
    }

    /// The number of columns.
    pub fn width(&self) -> usize {
        self.log_odds.len()
    }

    /// The exact distribution of the scaled score: `pdf[s]` = P(score == s).
    pub fn pdf(&self) -> Vec<f64> {
        score_pdf(&self.scaled, self.background)
    }

    /// The p-value of a scaled score (1 at or below 0, 0 above the maximum).
    pub fn pvalue_of_scaled(&self, s: i64) -> f64 {
        if s <= 0 {
            1.0
        } else {
            self.pvalues.get(s as usize).copied().unwrap_or(0.0)
        }
    }

    /// A scaled score in bits, `s / scale + w * offset` (the score FIMO reports).
    pub fn scaled_to_bits(&self, s: u32) -> f64 {
        s as f64 / self.scale + self.width() as f64 * self.offset
    }

    /// The p-value of a score in bits, through its scaled value
    /// `round((x - w * offset) * scale)`.
    /// Approximate: that value can differ from the sum of a window's rounded scaled entries by
    /// up to `w / 2`; hits use the exact per-window sum.
    pub fn pvalue_of_bits(&self, bits: f64) -> f64 {
        let s = ((bits - self.width() as f64 * self.offset) * self.scale).round();
        self.pvalue_of_scaled(s as i64)
    }

    /// The smallest scaled score with a p-value below `p`; `None` when even the best word's
    /// p-value is not below `p` (the motif is too short to reach it).
    pub fn threshold(&self, p: f64) -> Option<Threshold> {
        // pvalues is non-increasing: binary search for the first entry < p.
        let i = self.pvalues.partition_point(|&v| v >= p);
        if i >= self.pvalues.len() {
            return None;
        }
        let bits = self.scaled_to_bits(i as u32);
        Some(Threshold {
            scaled: i as u32,
            bits,
            pvalue: self.pvalues[i],
        })
    }

    /// Scaled score of `window` (length `width()`) on a strand; `None` if it holds a byte
    /// other than A, C, G, T or has the wrong length.
    pub fn scaled_score(&self, window: &[u8], strand: Strand) -> Option<u32> {
        if window.len() != self.width() {
            return None;
        }
        let w = self.width();
        let mut s = 0;
        for (i, &b) in window.iter().enumerate() {
            let x = base_index(b)?;
            s += match strand {
                Strand::Forward => self.scaled[i][x],
                Strand::Reverse => self.scaled[w - 1 - i][3 - x],
            };
        }
        Some(s)
    }

    /// Log-odds score in bits of `window` on a strand (see [`Pwm::scaled_score`]).
    pub fn score(&self, window: &[u8], strand: Strand) -> Option<f64> {
        if window.len() != self.width() {
            return None;
        }
        let w = self.width();
        let mut s = 0.0;
        for (i, &b) in window.iter().enumerate() {
            let x = base_index(b)?;
            s += match strand {
                Strand::Forward => self.log_odds[i][x],
                Strand::Reverse => self.log_odds[w - 1 - i][3 - x],
            };
        }
        Some(s)
    }

    /// All windows of `seq` on both strands with a p-value below `p`, by position, forward
    /// strand first at a position.
    pub fn scan(&self, seq: &[u8], p: f64) -> Vec<Hit> {
        let mut hits = Vec::new();
        let Some(t) = self.threshold(p) else {
            return hits;
        };
        self.scan_with(seq, t.scaled, |start, strand, scaled| {
            let window = &seq[start..start + self.width()];
            let score = self.score(window, strand).unwrap_or(f64::NAN);
            hits.push(Hit {
                start,
                strand,
                score,
                scaled,
                pvalue: self.pvalue_of_scaled(scaled as i64),
            });
        });
        hits
    }

    /// The number of windows of `seq` (both strands) with a p-value below `p`.
    pub fn count(&self, seq: &[u8], p: f64) -> u32 {
        let Some(t) = self.threshold(p) else {
            return 0;
        };
        let mut n = 0;
        self.scan_with(seq, t.scaled, |_, _, _| n += 1);
        n
    }

    /// Calls `f(start, strand, scaled)` for every window scoring at least `min_scaled`.
    fn scan_with(&self, seq: &[u8], min_scaled: u32, f: impl FnMut(usize, Strand, u32)) {
        self.scan_codes(&encode(seq), min_scaled, f)
    }

    /// [`Pwm::scan_with`] on an encoded sequence (see [`encode`]).
    fn scan_codes(&self, codes: &[u8], min_scaled: u32, mut f: impl FnMut(usize, Strand, u32)) {
        let w = self.width();
        if codes.len() < w || w == 0 {
            return;
        }
        let min = min_scaled as i64;
        for (start, window) in codes.windows(w).enumerate() {
            let mut sf = 0i64;
            let mut sr = 0i64;
            for ((&x, cf), cr) in window.iter().zip(&self.scan_fwd).zip(&self.scan_rev) {
                let x = (x as usize).min(4);
                sf += cf[x];
                sr += cr[x];
            }
            if sf >= min {
                f(start, Strand::Forward, sf as u32);
            }
            if sr >= min {
                f(start, Strand::Reverse, sr as u32);
            }
        }
    }
}

/// A sequence as base indices (A 0, C 1, G 2, T 3; 4 for any other byte).
fn encode(seq: &[u8]) -> Vec<u8> {
    seq.iter()
        .map(|&b| base_index(b).map_or(4, |x| x as u8))
        .collect()
}

/// Exact distribution of the sum of per-column scaled scores for a word drawn from the
/// background: `pdf[s]` for `s` in `0..=w * PSSM_RANGE` (MEME's `get_pdf_table`).
fn score_pdf(scaled: &[[u32; 4]], background: [f64; 4]) -> Vec<f64> {
    let max: usize = scaled
        .iter()
        .map(|c| *c.iter().max().unwrap_or(&0) as usize)
        .sum();
    let size = scaled.len() * PSSM_RANGE as usize + 1;
    let mut cur = vec![0.0; size.max(max + 1)];
    let mut next = cur.clone();
    cur[0] = 1.0;
    let mut reach = 0; // highest reachable score so far
    for col in scaled {
        next[..=reach + PSSM_RANGE as usize].fill(0.0);
        for x in 0..4 {
            let s = col[x] as usize;
            let b = background[x];
            for k in 0..=reach {
                let old = cur[k];
                if old != 0.0 {
                    next[k + s] += old * b;
                }
            }
        }
        reach += *col.iter().max().unwrap_or(&0) as usize;
        std::mem::swap(&mut cur, &mut next);
    }
    cur
}

/// Hit counts below `p` of every PWM in every sequence: `counts[seq][motif]`.
pub fn hit_counts<S: AsRef<[u8]>>(pwms: &[Pwm], seqs: &[S], p: f64) -> Vec<Vec<u32>> {
    let thresholds: Vec<Option<u32>> = pwms
        .iter()
        .map(|m| m.threshold(p).map(|t| t.scaled))
        .collect();
    seqs.iter()
        .map(|s| {
            let codes = encode(s.as_ref());
            pwms.iter()
                .zip(&thresholds)
                .map(|(m, t)| {
                    let mut n = 0;
                    if let Some(t) = *t {
                        m.scan_codes(&codes, t, |_, _, _| n += 1);
                    }
                    n
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::SplitMix64;

    use crate::testutil::random_dna;

    #[test]
    fn parses_jaspar_and_reports_errors() {
        let text = ">MA0001.1\tAGL3\nA  [ 0 3 79 40 ]\nC  [ 94 75 4 3 ]\nG  [ 1 0 3 4 ]\nT  [ 2 19 11 50 ]\n\n>X.1 some name\n1 2\n3 4\n5 6\n7 8.5\n";
        let m = parse_jaspar(text, "t.jaspar").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, "MA0001.1");
        assert_eq!(m[0].name, "AGL3");
        assert_eq!(m[0].counts[1], [3.0, 75.0, 0.0, 19.0]);
        assert_eq!(m[1].name, "some name");
        assert_eq!(m[1].counts[1], [2.0, 4.0, 6.0, 8.5]);
        assert_eq!(m[0].consensus(), b"CCAT");

        let err = |t: &str| parse_jaspar(t, "bad.jaspar").unwrap_err().to_string();
        assert!(err("A [ 1 2 ]\n").contains("bad.jaspar:1: matrix row before"));
        assert!(
            err(">M\nA [ 1 2 ]\nC [ 1 2 ]\nG [ 1 x ]\nT [ 1 2 ]\n").contains("bad.jaspar:4: 'x'")
        );
        assert!(err(">M\nA [ 1 2 ]\nC [ 1 2 ]\nG [ 1 2 ]\n")
            .contains("bad.jaspar:1: matrix M has no row for T"));
        assert!(
            err(">M\nA [ 1 2 ]\nC [ 1 2 ]\nG [ 1 2 ]\nT [ 1 ]\n").contains("row T has 1 columns")
        );
        assert!(err(">M\nA [ 1 2 ]\nA [ 1 2 ]\n")
            .contains("bad.jaspar:3: matrix M has a second row for A"));
        assert!(err(">M\nN [ 1 2 ]\n").contains("bad.jaspar:2: row label 'N'"));
        assert!(err(">M\nA [ 1 2\n").contains("bad.jaspar:2: unbalanced"));
        assert!(err(">M\nA [ -1 2 ]\n").contains("not a non-negative count"));
        assert!(err(">M\nA [ 0 2 ]\nC [ 0 2 ]\nG [ 0 2 ]\nT [ 0 2 ]\n")
            .contains("column 1 has no counts"));
        assert!(err(">\n").contains("bad.jaspar:1: header without"));
    }

    #[test]
    fn bundled_markers() {
        let m = markers().unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "GATA1::TAL1",
                "HNF4A",
                "FOXA2",
                "Spi1",
                "IRF4",
                "Pou5f1::Sox2",
                "POU5F1",
                "MAFK",
                "MAF"
            ]
        );
        assert_eq!(find(&m, "spi1").unwrap().id, "MA0080.7");
        assert_eq!(find(&m, "POU5F1::SOX2").unwrap().width(), 15);
        assert!(find(&m, "MA0140.3")
            .unwrap()
            .consensus()
            .starts_with(b"TTATC"));
        assert!(find(&m, "nope").is_err());
        for c in &m {
            let pwm = c.default_pwm();
            let t = pwm.threshold(1e-4).unwrap();
            assert!(t.pvalue < 1e-4 && pwm.pvalue_of_scaled(t.scaled as i64 - 1) >= 1e-4);
        }
    }

    #[test]
    fn log_odds_follow_fimo_pseudocounts() {
        let m = CountMatrix {
            id: "t".into(),
            name: "t".into(),
            counts: vec![[10.0, 0.0, 0.0, 0.0]],
        };
        let pwm = m.pwm(UNIFORM, 0.1).unwrap();
        // p(A) = (10 + 0.025) / 10.1, p(C) = 0.025 / 10.1.
        assert!((pwm.log_odds[0][0] - (10.025f64 / 10.1 / 0.25).log2()).abs() < 1e-12);
        assert!((pwm.log_odds[0][1] - (0.025f64 / 10.1 / 0.25).log2()).abs() < 1e-12);
        assert!(m.pwm(UNIFORM, 0.0).is_err());
        assert!(m.pwm([0.5, 0.5, 0.0, 0.0], 0.1).is_err());
        assert!(m.pwm([0.3, 0.3, 0.3, 0.3], 0.1).is_err());
    }

    /// The DP distribution equals the one enumerated over all 4^w words.
    #[test]
    fn exact_distribution_matches_enumeration() {
        let m = CountMatrix {
            id: "toy".into(),
            name: "toy".into(),
            counts: vec![
                [8.0, 1.0, 1.0, 0.0],
                [0.0, 5.0, 5.0, 0.0],
                [2.0, 2.0, 3.0, 3.0],
                [0.0, 0.0, 0.0, 9.0],
            ],
        };
        for bg in [UNIFORM, [0.3, 0.2, 0.2, 0.3], [0.1, 0.4, 0.4, 0.1]] {
            let pwm = m.pwm(bg, 0.1).unwrap();
            let w = pwm.width();
            let pdf = pwm.pdf();
            let mut enumerated = vec![0.0; pdf.len()];
            let mut words = Vec::new();
            for code in 0..4usize.pow(w as u32) {
                let word: Vec<u8> = (0..w).map(|i| b"ACGT"[(code >> (2 * i)) & 3]).collect();
                let prob: f64 = word.iter().map(|&b| bg[base_index(b).unwrap()]).product();
                let s = pwm.scaled_score(&word, Strand::Forward).unwrap() as usize;
                enumerated[s] += prob;
                words.push((s, prob, pwm.score(&word, Strand::Forward).unwrap()));
            }
            for s in 0..pdf.len() {
                assert!(
                    (pdf[s] - enumerated[s]).abs() < 1e-15,
                    "bg {bg:?} score {s}"
                );
            }
            assert!((pdf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            // p-value of each word = enumerated P(score >= its score).
            for &(s, _, bits) in &words {
                let tail: f64 = words.iter().filter(|w| w.0 >= s).map(|w| w.1).sum();
                assert!((pwm.pvalue_of_scaled(s as i64) - tail).abs() < 1e-12);
                // Scaling the bit score instead of summing scaled entries is off by at most
                // half a unit per column.
                let from_bits = (bits - w as f64 * pwm.offset) * pwm.scale;
                assert!((from_bits - s as f64).abs() <= w as f64 / 2.0 + 1e-9);
            }
        }
        // By hand: uniform background; the best words are A{C,G}{G,T}T (C = G in column 2,
        // G = T in column 3), 4 of the 256 words.
        let pwm = m.pwm(UNIFORM, 0.1).unwrap();
        let best = pwm.scaled_score(b"ACGT", Strand::Forward).unwrap() as i64;
        let t = pwm.scaled_score(b"ACTT", Strand::Forward).unwrap() as i64;
        assert_eq!(best, t); // G and T in column 3 have equal counts
        assert!((pwm.pvalue_of_scaled(best) - 4.0 / 256.0).abs() < 1e-15);
        assert_eq!(pwm.pvalue_of_scaled(best + 1), 0.0);
        assert_eq!(pwm.pvalue_of_scaled(0), 1.0);
    }

    #[test]
    fn threshold_is_monotone() {
        for c in markers().unwrap() {
            let pwm = c.default_pwm();
            let mut prev = 0u32;
            for e in 1..=12 {
                let p = 10f64.powi(-e);
                let Some(t) = pwm.threshold(p) else {
                    // Once unreachable, stays unreachable.
                    assert!(pwm.threshold(p / 10.0).is_none());
                    break;
                };
                assert!(t.scaled >= prev, "{} at p {p}", c.name);
                assert!(t.pvalue < p);
                if t.scaled > 0 {
                    assert!(pwm.pvalue_of_scaled(t.scaled as i64 - 1) >= p);
                }
                prev = t.scaled;
            }
            // Thresholds in bits increase with stringency too, and the consensus passes 1e-4.
            let a = pwm.threshold(1e-3).unwrap().bits;
            let b = pwm.threshold(1e-4).unwrap().bits;
            assert!(b > a);
            let cons = c.consensus();
            let s = pwm.score(&cons, Strand::Forward).unwrap();
            assert!(pwm.pvalue_of_bits(s) < 1e-4, "{}", c.name);
        }
    }

    #[test]
    fn finds_planted_motif_on_both_strands() {
        let motifs = markers().unwrap();
        let gata = find(&motifs, "GATA1::TAL1").unwrap();
        let pwm = gata.default_pwm();
        let cons = gata.consensus();
        let mut rng = SplitMix64::new(5);
        let mut seq = random_dna(&mut rng, 200);
        seq[30..30 + cons.len()].copy_from_slice(&cons);
        let rc = reverse_complement(&cons);
        seq[120..120 + rc.len()].copy_from_slice(&rc);
        seq[5] = b'N'; // windows over N are skipped, not errors
        let hits = pwm.scan(&seq, 1e-4);
        let at = |start, strand| hits.iter().find(|h| h.start == start && h.strand == strand);
        let f = at(30, Strand::Forward).expect("forward hit");
        let r = at(120, Strand::Reverse).expect("reverse hit");
        assert!((f.score - r.score).abs() < 1e-9);
        assert!(f.pvalue < 1e-4);
        assert!(hits
            .iter()
            .all(|h| h.start > 5 || h.start + pwm.width() <= 5));
        assert_eq!(pwm.count(&seq, 1e-4) as usize, hits.len());
        // The reverse-strand score of a window is the forward score of its reverse complement.
        let win = &seq[120..120 + cons.len()];
        assert!(
            (pwm.score(win, Strand::Reverse).unwrap()
                - pwm
                    .score(&reverse_complement(win), Strand::Forward)
                    .unwrap())
            .abs()
                < 1e-12
        );
        // Random sequence: hits at about the nominal rate (2 strands x 184 windows x 1e-4).
        let n = 500;
        let total: u32 = (0..n)
            .map(|_| pwm.count(&random_dna(&mut rng, 200), 1e-4))
            .sum();
        assert!(total < 40, "{total} background hits in {n} sequences");
        let counts = hit_counts(
            std::slice::from_ref(&pwm),
            &[seq.clone(), random_dna(&mut rng, 10)],
            1e-4,
        );
        assert_eq!(counts[0][0] as usize, hits.len());
        assert_eq!(counts[1][0], 0);
    }

    /// Hits of the bundled markers on a fixed random sequence (splitmix64 seed 2024, 2000
    /// bases) at p < 1e-3 from real FIMO: pymemesuite 0.1.0a4 (MEME 5) fed our log-odds as a
    /// MEME file (per-column pseudocount baked in, FIMO pseudocount 0, uniform background);
    /// made by `scripts/dna-references.py`. Columns: ID, leftmost 0-based start,
    /// forward strand, FIMO score (the scaled score in bits), p-value.
    const FIMO_HITS: [(&str, usize, bool, f64, f64); 52] = [
        ("MA0140.3", 614, false, 6.5273, 3.146870e-04),
        ("MA0140.3", 1788, false, 5.8182, 3.840869e-04),
        ("MA0140.3", 842, true, 5.2182, 4.492320e-04),
        ("MA0140.3", 1292, false, 4.6364, 5.185182e-04),
        ("MA0140.3", 767, true, 3.5455, 6.659827e-04),
        ("MA0114.5", 1583, false, 7.0764, 6.408691e-04),
        ("MA0114.5", 414, false, 6.7778, 7.476807e-04),
        ("MA0114.5", 175, false, 6.3681, 9.078979e-04),
        ("MA0047.4", 1094, true, 12.1200, 4.577637e-05),
        ("MA0047.4", 195, false, 10.4160, 1.068115e-04),
        ("MA0047.4", 1897, true, 9.2720, 1.831055e-04),
        ("MA0047.4", 1897, false, 9.2720, 1.831055e-04),
        ("MA0047.4", 839, false, 8.4720, 3.509521e-04),
        ("MA0047.4", 421, false, 8.1280, 4.425049e-04),
        ("MA0047.4", 1632, true, 7.6400, 5.187988e-04),
        ("MA0047.4", 1680, false, 7.1920, 7.781982e-04),
        ("MA0047.4", 995, true, 6.8800, 9.918213e-04),
        ("MA0080.7", 7, false, 11.7600, 2.971292e-05),
        ("MA0080.7", 388, true, 7.8720, 2.386570e-04),
        ("MA0080.7", 1069, false, 7.7440, 2.540797e-04),
        ("MA0080.7", 1335, false, 7.4000, 2.984703e-04),
        ("MA0080.7", 1490, false, 5.5280, 7.038563e-04),
        ("MA1419.2", 1881, true, 10.9859, 3.315508e-06),
        ("MA1419.2", 1659, true, 0.6761, 6.512552e-05),
        ("MA1419.2", 860, true, -3.5070, 1.792796e-04),
        ("MA1419.2", 1875, true, -6.2394, 3.316887e-04),
        ("MA1419.2", 536, true, -7.5634, 4.400052e-04),
        ("MA1419.2", 611, false, -9.3803, 6.461479e-04),
        ("MA1419.2", 306, true, -9.9718, 7.287413e-04),
        ("MA1419.2", 546, true, -10.3803, 7.906221e-04),
        ("MA1419.2", 1241, false, -11.1972, 9.301677e-04),
        ("MA1419.2", 1559, true, -11.5352, 9.948164e-04),
        ("MA0142.1", 302, false, 6.4234, 4.311753e-04),
        ("MA0142.1", 687, true, 5.5405, 6.350670e-04),
        ("MA0142.1", 489, true, 5.5225, 6.400421e-04),
        ("MA0142.1", 724, false, 5.4054, 6.731246e-04),
        ("MA0142.1", 724, true, 4.5946, 9.463262e-04),
        ("MA0142.1", 90, false, 4.5586, 9.604804e-04),
        ("MA1115.2", 1646, true, 9.4160, 2.441406e-04),
        ("MA1115.2", 725, false, 8.6400, 4.882812e-04),
        ("MA0496.4", 738, false, 11.2367, 5.912781e-05),
        ("MA0496.4", 1598, true, 7.3728, 4.835129e-04),
        ("MA0496.4", 1731, false, 6.5976, 7.314682e-04),
        ("MA1520.2", 1599, false, 9.3964, 1.536459e-04),
        ("MA1520.2", 1599, true, 8.9459, 1.988709e-04),
        ("MA1520.2", 1730, true, 8.7748, 2.188385e-04),
        ("MA1520.2", 1702, true, 8.5225, 2.515763e-04),
        ("MA1520.2", 1730, false, 8.4144, 2.664328e-04),
        ("MA1520.2", 1702, false, 8.1802, 3.013313e-04),
        ("MA1520.2", 1680, false, 6.2613, 8.220226e-04),
        ("MA1520.2", 223, false, 6.1982, 8.472651e-04),
        ("MA1520.2", 1680, true, 5.9910, 9.374022e-04),
    ];

    #[test]
    fn matches_fimo() {
        let mut rng = SplitMix64::new(2024);
        let seq = random_dna(&mut rng, 2000);
        let mut ours = Vec::new();
        for m in markers().unwrap() {
            let pwm = m.default_pwm();
            for h in pwm.scan(&seq, 1e-3) {
                // pymemesuite's FIMO does not score the last window of a sequence.
                if h.start + pwm.width() < seq.len() {
                    ours.push((
                        m.id.clone(),
                        h.start,
                        h.strand == Strand::Forward,
                        pwm.scaled_to_bits(h.scaled),
                        h.pvalue,
                    ));
                }
            }
        }
        assert_eq!(ours.len(), FIMO_HITS.len());
        for &(id, start, fwd, score, p) in &FIMO_HITS {
            let o = ours
                .iter()
                .find(|o| o.0 == id && o.1 == start && o.2 == fwd)
                .unwrap_or_else(|| panic!("FIMO hit {id} {start} {fwd} not found"));
            assert!(
                (o.3 - score).abs() < 1e-4,
                "{id} {start}: score {} vs {score}",
                o.3
            );
            assert!(
                (o.4 - p).abs() <= 2e-6 * p,
                "{id} {start}: p {} vs {p}",
                o.4
            );
        }
    }
}
