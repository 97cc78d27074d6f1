//! The `protein` domain: backbones as FoldingDiff models them (Wu et al. 2022). Each residue is
//! six internal angles (phi, psi, omega and the three bond angles), centred by their circular
//! means over the training residues and wrapped to [-pi, pi); an item is `[L, 6]` with L up to
//! `data.max_length`, shorter chains padded and masked; the denoiser is the core's BERT-style
//! transformer (FoldingDiff's small or full model); samples are rebuilt by NeRF and written as
//! PDB files with a Ramachandran plot; evaluation scores structures (see [`crate::evaluate`])
//! beside held-out floors and beside an angle baseline that draws each residue's six angles
//! independently from the training residues (`iid_`, FoldingDiff's `sample_random_angles.py`).
//!
//! Where it differs from FoldingDiff, and why: long chains are cut into overlapping windows
//! once (FoldingDiff crops one random window per visit, or discards them), so a batch is a
//! pure function of its indices and resuming reproduces a run; batches are padded to their
//! longest chain, not always to `max_length` (the mask makes that the same function, and
//! faster); held-out chains are a seeded fraction of the chains, not of the files.

use crate::angles::defined;
use crate::dataset::{
    centred_angles, circular_means, hold_out, read_chains, structure_files, uncentred, windows,
};
use crate::evaluate::{evaluate, rama, RAMA_BINS};
use crate::metrics::ca_ca_distances;
use crate::nerf::{build, BondLengths};
use crate::pdb::write_pdb;
use crate::structure::Backbone;
use anyhow::{ensure, Context};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{Batch, DataInfo, Dataset, Domain, Evaluation, Samples, Split};
use sugarcube_core::nn::{PositionEmbedding, SequenceTransformer, TimeEncoding, TransformerConfig};
use sugarcube_core::rng::Rng;

/// The `[data]` table of a protein experiment. Paths are relative to the working directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProteinData {
    /// Structure files (PDB, mmCIF, gzipped or not) or folders of them, searched recursively.
    pub train: Vec<PathBuf>,
    /// Held-out structures for the evaluation floors; without them `heldout_fraction` of the
    /// training chains is held out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<PathBuf>,
    /// The fraction of chains held out when `test` is empty. Default 0.1.
    #[serde(default = "default_heldout")]
    pub heldout_fraction: f64,
    /// Chains (and chain pieces between breaks) shorter than this are left out. Default 40
    /// (FoldingDiff's `min_seq_len`).
    #[serde(default = "default_min_length")]
    pub min_length: usize,
    /// The longest window the model sees; longer chains are cut into windows of this length.
    /// Default 128 (FoldingDiff's `max_seq_len`).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Residues between the starts of a long chain's windows. Default `max_length / 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_stride: Option<usize>,
    /// Bond lengths for rebuilding samples: `foldingdiff` (default; N-CA 1.46, CA-C 1.54, C-N
    /// 1.34 Å) or `engh_huber` (1.458, 1.525, 1.329 Å).
    #[serde(default)]
    pub bond_lengths: Bonds,
}

/// Which ideal bond lengths NeRF uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bonds {
    /// FoldingDiff's `nerf.py` values.
    #[default]
    Foldingdiff,
    /// Engh and Huber's.
    EnghHuber,
}

impl Bonds {
    /// The lengths.
    pub fn lengths(self) -> BondLengths {
        match self {
            Bonds::Foldingdiff => BondLengths::FOLDINGDIFF,
            Bonds::EnghHuber => BondLengths::ENGH_HUBER,
        }
    }
}

fn default_heldout() -> f64 {
    0.1
}
fn default_min_length() -> usize {
    40
}
fn default_max_length() -> usize {
    128
}

/// FoldingDiff's two published model sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// `mini_model.json`: 6 layers, hidden 192, 6 heads, FFN 384.
    #[default]
    Small,
    /// `cath_full_angles_cosine.json`: 12 layers, hidden 384, 12 heads, FFN 768.
    Full,
}

/// The `[model]` table: a preset and any of its sizes overridden.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProteinModel {
    /// `small` (default) or `full`.
    pub preset: Preset,
    /// Hidden width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// Layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// Attention heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Feed-forward width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate: Option<usize>,
    /// Dropout (default 0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// `relative_key` (default) or `absolute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_embedding: Option<PositionEmbedding>,
    /// `gaussian_fourier` (default) or `sinusoidal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_encoding: Option<TimeEncoding>,
}

