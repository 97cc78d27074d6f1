//! The `dna` domain: regulatory sequences as one-hot `4 x L` tensors in {-1, 1} (DNA-Diffusion's
//! representation) for the Gaussian process, conditioned on a cell-type field (one class per
//! sequence, or several with `multi_label`), a 1-D UNet denoiser, FASTA output with labels in
//! the headers, and sequence-level evaluation (k-mer spectra, GC content, marker motifs,
//! memorization), each figure beside its held-out floor.

use crate::kmer::{kmer_js_distance, kmer_js_profile, Strands};
use crate::metrics::{gc_distance, memorization, motif_kl_matrix, motif_presence, uniqueness};
use crate::motif::{hit_counts, markers, Pwm};
use crate::shuffle::SplitMix64;
use crate::{
    decode_one_hot, fit_length, one_hot, read_fasta, read_table, write_fasta, FastaOptions, InvalidPolicy, LabelSource,
    LengthPolicy, SeqRecord, TableLabels, TableOptions,
};
use anyhow::{ensure, Context};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use sugarcube_core::cond::{CondSpec, Condition, Field, FieldKind, Value};
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{Batch, DataInfo, Dataset, Domain, Evaluation, Samples, Split};
use sugarcube_core::nn::unet::{Dims, UNet, UNetConfig};

/// The `[data]` table of a DNA experiment. Paths are relative to the working directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnaData {
    /// Training files: FASTA (gzipped or not) or tables (`.csv`, `.tsv`, gzipped or not;
    /// `.parquet` with the `parquet` feature).
    pub train: Vec<PathBuf>,
    /// One label per training file for files that are one class each (janggu's Oct4 and Mafk
    /// peaks); without it labels come from FASTA headers (`labels=A+B`) or `label_column`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_labels: Vec<String>,
    /// Held-out files for evaluation; without them a tenth of `train` is held out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<PathBuf>,
    /// One label per held-out file, as `train_labels`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_labels: Vec<String>,
    /// Sequence length the model sees. Default 200.
    #[serde(default = "default_length")]
    pub length: usize,
    /// `error` (default: a record of another length is an error) or `crop` (centre crop).
    #[serde(default = "default_length_policy")]
    pub length_policy: String,
    /// Characters other than ACGT: `error` (default), `drop` the record, or `replace` N and
    /// IUPAC codes by seeded random bases.
    #[serde(default = "default_invalid")]
    pub invalid: String,
    /// Train a model conditioned on the labels.
    #[serde(default)]
    pub conditional: bool,
    /// The labels form a set per sequence (active in several cell types): a multi-label field
    /// instead of a categorical one.
    #[serde(default)]
    pub multi_label: bool,
    /// The condition field's name. Default `celltype`.
    #[serde(default = "default_field")]
    pub field: String,
    /// Reverse-complement augmentation: every training sequence also appears reverse
    /// complemented (the dataset doubles).
    #[serde(default)]
    pub reverse_complement: bool,
    /// Tables: the sequence column. Default `sequence`.
    #[serde(default = "default_sequence_column")]
    pub sequence_column: String,
    /// Tables: the label column (labels joined by `label_separator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Tables: the separator between several labels in a cell. Default `+`.
    #[serde(default = "default_separator")]
    pub label_separator: String,
}

fn default_length() -> usize {
    200
}
fn default_length_policy() -> String {
    "error".into()
}
fn default_invalid() -> String {
    "error".into()
}
fn default_field() -> String {
    "celltype".into()
}
fn default_sequence_column() -> String {
    "sequence".into()
}
fn default_separator() -> String {
    "+".into()
}

/// The `[eval]` table of a DNA experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnaEval {
    /// Sequences to generate. Default 1000.
    pub n: usize,
    /// Motif hits count at p-values below this (FIMO's default 1e-4).
    pub motif_pvalue: f64,
}

impl Default for DnaEval {
    fn default() -> Self {
        Self { n: 1000, motif_pvalue: 1e-4 }
    }
}

/// The DNA domain.
pub struct Dna;

impl DnaData {
    fn invalid_policy(&self) -> anyhow::Result<InvalidPolicy> {
        self.invalid.parse().map_err(|e| anyhow::anyhow!("data.invalid: {e}"))
    }

