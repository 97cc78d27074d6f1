//! sugarcube-toy: 2-D toy distributions (moons, swiss roll, 8 Gaussians, checkerboard, and
//! quadrants with two condition fields), token sequences from a known Markov chain, a residual
//! MLP denoiser, a small token transformer, and their metrics (sliced Wasserstein-2 distance,
//! bigram statistics against the exact chain), as the sugarcube domain `toy`.
//!
//! Points live in "model coordinates": each dataset is standardised per axis by fixed constants
//! (see [`ToyKind::moments`]), the same for training and held-out draws.

pub mod data;
pub mod markov;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod report;

pub use data::{ToyDataset, ToyKind};
pub use markov::{MarkovChain, TokenDataset};
pub use metrics::{sliced_wasserstein2, wasserstein2_1d};
pub use model::{TokenDenoiser, ToyDenoiser};

use anyhow::{bail, ensure};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use sugarcube_core::cond::Condition;
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{DataInfo, Dataset, Domain, Evaluation, Samples, Split};
use sugarcube_core::rng::Rng;

/// The `[data]` table of a toy experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ToyData {
    /// Which distribution.
    pub dataset: ToyKind,
    /// Number of training points (and of held-out points).
    #[serde(default = "default_n")]
    pub n: usize,
    /// Gaussian noise standard deviation in the generator's raw units; None means the
    /// dataset's default ([`ToyKind::default_noise`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<f64>,
    /// Whether class labels are given (moons: 2 classes, 8gaussians: 8, quadrants: the fields
    /// x and y).
    #[serde(default)]
    pub conditional: bool,
    /// Tokens per sequence (markov only).
    #[serde(default = "default_length")]
    pub length: usize,
}

fn default_n() -> usize {
    20_000
}
fn default_length() -> usize {
    32
}

impl ToyData {
    /// The noise level in effect.
    pub fn noise(&self) -> f64 {
        self.noise.unwrap_or_else(|| self.dataset.default_noise())
    }

    /// Checks the table and describes the data: item shape `[2]` with the kind's condition
    /// fields when conditional, or `[length]` tokens of vocabulary 4 (markov).
    pub fn info(&self) -> anyhow::Result<DataInfo> {
        ensure!(self.n > 0, "data.n must be positive");
        if self.dataset.is_tokens() {
            ensure!(
                !self.conditional,
                "data.conditional = true, but the markov dataset has no classes"
            );
            ensure!(
                self.length >= 2,
                "data.length must be at least 2, got {}",
                self.length
            );
            return Ok(DataInfo {
                vocab: Some(4),
                ..DataInfo::new(vec![self.length])
            });
        }
        let noise = self.noise();
        ensure!(
            noise.is_finite() && noise >= 0.0,
            "data.noise must be a finite number >= 0, got {noise}"
        );
        if self.conditional && self.dataset.class_names().is_empty() {
            bail!(
                "data.conditional = true, but the {} dataset has no classes (only moons, 8gaussians and quadrants do)",
                self.dataset.name()
            );
        }
        let info = DataInfo::new(vec![2]);
        Ok(if self.conditional {
            info.with_cond(self.dataset.cond_spec())
        } else {
            info
        })
    }
}

/// The `[model]` table: the residual MLP's sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyModel {
    /// Width of the hidden layers.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Number of residual blocks.
    #[serde(default = "default_blocks")]
    pub blocks: usize,
    /// Number of sinusoidal timestep features.
    #[serde(default = "default_time_dim")]
    pub time_dim: usize,
    /// Whether each residual block starts with a LayerNorm.
    #[serde(default)]
    pub layer_norm: bool,
    /// Attention heads of the token model (markov data).
    #[serde(default = "default_heads")]
    pub heads: usize,
}

fn default_heads() -> usize {
    4
}

fn default_hidden() -> usize {
    256
}
fn default_blocks() -> usize {
    3
}
fn default_time_dim() -> usize {
    64
}

impl Default for ToyModel {
    fn default() -> Self {
        Self {
            hidden: default_hidden(),
            blocks: default_blocks(),
            time_dim: default_time_dim(),
            layer_norm: false,
            heads: default_heads(),
        }
    }
}

