//! Sequence-level evaluation of generated DNA against real sequences, shared by `sugarcube eval`
//! on a DNA run and by `sugarcube dna eval GENERATED.fa --reference TRAIN.fa`: every figure
//! beside its data-vs-data floor (as many held-out sequences against the same training set).
//!
//! Classes are read from the records' labels: a generated sequence belongs to the class it was
//! asked for (its header's labels), a real one to its own labels. "Class `c`" in the per-class
//! figures means sequences labelled with `c` alone.

use crate::benchmark::CellType;
use crate::kmer::{kmer_js_distance, kmer_js_profile, Strands};
use crate::metrics::{gc_distance, memorization, motif_kl_matrix, motif_presence, uniqueness};
use crate::motif::{hit_counts, CountMatrix, Pwm};
use crate::{one_hot, SeqRecord};
use anyhow::{ensure, Context};
use candle_core::{Device, Tensor};
use sha2::Digest;
use std::path::{Path, PathBuf};
use sugarcube_core::domain::{Evaluation, Metric};
use sugarcube_core::nn::eval_classifier::{
    self, EvalClassifier, Pooling, Prediction, Targets, TrainSettings,
};
use sugarcube_core::nn::Dims;
use sugarcube_core::rng::Rng;

/// How the held-out and training sets and the motifs are used.
pub struct EvalSettings<'a> {
    /// Motif hits count at p-values below this (FIMO's 1e-4).
    pub motif_pvalue: f64,
    /// The motifs scanned for (the bundled markers, or the user's JASPAR file).
    pub motifs: &'a [CountMatrix],
    /// The class names of a conditional model (or of labelled reference data), in field
    /// order; empty when there are no classes.
    pub classes: &'a [String],
    /// Sequences carry sets of labels (multi-label), not one class each.
    pub multi_label: bool,
    /// Where the evaluation classifier is cached; None: no classifier (no cond_accuracy).
    pub classifier_cache: Option<PathBuf>,
    /// The classifier's seed.
    pub seed: u64,
}

/// The version of the DNA evaluation classifier's training (part of its cache key).
const CLASSIFIER_VERSION: u32 = 2;

/// The evaluation classifier: global max pooling (does a motif occur anywhere?), 10 epochs of
/// 64 sequences, AdamW at 1e-2, random reverse complements.
const CLASSIFIER: TrainSettings = TrainSettings {
    pooling: Pooling::Max,
    epochs: 10,
    batch_size: 64,
    lr: 1e-2,
};

/// A cache path for the classifier of `train` (keyed by the training files' content: ids,
/// bases and labels, and the class list) under `dir/.sugarcube-cache/`.
pub fn classifier_cache(
    dir: &Path,
    train: &[SeqRecord],
    classes: &[String],
    multi_label: bool,
    seed: u64,
) -> PathBuf {
    let mut h = sha2::Sha256::new();
    h.update(
        format!("v{CLASSIFIER_VERSION}|{classes:?}|{multi_label}|{seed}|{CLASSIFIER:?}").as_bytes(),
    );
    for r in train {
        h.update(&r.bases);
        h.update(r.labels.join("+").as_bytes());
        h.update(b"\n");
    }
    let hash = format!("{:x}", h.finalize());
    dir.join(".sugarcube-cache")
        .join(format!("dna-classifier-{}.safetensors", &hash[..16]))
}