    fn length_policy(&self) -> anyhow::Result<LengthPolicy> {
        let p: LengthPolicy = self.length_policy.parse().map_err(|e| anyhow::anyhow!("data.length_policy: {e}"))?;
        ensure!(
            matches!(p, LengthPolicy::Error | LengthPolicy::Crop),
            "data.length_policy = \"{}\": padded sequences need a model with padding masks, which the DNA UNet is not; use \"error\" or \"crop\"",
            self.length_policy
        );
        Ok(p)
    }

    /// Reads a list of files with their optional per-file labels.
    fn read_files(&self, files: &[PathBuf], labels: &[String], key: &str) -> anyhow::Result<Vec<SeqRecord>> {
        ensure!(!files.is_empty(), "data.{key} lists no files");
        ensure!(
            labels.is_empty() || labels.len() == files.len(),
            "data.{key}_labels has {} labels for {} files in data.{key}: give one per file or none",
            labels.len(),
            files.len()
        );
        let invalid = self.invalid_policy()?;
        let mut out = vec![];
        for (i, path) in files.iter().enumerate() {
            let file_label = labels.get(i).cloned();
            let name = path.to_string_lossy().to_lowercase();
            let name = name.strip_suffix(".gz").unwrap_or(&name);
            let loaded = if [".csv", ".tsv", ".tab", ".parquet", ".pq"].iter().any(|e| name.ends_with(e)) {
                let labels = match (&file_label, &self.label_column) {
                    (Some(l), _) => TableLabels::File(l.clone()),
                    (None, Some(c)) => TableLabels::Column { name: c.clone(), separator: self.label_separator.clone() },
                    (None, None) => TableLabels::None,
                };
                let opts = TableOptions { sequence_column: self.sequence_column.clone(), labels, invalid, ..Default::default() };
                read_table(path, &opts)?
            } else {
                let labels = match &file_label {
                    Some(l) => LabelSource::File(l.clone()),
                    None => LabelSource::Header,
                };
                read_fasta(path, &FastaOptions { labels, invalid })?
            };
            let records = fit_length(loaded.records, self.length, self.length_policy()?, &path.display().to_string())?;
            out.extend(records);
        }
        ensure!(!out.is_empty(), "data.{key}: the files hold no sequences");
        Ok(out)
    }

    /// The training records and the held-out ones (the test files, or a seeded tenth of
    /// the training files).
    pub fn load(&self, seed: u64) -> anyhow::Result<(Vec<SeqRecord>, Vec<SeqRecord>)> {
        let train = self.read_files(&self.train, &self.train_labels, "train")?;
        if !self.test.is_empty() {
            return Ok((train, self.read_files(&self.test, &self.test_labels, "test")?));
        }
        let mut idx: Vec<usize> = (0..train.len()).collect();
        SplitMix64::new(seed ^ 0xD4A5_E1D0).shuffle(&mut idx);
        let held = (train.len() / 10).max(1);
        ensure!(train.len() > held, "data.train: {} sequences are too few to hold a tenth out; give data.test", train.len());
        let mut is_held = vec![false; train.len()];
        for &i in &idx[..held] {
            is_held[i] = true;
        }
        let (mut kept, mut out) = (vec![], vec![]);
        for (r, h) in train.into_iter().zip(is_held) {
            if h {
                out.push(r)
            } else {
                kept.push(r)
            }
        }
        Ok((kept, out))
    }

    /// The condition spec the labels of `records` give (empty when unconditional).
    pub fn spec(&self, records: &[SeqRecord]) -> anyhow::Result<CondSpec> {
        if !self.conditional {
            return Ok(CondSpec::default());
        }
        let labels = crate::collect_labels(records);
        ensure!(labels.len() >= 2, "data.conditional = true needs at least two labels, the training data has {:?}", labels);
        let field = if self.multi_label { Field::multi_label(&self.field, labels) } else { Field::categorical(&self.field, labels) };
        Ok(CondSpec { fields: vec![field] })
    }
}

