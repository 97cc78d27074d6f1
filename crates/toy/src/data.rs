//! The four 2-D toy distributions, drawn point by point from a seeded [`Rng`] and standardised
//! with fixed per-dataset constants.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use sugarcube_core::cond::{CondSpec, Condition, Field, Value};
use sugarcube_core::domain::{Batch, DataInfo, Dataset};
use sugarcube_core::rng::Rng;

/// Which toy distribution to draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToyKind {
    /// Two interleaving half circles (sklearn's `make_moons`); classes: which moon.
    Moons,
    /// A swiss roll seen from its axis (sklearn's `make_swiss_roll`, coordinates x and z).
    Swissroll,
    /// Eight Gaussians on a circle of radius 4 (as in FFJORD's code); classes: which mode.
    #[serde(rename = "8gaussians", alias = "eight_gaussians")]
    EightGaussians,
    /// A 4 x 4 checkerboard with half of the squares filled (as in FFJORD).
    Checkerboard,
    /// Four Gaussians at (+-2, +-2) whose class is the product of two attributes: `x` (left,
    /// right) and `y` (bottom, top), two condition fields. For guidance by one attribute, by
    /// both, and by one but not the other.
    Quadrants,
    /// Token sequences from a fixed 4-state Markov chain ([`crate::markov::MarkovChain`]),
    /// whose entropy is known exactly: for the masked process.
    Markov,
}

/// Radius of the circle the eight Gaussians sit on (before standardisation).
const GAUSSIANS_RADIUS: f64 = 4.0;
/// The swiss roll's parameter range: t in [1.5 pi, 4.5 pi].
const ROLL_START: f64 = 1.5 * PI;
const ROLL_END: f64 = 4.5 * PI;
/// The quadrant Gaussians sit at (+-2, +-2).
const QUADRANT_OFFSET: f64 = 2.0;

impl ToyKind {
    /// All kinds, in a fixed order.
    pub const ALL: [ToyKind; 5] = [
        ToyKind::Moons,
        ToyKind::Swissroll,
        ToyKind::EightGaussians,
        ToyKind::Checkerboard,
        ToyKind::Quadrants,
    ];

