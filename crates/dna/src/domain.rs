//! The `dna` domain: regulatory sequences as one-hot `4 x L` tensors in {-1, 1} (DNA-Diffusion's
//! representation) for the Gaussian process, conditioned on a cell-type field (one class per
//! sequence, or several with `multi_label`), a 1-D UNet denoiser, FASTA output with labels in
//! the headers, and sequence-level evaluation (k-mer spectra, GC content, marker motifs,
//! memorization), each figure beside its held-out floor.

use crate::evaluate::{self, EvalSettings};
use crate::model::TokenUNet;
use crate::motif::{markers, read_jaspar, CountMatrix};
use crate::shuffle::SplitMix64;
use crate::{
    decode_one_hot, decode_tokens, fit_length, one_hot, read_fasta, read_table, tokens,
    write_fasta, FastaOptions, InvalidPolicy, LabelSource, LengthPolicy, SeqRecord, TableLabels,
    TableOptions,
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
    /// How the model sees a sequence: `one_hot` (default; `4 x L` in {-1, 1}, for the
    /// Gaussian and EDM processes) or `tokens` (`L` tokens 0..4, for the masked process).
    #[serde(default)]
    pub representation: Representation,
}

/// How sequences are fed to the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Representation {
    /// `4 x L` one-hot with 0 written as -1 (DNA-Diffusion), for continuous processes.
    #[default]
    OneHot,
    /// `L` tokens 0..4 (A, C, G, T), for masked (absorbing-state) diffusion.
    Tokens,
}

impl Default for DnaData {
    /// No files; every other key at its default.
    fn default() -> Self {
        Self {
            train: vec![],
            train_labels: vec![],
            test: vec![],
            test_labels: vec![],
            length: default_length(),
            length_policy: default_length_policy(),
            invalid: default_invalid(),
            conditional: false,
            multi_label: false,
            field: default_field(),
            reverse_complement: false,
            sequence_column: default_sequence_column(),
            label_column: None,
            label_separator: default_separator(),
            representation: Representation::OneHot,
        }
    }
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
    /// A JASPAR-format file of the motifs to scan for; default: the bundled marker motifs
    /// (`crates/dna/data/markers.jaspar`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motifs: Option<PathBuf>,
    /// Train (once, cached beside the training data) a CNN classifier on the real labelled
    /// sequences, for `cond_accuracy` and `classifier_accuracy`. Default true.
    pub classifier: bool,
    /// The classifier's seed. Default 0.
    pub classifier_seed: u64,
}

impl Default for DnaEval {
    fn default() -> Self {
        Self {
            n: 1000,
            motif_pvalue: 1e-4,
            motifs: None,
            classifier: true,
            classifier_seed: 0,
        }
    }
}

impl DnaEval {
    /// The motifs to scan for.
    pub fn motifs(&self) -> anyhow::Result<Vec<CountMatrix>> {
        match &self.motifs {
            Some(p) => read_jaspar(p).with_context(|| "eval.motifs"),
            None => markers(),
        }
    }
}

/// The DNA domain.
pub struct Dna;

impl DnaData {
    fn invalid_policy(&self) -> anyhow::Result<InvalidPolicy> {
        self.invalid
            .parse()
            .map_err(|e| anyhow::anyhow!("data.invalid: {e}"))
    }

    fn length_policy(&self) -> anyhow::Result<LengthPolicy> {
        let p: LengthPolicy = self
            .length_policy
            .parse()
            .map_err(|e| anyhow::anyhow!("data.length_policy: {e}"))?;
        ensure!(
            matches!(p, LengthPolicy::Error | LengthPolicy::Crop),
            "data.length_policy = \"{}\": padded sequences need a model with padding masks, which the DNA UNet is not; use \"error\" or \"crop\"",
            self.length_policy
        );
        Ok(p)
    }

