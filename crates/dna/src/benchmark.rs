//! The planted-motif benchmark: sequences with known ground truth for conditional generation.
//!
//! **Cell types and markers** (JASPAR 2024 matrices from `data/markers.jaspar`):
//!
//! | cell type | markers |
//! | --- | --- |
//! | K562 | GATA1::TAL1 (MA0140.3) |
//! | HepG2 | HNF4A (MA0114.5), FOXA2 (MA0047.4) |
//! | GM12878 | SPI1 (MA0080.7), IRF4 (MA1419.2) |
//! | hESC | POU5F1::SOX2 (MA0142.1) |
//!
//! **A sequence** is a background window of `length` bases (default 200) cut at a random
//! offset from one of the caller's background sequences (real promoters, say; chosen with
//! probability proportional to their number of windows; windows holding a byte other than
//! A, C, G, T after upper-casing are redrawn; optionally dinucleotide-shuffled, which keeps the
//! composition but destroys any real binding sites). Into it go `sites_per_marker` instances
//! (default 1) of every marker of every cell type the sequence is active in. Each instance is
//! drawn column by column from the count matrix's letter frequencies (no pseudocount), put on a
//! random strand (reverse-complemented half the time) at a uniformly random start among those
//! where it overlaps no other planted site. A sequence's labels are the cell types it is active
//! in, in the order K562, HepG2, GM12878, hESC; the planted sites are kept as ground truth.
//!
//! **Detectable instances.** A plain draw from the column frequencies is often too weak to be
//! called: a short motif such as FOXA2 (8 columns) has only a handful of 8-mers with p < 1e-4,
//! and in the unit test (uniform random backgrounds) a scan at p < 1e-4 found plain draws at
//! their own position and strand in 54 % of the cases for FOXA2, 79 % HNF4A, 86 % SPI1,
//! 87 % POU5F1::SOX2, 96 % GATA1::TAL1 and 100 % IRF4. So by default (`site_pvalue` = 1e-4) each instance is drawn from the column
//! frequencies *conditioned on* its own p-value (uniform background, FIMO's pseudocount)
//! being below `site_pvalue`, by rejection; every planted site is then found by the scan at
//! that threshold, and the variability among instances is the matrix's own among strong
//! sites. `site_pvalue: None` gives the plain draws.
//!
//! **Composition** (defaults; the counts are exact, not sampled, then the order is shuffled):
//! of `count` = 8000 sequences, `background_fraction` = 0.1 carry no label and no planted site
//! (they measure how often real backgrounds already contain the markers),
//! `pair_fraction` = 0.3 are active in two cell types and the rest (0.6) in one. Single-type
//! sequences cycle through the four types (equal counts); pairs cycle through
//! [`training_pairs`]: the five pairs other than the held-out HepG2 + K562 ([`HELD_OUT_PAIR`]),
//! so HepG2 + GM12878 (and every other pair) occurs in training while HepG2 + K562 never does.
//! Evaluation sequences for the held-out pair come from [`plant`] with those labels.
//!
//! **Background rate.** A uniform random 200-base window holds under 2 x 193 x 1e-4 = 0.04
//! expected hits (p < 1e-4, either strand) of a given marker; the unit test measured 0 to 7 %
//! of 60 windows per marker. Real promoter windows can hold more, which the background-only
//! sequences measure.

use crate::encode::reverse_complement;
use crate::motif::{find, CountMatrix, Pwm, Strand};
use crate::shuffle::{dinucleotide_shuffle, SplitMix64};
use anyhow::{bail, ensure};

/// The four benchmark cell types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellType {
    /// Erythroleukemia line; marker GATA1::TAL1.
    K562,
    /// Hepatocellular carcinoma line; markers HNF4A, FOXA2.
    HepG2,
    /// Lymphoblastoid line; markers SPI1, IRF4.
    GM12878,
    /// Embryonic stem cells; marker POU5F1::SOX2.
    HESC,
}