/// A record's condition under `spec`.
fn condition_of(spec: &CondSpec, r: &SeqRecord) -> anyhow::Result<Condition> {
    let Some(field) = spec.fields.first() else { return Ok(Condition(vec![])) };
    let id = |l: &str| -> anyhow::Result<u32> {
        field.names().iter().position(|x| x == l).map(|i| i as u32).with_context(|| format!("record {}: label `{l}` is not one of the training labels", r.id))
    };
    Ok(Condition(vec![match &field.kind {
        FieldKind::Categorical { .. } => {
            ensure!(r.labels.len() == 1, "record {} has {} labels; a categorical field needs exactly one (set data.multi_label = true for sets)", r.id, r.labels.len());
            Value::Class(id(&r.labels[0])?)
        }
        _ => {
            let mut ids = r.labels.iter().map(|l| id(l)).collect::<anyhow::Result<Vec<_>>>()?;
            ids.sort();
            ids.dedup();
            Value::Labels(ids)
        }
    }]))
}

/// The label names of a condition, for FASTA headers.
fn labels_of(spec: &CondSpec, c: &Condition) -> Vec<String> {
    let Some(field) = spec.fields.first() else { return vec![] };
    let names = field.names();
    match c.0.first() {
        Some(Value::Class(i)) => names.get(*i as usize).cloned().into_iter().collect(),
        Some(Value::Labels(ids)) => ids.iter().filter_map(|&i| names.get(i as usize).cloned()).collect(),
        _ => vec![],
    }
}

struct DnaDataset {
    x: Vec<f32>,
    conds: Vec<Condition>,
    n: usize,
    length: usize,
    reverse_complement: bool,
    info: DataInfo,
}

impl Dataset for DnaDataset {
    fn len(&self) -> usize {
        self.n * if self.reverse_complement { 2 } else { 1 }
    }

    fn info(&self) -> DataInfo {
        self.info.clone()
    }

    /// Index `i < n` is record `i`; `n + i` its reverse complement (with augmentation).
    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let l = self.length;
        let mut x = Vec::with_capacity(indices.len() * 4 * l);
        let mut cond = Vec::with_capacity(indices.len());
        for &i in indices {
            let (r, rc) = (i % self.n, i >= self.n);
            let one = &self.x[r * 4 * l..(r + 1) * 4 * l];
            if rc {
                // positions reversed, channel c (A C G T) swapped with 3 - c
                for c in 0..4 {
                    x.extend((0..l).rev().map(|p| one[(3 - c) * l + p]));
                }
            } else {
                x.extend_from_slice(one);
            }
            cond.push(self.conds[r].clone());
        }
        Ok(Batch { x0: Tensor::from_vec(x, (indices.len(), 4, l), device)?, cond, lengths: None })
    }
}

impl Domain for Dna {
    const NAME: &'static str = "dna";
    type Data = DnaData;
    type Model = UNetConfig;
    type Eval = DnaEval;

