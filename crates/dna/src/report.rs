//! The DNA domain's report sections: the class x class motif KL matrix, motif presence and
//! cell-type marker rates of the newest samples beside real sequences (marking the cell types
//! the samples were asked for and those they were to avoid), the 6-mer spectrum, and sequence
//! logos of generated and real sequences around the most common motif.

use crate::encode::reverse_complement;
use crate::kmer::{frequencies, kmer_counts, Strands};
use crate::motif::{hit_counts, Pwm, Strand};
use crate::{collect_labels, read_fasta, Dna, FastaOptions, InvalidPolicy, LabelSource, SeqRecord};
use sugarcube_core::report::{plot, Block, ReportContext, Section, Series};

/// Bases of context on each side of the motif in the logos.
const FLANK: usize = 4;

fn all(h: &[Vec<u32>]) -> Vec<&Vec<u32>> {
    h.iter().collect()
}

fn refs(v: &[SeqRecord]) -> Vec<&SeqRecord> {
    v.iter().collect()
}

/// Fraction of `hits` rows in which every motif of `idx` occurs.
fn carrying(hits: &[&Vec<u32>], idx: &[usize]) -> f64 {
    let n = hits
        .iter()
        .filter(|h| idx.iter().all(|&j| h[j] > 0))
        .count();
    n as f64 / hits.len().max(1) as f64
}

/// The labels of a `--cond`/`--not` term as conditions.json writes it (`celltype=A+B`).
fn term_labels(term: &str) -> Vec<String> {
    term.split(',')
        .filter_map(|kv| kv.split_once('=').map(|(_, v)| v))
        .flat_map(|v| v.split('+'))
        .filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_string)
        .collect()
}

/// The requested and excluded labels of a samples folder (from its conditions.json).
fn requested(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let Ok(text) = std::fs::read_to_string(dir.join("conditions.json")) else {
        return (vec![], vec![]);
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return (vec![], vec![]);
    };
    let labels = |key: &str| -> Vec<String> {
        v.get(key)
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str())
                    .flat_map(term_labels)
                    .collect()
            })
            .unwrap_or_default()
    };
    (labels("positive"), labels("negative"))
}

/// Base frequencies (A, C, G, T) per position of the window around each sequence's best hit of
/// `pwm`, read on the motif's strand; and how many sequences had a hit.
fn aligned_columns(seqs: &[&SeqRecord], pwm: &Pwm, p: f64) -> (Vec<[f64; 4]>, usize) {
    let w = pwm.width();
    let mut cols = vec![[0f64; 4]; w + 2 * FLANK];
    let mut used = 0;
    for r in seqs {
        let Some(best) = pwm
            .scan(&r.bases, p)
            .into_iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
        else {
            continue;
        };
        let Some(start) = best.start.checked_sub(FLANK) else {
            continue;
        };
        let end = best.start + w + FLANK;
        if end > r.bases.len() {
            continue;
        }
        let mut window = r.bases[start..end].to_vec();
        if best.strand == Strand::Reverse {
            window = reverse_complement(&window);
        }
        for (c, b) in cols.iter_mut().zip(&window) {
            if let Some(i) = crate::encode::base_index(*b) {
                c[i] += 1.0;
            }
        }
        used += 1;
    }
    (cols, used)
}