impl CellType {
    /// All cell types in label order.
    pub const ALL: [CellType; 4] = [
        CellType::K562,
        CellType::HepG2,
        CellType::GM12878,
        CellType::HESC,
    ];

    /// The display name (`K562`, `HepG2`, `GM12878`, `hESC`).
    pub fn name(self) -> &'static str {
        match self {
            CellType::K562 => "K562",
            CellType::HepG2 => "HepG2",
            CellType::GM12878 => "GM12878",
            CellType::HESC => "hESC",
        }
    }

    /// The cell type with this name, ignoring case.
    pub fn parse(name: &str) -> Option<CellType> {
        CellType::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The marker motif names (as in `data/markers.jaspar`, matched ignoring case).
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            CellType::K562 => &["GATA1::TAL1"],
            CellType::HepG2 => &["HNF4A", "FOXA2"],
            CellType::GM12878 => &["SPI1", "IRF4"],
            CellType::HESC => &["POU5F1::SOX2"],
        }
    }
}

/// The pair of cell types that never occurs in training.
pub const HELD_OUT_PAIR: (CellType, CellType) = (CellType::K562, CellType::HepG2);

/// The five pairs of distinct cell types other than [`HELD_OUT_PAIR`], in label order.
pub fn training_pairs() -> Vec<(CellType, CellType)> {
    let mut out = Vec::new();
    for (i, &a) in CellType::ALL.iter().enumerate() {
        for &b in &CellType::ALL[i + 1..] {
            if (a, b) != HELD_OUT_PAIR {
                out.push((a, b));
            }
        }
    }
    out
}

/// Labels joined by `+` (`HepG2+GM12878`; `background` when there are none).
pub fn label_string(labels: &[CellType]) -> String {
    if labels.is_empty() {
        return "background".to_string();
    }
    labels
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join("+")
}

/// How to build a benchmark (see the module doc for the defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct BenchmarkConfig {
    /// Bases per sequence.
    pub length: usize,
    /// Number of sequences.
    pub count: usize,
    /// Fraction with no label and no planted site.
    pub background_fraction: f64,
    /// Fraction active in two cell types.
    pub pair_fraction: f64,
    /// The pairs two-type sequences cycle through.
    pub pairs: Vec<(CellType, CellType)>,
    /// Instances planted per marker motif of each active cell type.
    pub sites_per_marker: usize,
    /// Draw only instances whose own p-value is below this (see the module doc); `None` for
    /// plain draws from the column frequencies.
    pub site_pvalue: Option<f64>,
    /// Dinucleotide-shuffle every background window before planting.
    pub shuffle_background: bool,
    /// Seed of everything random.
    pub seed: u64,
}

impl Default for BenchmarkConfig {
    fn default() -> Self {
        Self {
            length: 200,
            count: 8000,
            background_fraction: 0.1,
            pair_fraction: 0.3,
            pairs: training_pairs(),
            sites_per_marker: 1,
            site_pvalue: Some(1e-4),
            shuffle_background: false,
            seed: 0,
        }
    }
}

/// One planted motif instance.
#[derive(Clone, Debug, PartialEq)]
pub struct PlantedSite {
    /// The motif's name as given in its matrix.
    pub motif: String,
    /// Leftmost position on the sequence.
    pub start: usize,
    /// Width of the instance.
    pub width: usize,
    /// Strand of the instance.
    pub strand: Strand,
}

/// One benchmark sequence with its ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The bases (A, C, G, T).
    pub bases: Vec<u8>,
    /// The cell types it is active in, in label order (empty for background-only).
    pub labels: Vec<CellType>,
    /// The planted sites, in planting order.
    pub sites: Vec<PlantedSite>,
}

/// Background sequences with cumulative window counts, for drawing windows.
struct Windows<'a, S> {
    seqs: &'a [S],
    cumulative: Vec<u64>,
    length: usize,
}