    /// Reads a list of files with their optional per-file labels.
    fn read_files(
        &self,
        files: &[PathBuf],
        labels: &[String],
        key: &str,
    ) -> anyhow::Result<Vec<SeqRecord>> {
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
            let loaded = if [".csv", ".tsv", ".tab", ".parquet", ".pq"]
                .iter()
                .any(|e| name.ends_with(e))
            {
                let labels = match (&file_label, &self.label_column) {
                    (Some(l), _) => TableLabels::File(l.clone()),
                    (None, Some(c)) => TableLabels::Column {
                        name: c.clone(),
                        separator: self.label_separator.clone(),
                    },
                    (None, None) => TableLabels::None,
                };
                let opts = TableOptions {
                    sequence_column: self.sequence_column.clone(),
                    labels,
                    invalid,
                    ..Default::default()
                };
                read_table(path, &opts)?
            } else {
                let labels = match &file_label {
                    Some(l) => LabelSource::File(l.clone()),
                    None => LabelSource::Header,
                };
                read_fasta(path, &FastaOptions { labels, invalid })?
            };
            let records = fit_length(
                loaded.records,
                self.length,
                self.length_policy()?,
                &path.display().to_string(),
            )?;
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
            return Ok((
                train,
                self.read_files(&self.test, &self.test_labels, "test")?,
            ));
        }
        let mut idx: Vec<usize> = (0..train.len()).collect();
        SplitMix64::new(seed ^ 0xD4A5_E1D0).shuffle(&mut idx);
        let held = (train.len() / 10).max(1);
        ensure!(
            train.len() > held,
            "data.train: {} sequences are too few to hold a tenth out; give data.test",
            train.len()
        );
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

    /// What the model sees of an item under this table, with the condition spec `cond`.
    pub fn info(&self, cond: CondSpec) -> DataInfo {
        match self.representation {
            Representation::OneHot => DataInfo::new(vec![4, self.length]).with_cond(cond),
            Representation::Tokens => DataInfo {
                vocab: Some(4),
                ..DataInfo::new(vec![self.length]).with_cond(cond)
            },
        }
    }

    /// The condition spec the labels of `records` give (empty when unconditional).
    pub fn spec(&self, records: &[SeqRecord]) -> anyhow::Result<CondSpec> {
        if !self.conditional {
            return Ok(CondSpec::default());
        }
        let labels = crate::collect_labels(records);
        ensure!(
            labels.len() >= 2,
            "data.conditional = true needs at least two labels, the training data has {:?}",
            labels
        );
        let field = if self.multi_label {
            Field::multi_label(&self.field, labels)
        } else {
            Field::categorical(&self.field, labels)
        };
        Ok(CondSpec {
            fields: vec![field],
        })
    }
}

/// A record's condition under `spec`.
fn condition_of(spec: &CondSpec, r: &SeqRecord) -> anyhow::Result<Condition> {
    let Some(field) = spec.fields.first() else {
        return Ok(Condition(vec![]));
    };
    let id = |l: &str| -> anyhow::Result<u32> {
        field
            .names()
            .iter()
            .position(|x| x == l)
            .map(|i| i as u32)
            .with_context(|| {
                format!(
                    "record {}: label `{l}` is not one of the training labels",
                    r.id
                )
            })
    };
    Ok(Condition(vec![match &field.kind {
        FieldKind::Categorical { .. } => {
            ensure!(r.labels.len() == 1, "record {} has {} labels; a categorical field needs exactly one (set data.multi_label = true for sets)", r.id, r.labels.len());
            Value::Class(id(&r.labels[0])?)
        }
        _ => {
            let mut ids = r
                .labels
                .iter()
                .map(|l| id(l))
                .collect::<anyhow::Result<Vec<_>>>()?;
            ids.sort();
            ids.dedup();
            Value::Labels(ids)
        }
    }]))
}

/// The label names of a condition, for FASTA headers.
fn labels_of(spec: &CondSpec, c: &Condition) -> Vec<String> {
    let Some(field) = spec.fields.first() else {
        return vec![];
    };
    let names = field.names();
    match c.0.first() {
        Some(Value::Class(i)) => names.get(*i as usize).cloned().into_iter().collect(),
        Some(Value::Labels(ids)) => ids
            .iter()
            .filter_map(|&i| names.get(i as usize).cloned())
            .collect(),
        _ => vec![],
    }
}

/// The encoded records: one-hot rows of `4 L` values, or token rows of `L`.
enum Encoded {
    OneHot(Vec<f32>),
    Tokens(Vec<u32>),
}