/// The DNA sections of a run's report.
pub fn sections(ctx: &ReportContext<Dna>) -> anyhow::Result<Vec<Section>> {
    let Some(dir) = ctx.newest_samples("samples.fa") else {
        return Ok(vec![Section::new("Samples").with(Block::Text(
            "No samples yet: `sugarcube sample RUN` or `sugarcube eval RUN` draws them.".into(),
        ))]);
    };
    let file = dir.join("samples.fa");
    let generated = read_fasta(
        &file,
        &FastaOptions {
            labels: LabelSource::Header,
            invalid: InvalidPolicy::Error,
        },
    )?
    .records;
    let (train, held) = ctx.exp.data.load(ctx.exp.seed)?;
    let p = ctx.exp.eval.motif_pvalue;
    let pwms: Vec<Pwm> = ctx
        .exp
        .eval
        .motifs()?
        .iter()
        .map(|m| m.default_pwm())
        .collect();
    let names: Vec<String> = pwms.iter().map(|m| m.name.clone()).collect();
    let bases = |r: &[SeqRecord]| r.iter().map(|s| s.bases.clone()).collect::<Vec<_>>();
    let (gen_hits, held_hits, train_hits) = (
        hit_counts(&pwms, &bases(&generated), p),
        hit_counts(&pwms, &bases(&held), p),
        hit_counts(&pwms, &bases(&train), p),
    );
    let source = format!("{} samples of {}", generated.len(), file.display());

    let mut motifs = Section::new("Motifs");
    if let Some(m) = ctx.run.details.get("motif_kl_matrix") {
        let strings = |k: &str| -> Vec<String> {
            m.get(k)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let kl: Option<Vec<Vec<f64>>> = m.get("kl").and_then(|v| v.as_array()).and_then(|rows| {
            rows.iter()
                .map(|r| r.as_array()?.iter().map(|x| x.as_f64()).collect())
                .collect()
        });
        if let Some(kl) = kl {
            motifs.push(Block::figure(
                Block::Svg(plot::heatmap(
                    "Motif KL: generated class vs held-out class",
                    "generated as",
                    "held-out",
                    &strings("generated_rows"),
                    &strings("heldout_columns"),
                    &kl,
                )?),
                "KL divergence of motif presence (DNA-Diffusion's measure) from the evaluation: \
                 a class-specific model has the lowest value of each row on the diagonal",
            ));
        }
    }
    let presence =
        |h: &[Vec<u32>]| -> Vec<f64> { (0..pwms.len()).map(|j| carrying(&all(h), &[j])).collect() };
    motifs.push(Block::figure(
        Block::Svg(plot::bars(
            "Motif presence",
            "fraction of sequences",
            &names,
            &[
                ("samples", presence(&gen_hits)),
                ("held-out", presence(&held_hits)),
                ("training", presence(&train_hits)),
            ],
        )?),
        format!("sequences with at least one hit at p < {p}; {source}"),
    ));

    // marker rates per cell type, the requested and excluded ones marked
    let classes = collect_labels(&train);
    let (want, avoid) = requested(&dir);
    let cells = crate::evaluate::marker_cells(&classes, &pwms);
    if !cells.is_empty() {
        let shown: Vec<String> = cells
            .iter()
            .map(|(l, _)| {
                if want.contains(l) {
                    format!("{l} (requested)")
                } else if avoid.contains(l) {
                    format!("{l} (excluded)")
                } else {
                    l.clone()
                }
            })
            .collect();
        let with = |label: &str, yes: bool| -> Vec<&Vec<u32>> {
            train
                .iter()
                .zip(&train_hits)
                .filter(|(r, _)| r.labels.iter().any(|l| l == label) == yes)
                .map(|(_, h)| h)
                .collect()
        };
        let rate = |f: &dyn Fn(&str, &[usize]) -> f64| -> Vec<f64> {
            cells.iter().map(|(l, idx)| f(l, idx)).collect()
        };
        motifs.push(Block::figure(
            Block::Svg(plot::bars(
                "Marker rates per cell type",
                "fraction carrying every marker",
                &shown,
                &[
                    ("samples", rate(&|_, i| carrying(&all(&gen_hits), i))),
                    (
                        "training, with the label",
                        rate(&|l, i| carrying(&with(l, true), i)),
                    ),
                    (
                        "training, without it",
                        rate(&|l, i| carrying(&with(l, false), i)),
                    ),
                ],
            )?),
            format!(
                "a cell type's marker motifs all present (the benchmark's markers); {source}{}",
                if want.is_empty() && avoid.is_empty() {
                    String::new()
                } else {
                    format!("; asked for {want:?}, excluding {avoid:?}")
                }
            ),
        ));
        // by requested label set: samples asked for each set beside real sequences with it
        let sets = |records: &[SeqRecord]| -> Vec<String> {
            let mut v: Vec<String> = records.iter().map(|r| set_name(&r.labels)).collect();
            v.sort();
            v.dedup();
            v
        };
        let gen_sets = sets(&generated);
        if gen_sets.len() > 1 {
            let table = |records: &[SeqRecord], hits: &[Vec<u32>]| -> Vec<Vec<f64>> {
                gen_sets
                    .iter()
                    .map(|s| {
                        let rows: Vec<&Vec<u32>> = records
                            .iter()
                            .zip(hits)
                            .filter(|(r, _)| set_name(&r.labels) == *s)
                            .map(|(_, h)| h)
                            .collect();
                        cells.iter().map(|(_, idx)| carrying(&rows, idx)).collect()
                    })
                    .collect()
            };
            let types: Vec<String> = cells.iter().map(|c| c.0.clone()).collect();
            motifs.push(Block::Row(vec![
                Block::Svg(plot::heatmap(
                    "Marker rates of samples by requested labels",
                    "asked for",
                    "markers of",
                    &gen_sets,
                    &types,
                    &table(&generated, &gen_hits),
                )?),
                Block::Svg(plot::heatmap(
                    "Marker rates of training sequences by labels",
                    "labelled",
                    "markers of",
                    &gen_sets,
                    &types,
                    &table(&train, &train_hits),
                )?),
            ]));
        }
    }

    // the 6-mer spectrum
    let k = 6;
    let freq = |r: &[SeqRecord]| -> anyhow::Result<Vec<f64>> {
        Ok(frequencies(&kmer_counts(&bases(r), k, Strands::Forward)?))
    };
    let (f_train, f_gen, f_held) = (freq(&train)?, freq(&generated)?, freq(&held)?);
    let against = |f: &[f64]| -> Vec<(f64, f64)> {
        f_train
            .iter()
            .zip(f)
            .filter(|(a, b)| **a > 0.0 && **b > 0.0)
            .map(|(a, b)| (a.log10(), b.log10()))
            .collect()
    };
    let spectrum = Section::new("k-mer spectrum").with(Block::figure(
        Block::Svg(plot::scatter(
            "6-mer frequencies against the training data's",
            "log10 frequency in training data",
            "log10 frequency",
            &[
                Series::new("held-out", against(&f_held)),
                Series::new("samples", against(&f_gen)),
            ],
            true,
        )?),
        "each point a 6-mer; on the diagonal when the samples' composition matches the data \
         (held-out sequences show the spread of a finite sample)",
    ));

    // logos around the motif most common in real sequences
    let mut out = vec![motifs, spectrum];
    let held_rate = presence(&held_hits);
    if let Some((top, &r)) = held_rate
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
    {
        if r > 0.0 {
            let pwm = &pwms[top];
            let (g, ng) = aligned_columns(&refs(&generated), pwm, p);
            let (h, nh) = aligned_columns(&refs(&held), pwm, p);
            let first = -(FLANK as i64) + 1;
            let mut row = vec![];
            if ng > 0 {
                row.push(Block::figure(
                    Block::Svg(plot::logo(&format!("{} in samples", pwm.name), &g, first)?),
                    format!("{ng} samples with a hit, aligned on their best one"),
                ));
            }
            row.push(Block::figure(
                Block::Svg(plot::logo(
                    &format!("{} in held-out data", pwm.name),
                    &h,
                    first,
                )?),
                format!("{nh} held-out sequences with a hit"),
            ));
            out.push(
                Section::new("Sequence logo")
                    .with(Block::Text(format!(
                        "{} ({}), the motif most often present in held-out sequences, with {FLANK} \
                         bases each side, read on the motif's strand; positions 1 to {} are the motif.",
                        pwm.name,
                        pwm.id,
                        pwm.width()
                    )))
                    .with(Block::Row(row)),
            );
        }
    }
    Ok(out)
}

/// A label set as one name (`HepG2+K562`; `(none)` for unlabelled sequences).
fn set_name(labels: &[String]) -> String {
    if labels.is_empty() {
        return "(none)".into();
    }
    let mut v = labels.to_vec();
    v.sort();
    v.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_name_their_labels() {
        assert_eq!(term_labels("celltype=HepG2+K562"), vec!["HepG2", "K562"]);
        assert!(term_labels("celltype=null").is_empty());
        assert_eq!(set_name(&["K562".into(), "HepG2".into()]), "HepG2+K562");
    }
}