impl<'a, S: AsRef<[u8]>> Windows<'a, S> {
    fn new(seqs: &'a [S], length: usize) -> anyhow::Result<Self> {
        ensure!(length > 0, "sequence length must be positive");
        let mut cumulative = Vec::with_capacity(seqs.len());
        let mut total = 0u64;
        for s in seqs {
            let n = s.as_ref().len();
            total += if n >= length {
                (n - length + 1) as u64
            } else {
                0
            };
            cumulative.push(total);
        }
        ensure!(
            total > 0,
            "no background sequence has {length} bases or more"
        );
        Ok(Self {
            seqs,
            cumulative,
            length,
        })
    }

    fn draw(&self, rng: &mut SplitMix64) -> anyhow::Result<Vec<u8>> {
        let total = *self.cumulative.last().unwrap_or(&0);
        for _ in 0..1000 {
            let r = rng.next_u64() % total.max(1);
            let i = self.cumulative.partition_point(|&c| c <= r);
            let before = if i == 0 { 0 } else { self.cumulative[i - 1] };
            let start = (r - before) as usize;
            let w = &self.seqs[i].as_ref()[start..start + self.length];
            let w: Vec<u8> = w.iter().map(|b| b.to_ascii_uppercase()).collect();
            if w.iter().all(|&b| matches!(b, b'A' | b'C' | b'G' | b'T')) {
                return Ok(w);
            }
        }
        bail!(
            "1000 background windows of {} bases in a row held a byte other than A, C, G, T",
            self.length
        )
    }
}

/// A marker's count matrix, and the scaled score its instances must reach (if any).
struct Marker<'a> {
    matrix: &'a CountMatrix,
    pwm: Pwm,
    min_scaled: Option<u32>,
}

/// The markers of every cell type, indexed by `CellType as usize`.
fn marker_matrices<'a>(
    motifs: &'a [CountMatrix],
    site_pvalue: Option<f64>,
) -> anyhow::Result<Vec<Vec<Marker<'a>>>> {
    CellType::ALL
        .iter()
        .map(|c| {
            c.markers()
                .iter()
                .map(|name| {
                    let matrix = find(motifs, name)?;
                    let pwm = matrix.default_pwm();
                    let min_scaled = match site_pvalue {
                        None => None,
                        Some(p) => match pwm.threshold(p) {
                            Some(t) => Some(t.scaled),
                            None => bail!(
                                "{name}: no {}-base word has a p-value below {p}",
                                matrix.width()
                            ),
                        },
                    };
                    Ok(Marker {
                        matrix,
                        pwm,
                        min_scaled,
                    })
                })
                .collect()
        })
        .collect()
}

/// One instance of a marker on the forward strand (module doc: plain or conditioned draws).
fn draw_instance(m: &Marker, rng: &mut SplitMix64) -> anyhow::Result<Vec<u8>> {
    let probs: Vec<[f64; 4]> = (0..m.matrix.width())
        .map(|j| m.matrix.column_probs(j))
        .collect();
    for _ in 0..100_000 {
        let instance: Vec<u8> = probs.iter().map(|p| b"ACGT"[rng.weighted(p)]).collect();
        match m.min_scaled {
            None => return Ok(instance),
            Some(t) => {
                if m.pwm
                    .scaled_score(&instance, Strand::Forward)
                    .is_some_and(|s| s >= t)
                {
                    return Ok(instance);
                }
            }
        }
    }
    bail!(
        "{}: 100000 draws in a row were below the site p-value threshold",
        m.matrix.name
    )
}