/// The `[eval]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyEval {
    /// How many generated samples are compared (at most; fewer if fewer were generated).
    #[serde(default = "default_eval_n")]
    pub n: usize,
    /// Number of random directions for the sliced Wasserstein distance.
    #[serde(default = "default_projections")]
    pub projections: usize,
}

fn default_eval_n() -> usize {
    2000
}
fn default_projections() -> usize {
    256
}

impl Default for ToyEval {
    fn default() -> Self {
        Self {
            n: default_eval_n(),
            projections: default_projections(),
        }
    }
}

/// The random stream a split is drawn from: training stream 0, held-out stream 1 (the
/// evaluation's second reference draw uses stream 2).
fn split_rng(seed: u64, split: Split) -> Rng {
    match split {
        Split::Train => Rng::stream(seed, 0),
        Split::Heldout => Rng::stream(seed, 1),
    }
}

/// Reads `[N, 2]` samples as points (any float dtype, any device).
fn points_of(samples: &Tensor) -> anyhow::Result<Vec<[f32; 2]>> {
    ensure!(
        samples.rank() == 2 && samples.dim(1)? == 2,
        "toy samples must be shaped [N, 2], got {:?}",
        samples.dims()
    );
    let rows = samples.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.into_iter().map(|r| [r[0], r[1]]).collect())
}

/// The class of each sample from its condition (for plotting and per-class metrics).
fn labels_of(kind: ToyKind, conditions: &[Condition]) -> Option<Vec<u32>> {
    if conditions.is_empty() {
        return None;
    }
    conditions.iter().map(|c| kind.label_of(c)).collect()
}

/// Reads `[N, L]` token samples.
fn sequences_of(samples: &Tensor) -> anyhow::Result<Vec<Vec<u32>>> {
    ensure!(
        samples.rank() == 2,
        "token samples must be shaped [N, L], got {:?}",
        samples.dims()
    );
    Ok(samples.to_dtype(DType::U32)?.to_vec2::<u32>()?)
}

/// The `toy` domain.
pub struct Toy;

impl Domain for Toy {
    const NAME: &'static str = "toy";
    type Data = ToyData;
    type Model = ToyModel;
    type Eval = ToyEval;