    /// The name used in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            ToyKind::Moons => "moons",
            ToyKind::Swissroll => "swissroll",
            ToyKind::EightGaussians => "8gaussians",
            ToyKind::Checkerboard => "checkerboard",
            ToyKind::Quadrants => "quadrants",
            ToyKind::Markov => "markov",
        }
    }

    /// Whether the data is token sequences rather than points.
    pub fn is_tokens(self) -> bool {
        self == ToyKind::Markov
    }

    /// The default Gaussian noise standard deviation, in the generator's raw units (before
    /// standardisation): moons 0.05 (the shape spans about 3 x 1.5), swiss roll 0.5 (radius up
    /// to 14), 8 Gaussians 0.5 (FFJORD's mode width, on a circle of radius 4), checkerboard 0
    /// (sharp squares, as in FFJORD).
    pub fn default_noise(self) -> f64 {
        match self {
            ToyKind::Moons => 0.05,
            ToyKind::Swissroll => 0.5,
            ToyKind::EightGaussians => 0.5,
            ToyKind::Checkerboard => 0.0,
            ToyKind::Quadrants => 0.5,
            ToyKind::Markov => 0.0,
        }
    }

    /// Class names (one per label id), empty for kinds without classes.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            ToyKind::Moons => &["upper", "lower"],
            ToyKind::EightGaussians => &["E", "NE", "N", "NW", "W", "SW", "S", "SE"],
            ToyKind::Quadrants => &["left-bottom", "left-top", "right-bottom", "right-top"],
            ToyKind::Swissroll | ToyKind::Checkerboard | ToyKind::Markov => &[],
        }
    }

    /// The condition fields of conditional data: one categorical `class` field, or for
    /// quadrants the two fields `x` (left, right) and `y` (bottom, top).
    pub fn cond_spec(self) -> CondSpec {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            ToyKind::Quadrants => CondSpec {
                fields: vec![
                    Field::categorical("x", names(&["left", "right"])),
                    Field::categorical("y", names(&["bottom", "top"])),
                ],
            },
            _ => CondSpec::classes("class", names(self.class_names())),
        }
    }

    /// The condition of a point of class `label`.
    pub fn condition(self, label: u32) -> Condition {
        match self {
            ToyKind::Quadrants => Condition(vec![Value::Class(label / 2), Value::Class(label % 2)]),
            _ => Condition(vec![Value::Class(label)]),
        }
    }

    /// The class of a point given its condition's values, when the condition fixes it.
    pub fn label_of(self, c: &Condition) -> Option<u32> {
        match self {
            ToyKind::Quadrants => Some(c.class(0)? * 2 + c.class(1)?),
            _ => c.class(0),
        }
    }

    /// One point in raw coordinates and its class (0 for kinds without classes).
    fn raw_point(self, noise: f64, rng: &mut Rng) -> ([f64; 2], u32) {
        let (p, label) = match self {
            ToyKind::Moons => {
                // make_moons places points on a grid of angles; here angles are uniform, so each
                // draw is independent and identically distributed.
                let label = rng.below(2) as u32;
                let theta = PI * rng.uniform();
                let p = if label == 0 {
                    [theta.cos(), theta.sin()]
                } else {
                    [1.0 - theta.cos(), 0.5 - theta.sin()]
                };
                (p, label)
            }
            ToyKind::Swissroll => {
                let t = ROLL_START + (ROLL_END - ROLL_START) * rng.uniform();
                ([t * t.cos(), t * t.sin()], 0)
            }
            ToyKind::EightGaussians => {
                let k = rng.below(8) as u32;
                let angle = k as f64 * PI / 4.0;
                (
                    [
                        GAUSSIANS_RADIUS * angle.cos(),
                        GAUSSIANS_RADIUS * angle.sin(),
                    ],
                    k,
                )
            }
            ToyKind::Checkerboard => {
                // x1 in [-2, 2); x2 in one of the two unit rows of the column x1 falls in whose
                // parity matches; everything doubled, so the board covers [-4, 4]^2.
                let x1 = 4.0 * rng.uniform() - 2.0;
                let row = rng.uniform() - 2.0 * rng.below(2) as f64;
                let x2 = row + x1.floor().rem_euclid(2.0);
                ([2.0 * x1, 2.0 * x2], 0)
            }
            ToyKind::Quadrants => {
                let k = rng.below(4) as u32;
                let sx = if k / 2 == 1 { 1.0 } else { -1.0 };
                let sy = if k % 2 == 1 { 1.0 } else { -1.0 };
                ([QUADRANT_OFFSET * sx, QUADRANT_OFFSET * sy], k)
            }
            ToyKind::Markov => {
                panic!("markov data is token sequences, not points: see crate::markov")
            }
        };
        if noise > 0.0 {
            (
                [p[0] + noise * rng.normal(), p[1] + noise * rng.normal()],
                label,
            )
        } else {
            (p, label)
        }
    }

    /// The exact mean and standard deviation per axis of the raw distribution with Gaussian
    /// noise of standard deviation `noise`; points are standardised by these fixed constants.
    pub fn moments(self, noise: f64) -> ([f64; 2], [f64; 2]) {
        let v = noise * noise;
        let (mean, var) = match self {
            // Uniform angle on [0, pi]: E cos = 0, E sin = 2/pi, E cos^2 = E sin^2 = 1/2.
            ToyKind::Moons => ([0.5, 0.25], [0.75, 0.5625 - 1.0 / PI]),
            ToyKind::Swissroll => {
                // t uniform on [a, b]: E t cos t = 2, E t sin t = 2 / (3 pi),
                // E t^2 cos^2 t = ((b^3 - a^3) / 6 - 3 pi / 4) / (b - a), sin^2 with +.
                let (a, b) = (ROLL_START, ROLL_END);
                let base = (b.powi(3) - a.powi(3)) / 6.0;
                let mean = [2.0, 2.0 / (3.0 * PI)];
                let ex2 = (base - 0.75 * PI) / (b - a);
                let ez2 = (base + 0.75 * PI) / (b - a);
                (mean, [ex2 - mean[0] * mean[0], ez2 - mean[1] * mean[1]])
            }
            ToyKind::EightGaussians => {
                let r2 = GAUSSIANS_RADIUS * GAUSSIANS_RADIUS;
                ([0.0, 0.0], [r2 / 2.0, r2 / 2.0])
            }
            // Both coordinates are uniform on [-4, 4].
            ToyKind::Checkerboard => ([0.0, 0.0], [16.0 / 3.0, 16.0 / 3.0]),
            ToyKind::Quadrants => ([0.0, 0.0], [QUADRANT_OFFSET * QUADRANT_OFFSET; 2]),
            ToyKind::Markov => ([0.0, 0.0], [1.0, 1.0]),
        };
        (mean, [(var[0] + v).sqrt(), (var[1] + v).sqrt()])
    }

    /// `n` standardised points and their classes (all 0 for kinds without classes).
    pub fn draw(self, noise: f64, n: usize, rng: &mut Rng) -> (Vec<[f32; 2]>, Vec<u32>) {
        let (mean, std) = self.moments(noise);
        (0..n)
            .map(|_| {
                let (p, label) = self.raw_point(noise, rng);
                let x = ((p[0] - mean[0]) / std[0]) as f32;
                let y = ((p[1] - mean[1]) / std[1]) as f32;
                ([x, y], label)
            })
            .unzip()
    }
}