/// Scores `generated` against `train` and `held` (see [`crate::domain::Dna`]'s `evaluate` for
/// the keys). Sequences must all have one length.
pub fn evaluate(
    generated: &[SeqRecord],
    train: &[SeqRecord],
    held: &[SeqRecord],
    s: &EvalSettings,
) -> anyhow::Result<Evaluation> {
    ensure!(
        !generated.is_empty() && !train.is_empty() && !held.is_empty(),
        "evaluation needs generated, training and held-out sequences"
    );
    let gen: Vec<&[u8]> = generated.iter().map(|r| r.bases.as_slice()).collect();
    let n = gen.len().min(held.len());
    let held = &held[..n];
    let floor: Vec<&[u8]> = held.iter().map(|r| r.bases.as_slice()).collect();
    let tr: Vec<&[u8]> = train.iter().map(|r| r.bases.as_slice()).collect();
    let mut m: Vec<Metric> = vec![];
    let push = |m: &mut Vec<Metric>, name: &str, v: f64, f: f64, ratio: bool| {
        m.push((name.to_string(), v));
        m.push((format!("{name}_floor"), f));
        if ratio {
            m.push((format!("{name}_ratio"), v / f.max(1e-12)));
        }
    };
    push(
        &mut m,
        "kmer6_js",
        kmer_js_distance(&gen, &tr, 6, Strands::Forward)?,
        kmer_js_distance(&floor, &tr, 6, Strands::Forward)?,
        true,
    );
    push(
        &mut m,
        "kmer_js_mean",
        kmer_js_profile(&gen, &tr, 7, Strands::Forward)?.1,
        kmer_js_profile(&floor, &tr, 7, Strands::Forward)?.1,
        true,
    );
    push(
        &mut m,
        "gc_distance",
        gc_distance(&gen, &tr)?,
        gc_distance(&floor, &tr)?,
        true,
    );
    push(
        &mut m,
        "memorized_fraction",
        memorization(&gen, &tr, 0.95)?.fraction_above,
        memorization(&floor, &tr, 0.95)?.fraction_above,
        false,
    );
    m.push(("uniqueness".into(), uniqueness(&gen)));
    m.push(("n".into(), gen.len() as f64));
    m.push(("n_floor".into(), n as f64));

    let pwms: Vec<Pwm> = s.motifs.iter().map(|c| c.default_pwm()).collect();
    let names: Vec<String> = pwms.iter().map(|p| key_of(&p.name)).collect();
    let gen_hits = hit_counts(&pwms, &gen, s.motif_pvalue);
    let held_hits = hit_counts(&pwms, &floor, s.motif_pvalue);
    let rate = |hits: &[&Vec<u32>], j: usize| {
        hits.iter().filter(|h| h[j] > 0).count() as f64 / hits.len().max(1) as f64
    };
    let all_gen: Vec<&Vec<u32>> = gen_hits.iter().collect();
    let all_held: Vec<&Vec<u32>> = held_hits.iter().collect();
    for (j, name) in names.iter().enumerate() {
        push(
            &mut m,
            &format!("motif_rate_{name}"),
            rate(&all_gen, j),
            rate(&all_held, j),
            false,
        );
    }
    // per class: the rate of every motif in sequences asked for as the class, beside held-out
    // sequences of the class
    let of_class = |records: &[SeqRecord], hits: &[Vec<u32>], c: &str| -> Vec<Vec<u32>> {
        records
            .iter()
            .zip(hits)
            .filter(|(r, _)| r.labels.len() == 1 && r.labels[0] == c)
            .map(|(_, h)| h.clone())
            .collect()
    };
    let mut present = vec![];
    for c in s.classes {
        let g = of_class(generated, &gen_hits, c);
        let h = of_class(held, &held_hits, c);
        if g.is_empty() {
            continue;
        }
        let (g_ref, h_ref): (Vec<&Vec<u32>>, Vec<&Vec<u32>>) =
            (g.iter().collect(), h.iter().collect());
        for (j, name) in names.iter().enumerate() {
            push(
                &mut m,
                &format!("motif_rate_{name}_{}", key_of(c)),
                rate(&g_ref, j),
                rate(&h_ref, j),
                false,
            );
        }
        present.push((c.clone(), motif_presence(&g), motif_presence(&h)));
    }
    marker_rates(&mut m, train, &gen_hits, &pwms, s);
    let mut ev = Evaluation::of(m);
    if present.len() >= 2 {
        let g: Vec<Vec<u64>> = present.iter().map(|p| p.1.clone()).collect();
        let h: Vec<Vec<u64>> = present.iter().map(|p| p.2.clone()).collect();
        let kl = motif_kl_matrix(&g, &h)?;
        let (mut diag, mut off, mut noff) = (0.0, 0.0, 0usize);
        for (i, row) in kl.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if i == j {
                    diag += v;
                } else {
                    off += v;
                    noff += 1;
                }
            }
        }
        ev.metrics
            .push(("motif_kl_diag".into(), diag / kl.len() as f64));
        ev.metrics
            .push(("motif_kl_offdiag".into(), off / noff.max(1) as f64));
        // the bar's form: each row's diagonal below every off-diagonal entry of the row
        let rows_ok = kl
            .iter()
            .enumerate()
            .filter(|(i, row)| row.iter().enumerate().all(|(j, v)| j == *i || row[*i] < *v))
            .count();
        ev.metrics.push((
            "motif_kl_rows_diag_lowest".into(),
            rows_ok as f64 / kl.len() as f64,
        ));
        let classes: Vec<&String> = present.iter().map(|p| &p.0).collect();
        ev.details.insert(
            "motif_kl_matrix".into(),
            serde_json::json!({ "generated_rows": classes, "heldout_columns": classes, "kl": kl }),
        );
    }
    if let Some(cache) = &s.classifier_cache {
        classifier_metrics(&mut ev, generated, train, held, s, cache)?;
    }
    Ok(ev)
}