impl ProteinModel {
    /// The transformer this table describes for windows of up to `max_len` residues.
    pub fn transformer(&self, max_len: usize) -> TransformerConfig {
        let base = match self.preset {
            Preset::Small => TransformerConfig::foldingdiff_small(),
            Preset::Full => TransformerConfig::default(),
        };
        TransformerConfig {
            hidden: self.hidden.unwrap_or(base.hidden),
            layers: self.layers.unwrap_or(base.layers),
            heads: self.heads.unwrap_or(base.heads),
            intermediate: self.intermediate.unwrap_or(base.intermediate),
            dropout: self.dropout.unwrap_or(base.dropout),
            position_embedding: self.position_embedding.unwrap_or(base.position_embedding),
            time_encoding: self.time_encoding.unwrap_or(base.time_encoding),
            max_len,
            ..base
        }
    }
}

/// The `[eval]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProteinEval {
    /// Backbones to generate (lengths drawn over the training range). Default 200.
    pub n: usize,
    /// Score the `iid_` angle baseline too. Default true.
    pub baseline: bool,
}

impl Default for ProteinEval {
    fn default() -> Self {
        Self {
            n: 200,
            baseline: true,
        }
    }
}

/// The protein domain.
pub struct Protein;

/// The chains of an experiment's data, split, and the angle means.
pub struct Chains {
    /// Whole training chains.
    pub train: Vec<Backbone>,
    /// Whole held-out chains.
    pub held: Vec<Backbone>,
    /// Training windows (what the model sees).
    pub train_windows: Vec<Backbone>,
    /// Held-out windows, cut as the training ones.
    pub held_windows: Vec<Backbone>,
    /// Circular means of the six angles over the training residues.
    pub means: [f64; 6],
}

impl ProteinData {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            !self.train.is_empty(),
            "data.train lists no files or folders"
        );
        ensure!(
            self.min_length >= 3,
            "data.min_length must be at least 3, got {}",
            self.min_length
        );
        ensure!(
            self.max_length >= self.min_length,
            "data.max_length ({}) must be at least data.min_length ({})",
            self.max_length,
            self.min_length
        );
        ensure!(
            (0.0..1.0).contains(&self.heldout_fraction),
            "data.heldout_fraction must be in [0, 1), got {}",
            self.heldout_fraction
        );
        ensure!(
            self.window_stride != Some(0),
            "data.window_stride must be at least 1"
        );
        Ok(())
    }

    fn windows(&self, chains: &[Backbone]) -> Vec<Backbone> {
        let stride = self.window_stride.unwrap_or((self.max_length / 2).max(1));
        chains
            .iter()
            .flat_map(|c| windows(c, self.max_length, stride))
            .collect()
    }

    /// Reads, splits and windows the chains; `seed` draws the held-out chains.
    pub fn chains(&self, seed: u64) -> anyhow::Result<Chains> {
        self.check()?;
        let (all, _, _) = read_chains(
            &structure_files(&self.train).context("data.train")?,
            self.min_length,
        )?;
        ensure!(
            !all.is_empty(),
            "data.train: no chain has at least data.min_length = {} residues",
            self.min_length
        );
        let (train, held) = if self.test.is_empty() {
            hold_out(all, self.heldout_fraction, seed)
        } else {
            let (held, _, _) = read_chains(
                &structure_files(&self.test).context("data.test")?,
                self.min_length,
            )?;
            (all, held)
        };
        ensure!(!train.is_empty(), "data.train: every chain was held out");
        let means = circular_means(&train);
        Ok(Chains {
            train_windows: self.windows(&train),
            held_windows: self.windows(&held),
            train,
            held,
            means,
        })
    }
}

/// What sampling needs from the training data, kept in `data_info.json`.
#[derive(Serialize, Deserialize)]
struct Stats {
    /// The circular means the angles were centred by (phi, psi, omega, tau, CA-C-N, C-N-CA).
    angle_means: [f64; 6],
    /// The training windows' (phi, psi) histogram, `RAMA_BINS`^2 densities (phi major).
    rama_train: Vec<f64>,
}

fn stats(info: &DataInfo) -> anyhow::Result<Stats> {
    serde_json::from_value(info.stats.clone())
        .context("data_info.json has no protein stats (angle_means): retrain with this version")
}

/// Angle windows as a dataset: `[L, 6]` items, centred.
struct AngleSet {
    items: Vec<Vec<[f32; 6]>>,
    info: DataInfo,
}