/// A drawn set of toy points, held in memory.
pub struct ToyDataset {
    kind: ToyKind,
    points: Vec<[f32; 2]>,
    labels: Option<Vec<u32>>,
    info: DataInfo,
}

impl ToyDataset {
    /// Wraps points of `kind` and, for conditional data, their labels.
    pub fn new(
        kind: ToyKind,
        points: Vec<[f32; 2]>,
        labels: Option<Vec<u32>>,
        info: DataInfo,
    ) -> Self {
        Self {
            kind,
            points,
            labels,
            info,
        }
    }

    /// The points, in model (standardised) coordinates.
    pub fn points(&self) -> &[[f32; 2]] {
        &self.points
    }

    /// The class ids, for conditional data.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }
}

impl Dataset for ToyDataset {
    fn len(&self) -> usize {
        self.points.len()
    }

    fn info(&self) -> DataInfo {
        self.info.clone()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let mut flat = Vec::with_capacity(2 * indices.len());
        for &i in indices {
            let p = self.points.get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "index {i} is out of range for {} points",
                    self.points.len()
                ))
            })?;
            flat.extend_from_slice(p);
        }
        let x0 = Tensor::from_vec(flat, (indices.len(), 2), device)?;
        let cond = match &self.labels {
            Some(labels) => indices
                .iter()
                .map(|&i| self.kind.condition(labels[i]))
                .collect(),
            None => vec![],
        };
        Ok(Batch {
            x0,
            cond,
            lengths: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_std(points: &[[f32; 2]]) -> ([f64; 2], [f64; 2]) {
        let n = points.len() as f64;
        let mut mean = [0.0; 2];
        let mut std = [0.0; 2];
        for a in 0..2 {
            mean[a] = points.iter().map(|p| p[a] as f64).sum::<f64>() / n;
            std[a] = (points
                .iter()
                .map(|p| (p[a] as f64 - mean[a]).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
        }
        (mean, std)
    }

    #[test]
    fn draws_are_deterministic_and_standardised() {
        for kind in ToyKind::ALL {
            for noise in [kind.default_noise(), 0.3] {
                let (a, la) = kind.draw(noise, 100_000, &mut Rng::stream(5, 0));
                let (b, lb) = kind.draw(noise, 100_000, &mut Rng::stream(5, 0));
                assert_eq!(a, b);
                assert_eq!(la, lb);
                let (mean, std) = mean_std(&a);
                for ax in 0..2 {
                    assert!(
                        mean[ax].abs() < 0.02,
                        "{kind:?} noise {noise}: mean {mean:?}"
                    );
                    assert!(
                        (std[ax] - 1.0).abs() < 0.02,
                        "{kind:?} noise {noise}: std {std:?}"
                    );
                }
                let (c, _) = kind.draw(noise, 10, &mut Rng::stream(5, 1));
                assert_ne!(a[..10], c[..]);
            }
        }
    }

    #[test]
    fn labels_cover_the_classes() {
        let (_, labels) = ToyKind::EightGaussians.draw(0.5, 8000, &mut Rng::new(1));
        for k in 0..8u32 {
            let count = labels.iter().filter(|&&l| l == k).count();
            assert!((800..1200).contains(&count), "mode {k}: {count}");
        }
        let (points, labels) = ToyKind::Moons.draw(0.0, 1000, &mut Rng::new(2));
        // The upper moon lies above the lower one on average.
        let mean_y = |c: u32| {
            let ys: Vec<f32> = points
                .iter()
                .zip(&labels)
                .filter(|(_, &l)| l == c)
                .map(|(p, _)| p[1])
                .collect();
            ys.iter().sum::<f32>() / ys.len() as f32
        };
        assert!(mean_y(0) > mean_y(1) + 0.5);
    }

    #[test]
    fn checkerboard_fills_half_the_squares() {
        let (points, _) = ToyKind::Checkerboard.draw(0.0, 20_000, &mut Rng::new(3));
        let (mean, std) = ToyKind::Checkerboard.moments(0.0);
        let mut counts = [[0usize; 4]; 4];
        for p in &points {
            let x = p[0] as f64 * std[0] + mean[0];
            let y = p[1] as f64 * std[1] + mean[1];
            let (i, j) = (
                ((x + 4.0) / 2.0).floor() as usize,
                ((y + 4.0) / 2.0).floor() as usize,
            );
            counts[i.min(3)][j.min(3)] += 1;
        }
        for (i, row) in counts.iter().enumerate() {
            for (j, &c) in row.iter().enumerate() {
                if (i + j) % 2 == 0 {
                    assert!(c > 2000, "square ({i}, {j}) should be full: {c}");
                } else {
                    assert_eq!(c, 0, "square ({i}, {j}) should be empty");
                }
            }
        }
    }
}
