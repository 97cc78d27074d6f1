//! sugarcube-toy: 2-D toy distributions (moons, swiss roll, 8 Gaussians, checkerboard), a
//! residual MLP denoiser and the sliced Wasserstein-2 distance, as the sugarcube domain `toy`.
//!
//! Points live in "model coordinates": each dataset is standardised per axis by fixed constants
//! (see [`ToyKind::moments`]), the same for training and held-out draws.

pub mod data;
pub mod metrics;
pub mod model;
pub mod plot;

pub use data::{ToyDataset, ToyKind};
pub use metrics::{sliced_wasserstein2, wasserstein2_1d};
pub use model::ToyDenoiser;

use anyhow::{bail, ensure};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{DataInfo, Dataset, Domain, Metric, Split};
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
    /// Whether class labels are given (moons: 2 classes, 8gaussians: 8).
    #[serde(default)]
    pub conditional: bool,
}

fn default_n() -> usize {
    20_000
}

impl ToyData {
    /// The noise level in effect.
    pub fn noise(&self) -> f64 {
        self.noise.unwrap_or_else(|| self.dataset.default_noise())
    }

    /// Checks the table and describes the data: item shape `[2]`, classes when conditional.
    pub fn info(&self) -> anyhow::Result<DataInfo> {
        ensure!(self.n > 0, "data.n must be positive");
        let noise = self.noise();
        ensure!(noise.is_finite() && noise >= 0.0, "data.noise must be a finite number >= 0, got {noise}");
        let names = self.dataset.class_names();
        if self.conditional && names.is_empty() {
            bail!(
                "data.conditional = true, but the {} dataset has no classes (only moons and 8gaussians do)",
                self.dataset.name()
            );
        }
        Ok(DataInfo {
            item_shape: vec![2],
            num_classes: self.conditional.then_some(names.len()),
            class_names: if self.conditional { names.iter().map(|s| s.to_string()).collect() } else { vec![] },
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
        Self { hidden: default_hidden(), blocks: default_blocks(), time_dim: default_time_dim(), layer_norm: false }
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
        Self { n: default_eval_n(), projections: default_projections() }
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

/// The `toy` domain.
pub struct Toy;

impl Domain for Toy {
    const NAME: &'static str = "toy";
    type Data = ToyData;
    type Model = ToyModel;
    type Eval = ToyEval;

    /// Draws `data.n` points for the split (train: stream 0 of `seed`, held-out: stream 1).
    fn dataset(data: &ToyData, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>> {
        let info = data.info()?;
        let (points, labels) = data.dataset.draw(data.noise(), data.n, &mut split_rng(seed, split));
        let labels = data.conditional.then_some(labels);
        Ok(Box::new(ToyDataset::new(points, labels, info)))
    }

    fn denoiser(model: &ToyModel, info: &DataInfo, vb: VarBuilder) -> anyhow::Result<Box<dyn Denoiser>> {
        ensure!(model.hidden > 0 && model.time_dim > 0, "model.hidden and model.time_dim must be positive");
        Ok(Box::new(ToyDenoiser::new(model, info, vb)?))
    }

    fn eval_samples(eval: &ToyEval) -> usize {
        eval.n
    }

    /// Writes `samples.csv` and `samples.png`. Coordinates are model (standardised)
    /// coordinates, not the generator's raw ones; the plot shows [-3, 3]^2.
    fn write_samples(
        _data: &ToyData,
        info: &DataInfo,
        samples: &Tensor,
        labels: Option<&[u32]>,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let points = points_of(samples)?;
        if let Some(l) = labels {
            ensure!(l.len() == points.len(), "{} labels for {} samples", l.len(), points.len());
        }
        plot::write_points(&points, labels, info.num_classes.unwrap_or(0), dir)
    }

    /// Metrics over the first `min(eval.n, N)` samples, against a held-out draw of the same
    /// size (the first points of the held-out split):
    /// - `sw2`: sliced W2 between samples and held-out points;
    /// - `sw2_floor`: the same between the held-out points and an independent draw, averaged
    ///   over five draws (streams 2 to 6): the value a perfect model would get;
    /// - `sw2_ratio`: `sw2 / sw2_floor`;
    /// - `cond_sw2` (conditional data with labels): mean over classes of the sliced W2 between
    ///   the samples and the held-out points of that class.
    ///
    /// All distances use the same `eval.projections` directions, seeded by `seed`.
    fn evaluate(
        data: &ToyData,
        eval: &ToyEval,
        seed: u64,
        samples: &Tensor,
        labels: Option<&[u32]>,
    ) -> anyhow::Result<Vec<Metric>> {
        data.info()?;
        ensure!(eval.projections > 0, "eval.projections must be positive");
        let all = points_of(samples)?;
        let m = all.len().min(eval.n);
        ensure!(m > 0, "no samples to evaluate (eval.n = {}, {} samples)", eval.n, all.len());
        let points = &all[..m];
        let noise = data.noise();
        let (held, held_labels) = data.dataset.draw(noise, m, &mut split_rng(seed, Split::Heldout));
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

        if let (true, Some(labels)) = (data.conditional, labels) {
            ensure!(labels.len() == all.len(), "{} labels for {} samples", labels.len(), all.len());
            let of_class = |pts: &[[f32; 2]], ls: &[u32], c: u32| -> Vec<[f32; 2]> {
                pts.iter().zip(ls).filter(|(_, &l)| l == c).map(|(p, _)| *p).collect()
            };
            let mut per_class = Vec::new();
            for c in 0..data.dataset.class_names().len() as u32 {
                let (a, b) = (of_class(points, &labels[..m], c), of_class(&held, &held_labels, c));
                if !a.is_empty() && !b.is_empty() {
                    per_class.push(sliced_wasserstein2(&a, &b, eval.projections, seed));
                }
            }
            if !per_class.is_empty() {
                let mean = per_class.iter().sum::<f64>() / per_class.len() as f64;
                metrics.push(("cond_sw2".to_string(), mean));
            }
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use sugarcube_core::params::Params;

    fn data(kind: ToyKind, conditional: bool) -> ToyData {
        ToyData { dataset: kind, n: 500, noise: None, conditional }
    }

    fn metric(metrics: &[Metric], name: &str) -> f64 {
        metrics.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no metric {name}")).1
    }

    #[test]
    fn tables_parse_with_defaults_and_reject_unknown_keys() {
        let d: ToyData = toml::from_str("dataset = \"8gaussians\"").unwrap();
        assert_eq!(d, ToyData { dataset: ToyKind::EightGaussians, n: 20_000, noise: None, conditional: false });
        assert_eq!(d.noise(), 0.5);
        let d: ToyData = toml::from_str("dataset = \"eight_gaussians\"\nconditional = true").unwrap();
        assert!(d.conditional);
        assert!(toml::from_str::<ToyData>("dataset = \"moons\"\nnoize = 0.1").is_err());
        let m: ToyModel = toml::from_str("").unwrap();
        assert_eq!(m, ToyModel::default());
        let e: ToyEval = toml::from_str("projections = 64").unwrap();
        assert_eq!((e.n, e.projections), (2000, 64));
        assert_eq!(toml::to_string(&data(ToyKind::EightGaussians, false)).unwrap().lines().next(), Some("dataset = \"8gaussians\""));
    }

    #[test]
    fn batches_have_the_right_shapes() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let ds = Toy::dataset(&data(ToyKind::Moons, true), Split::Train, 0)?;
        assert_eq!(ds.len(), 500);
        assert_eq!(ds.info().num_classes, Some(2));
        let b = ds.batch(&[0, 5, 7], &dev)?;
        assert_eq!(b.x0.dims(), &[3, 2]);
        assert_eq!(b.x0.dtype(), DType::F32);
        let cond = b.cond.expect("conditional batch");
        assert_eq!(cond.dims(), &[3]);
        assert!(cond.to_vec1::<u32>()?.iter().all(|&c| c < 2));

        let ds = Toy::dataset(&data(ToyKind::Checkerboard, false), Split::Heldout, 0)?;
        assert_eq!(ds.info(), DataInfo { item_shape: vec![2], num_classes: None, class_names: vec![] });
        let b = ds.batch(&[1, 2], &dev)?;
        assert_eq!(b.x0.dims(), &[2, 2]);
        assert!(b.cond.is_none());
        assert!(ds.batch(&[500], &dev).is_err());
        Ok(())
    }

    #[test]
    fn splits_differ_and_seeds_repeat() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let d = data(ToyKind::Swissroll, false);
        let first = |split, seed| -> anyhow::Result<Vec<f32>> {
            Ok(Toy::dataset(&d, split, seed)?.batch(&[0, 1], &dev)?.x0.flatten_all()?.to_vec1()?)
        };
        assert_eq!(first(Split::Train, 3)?, first(Split::Train, 3)?);
        assert_ne!(first(Split::Train, 3)?, first(Split::Heldout, 3)?);
        assert_ne!(first(Split::Train, 3)?, first(Split::Train, 4)?);
        Ok(())
    }

    #[test]
    fn conditional_data_without_classes_is_an_error() {
        for kind in [ToyKind::Swissroll, ToyKind::Checkerboard] {
            let err = Toy::dataset(&data(kind, true), Split::Train, 0).err().expect("should fail");
            assert!(err.to_string().contains("data.conditional"), "{err}");
        }
    }

    #[test]
    fn denoiser_gives_one_prediction_per_point() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let model = ToyModel { hidden: 32, blocks: 2, time_dim: 16, layer_norm: true };
        let x = Tensor::zeros((5, 2), DType::F32, &dev)?;
        let t = Tensor::new(&[0.0f32, 1.5, 10.0, 500.0, 999.0], &dev)?;
        for conditional in [false, true] {
            let info = data(ToyKind::EightGaussians, conditional).info()?;
            let params = Params::new(0);
            let net = Toy::denoiser(&model, &info, params.var_builder(DType::F32, &dev))?;
            if conditional {
                let ids = Tensor::new(&[0u32, 3, 7, 8, 8], &dev)?;
                let with = net.forward(&x, &t, Some(&ids))?;
                assert_eq!(with.dims(), &[5, 2]);
                // No ids means the null class (id 8) for every row.
                let null = net.forward(&x, &t, None)?.to_vec2::<f32>()?;
                assert_eq!(with.to_vec2::<f32>()?[3..], null[3..]);
                assert!(params.vars().iter().any(|(n, _)| n == "class.weight"));
            } else {
                assert_eq!(net.forward(&x, &t, None)?.dims(), &[5, 2]);
                assert!(net.forward(&x, &t, Some(&Tensor::new(&[0u32; 5], &dev)?)).is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn evaluation_scores_held_out_data_near_the_floor() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let d = ToyData { n: 2000, ..data(ToyKind::EightGaussians, true) };
        let eval = ToyEval { n: 2000, projections: 128 };
        // A fresh draw from the true distribution stands in for a perfect model.
        let (points, labels) = d.dataset.draw(d.noise(), 2500, &mut Rng::stream(11, 7));
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        let samples = Tensor::from_vec(flat, (2500, 2), &dev)?;
        let good = Toy::evaluate(&d, &eval, 0, &samples, Some(&labels))?;
        let names: Vec<&str> = good.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sw2", "sw2_floor", "sw2_ratio", "cond_sw2"]);
        assert!(metric(&good, "sw2_floor") < 0.1);
        assert!(metric(&good, "sw2_ratio") < 2.0, "{good:?}");
        // Relabelled points: the points are right, their classes are not.
        let wrong: Vec<u32> = labels.iter().map(|l| (l + 1) % 8).collect();
        let bad = Toy::evaluate(&d, &eval, 0, &samples, Some(&wrong))?;
        assert_eq!(metric(&bad, "sw2"), metric(&good, "sw2"));
        assert!(metric(&bad, "cond_sw2") > 5.0 * metric(&good, "cond_sw2"), "{bad:?} {good:?}");
        // Noise alone is far from the data.
        let noise = Tensor::from_vec(Rng::new(1).normal_vec(5000), (2500, 2), &dev)?;
        let far = Toy::evaluate(&d, &eval, 0, &noise, None)?;
        assert!(metric(&far, "sw2_ratio") > 3.0, "{far:?}");
        assert_eq!(far.len(), 3);
        Ok(())
    }

    #[test]
    fn samples_are_written_as_csv_and_png() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let dir = std::env::temp_dir().join(format!("sugarcube-toy-test-{}", std::process::id()));
        let d = data(ToyKind::Moons, true);
        let info = d.info()?;
        let samples = Tensor::new(&[[0.0f32, 0.5], [-1.0, 2.0], [10.0, 0.0]], &dev)?;
        let paths = Toy::write_samples(&d, &info, &samples, Some(&[0, 1, 2]), &dir)?;
        assert_eq!(paths, vec![dir.join("samples.csv"), dir.join("samples.png")]);
        let csv = std::fs::read_to_string(&paths[0])?;
        assert_eq!(csv, "x,y,label\n0,0.5,0\n-1,2,1\n10,0,2\n");
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&paths[1])?));
        let reader = decoder.read_info()?;
        assert_eq!((reader.info().width, reader.info().height), (512, 512));
        assert!(!dir.join("samples.png.tmp").exists());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