impl Dataset for AngleSet {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn info(&self) -> DataInfo {
        self.info.clone()
    }

    /// Items padded with zeros to the longest in the batch.
    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let lengths: Vec<usize> = indices.iter().map(|&i| self.items[i].len()).collect();
        let l = lengths.iter().copied().max().unwrap_or(1);
        let mut x = Vec::with_capacity(indices.len() * l * 6);
        for &i in indices {
            let item = &self.items[i];
            x.extend(item.iter().flatten());
            x.extend(std::iter::repeat_n(0f32, (l - item.len()) * 6));
        }
        Ok(Batch {
            x0: Tensor::from_vec(x, (indices.len(), l, 6), device)?,
            cond: vec![],
            lengths: Some(lengths),
        })
    }
}

/// Generated angle tensors back to backbones: means added, NeRF with `bonds`.
pub fn decode(
    samples: &Samples,
    means: &[f64; 6],
    bonds: BondLengths,
) -> anyhow::Result<Vec<Backbone>> {
    let (n, l, f) = samples
        .x
        .dims3()
        .context("protein samples must be [N, L, 6]")?;
    ensure!(
        f == 6,
        "protein samples must have 6 angles per residue, got {f}"
    );
    let data: Vec<f32> = samples.x.flatten_all()?.to_vec1()?;
    (0..n)
        .map(|i| {
            let len = samples.lengths.map_or(l, |v| v[i]).min(l);
            let rows: Vec<[f32; 6]> = (0..len)
                .map(|r| std::array::from_fn(|j| data[(i * l + r) * 6 + j]))
                .collect();
            let atoms = build(&uncentred(&rows, means), bonds);
            Ok(Backbone::from_atoms(format!("sample {i}"), &atoms))
        })
        .collect()
}

/// FoldingDiff's random-angle baseline: for each length, every residue's six angles drawn
/// together from a random training residue (with replacement), rebuilt by NeRF.
pub fn iid_baseline(
    train: &[Backbone],
    lengths: &[usize],
    bonds: BondLengths,
    seed: u64,
) -> Vec<Backbone> {
    let rows: Vec<[f64; 6]> = train
        .iter()
        .flat_map(|c| {
            let a = crate::angles::angles(c);
            let l = a.len();
            a.into_iter()
                .enumerate()
                .filter(move |(i, _)| (0..6).all(|j| defined(*i, j, l)))
                .map(|(_, r)| r)
        })
        .collect();
    lengths
        .iter()
        .enumerate()
        .map(|(k, &len)| {
            let mut rng = Rng::stream(seed ^ 0x11D0_BA5E, k as u64);
            let chosen: Vec<[f64; 6]> = (0..len)
                .map(|_| rows[rng.below(rows.len() as u64) as usize])
                .collect();
            Backbone::from_atoms(format!("iid {k}"), &build(&chosen, bonds))
        })
        .collect()
}

/// Bins of the CA-CA distance histograms in eval-details.json: 2.5 to 4.5 Å.
const CA_CA_RANGE: (f64, f64) = (2.5, 4.5);
const CA_CA_BINS: usize = 40;

fn ca_ca_histogram(chains: &[Backbone]) -> Vec<f64> {
    let (lo, hi) = CA_CA_RANGE;
    let w = (hi - lo) / CA_CA_BINS as f64;
    let mut h = vec![0f64; CA_CA_BINS];
    let mut n = 0usize;
    for d in chains.iter().flat_map(ca_ca_distances) {
        n += 1;
        if (lo..hi).contains(&d) {
            h[((d - lo) / w) as usize] += 1.0;
        }
    }
    h.iter().map(|c| c / n.max(1) as f64).collect()
}

impl Domain for Protein {
    const NAME: &'static str = "protein";
    type Data = ProteinData;
    type Model = ProteinModel;
    type Eval = ProteinEval;