    /// Draws `data.n` examples for the split (train: stream 0 of `seed`, held-out: stream 1).
    fn dataset(data: &ToyData, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>> {
        let info = data.info()?;
        if data.dataset.is_tokens() {
            let seqs =
                MarkovChain::default().draw(data.n, data.length, &mut split_rng(seed, split));
            return Ok(Box::new(TokenDataset::new(seqs, 4)));
        }
        let (points, labels) = data
            .dataset
            .draw(data.noise(), data.n, &mut split_rng(seed, split));
        let labels = data.conditional.then_some(labels);
        Ok(Box::new(ToyDataset::new(
            data.dataset,
            points,
            labels,
            info,
        )))
    }

    fn denoiser(
        model: &ToyModel,
        info: &DataInfo,
        vb: VarBuilder,
    ) -> anyhow::Result<Box<dyn Denoiser>> {
        ensure!(
            model.hidden > 0 && model.time_dim > 0,
            "model.hidden and model.time_dim must be positive"
        );
        if info.vocab.is_some() {
            return Ok(Box::new(TokenDenoiser::new(model, info, vb)?));
        }
        Ok(Box::new(ToyDenoiser::new(model, info, vb)?))
    }

    fn eval_samples(eval: &ToyEval) -> usize {
        eval.n
    }

    /// `sugarcube toy draw DATASET OUT_DIR [--n N] [--seed S] [--conditional]`: draws real
    /// data (the training split of that seed) and writes it as samples are written, to look at
    /// the data or compare it with a model's samples.
    fn command() -> Option<clap::Command> {
        use clap::{value_parser, Arg, ArgAction, Command};
        Some(
            Command::new("toy").about("Toy data tools").subcommand_required(true).subcommand(
                Command::new("draw")
                    .about("Write real toy data (CSV and scatter plot, or token text) into a folder")
                    .arg(Arg::new("dataset").required(true).help("moons, swissroll, 8gaussians, checkerboard, quadrants, markov"))
                    .arg(Arg::new("out").required(true).value_parser(value_parser!(PathBuf)).help("output folder"))
                    .arg(Arg::new("n").long("n").default_value("2000").value_parser(value_parser!(usize)))
                    .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64)))
                    .arg(Arg::new("conditional").long("conditional").action(ArgAction::SetTrue).help("colour points by class")),
            ),
        )
    }

    fn run_command(matches: &clap::ArgMatches) -> anyhow::Result<()> {
        let Some(("draw", m)) = matches.subcommand() else {
            bail!("expected a toy subcommand: draw")
        };
        let name = m.get_one::<String>("dataset").expect("required");
        let dataset: ToyKind = toml::Value::String(name.clone()).try_into().map_err(|_| {
            anyhow::anyhow!("unknown toy dataset `{name}`: expected moons, swissroll, 8gaussians, checkerboard, quadrants or markov")
        })?;
        let data = ToyData {
            dataset,
            n: *m.get_one::<usize>("n").expect("default"),
            noise: None,
            conditional: m.get_flag("conditional"),
            length: default_length(),
        };
        let info = data.info()?;
        let ds = Toy::dataset(
            &data,
            Split::Train,
            *m.get_one::<u64>("seed").expect("default"),
        )?;
        let batch = ds.batch(
            &(0..ds.len()).collect::<Vec<_>>(),
            &candle_core::Device::Cpu,
        )?;
        let out = m.get_one::<PathBuf>("out").expect("required");
        std::fs::create_dir_all(out)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
        let files = Toy::write_samples(
            &data,
            &info,
            &Samples {
                x: &batch.x0,
                conditions: &batch.cond,
                lengths: None,
            },
            out,
        )?;
        for f in files {
            println!("wrote {}", f.display());
        }
        Ok(())
    }

    /// Points: `samples.csv` and `samples.png` (coordinates are model (standardised)
    /// coordinates, not the generator's raw ones; the plot shows [-3, 3]^2). Tokens:
    /// `samples.txt`, one sequence per line in the letters a to d.
    fn write_samples(
        data: &ToyData,
        info: &DataInfo,
        samples: &Samples,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        if data.dataset.is_tokens() {
            let text: String = sequences_of(samples.x)?
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|&t| markov::LETTERS.get(t as usize).copied().unwrap_or('?'))
                        .collect::<String>()
                        + "\n"
                })
                .collect();
            let path = dir.join("samples.txt");
            sugarcube_core::checkpoint::write_atomic(&path, text.as_bytes())?;
            return Ok(vec![path]);
        }
        let points = points_of(samples.x)?;
        let labels = labels_of(data.dataset, samples.conditions);
        if let Some(l) = &labels {
            ensure!(
                l.len() == points.len(),
                "{} labels for {} samples",
                l.len(),
                points.len()
            );
        }
        let classes = if info.cond.is_empty() {
            0
        } else {
            data.dataset.class_names().len()
        };
        plot::write_points(&points, labels.as_deref(), classes, dir)
    }

    /// A scatter plot of the samples over the training points (bigram tables for tokens).
    fn report(
        ctx: &sugarcube_core::report::ReportContext<Self>,
    ) -> anyhow::Result<Vec<sugarcube_core::report::Section>> {
        report::sections(ctx)
    }

    /// Points, over the first `min(eval.n, N)` samples, against a held-out draw of the same
    /// size (the first points of the held-out split):
    /// - `sw2`: sliced W2 between samples and held-out points;
    /// - `sw2_floor`: the same between the held-out points and an independent draw, averaged
    ///   over five draws (streams 2 to 6): the value a perfect model would get;
    /// - `sw2_ratio`: `sw2 / sw2_floor`;
    /// - `cond_sw2` (conditional data whose conditions fix a class): mean over classes of the
    ///   sliced W2 between the samples and the held-out points of that class;
    /// - `cond_accuracy` (quadrants): the fraction of samples on the side of each axis their
    ///   condition asks for (fields left null are not checked).
    ///
    /// All distances use the same `eval.projections` directions, seeded by `seed`.
    ///
    /// Tokens (markov): `bigram_tv`, the total variation distance between the samples' bigram
    /// frequencies and the chain's exact bigram distribution; `bigram_tv_floor`, the same for
    /// as many sequences drawn from the chain (mean of five draws); `bigram_tv_ratio`; and
    /// `entropy_bits`, the data's exact entropy per token (the floor of `nll_bound_bits`).
    fn evaluate(
        data: &ToyData,
        eval: &ToyEval,
        seed: u64,
        samples: &Samples,
    ) -> anyhow::Result<Evaluation> {
        data.info()?;
        if data.dataset.is_tokens() {
            return evaluate_tokens(data, eval, seed, samples.x);
        }
        ensure!(eval.projections > 0, "eval.projections must be positive");
        let all = points_of(samples.x)?;
        let m = all.len().min(eval.n);
        ensure!(
            m > 0,
            "no samples to evaluate (eval.n = {}, {} samples)",
            eval.n,
            all.len()
        );
        let points = &all[..m];
        let noise = data.noise();
        let (held, held_labels) = data
            .dataset
            .draw(noise, m, &mut split_rng(seed, Split::Heldout));
        let sw2 = sliced_wasserstein2(points, &held, eval.projections, seed);
        const FLOOR_DRAWS: u64 = 5;
        let floor = (2..2 + FLOOR_DRAWS)
            .map(|stream| {
                let (fresh, _) = data.dataset.draw(noise, m, &mut Rng::stream(seed, stream));
                sliced_wasserstein2(&fresh, &held, eval.projections, seed)
            })
            .sum::<f64>()
            / FLOOR_DRAWS as f64;
        let mut metrics = vec![
            ("sw2".to_string(), sw2),
            ("sw2_floor".to_string(), floor),
            ("sw2_ratio".to_string(), sw2 / floor),
        ];
        let mut details = serde_json::Map::new();
        if data.conditional && !samples.conditions.is_empty() {
            let conds = samples.conditions;
            ensure!(
                conds.len() == all.len(),
                "{} conditions for {} samples",
                conds.len(),
                all.len()
            );
            if let Some(labels) = labels_of(data.dataset, conds) {
                let of_class = |pts: &[[f32; 2]], ls: &[u32], c: u32| -> Vec<[f32; 2]> {
                    pts.iter()
                        .zip(ls)
                        .filter(|(_, &l)| l == c)
                        .map(|(p, _)| *p)
                        .collect()
                };
                let mut per_class = serde_json::Map::new();
                let mut values = vec![];
                for (c, name) in data.dataset.class_names().iter().enumerate() {
                    let (a, b) = (
                        of_class(points, &labels[..m], c as u32),
                        of_class(&held, &held_labels, c as u32),
                    );
                    if !a.is_empty() && !b.is_empty() {
                        let d = sliced_wasserstein2(&a, &b, eval.projections, seed);
                        per_class.insert(name.to_string(), serde_json::json!(d));
                        values.push(d);
                    }
                }
                if !values.is_empty() {
                    metrics.push((
                        "cond_sw2".to_string(),
                        values.iter().sum::<f64>() / values.len() as f64,
                    ));
                    details.insert(
                        "cond_sw2_per_class".into(),
                        serde_json::Value::Object(per_class),
                    );
                }
            }
            if data.dataset == ToyKind::Quadrants {
                metrics.push((
                    "cond_accuracy".to_string(),
                    quadrant_accuracy(points, &conds[..m]),
                ));
            }
        }
        Ok(Evaluation { metrics, details })
    }
}