struct DnaDataset {
    x: Encoded,
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
        let b = indices.len();
        let cond = indices
            .iter()
            .map(|&i| self.conds[i % self.n].clone())
            .collect();
        let x0 = match &self.x {
            Encoded::OneHot(all) => {
                let mut x = Vec::with_capacity(b * 4 * l);
                for &i in indices {
                    let (r, rc) = (i % self.n, i >= self.n);
                    let one = &all[r * 4 * l..(r + 1) * 4 * l];
                    if rc {
                        // positions reversed, channel c (A C G T) swapped with 3 - c
                        for c in 0..4 {
                            x.extend((0..l).rev().map(|p| one[(3 - c) * l + p]));
                        }
                    } else {
                        x.extend_from_slice(one);
                    }
                }
                Tensor::from_vec(x, (b, 4, l), device)?
            }
            Encoded::Tokens(all) => {
                let mut x = Vec::with_capacity(b * l);
                for &i in indices {
                    let (r, rc) = (i % self.n, i >= self.n);
                    let one = &all[r * l..(r + 1) * l];
                    if rc {
                        // base k (A C G T) complemented to 3 - k, positions reversed
                        x.extend(one.iter().rev().map(|&k| 3 - k));
                    } else {
                        x.extend_from_slice(one);
                    }
                }
                Tensor::from_vec(x, (b, l), device)?
            }
        };
        Ok(Batch {
            x0,
            cond,
            lengths: None,
        })
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
        let conds = records
            .iter()
            .map(|r| condition_of(&spec, r))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let x = match data.representation {
            Representation::OneHot => {
                let mut x = Vec::with_capacity(records.len() * 4 * data.length);
                for r in &records {
                    x.extend(one_hot(&r.bases).with_context(|| format!("record {}", r.id))?);
                }
                Encoded::OneHot(x)
            }
            Representation::Tokens => {
                let mut x = Vec::with_capacity(records.len() * data.length);
                for r in &records {
                    x.extend(tokens(&r.bases, 4).with_context(|| format!("record {}", r.id))?);
                }
                Encoded::Tokens(x)
            }
        };
        let info = data.info(spec);
        let reverse_complement = data.reverse_complement && split == Split::Train;
        Ok(Box::new(DnaDataset {
            x,
            conds,
            n: records.len(),
            length: data.length,
            reverse_complement,
            info,
        }))
    }

    /// The 1-D UNet on one-hot sequences, or for tokens the same UNet behind [`TokenUNet`].
    fn denoiser(
        model: &UNetConfig,
        info: &DataInfo,
        vb: VarBuilder,
    ) -> anyhow::Result<Box<dyn Denoiser>> {
        let check = |l: usize, multiple: usize| {
            ensure!(
                l.is_multiple_of(multiple),
                "data.length = {l} is not a multiple of {multiple}, which this UNet's levels need (model.channel_mults and patch_size)"
            );
            Ok(())
        };
        match (info.vocab, info.item_shape.as_slice()) {
            (Some(4), &[l]) => {
                let net = TokenUNet::new(vb, model, &info.cond)?;
                check(l, net.size_multiple())?;
                Ok(Box::new(net))
            }
            (None, &[4, l]) => {
                let unet = UNet::new(vb, model, Dims::One, 4, 4, &info.cond)?;
                check(l, unet.size_multiple())?;
                Ok(Box::new(unet))
            }
            _ => anyhow::bail!(
                "DNA data must be [4, L] one-hot or [L] tokens of 4 bases, got {:?} (vocab {:?})",
                info.item_shape,
                info.vocab
            ),
        }
    }

    /// Writes `samples.fa`: one record per sample (`sample-NNNNN`), decoded by argmax, its
    /// condition's labels in the header (`labels=A+B`).
    fn write_samples(
        _data: &DnaData,
        info: &DataInfo,
        samples: &Samples,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let records = decode(info, samples)?;
        let path = dir.join("samples.fa");
        write_fasta(&path, &records)?;
        Ok(vec![path])
    }

    fn command() -> Option<clap::Command> {
        use clap::{value_parser, Arg, ArgAction, Command};
        let path = || value_parser!(PathBuf);
        Some(
            Command::new("dna")
                .about("DNA data tools")
                .subcommand_required(true)
                .subcommand(
                    Command::new("benchmark")
                        .about("Write the planted-motif benchmark (four cell types, known marker motifs planted into real background windows) as train.fa and test.fa")
                        .arg(Arg::new("background").required(true).value_parser(path()).help("FASTA of background sequences (e.g. Biostrings' dm3_upstream2000.fa.gz); records with N are left out"))
                        .arg(Arg::new("out").required(true).value_parser(path()).help("output folder"))
                        .arg(Arg::new("count").long("count").default_value("8000").value_parser(value_parser!(usize)).help("training sequences"))
                        .arg(Arg::new("test-count").long("test-count").default_value("2000").value_parser(value_parser!(usize)).help("held-out sequences"))
                        .arg(Arg::new("length").long("length").default_value("200").value_parser(value_parser!(usize)))
                        .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64))),
                )
                .subcommand(
                    Command::new("eval")
                        .about("Score generated sequences (FASTA, labels in the headers as `labels=A+B`) against real ones, every figure beside its held-out floor")
                        .arg(Arg::new("generated").required(true).value_parser(path()).help("FASTA of generated sequences, all of one length"))
                        .arg(Arg::new("reference").long("reference").required(true).action(ArgAction::Append).value_parser(path()).help("training sequences (FASTA or CSV/TSV table; repeatable)"))
                        .arg(Arg::new("reference-label").long("reference-label").action(ArgAction::Append).help("one label per --reference file, in order, for files of one class each (default: labels from the FASTA headers)"))
                        .arg(Arg::new("test").long("test").action(ArgAction::Append).value_parser(path()).help("held-out real sequences for the floors (repeatable); default: a seeded tenth of the reference"))
                        .arg(Arg::new("test-label").long("test-label").action(ArgAction::Append).help("one label per --test file, in order"))
                        .arg(Arg::new("motifs").long("motifs").value_parser(path()).help("JASPAR-format motifs to scan for (default: the bundled marker motifs)"))
                        .arg(Arg::new("pvalue").long("pvalue").default_value("1e-4").value_parser(value_parser!(f64)).help("motif hit p-value threshold"))
                        .arg(Arg::new("crop").long("crop").action(ArgAction::SetTrue).help("centre-crop longer real sequences to the generated length (default: other lengths are an error)"))
                        .arg(Arg::new("no-classifier").long("no-classifier").action(ArgAction::SetTrue).help("skip the CNN classifier (cond_accuracy, classifier_accuracy)"))
                        .arg(Arg::new("out").long("out").value_parser(path()).help("folder for eval.json and eval-details.json"))
                        .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64)).help("seed of the held-out split and the classifier")),
                ),
        )
    }

    fn run_command(matches: &clap::ArgMatches) -> anyhow::Result<()> {
        match matches.subcommand() {
            Some(("benchmark", m)) => {
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
            Some(("eval", m)) => {
                let files = |k: &str| {
                    m.get_many::<PathBuf>(k)
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default()
                };
                let labels = |k: &str| {
                    m.get_many::<String>(k)
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default()
                };
                let args = EvalArgs {
                    generated: m.get_one::<PathBuf>("generated").expect("required").clone(),
                    reference: files("reference"),
                    reference_labels: labels("reference-label"),
                    test: files("test"),
                    test_labels: labels("test-label"),
                    motifs: m.get_one::<PathBuf>("motifs").cloned(),
                    pvalue: *m.get_one::<f64>("pvalue").expect("has a default"),
                    crop: m.get_flag("crop"),
                    classifier: !m.get_flag("no-classifier"),
                    seed: *m.get_one::<u64>("seed").expect("has a default"),
                };
                let ev = eval_files(&args)?;
                for (k, v) in &ev.metrics {
                    println!("{k:<40} {v:.6}");
                }
                if let Some(out) = m.get_one::<PathBuf>("out") {
                    std::fs::create_dir_all(out)
                        .with_context(|| format!("cannot create {}", out.display()))?;
                    sugarcube_core::run::write_evaluation(out, &ev)?;
                    println!("wrote {}", out.join("eval.json").display());
                }
                Ok(())
            }
            _ => anyhow::bail!("expected a dna subcommand: benchmark or eval"),
        }
    }

    fn report(
        ctx: &sugarcube_core::report::ReportContext<Self>,
    ) -> anyhow::Result<Vec<sugarcube_core::report::Section>> {
        crate::report::sections(ctx)
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
    fn evaluate(
        data: &DnaData,
        eval: &DnaEval,
        seed: u64,
        samples: &Samples,
    ) -> anyhow::Result<Evaluation> {
        let (train, held) = data.load(seed)?;
        let spec = data.spec(&train)?;
        let generated = decode(&data.info(spec.clone()), samples)?;
        let motifs = eval.motifs()?;
        let classes = spec
            .fields
            .first()
            .map(|f| f.names().to_vec())
            .unwrap_or_default();
        let dir = data.train[0].parent().unwrap_or(Path::new("."));
        let classifier_cache = (eval.classifier && !classes.is_empty()).then(|| {
            evaluate::classifier_cache(
                dir,
                &train,
                &classes,
                data.multi_label,
                eval.classifier_seed,
            )
        });
        let settings = EvalSettings {
            motif_pvalue: eval.motif_pvalue,
            motifs: &motifs,
            classes: &classes,
            multi_label: data.multi_label,
            classifier_cache,
            seed: eval.classifier_seed,
        };
        evaluate::evaluate(&generated, &train, &held, &settings)
    }
}

/// What `sugarcube dna eval` is asked to score.
#[derive(Clone, Debug)]
pub struct EvalArgs {
    /// The generated FASTA (labels in the headers: the class each sequence was asked for).
    pub generated: PathBuf,
    /// Training sequences.
    pub reference: Vec<PathBuf>,
    /// One label per reference file (none: labels from the headers).
    pub reference_labels: Vec<String>,
    /// Held-out sequences (none: a seeded tenth of the reference).
    pub test: Vec<PathBuf>,
    /// One label per held-out file.
    pub test_labels: Vec<String>,
    /// JASPAR motifs (none: the bundled markers).
    pub motifs: Option<PathBuf>,
    /// Motif hit threshold.
    pub pvalue: f64,
    /// Centre-crop longer real sequences.
    pub crop: bool,
    /// Train and use the evaluation classifier.
    pub classifier: bool,
    /// Seed of the held-out split and the classifier.
    pub seed: u64,
}

/// Scores a FASTA of generated sequences against real ones ([`evaluate::evaluate`]); the
/// classes are the reference's labels, multi-label when any reference sequence has other than
/// one label.
pub fn eval_files(args: &EvalArgs) -> anyhow::Result<Evaluation> {
    let what = args.generated.display().to_string();
    let generated = read_fasta(
        &args.generated,
        &FastaOptions {
            labels: LabelSource::Header,
            invalid: InvalidPolicy::Error,
        },
    )?
    .records;
    let length = generated
        .first()
        .with_context(|| format!("{what}: no sequences"))?
        .bases
        .len();
    if let Some(r) = generated.iter().find(|r| r.bases.len() != length) {
        anyhow::bail!("{what}: record {} has {} bases, the first has {length}; generated sequences must have one length", r.id, r.bases.len());
    }
    let data = DnaData {
        train: args.reference.clone(),
        train_labels: args.reference_labels.clone(),
        test: args.test.clone(),
        test_labels: args.test_labels.clone(),
        length,
        length_policy: if args.crop { "crop" } else { "error" }.into(),
        ..DnaData::default()
    };
    let (train, held) = data.load(args.seed)?;
    let classes = crate::collect_labels(&train);
    let classes = if classes.len() >= 2 { classes } else { vec![] };
    let multi_label = train.iter().any(|r| r.labels.len() != 1);
    let dir = args.reference[0].parent().unwrap_or(Path::new("."));
    let motifs = DnaEval {
        motifs: args.motifs.clone(),
        ..Default::default()
    }
    .motifs()?;
    let settings = EvalSettings {
        motif_pvalue: args.pvalue,
        motifs: &motifs,
        classes: &classes,
        multi_label,
        classifier_cache: (args.classifier && !classes.is_empty())
            .then(|| evaluate::classifier_cache(dir, &train, &classes, multi_label, args.seed)),
        seed: args.seed,
    };
    evaluate::evaluate(&generated, &train, &held, &settings)
}

/// Writes the planted-motif benchmark ([`crate::benchmark`]) into `out` as `train.fa` and
/// `test.fa` (labels in the headers; background-only sequences carry none), the training
/// windows cut from the first 90% of the background records and the held-out ones from the
/// rest, so no window is shared.
pub fn write_benchmark(
    background: &Path,
    out: &Path,
    count: usize,
    test_count: usize,
    length: usize,
    seed: u64,
) -> anyhow::Result<Vec<PathBuf>> {
    let loaded = read_fasta(
        background,
        &FastaOptions {
            labels: LabelSource::None,
            invalid: InvalidPolicy::Drop,
        },
    )?;
    let seqs: Vec<Vec<u8>> = loaded
        .records
        .into_iter()
        .map(|r| r.bases)
        .filter(|b| b.len() >= length)
        .collect();
    ensure!(
        seqs.len() >= 10,
        "{}: {} records of at least {length} bases without N; the benchmark needs at least 10",
        background.display(),
        seqs.len()
    );
    let split = seqs.len() * 9 / 10;
    let motifs = markers()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = vec![];
    for (name, part, n, s) in [
        ("train.fa", &seqs[..split], count, seed),
        ("test.fa", &seqs[split..], test_count, seed.wrapping_add(1)),
    ] {
        let cfg = crate::benchmark::BenchmarkConfig {
            length,
            count: n,
            seed: s,
            ..Default::default()
        };
        let records: Vec<SeqRecord> = crate::benchmark::generate(&cfg, part, &motifs)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                SeqRecord::new(
                    format!("seq{i:05}"),
                    r.bases,
                    r.labels.iter().map(|c| c.name().to_string()).collect(),
                )
            })
            .collect();
        let path = out.join(name);
        write_fasta(&path, &records)?;
        files.push(path);
    }
    Ok(files)
}