/// Plants `sites_per_marker` instances of every marker of `labels` into `bases` (in place).
fn plant_into(
    bases: &mut [u8],
    labels: &[CellType],
    markers: &[Vec<Marker>],
    sites_per_marker: usize,
    rng: &mut SplitMix64,
) -> anyhow::Result<Vec<PlantedSite>> {
    let mut sites: Vec<PlantedSite> = Vec::new();
    for &cell in labels {
        for m in &markers[cell as usize] {
            for _ in 0..sites_per_marker {
                let w = m.matrix.width();
                let mut instance = draw_instance(m, rng)?;
                let strand = if rng.coin() {
                    Strand::Reverse
                } else {
                    Strand::Forward
                };
                if strand == Strand::Reverse {
                    instance = reverse_complement(&instance);
                }
                let free: Vec<usize> = (0..(bases.len() + 1).saturating_sub(w))
                    .filter(|&s| {
                        sites
                            .iter()
                            .all(|o| s + w <= o.start || o.start + o.width <= s)
                    })
                    .collect();
                if free.is_empty() {
                    bail!(
                        "no room for {} ({w} bases) in a {}-base sequence with {} sites planted",
                        m.matrix.name,
                        bases.len(),
                        sites.len()
                    );
                }
                let start = free[rng.below(free.len())];
                bases[start..start + w].copy_from_slice(&instance);
                sites.push(PlantedSite {
                    motif: m.matrix.name.clone(),
                    start,
                    width: w,
                    strand,
                });
            }
        }
    }
    Ok(sites)
}

/// One sequence active in `labels`: a window from `backgrounds` with the labels' markers
/// planted (for evaluation sets such as the held-out pair). `motifs` must hold every marker.
pub fn plant<S: AsRef<[u8]>>(
    labels: &[CellType],
    backgrounds: &[S],
    motifs: &[CountMatrix],
    config: &BenchmarkConfig,
    rng: &mut SplitMix64,
) -> anyhow::Result<Record> {
    let windows = Windows::new(backgrounds, config.length)?;
    let markers = marker_matrices(motifs, config.site_pvalue)?;
    make_record(labels, &windows, &markers, config, rng)
}

fn make_record<S: AsRef<[u8]>>(
    labels: &[CellType],
    windows: &Windows<S>,
    markers: &[Vec<Marker>],
    config: &BenchmarkConfig,
    rng: &mut SplitMix64,
) -> anyhow::Result<Record> {
    let mut labels = labels.to_vec();
    labels.sort();
    labels.dedup();
    let mut bases = windows.draw(rng)?;
    if config.shuffle_background {
        bases = dinucleotide_shuffle(&bases, rng);
    }
    let sites = plant_into(&mut bases, &labels, markers, config.sites_per_marker, rng)?;
    Ok(Record {
        bases,
        labels,
        sites,
    })
}