/// The labels that name a benchmark cell type whose marker motifs are all among `pwms`, each
/// with the indices of its markers there.
pub fn marker_cells(labels: &[String], pwms: &[Pwm]) -> Vec<(String, Vec<usize>)> {
    labels
        .iter()
        .filter_map(|label| {
            let cell = CellType::parse(label)?;
            let idx: Option<Vec<usize>> = cell
                .markers()
                .iter()
                .map(|mk| pwms.iter().position(|p| p.name.eq_ignore_ascii_case(mk)))
                .collect();
            idx.map(|i| (label.clone(), i))
        })
        .collect()
}

/// For labels that name a benchmark cell type whose markers are all among the motifs:
/// `marker_rate_TYPE` (every marker of the type hit, over all generated sequences) beside the
/// training sequences with and without the label, and the unlabelled (background) ones.
fn marker_rates(
    m: &mut Vec<Metric>,
    train: &[SeqRecord],
    gen_hits: &[Vec<u32>],
    pwms: &[Pwm],
    s: &EvalSettings,
) {
    let cells = marker_cells(s.classes, pwms);
    if cells.is_empty() {
        return;
    }
    let tr: Vec<&[u8]> = train.iter().map(|r| r.bases.as_slice()).collect();
    let train_hits = hit_counts(pwms, &tr, s.motif_pvalue);
    let carries = |h: &[u32], idx: &[usize]| idx.iter().all(|&j| h[j] > 0);
    let rate_of = |hits: &[&Vec<u32>], idx: &[usize]| {
        hits.iter().filter(|h| carries(h, idx)).count() as f64 / hits.len().max(1) as f64
    };
    let all: Vec<&Vec<u32>> = gen_hits.iter().collect();
    for (label, idx) in &cells {
        let (with, without): (Vec<_>, Vec<_>) = train
            .iter()
            .zip(&train_hits)
            .partition(|(r, _)| r.labels.contains(label));
        let with: Vec<&Vec<u32>> = with.into_iter().map(|(_, h)| h).collect();
        let without: Vec<&Vec<u32>> = without.into_iter().map(|(_, h)| h).collect();
        m.push((format!("marker_rate_{label}"), rate_of(&all, idx)));
        m.push((
            format!("marker_rate_{label}_train_with"),
            rate_of(&with, idx),
        ));
        m.push((
            format!("marker_rate_{label}_train_without"),
            rate_of(&without, idx),
        ));
        let background: Vec<&Vec<u32>> = train
            .iter()
            .zip(&train_hits)
            .filter(|(r, _)| r.labels.is_empty())
            .map(|(_, h)| h)
            .collect();
        if !background.is_empty() {
            m.push((
                format!("marker_rate_{label}_train_background"),
                rate_of(&background, idx),
            ));
        }
    }
}