    fn dataset(data: &DnaData, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>> {
        let (train, held) = data.load(seed)?;
        let spec = data.spec(&train)?;
        let records = if split == Split::Train { train } else { held };
        let conds = records.iter().map(|r| condition_of(&spec, r)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut x = Vec::with_capacity(records.len() * 4 * data.length);
        for r in &records {
            x.extend(one_hot(&r.bases).with_context(|| format!("record {}", r.id))?);
        }
        let info = DataInfo::new(vec![4, data.length]).with_cond(spec);
        let reverse_complement = data.reverse_complement && split == Split::Train;
        Ok(Box::new(DnaDataset { x, conds, n: records.len(), length: data.length, reverse_complement, info }))
    }

    fn denoiser(model: &UNetConfig, info: &DataInfo, vb: VarBuilder) -> anyhow::Result<Box<dyn Denoiser>> {
        ensure!(info.item_shape.len() == 2 && info.item_shape[0] == 4, "DNA data must be [4, L], got {:?}", info.item_shape);
        let unet = UNet::new(vb, model, Dims::One, 4, 4, &info.cond)?;
        let l = info.item_shape[1];
        ensure!(
            l.is_multiple_of(unet.size_multiple()),
            "data.length = {l} is not a multiple of {}, which this UNet's levels need (model.channel_mults and patch_size)",
            unet.size_multiple()
        );
        Ok(Box::new(unet))
    }

    /// Writes `samples.fa`: one record per sample (`sample-NNNNN`), decoded by argmax, its
    /// condition's labels in the header (`labels=A+B`).
    fn write_samples(_data: &DnaData, info: &DataInfo, samples: &Samples, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let records = decode(info, samples)?;
        let path = dir.join("samples.fa");
        write_fasta(&path, &records)?;
        Ok(vec![path])
    }

    fn command() -> Option<clap::Command> {
        use clap::{value_parser, Arg, Command};
        Some(
            Command::new("dna").about("DNA data tools").subcommand_required(true).subcommand(
                Command::new("benchmark")
                    .about("Write the planted-motif benchmark (four cell types, known marker motifs planted into real background windows) as train.fa and test.fa")
                    .arg(Arg::new("background").required(true).value_parser(value_parser!(PathBuf)).help("FASTA of background sequences (e.g. Biostrings' dm3_upstream2000.fa.gz); records with N are left out"))
                    .arg(Arg::new("out").required(true).value_parser(value_parser!(PathBuf)).help("output folder"))
                    .arg(Arg::new("count").long("count").default_value("8000").value_parser(value_parser!(usize)).help("training sequences"))
                    .arg(Arg::new("test-count").long("test-count").default_value("2000").value_parser(value_parser!(usize)).help("held-out sequences"))
                    .arg(Arg::new("length").long("length").default_value("200").value_parser(value_parser!(usize)))
                    .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64))),
            ),
        )
    }

    fn run_command(matches: &clap::ArgMatches) -> anyhow::Result<()> {
        let Some(("benchmark", m)) = matches.subcommand() else { anyhow::bail!("expected a dna subcommand: benchmark") };
        let get = |k: &str| *m.get_one::<usize>(k).expect("has a default");
        let out = m.get_one::<PathBuf>("out").expect("required");
        let files = write_benchmark(
            m.get_one::<PathBuf>("background").expect("required"),
            out,
            get("count"),
            get("test-count"),
            get("length"),
            *m.get_one::<u64>("seed").expect("has a default"),
        )?;
        for f in files {
            println!("wrote {}", f.display());
        }
        Ok(())
    }

    fn eval_samples(eval: &DnaEval) -> usize {
        eval.n
    }

    /// - `kmer6_js` (`_floor`, `_ratio`): Jensen-Shannon distance of 6-mer spectra, samples vs
    ///   training set; the floor is as many held-out sequences vs the training set;
    /// - `kmer_js_mean` (`_floor`): the same averaged over k = 1..7;
    /// - `gc_distance` (`_floor`): 1-D Wasserstein distance between GC-content distributions;
    /// - `memorized_fraction` (`_floor`): sequences at least 95% identical to a training one;
    /// - `uniqueness`;
    /// - per bundled marker motif, `motif_rate_NAME` (`_floor`): the fraction of sequences with a
    ///   hit at `[eval] motif_pvalue`;
    /// - for labels that name a benchmark cell type ([`crate::benchmark::CellType`]),
    ///   `marker_rate_TYPE`: the fraction of all samples carrying every marker motif of the type
    ///   (for an instruction run such as `--cond celltype=HepG2+K562 --not celltype=GM12878`,
    ///   the rate of each requested and excluded type), beside `marker_rate_TYPE_train_with`
    ///   and `_train_without`, the training sequences that have the label and those that do not;
    /// - for conditional runs, `motif_kl_diag` / `motif_kl_offdiag`: the mean diagonal and
    ///   off-diagonal entries of the class x class KL matrix of motif presence (generated class
    ///   vs held-out class, DNA-Diffusion's measure), the matrix in eval-details.json.
    fn evaluate(data: &DnaData, eval: &DnaEval, seed: u64, samples: &Samples) -> anyhow::Result<Evaluation> {
        let (train, held) = data.load(seed)?;
        let spec = data.spec(&train)?;
        let info = DataInfo::new(vec![4, data.length]).with_cond(spec.clone());
        let generated = decode(&info, samples)?;
        let gen: Vec<&[u8]> = generated.iter().map(|r| r.bases.as_slice()).collect();
        let n = gen.len().min(held.len());
        let floor: Vec<&[u8]> = held[..n].iter().map(|r| r.bases.as_slice()).collect();
        let tr: Vec<&[u8]> = train.iter().map(|r| r.bases.as_slice()).collect();
        let mut m: Vec<(String, f64)> = vec![];
        let push = |m: &mut Vec<(String, f64)>, name: &str, v: f64, f: f64, ratio: bool| {
            m.push((name.to_string(), v));
            m.push((format!("{name}_floor"), f));
            if ratio {
                m.push((format!("{name}_ratio"), v / f.max(1e-12)));
            }
        };
        push(&mut m, "kmer6_js", kmer_js_distance(&gen, &tr, 6, Strands::Forward)?, kmer_js_distance(&floor, &tr, 6, Strands::Forward)?, true);
        push(&mut m, "kmer_js_mean", kmer_js_profile(&gen, &tr, 7, Strands::Forward)?.1, kmer_js_profile(&floor, &tr, 7, Strands::Forward)?.1, true);
        push(&mut m, "gc_distance", gc_distance(&gen, &tr)?, gc_distance(&floor, &tr)?, true);
        push(
            &mut m,
            "memorized_fraction",
            memorization(&gen, &tr, 0.95)?.fraction_above,
            memorization(&floor, &tr, 0.95)?.fraction_above,
            false,
        );
        m.push(("uniqueness".into(), uniqueness(&gen)));
        let matrices = markers()?;
        let pwms: Vec<Pwm> = matrices.iter().map(|c| c.default_pwm()).collect();
        let gen_hits = hit_counts(&pwms, &gen, eval.motif_pvalue);
        let held_hits = hit_counts(&pwms, &floor, eval.motif_pvalue);
        let rate = |hits: &[Vec<u32>], j: usize| hits.iter().filter(|h| h[j] > 0).count() as f64 / hits.len().max(1) as f64;
        for (j, p) in pwms.iter().enumerate() {
            let name: String = p.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            push(&mut m, &format!("motif_rate_{name}"), rate(&gen_hits, j), rate(&held_hits, j), false);
        }
        // marker rates of the labels that name a benchmark cell type: all its markers hit
        let cell_markers: Vec<(String, Vec<usize>)> = spec
            .fields
            .first()
            .map(|f| f.names().to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|label| {
                let cell = crate::benchmark::CellType::parse(&label)?;
                let idx: Option<Vec<usize>> =
                    cell.markers().iter().map(|mk| matrices.iter().position(|c| c.name.eq_ignore_ascii_case(mk))).collect();
                idx.map(|i| (label, i))
            })
            .collect();
        if !cell_markers.is_empty() {
            let train_hits = hit_counts(&pwms, &tr, eval.motif_pvalue);
            let carries = |h: &[u32], idx: &[usize]| idx.iter().all(|&j| h[j] > 0);
            let rate_of = |hits: &[&Vec<u32>], idx: &[usize]| hits.iter().filter(|h| carries(h, idx)).count() as f64 / hits.len().max(1) as f64;
            let all: Vec<&Vec<u32>> = gen_hits.iter().collect();
            for (label, idx) in &cell_markers {
                let (with, without): (Vec<_>, Vec<_>) = train.iter().zip(&train_hits).partition(|(r, _)| r.labels.contains(label));
                let with: Vec<&Vec<u32>> = with.into_iter().map(|(_, h)| h).collect();
                let without: Vec<&Vec<u32>> = without.into_iter().map(|(_, h)| h).collect();
                m.push((format!("marker_rate_{label}"), rate_of(&all, idx)));
                m.push((format!("marker_rate_{label}_train_with"), rate_of(&with, idx)));
                m.push((format!("marker_rate_{label}_train_without"), rate_of(&without, idx)));
            }
        }
        let mut ev = Evaluation::of(m);
        if let Some(field) = spec.fields.first() {
            // motif presence per class: generated by requested class, held out by true class
            let k = field.names().len();
            let by_class = |records: &[SeqRecord], hits: &[Vec<u32>], conds: &[Condition]| -> Vec<Vec<u64>> {
                (0..k as u32)
                    .map(|c| {
                        let rows: Vec<Vec<u32>> = records
                            .iter()
                            .zip(hits)
                            .zip(conds)
                            .filter(|(_, cond)| match cond.0.first() {
                                Some(Value::Class(i)) => *i == c,
                                Some(Value::Labels(ids)) => ids == &[c],
                                _ => false,
                            })
                            .map(|((_, h), _)| h.clone())
                            .collect();
                        motif_presence(&rows)
                    })
                    .collect()
            };
            let held_conds = held[..n].iter().map(|r| condition_of(&spec, r)).collect::<anyhow::Result<Vec<_>>>()?;
            let g = by_class(&generated, &gen_hits, samples.conditions);
            let h = by_class(&held[..n], &held_hits, &held_conds);
            let present: Vec<usize> = (0..k).filter(|&c| g[c].iter().sum::<u64>() > 0 || h[c].iter().sum::<u64>() > 0).collect();
            if present.len() >= 2 && !samples.conditions.is_empty() {
                let g: Vec<Vec<u64>> = present.iter().map(|&c| g[c].clone()).collect();
                let h: Vec<Vec<u64>> = present.iter().map(|&c| h[c].clone()).collect();
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
                ev.metrics.push(("motif_kl_diag".into(), diag / kl.len() as f64));
                ev.metrics.push(("motif_kl_offdiag".into(), off / noff.max(1) as f64));
                let names: Vec<&String> = present.iter().map(|&c| &field.names()[c]).collect();
                ev.details.insert("motif_kl_matrix".into(), serde_json::json!({ "generated_rows": names, "heldout_columns": names, "kl": kl }));
            }
        }
        Ok(ev)
    }
}