/// The whole benchmark set (see the module doc), deterministic for `config.seed`.
pub fn generate<S: AsRef<[u8]>>(
    config: &BenchmarkConfig,
    backgrounds: &[S],
    motifs: &[CountMatrix],
) -> anyhow::Result<Vec<Record>> {
    let (bg, pair) = (config.background_fraction, config.pair_fraction);
    ensure!(
        (0.0..=1.0).contains(&bg) && (0.0..=1.0).contains(&pair) && bg + pair <= 1.0 + 1e-12,
        "background_fraction {bg} and pair_fraction {pair} must be in [0, 1] with a sum <= 1"
    );
    for &(a, b) in &config.pairs {
        ensure!(a != b, "pair {}+{} repeats a cell type", a.name(), b.name());
    }
    let n_bg = (config.count as f64 * bg).round() as usize;
    let n_pair = ((config.count as f64 * pair).round() as usize).min(config.count - n_bg);
    let n_single = config.count - n_bg - n_pair;
    ensure!(
        n_pair == 0 || !config.pairs.is_empty(),
        "pair_fraction {pair} needs at least one pair"
    );
    let windows = Windows::new(backgrounds, config.length)?;
    let markers = marker_matrices(motifs, config.site_pvalue)?;

    let mut label_sets: Vec<Vec<CellType>> = Vec::with_capacity(config.count);
    label_sets.extend((0..n_bg).map(|_| vec![]));
    label_sets.extend((0..n_single).map(|i| vec![CellType::ALL[i % 4]]));
    label_sets.extend((0..n_pair).map(|i| {
        let (a, b) = config.pairs[i % config.pairs.len()];
        vec![a, b]
    }));
    let mut rng = SplitMix64::new(config.seed);
    rng.shuffle(&mut label_sets);
    label_sets
        .iter()
        .map(|labels| make_record(labels, &windows, &markers, config, &mut rng))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motif::markers;
    use std::collections::HashMap;

    use crate::testutil::random_dna;

    /// 600 records planted into 30 random 1 kb backgrounds, instances drawn below
    /// `site_pvalue` (None: plain draws), with the generator that drew the backgrounds.
    struct Planted {
        motifs: Vec<CountMatrix>,
        backgrounds: Vec<Vec<u8>>,
        config: BenchmarkConfig,
        records: Vec<Record>,
        rng: SplitMix64,
    }

    fn benchmark(site_pvalue: Option<f64>) -> Planted {
        let motifs = markers().unwrap();
        let mut rng = SplitMix64::new(2);
        let backgrounds: Vec<Vec<u8>> = (0..30).map(|_| random_dna(&mut rng, 1000)).collect();
        let config = BenchmarkConfig {
            count: 600,
            seed: 7,
            site_pvalue,
            ..Default::default()
        };
        let records = generate(&config, &backgrounds, &motifs).unwrap();
        Planted {
            motifs,
            backgrounds,
            config,
            records,
            rng,
        }
    }

    #[test]
    fn pairs_and_names() {
        let pairs = training_pairs();
        assert_eq!(pairs.len(), 5);
        assert!(!pairs.contains(&HELD_OUT_PAIR));
        assert!(pairs.contains(&(CellType::HepG2, CellType::GM12878)));
        assert_eq!(CellType::parse("hesc"), Some(CellType::HESC));
        assert_eq!(
            label_string(&[CellType::HepG2, CellType::GM12878]),
            "HepG2+GM12878"
        );
        assert_eq!(label_string(&[]), "background");
    }

    /// Per marker: (planted sites found at their position and strand, planted sites).
    fn found_at_sites(
        records: &[Record],
        pwms: &HashMap<String, crate::motif::Pwm>,
    ) -> HashMap<String, (usize, usize)> {
        let mut found: HashMap<String, (usize, usize)> = HashMap::new();
        for r in records {
            for s in &r.sites {
                let hits = pwms[&s.motif].scan(&r.bases, 1e-4);
                let e = found.entry(s.motif.clone()).or_insert((0, 0));
                e.1 += 1;
                if hits
                    .iter()
                    .any(|h| h.start == s.start && h.strand == s.strand)
                {
                    e.0 += 1;
                }
            }
        }
        found
    }

    #[test]
    fn plain_draws_are_weaker() {
        let Planted {
            motifs, records, ..
        } = benchmark(None);
        let pwms: HashMap<String, crate::motif::Pwm> = motifs
            .iter()
            .map(|m| (m.name.clone(), m.default_pwm()))
            .collect();
        let found = found_at_sites(&records, &pwms);
        for (name, (hit, total)) in &found {
            eprintln!("plain draws, {name}: planted site found {hit}/{total}");
            assert!(*hit as f64 > 0.3 * *total as f64, "{name}");
        }
        let (fh, ft) = found["FOXA2"];
        assert!(
            (fh as f64) < 0.8 * ft as f64,
            "FOXA2 plain draws found {fh}/{ft}"
        );
    }

    #[test]
    fn generates_labelled_sequences_with_markers() {
        let Planted {
            motifs,
            backgrounds,
            config,
            records,
            mut rng,
        } = benchmark(Some(1e-4));
        assert_eq!(records.len(), 600);
        assert_eq!(records, generate(&config, &backgrounds, &motifs).unwrap());

        // Composition and the pair constraints.
        let mut by_label: HashMap<String, usize> = HashMap::new();
        for r in &records {
            assert_eq!(r.bases.len(), 200);
            assert!(r.labels.len() <= 2);
            assert!(r.labels.windows(2).all(|w| w[0] < w[1]));
            *by_label.entry(label_string(&r.labels)).or_insert(0) += 1;
            let planted: usize = r.labels.iter().map(|c| c.markers().len()).sum();
            assert_eq!(r.sites.len(), planted);
            for (i, a) in r.sites.iter().enumerate() {
                assert!(a.start + a.width <= 200);
                for b in &r.sites[i + 1..] {
                    assert!(a.start + a.width <= b.start || b.start + b.width <= a.start);
                }
            }
        }
        assert_eq!(by_label["background"], 60);
        assert_eq!(by_label.get("K562+HepG2"), None);
        assert_eq!(by_label["HepG2+GM12878"], 36);
        for c in CellType::ALL {
            assert_eq!(by_label[c.name()], 90);
        }
        assert_eq!(by_label.values().sum::<usize>(), 600);

        // Markers are found at their planted sites far above the background rate.
        let pwms: HashMap<String, crate::motif::Pwm> = motifs
            .iter()
            .map(|m| (m.name.clone(), m.default_pwm()))
            .collect();
        let found = found_at_sites(&records, &pwms);
        let background: Vec<&Record> = records.iter().filter(|r| r.labels.is_empty()).collect();
        for c in CellType::ALL {
            for name in c.markers() {
                let m = find(&motifs, name).unwrap();
                let (hit, total) = found[&m.name];
                let planted_rate = hit as f64 / total as f64;
                let bg_rate = background
                    .iter()
                    .filter(|r| pwms[&m.name].count(&r.bases, 1e-4) > 0)
                    .count() as f64
                    / background.len() as f64;
                eprintln!("{name}: planted site found {hit}/{total}, background rate {bg_rate:.3}");
                // Every conditioned instance is found; the background rate is small.
                assert_eq!(planted_rate, 1.0, "{name}");
                assert!(bg_rate < 0.1, "{name}: {bg_rate}");
            }
        }

        // The held-out pair, for evaluation only.
        let r = plant(
            &[CellType::HepG2, CellType::K562],
            &backgrounds,
            &motifs,
            &config,
            &mut rng,
        )
        .unwrap();
        assert_eq!(r.labels, [CellType::K562, CellType::HepG2]);
        assert_eq!(r.sites.len(), 3);
    }

    #[test]
    fn reports_bad_configs() {
        let motifs = markers().unwrap();
        let bg = vec![b"ACGT".repeat(100)];
        let bad = |c: BenchmarkConfig| generate(&c, &bg, &motifs).unwrap_err().to_string();
        assert!(bad(BenchmarkConfig {
            background_fraction: 0.8,
            pair_fraction: 0.5,
            ..Default::default()
        })
        .contains("sum <= 1"));
        assert!(bad(BenchmarkConfig {
            pairs: vec![],
            count: 10,
            ..Default::default()
        })
        .contains("needs at least one pair"));
        assert!(bad(BenchmarkConfig {
            length: 500,
            count: 10,
            ..Default::default()
        })
        .contains("no background sequence"));
        assert!(bad(BenchmarkConfig {
            length: 20,
            count: 10,
            background_fraction: 0.0,
            pair_fraction: 1.0,
            ..Default::default()
        })
        .contains("no room"));
        let ns = vec![b"N".repeat(300)];
        assert!(generate(
            &BenchmarkConfig {
                count: 3,
                ..Default::default()
            },
            &ns,
            &motifs
        )
        .is_err());
        assert!(generate(
            &BenchmarkConfig {
                count: 3,
                ..Default::default()
            },
            &bg,
            &motifs[..1]
        )
        .is_err());
        // Shuffled backgrounds keep the window's composition.
        let c = BenchmarkConfig {
            count: 5,
            background_fraction: 1.0,
            pair_fraction: 0.0,
            shuffle_background: true,
            ..Default::default()
        };
        let mut rng = SplitMix64::new(1);
        let bgs: Vec<Vec<u8>> = (0..3).map(|_| random_dna(&mut rng, 400)).collect();
        for r in generate(&c, &bgs, &motifs).unwrap() {
            assert!(r.labels.is_empty() && r.sites.is_empty());
        }
    }
}