/// The fraction of points on the side of each axis their condition asks for (field 0: x,
/// left/right; field 1: y, bottom/top; null fields are not checked).
pub fn quadrant_accuracy(points: &[[f32; 2]], conds: &[Condition]) -> f64 {
    let ok = points
        .iter()
        .zip(conds)
        .filter(|(p, c)| {
            let side = |axis: usize| {
                c.class(axis)
                    .is_none_or(|want| (p[axis] > 0.0) == (want == 1))
            };
            side(0) && side(1)
        })
        .count();
    ok as f64 / points.len().max(1) as f64
}

fn evaluate_tokens(
    data: &ToyData,
    eval: &ToyEval,
    seed: u64,
    samples: &Tensor,
) -> anyhow::Result<Evaluation> {
    let seqs = sequences_of(samples)?;
    let m = seqs.len().min(eval.n);
    ensure!(m > 0, "no samples to evaluate");
    let chain = MarkovChain::default();
    let truth = chain.bigrams();
    let tv = markov::total_variation(&markov::bigram_frequencies(&seqs[..m]), &truth);
    const FLOOR_DRAWS: u64 = 5;
    let floor = (2..2 + FLOOR_DRAWS)
        .map(|stream| {
            markov::total_variation(
                &markov::bigram_frequencies(&chain.draw(
                    m,
                    data.length,
                    &mut Rng::stream(seed, stream),
                )),
                &truth,
            )
        })
        .sum::<f64>()
        / FLOOR_DRAWS as f64;
    let freq = markov::bigram_frequencies(&seqs[..m]);
    let mut details = serde_json::Map::new();
    details.insert("bigrams_generated".into(), serde_json::json!(freq));
    details.insert("bigrams_true".into(), serde_json::json!(truth));
    Ok(Evaluation {
        metrics: vec![
            ("bigram_tv".into(), tv),
            ("bigram_tv_floor".into(), floor),
            ("bigram_tv_ratio".into(), tv / floor),
            ("entropy_bits".into(), chain.entropy_per_token(data.length)),
        ],
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use sugarcube_core::denoiser::Inputs;
    use sugarcube_core::params::Params;

    fn data(kind: ToyKind, conditional: bool) -> ToyData {
        ToyData {
            dataset: kind,
            n: 500,
            noise: None,
            conditional,
            length: 32,
        }
    }

    fn metric(ev: &Evaluation, name: &str) -> f64 {
        ev.get(name).unwrap_or_else(|| panic!("no metric {name}"))
    }

    fn conds(kind: ToyKind, labels: &[u32]) -> Vec<Condition> {
        labels.iter().map(|&l| kind.condition(l)).collect()
    }

    fn view<'a>(x: &'a Tensor, conditions: &'a [Condition]) -> Samples<'a> {
        Samples {
            x,
            conditions,
            lengths: None,
        }
    }

    #[test]
    fn tables_parse_with_defaults_and_reject_unknown_keys() {
        let d: ToyData = toml::from_str("dataset = \"8gaussians\"").unwrap();
        assert_eq!(
            d,
            ToyData {
                dataset: ToyKind::EightGaussians,
                n: 20_000,
                noise: None,
                conditional: false,
                length: 32
            }
        );
        assert_eq!(d.noise(), 0.5);
        let d: ToyData =
            toml::from_str("dataset = \"eight_gaussians\"\nconditional = true").unwrap();
        assert!(d.conditional);
        assert!(toml::from_str::<ToyData>("dataset = \"moons\"\nnoize = 0.1").is_err());
        let m: ToyModel = toml::from_str("").unwrap();
        assert_eq!(m, ToyModel::default());
        let e: ToyEval = toml::from_str("projections = 64").unwrap();
        assert_eq!((e.n, e.projections), (2000, 64));
        assert_eq!(
            toml::to_string(&data(ToyKind::EightGaussians, false))
                .unwrap()
                .lines()
                .next(),
            Some("dataset = \"8gaussians\"")
        );
    }

    #[test]
    fn batches_have_the_right_shapes() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let ds = Toy::dataset(&data(ToyKind::Moons, true), Split::Train, 0)?;
        assert_eq!(ds.len(), 500);
        assert_eq!(ds.info().cond.defaults().len(), 2);
        let b = ds.batch(&[0, 5, 7], &dev)?;
        assert_eq!(b.x0.dims(), &[3, 2]);
        assert_eq!(b.x0.dtype(), DType::F32);
        assert_eq!(b.cond.len(), 3);
        assert!(b.cond.iter().all(|c| c.class(0).is_some_and(|k| k < 2)));

        let ds = Toy::dataset(&data(ToyKind::Checkerboard, false), Split::Heldout, 0)?;
        assert_eq!(ds.info(), DataInfo::new(vec![2]));
        let b = ds.batch(&[1, 2], &dev)?;
        assert_eq!(b.x0.dims(), &[2, 2]);
        assert!(b.cond.is_empty());
        assert!(ds.batch(&[500], &dev).is_err());

        // quadrants: two condition fields
        let ds = Toy::dataset(&data(ToyKind::Quadrants, true), Split::Train, 0)?;
        assert_eq!(ds.info().cond.fields.len(), 2);
        let b = ds.batch(&(0..200).collect::<Vec<_>>(), &dev)?;
        let points: Vec<[f32; 2]> =
            b.x0.to_vec2::<f32>()?
                .iter()
                .map(|p| [p[0], p[1]])
                .collect();
        assert!(
            quadrant_accuracy(&points, &b.cond) > 0.99,
            "points lie in the quadrant their condition names"
        );

        // markov: tokens
        let ds = Toy::dataset(&data(ToyKind::Markov, false), Split::Train, 0)?;
        assert_eq!(ds.info().vocab, Some(4));
        let b = ds.batch(&[0, 9], &dev)?;
        assert_eq!((b.x0.dims(), b.x0.dtype()), (&[2usize, 32][..], DType::U32));
        Ok(())
    }

    #[test]
    fn splits_differ_and_seeds_repeat() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let d = data(ToyKind::Swissroll, false);
        let first = |split, seed| -> anyhow::Result<Vec<f32>> {
            Ok(Toy::dataset(&d, split, seed)?
                .batch(&[0, 1], &dev)?
                .x0
                .flatten_all()?
                .to_vec1()?)
        };
        assert_eq!(first(Split::Train, 3)?, first(Split::Train, 3)?);
        assert_ne!(first(Split::Train, 3)?, first(Split::Heldout, 3)?);
        assert_ne!(first(Split::Train, 3)?, first(Split::Train, 4)?);
        Ok(())
    }

    #[test]
    fn conditional_data_without_classes_is_an_error() {
        for kind in [ToyKind::Swissroll, ToyKind::Checkerboard] {
            let err = Toy::dataset(&data(kind, true), Split::Train, 0)
                .err()
                .expect("should fail");
            assert!(err.to_string().contains("data.conditional"), "{err}");
        }
    }

    #[test]
    fn denoiser_gives_one_prediction_per_point() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let model = ToyModel {
            hidden: 32,
            blocks: 2,
            time_dim: 16,
            layer_norm: true,
            heads: 4,
        };
        let x = Tensor::zeros((5, 2), DType::F32, &dev)?;
        let t = Tensor::new(&[0.0f32, 1.5, 10.0, 500.0, 999.0], &dev)?;
        for conditional in [false, true] {
            let info = data(ToyKind::EightGaussians, conditional).info()?;
            let params = Params::new(0);
            let net = Toy::denoiser(&model, &info, params.var_builder(DType::F32, &dev))?;
            let spec = ToyKind::EightGaussians.cond_spec();
            let ids = spec.encode(
                &[
                    conds(ToyKind::EightGaussians, &[0, 3, 7]),
                    vec![spec.null(), spec.null()],
                ]
                .concat(),
                &dev,
            )?;
            if conditional {
                let with = net.forward(&Inputs {
                    cond: Some(&ids),
                    ..Inputs::new(&x, &t)
                })?;
                assert_eq!(with.dims(), &[5, 2]);
                // No conditions means the null condition for every row.
                let null = net.forward(&Inputs::new(&x, &t))?.to_vec2::<f32>()?;
                assert_eq!(with.to_vec2::<f32>()?[3..], null[3..]);
                assert!(params.vars().iter().any(|(n, _)| n == "cond.class.weight"));
            } else {
                assert_eq!(net.forward(&Inputs::new(&x, &t))?.dims(), &[5, 2]);
                assert!(net
                    .forward(&Inputs {
                        cond: Some(&ids),
                        ..Inputs::new(&x, &t)
                    })
                    .is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn evaluation_scores_held_out_data_near_the_floor() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let d = ToyData {
            n: 2000,
            ..data(ToyKind::EightGaussians, true)
        };
        let eval = ToyEval {
            n: 2000,
            projections: 128,
        };
        // A fresh draw from the true distribution stands in for a perfect model.
        let (points, labels) = d.dataset.draw(d.noise(), 2500, &mut Rng::stream(11, 7));
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        let samples = Tensor::from_vec(flat, (2500, 2), &dev)?;
        let good = Toy::evaluate(&d, &eval, 0, &view(&samples, &conds(d.dataset, &labels)))?;
        let names: Vec<&str> = good.metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sw2", "sw2_floor", "sw2_ratio", "cond_sw2"]);
        assert!(metric(&good, "sw2_floor") < 0.1);
        assert!(metric(&good, "sw2_ratio") < 2.0, "{good:?}");
        // Relabelled points: the points are right, their classes are not.
        let wrong: Vec<u32> = labels.iter().map(|l| (l + 1) % 8).collect();
        let bad = Toy::evaluate(&d, &eval, 0, &view(&samples, &conds(d.dataset, &wrong)))?;
        assert_eq!(metric(&bad, "sw2"), metric(&good, "sw2"));
        assert!(
            metric(&bad, "cond_sw2") > 5.0 * metric(&good, "cond_sw2"),
            "{bad:?} {good:?}"
        );
        // Noise alone is far from the data.
        let noise = Tensor::from_vec(Rng::new(1).normal_vec(5000), (2500, 2), &dev)?;
        let far = Toy::evaluate(&d, &eval, 0, &view(&noise, &[]))?;
        assert!(metric(&far, "sw2_ratio") > 3.0, "{far:?}");
        assert_eq!(far.metrics.len(), 3);
        Ok(())
    }

    #[test]
    fn samples_are_written_as_csv_and_png() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let dir = std::env::temp_dir().join(format!("sugarcube-toy-test-{}", std::process::id()));
        let d = data(ToyKind::Moons, true);
        let info = d.info()?;
        let samples = Tensor::new(&[[0.0f32, 0.5], [-1.0, 2.0], [10.0, 0.0]], &dev)?;
        let paths = Toy::write_samples(
            &d,
            &info,
            &view(&samples, &conds(d.dataset, &[0, 1, 2])),
            &dir,
        )?;
        assert_eq!(
            paths,
            vec![dir.join("samples.csv"), dir.join("samples.png")]
        );
        let csv = std::fs::read_to_string(&paths[0])?;
        assert_eq!(csv, "x,y,label\n0,0.5,0\n-1,2,1\n10,0,2\n");
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&paths[1])?));
        let reader = decoder.read_info()?;
        assert_eq!((reader.info().width, reader.info().height), (512, 512));
        assert!(!dir.join("samples.png.tmp").exists());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn token_evaluation_is_near_its_floor_for_true_sequences_and_far_for_uniform_ones(
    ) -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let d = ToyData {
            n: 1000,
            ..data(ToyKind::Markov, false)
        };
        let eval = ToyEval {
            n: 1000,
            projections: 16,
        };
        let to_tensor = |seqs: Vec<Vec<u32>>| Tensor::new(seqs, &dev);
        let truth = to_tensor(MarkovChain::default().draw(1000, 32, &mut Rng::new(5)))?;
        let good = Toy::evaluate(&d, &eval, 0, &view(&truth, &[]))?;
        assert!(metric(&good, "bigram_tv_ratio") < 2.0, "{:?}", good.metrics);
        let uniform: Vec<Vec<u32>> = {
            let mut r = Rng::new(6);
            (0..1000)
                .map(|_| (0..32).map(|_| r.below(4) as u32).collect())
                .collect()
        };
        let bad = Toy::evaluate(&d, &eval, 0, &view(&to_tensor(uniform)?, &[]))?;
        assert!(
            metric(&bad, "bigram_tv") > 5.0 * metric(&good, "bigram_tv"),
            "{:?}",
            bad.metrics
        );
        assert!(
            (metric(&good, "entropy_bits") - MarkovChain::default().entropy_per_token(32)).abs()
                < 1e-12
        );
        Ok(())
    }
}