/// `cond_accuracy` (generated sequences the classifier assigns to the class, or label set,
/// they were asked for) beside `classifier_accuracy` (held-out real sequences assigned to
/// their own).
fn classifier_metrics(
    ev: &mut Evaluation,
    generated: &[SeqRecord],
    train: &[SeqRecord],
    held: &[SeqRecord],
    s: &EvalSettings,
    cache: &Path,
) -> anyhow::Result<()> {
    let target = |r: &SeqRecord| -> Option<Prediction> {
        let mut ids: Vec<u32> = r
            .labels
            .iter()
            .map(|l| s.classes.iter().position(|c| c == l).map(|i| i as u32))
            .collect::<Option<_>>()?;
        ids.sort_unstable();
        ids.dedup();
        if s.multi_label {
            Some(Prediction::Set(ids))
        } else {
            (ids.len() == 1).then(|| Prediction::Class(ids[0]))
        }
    };
    let labelled: Vec<(&SeqRecord, Prediction)> =
        train.iter().filter_map(|r| Some((r, target(r)?))).collect();
    if s.classes.len() < 2 || labelled.len() < 2 {
        return Ok(());
    }
    let items = one_hot_tensor(labelled.iter().map(|(r, _)| *r))?;
    let targets = if s.multi_label {
        let sets = labelled
            .iter()
            .map(|(_, p)| {
                if let Prediction::Set(v) = p {
                    v.clone()
                } else {
                    vec![]
                }
            })
            .collect();
        Targets::Sets {
            sets,
            labels: s.classes.len(),
        }
    } else {
        let labels = labelled
            .iter()
            .map(|(_, p)| if let Prediction::Class(c) = p { *c } else { 0 })
            .collect();
        Targets::Classes {
            labels,
            classes: s.classes.len(),
        }
    };
    let net = eval_classifier::load_or_train(
        cache,
        &items,
        &targets,
        Dims::One,
        &CLASSIFIER,
        s.seed,
        false,
        &reverse_complement_some,
    )?;
    let score = |records: &[SeqRecord]| -> anyhow::Result<Option<f64>> {
        let asked: Vec<(&SeqRecord, Prediction)> = records
            .iter()
            .filter_map(|r| Some((r, target(r)?)))
            .collect();
        if asked.is_empty() {
            return Ok(None);
        }
        let (_, predicted) = describe(&net, asked.iter().map(|(r, _)| *r))?;
        let expected: Vec<Prediction> = asked.into_iter().map(|(_, p)| p).collect();
        Ok(Some(eval_classifier::accuracy(&predicted, &expected)))
    };
    if let Some(a) = score(generated)? {
        ev.metrics.push(("cond_accuracy".into(), a));
    }
    if let Some(a) = score(held)? {
        ev.metrics.push(("classifier_accuracy".into(), a));
    }
    Ok(())
}

fn describe<'a>(
    net: &EvalClassifier,
    records: impl Iterator<Item = &'a SeqRecord>,
) -> anyhow::Result<(Vec<f32>, Vec<Prediction>)> {
    Ok(net.describe(&one_hot_tensor(records)?, 512)?)
}

/// `[N, 4, L]` one-hot of records of one length.
fn one_hot_tensor<'a>(records: impl Iterator<Item = &'a SeqRecord>) -> anyhow::Result<Tensor> {
    let mut x = vec![];
    let (mut n, mut len) = (0, None);
    for r in records {
        ensure!(
            len.is_none_or(|l| l == r.bases.len()),
            "record {}: {} bases, the others {}",
            r.id,
            r.bases.len(),
            len.unwrap_or(0)
        );
        len = Some(r.bases.len());
        x.extend(one_hot(&r.bases).with_context(|| format!("record {}", r.id))?);
        n += 1;
    }
    Ok(Tensor::from_vec(x, (n, 4, len.unwrap_or(0)), &Device::Cpu)?)
}

/// Training augmentation: each sequence of a `[B, 4, L]` one-hot batch is replaced by its
/// reverse complement with probability 1/2.
fn reverse_complement_some(x: &Tensor, rng: &mut Rng) -> candle_core::Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks(c * l) {
        if rng.uniform() < 0.5 {
            for ch in 0..c {
                out.extend((0..l).rev().map(|p| row[(c - 1 - ch) * l + p]));
            }
        } else {
            out.extend_from_slice(row);
        }
    }
    Tensor::from_vec(out, (b, c, l), x.device())
}

/// A motif or class name as a metric key: non-alphanumerics become `_`.
pub fn key_of(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