    fn dataset(data: &ProteinData, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>> {
        let c = data.chains(seed)?;
        let windows = match split {
            Split::Train => &c.train_windows,
            Split::Heldout => &c.held_windows,
        };
        ensure!(
            !windows.is_empty(),
            "the protein data has no {} chains of at least {} residues",
            match split {
                Split::Train => "training",
                Split::Heldout => "held-out",
            },
            data.min_length
        );
        let items: Vec<Vec<[f32; 6]>> = windows
            .iter()
            .map(|w| centred_angles(w, &c.means))
            .collect();
        let lo = c.train_windows.iter().map(|w| w.len()).min().unwrap_or(1);
        let hi = c.train_windows.iter().map(|w| w.len()).max().unwrap_or(1);
        let info = DataInfo {
            length_axis: Some(0),
            length_range: Some((lo, hi)),
            stats: serde_json::to_value(Stats {
                angle_means: c.means,
                rama_train: rama(&c.train_windows),
            })?,
            ..DataInfo::new(vec![data.max_length, 6])
        };
        Ok(Box::new(AngleSet { items, info }))
    }

    fn denoiser(
        model: &ProteinModel,
        info: &DataInfo,
        vb: VarBuilder,
    ) -> anyhow::Result<Box<dyn Denoiser>> {
        let &[max_len, 6] = info.item_shape.as_slice() else {
            anyhow::bail!(
                "protein data must be [L, 6] angles, got {:?}",
                info.item_shape
            );
        };
        let cfg = model.transformer(max_len);
        cfg.validate().context("[model]")?;
        Ok(Box::new(SequenceTransformer::new(vb, &cfg, 6, &info.cond)?))
    }

    fn write_samples(
        data: &ProteinData,
        info: &DataInfo,
        samples: &Samples,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let s = stats(info)?;
        let chains = decode(samples, &s.angle_means, data.bond_lengths.lengths())?;
        let mut files = vec![];
        for (i, c) in chains.iter().enumerate() {
            let path = dir.join(format!("sample_{i:04}.pdb"));
            write_pdb(&path, c)?;
            files.push(path);
        }
        let png = dir.join("ramachandran.png");
        crate::rama_png::write(&png, &rama(&chains), &s.rama_train)?;
        files.push(png);
        Ok(files)
    }

    fn eval_samples(eval: &ProteinEval) -> usize {
        eval.n
    }

    fn evaluate(
        data: &ProteinData,
        eval: &ProteinEval,
        seed: u64,
        samples: &Samples,
    ) -> anyhow::Result<Evaluation> {
        let c = data.chains(seed)?;
        ensure!(
            !c.held_windows.is_empty(),
            "evaluation needs held-out chains: set data.test or a positive data.heldout_fraction"
        );
        let bonds = data.bond_lengths.lengths();
        let generated = decode(samples, &c.means, bonds)?;
        let mut ev = Evaluation::of(evaluate(&generated, &c.train, &c.held_windows)?);
        let mut hist = serde_json::Map::new();
        let mut densities = serde_json::Map::new();
        densities.insert("samples".into(), serde_json::json!(rama(&generated)));
        densities.insert("train".into(), serde_json::json!(rama(&c.train_windows)));
        densities.insert("held".into(), serde_json::json!(rama(&c.held_windows)));
        hist.insert(
            "samples".into(),
            serde_json::json!(ca_ca_histogram(&generated)),
        );
        hist.insert(
            "held".into(),
            serde_json::json!(ca_ca_histogram(&c.held_windows)),
        );
        if eval.baseline {
            let lengths: Vec<usize> = generated.iter().map(|g| g.len()).collect();
            let iid = iid_baseline(&c.train, &lengths, bonds, seed);
            for (k, v) in evaluate(&iid, &c.train, &c.held_windows)? {
                if !k.ends_with("_floor") && !k.starts_with("train_") && k != "n" {
                    ev.metrics.push((format!("iid_{k}"), v));
                }
            }
            densities.insert("iid".into(), serde_json::json!(rama(&iid)));
            hist.insert("iid".into(), serde_json::json!(ca_ca_histogram(&iid)));
        }
        ev.details.insert(
            "ramachandran".into(),
            serde_json::json!({ "bins": RAMA_BINS, "range_degrees": [-180, 180], "density": densities }),
        );
        ev.details.insert(
            "ca_ca".into(),
            serde_json::json!({ "range": CA_CA_RANGE, "bins": CA_CA_BINS, "fraction": hist }),
        );
        let lengths: Vec<usize> = generated.iter().map(|g| g.len()).collect();
        ev.details
            .insert("lengths".into(), serde_json::json!(lengths));
        Ok(ev)
    }

    fn report(
        ctx: &sugarcube_core::report::ReportContext<Self>,
    ) -> anyhow::Result<Vec<sugarcube_core::report::Section>> {
        crate::report::sections(ctx)
    }

    fn command() -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    fn run_command(matches: &clap::ArgMatches) -> anyhow::Result<()> {
        crate::cli::run(matches)
    }
}