/// Writes the planted-motif benchmark ([`crate::benchmark`]) into `out` as `train.fa` and
/// `test.fa` (labels in the headers; background-only sequences carry none), the training
/// windows cut from the first 90% of the background records and the held-out ones from the
/// rest, so no window is shared.
pub fn write_benchmark(background: &Path, out: &Path, count: usize, test_count: usize, length: usize, seed: u64) -> anyhow::Result<Vec<PathBuf>> {
    let loaded = read_fasta(background, &FastaOptions { labels: LabelSource::None, invalid: InvalidPolicy::Drop })?;
    let seqs: Vec<Vec<u8>> = loaded.records.into_iter().map(|r| r.bases).filter(|b| b.len() >= length).collect();
    ensure!(seqs.len() >= 10, "{}: {} records of at least {length} bases without N; the benchmark needs at least 10", background.display(), seqs.len());
    let split = seqs.len() * 9 / 10;
    let motifs = markers()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = vec![];
    for (name, part, n, s) in [("train.fa", &seqs[..split], count, seed), ("test.fa", &seqs[split..], test_count, seed.wrapping_add(1))] {
        let cfg = crate::benchmark::BenchmarkConfig { length, count: n, seed: s, ..Default::default() };
        let records: Vec<SeqRecord> = crate::benchmark::generate(&cfg, part, &motifs)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| SeqRecord::new(format!("seq{i:05}"), r.bases, r.labels.iter().map(|c| c.name().to_string()).collect()))
            .collect();
        let path = out.join(name);
        write_fasta(&path, &records)?;
        files.push(path);
    }
    Ok(files)
}

/// The generated samples as records, decoded by argmax, with their conditions' labels.
fn decode(info: &DataInfo, samples: &Samples) -> anyhow::Result<Vec<SeqRecord>> {
    let x = samples.x.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
    let (n, c, l) = x.dims3()?;
    ensure!(c == 4, "DNA samples must be [N, 4, L], got {:?}", x.dims());
    let flat = x.flatten_all()?.to_vec1::<f32>()?;
    (0..n)
        .map(|i| {
            let bases = decode_one_hot(&flat[i * 4 * l..(i + 1) * 4 * l], l)?;
            let labels = samples.conditions.get(i).map(|c| labels_of(&info.cond, c)).unwrap_or_default();
            Ok(SeqRecord::new(format!("sample-{i:05}"), bases, labels))
        })
        .collect()
}