/// The generated samples as records (one-hot decoded by argmax, tokens as they are), with
/// their conditions' labels.
fn decode(info: &DataInfo, samples: &Samples) -> anyhow::Result<Vec<SeqRecord>> {
    let x = samples.x.to_device(&Device::Cpu)?;
    let n = x.dim(0)?;
    let bases: Vec<Vec<u8>> = if info.vocab.is_some() {
        let (_, l) = x
            .dims2()
            .with_context(|| format!("DNA token samples must be [N, L], got {:?}", x.dims()))?;
        let flat = x
            .to_dtype(candle_core::DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        (0..n)
            .map(|i| {
                decode_tokens(&flat[i * l..(i + 1) * l]).with_context(|| format!("sample {i}"))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        let (_, c, l) = x.dims3()?;
        ensure!(c == 4, "DNA samples must be [N, 4, L], got {:?}", x.dims());
        let flat = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        (0..n)
            .map(|i| decode_one_hot(&flat[i * 4 * l..(i + 1) * 4 * l], l))
            .collect::<anyhow::Result<_>>()?
    };
    Ok(bases
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let labels = samples
                .conditions
                .get(i)
                .map(|c| labels_of(&info.cond, c))
                .unwrap_or_default();
            SeqRecord::new(format!("sample-{i:05}"), b, labels)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token batches are `[B, L]` u32 bases, and the reverse-complement half of an augmented
    /// set complements each base (k -> 3 - k) and reverses the order, as one-hot batches do.
    #[test]
    fn token_batches_and_their_reverse_complements() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sugarcube-dna-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("train.fa");
        std::fs::write(&path, ">a labels=X\nACGTTA\n>b labels=Y\nGGGCCA\n")?;
        let mut data = DnaData {
            train: vec![path.clone()],
            test: vec![path],
            length: 6,
            reverse_complement: true,
            ..DnaData::default()
        };
        data.representation = Representation::Tokens;
        let ds = Dna::dataset(&data, Split::Train, 0)?;
        assert_eq!(ds.len(), 4);
        let info = ds.info();
        assert_eq!((info.vocab, info.item_shape.clone()), (Some(4), vec![6]));
        let b = ds.batch(&[0, 2], &Device::Cpu)?;
        assert_eq!(b.x0.dims(), &[2, 6]);
        let rows = b.x0.to_vec2::<u32>()?;
        assert_eq!(decode_tokens(&rows[0])?, b"ACGTTA");
        assert_eq!(
            decode_tokens(&rows[1])?,
            crate::reverse_complement(b"ACGTTA")
        );
        // one-hot batches agree base for base
        data.representation = Representation::OneHot;
        let ds = Dna::dataset(&data, Split::Train, 0)?;
        let x = ds
            .batch(&[2], &Device::Cpu)?
            .x0
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(decode_one_hot(&x, 6)?, crate::reverse_complement(b"ACGTTA"));
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
