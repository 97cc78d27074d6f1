//! The image domain's evaluation classifier: the shared one
//! ([`sugarcube_core::nn::eval_classifier`], 2-D) trained on the training split of an image
//! dataset with shifts and mirrors. Its penultimate features give the space in which `fd` (the
//! Fréchet distance) is measured, and its predictions give `cond_accuracy`.

use candle_core::{Result, Tensor};
use sugarcube_core::nn::eval_classifier::{self, EvalClassifier, Pooling, Targets, TrainSettings};
use sugarcube_core::nn::Dims;
use sugarcube_core::rng::Rng;

pub use sugarcube_core::nn::eval_classifier::FEATURES;

/// Training settings of the evaluation classifier.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW learning rate (cosine-decayed to 0).
    pub lr: f64,
    /// Training augmentation: largest random shift in pixels along each axis (edges repeated);
    /// 0 turns shifting off.
    pub shift: usize,
    /// Training augmentation: mirror images left-right at random. Turn it off for data whose
    /// meaning changes in a mirror (digits, letters).
    pub flip: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 64,
            lr: 2e-3,
            shift: 2,
            flip: true,
        }
    }
}

/// Bumped whenever the classifier's architecture or training changes, so that cached
/// classifiers trained the old way are not reused.
pub const VERSION: u32 = 2;

/// Training augmentation of a `[B, C, H, W]` batch: each image is shifted by up to `shift`
/// pixels on each axis (edges repeated) and, with `flip`, mirrored left-right with probability
/// 1/2, with draws from `rng`.
pub fn augment(x: &Tensor, shift: usize, flip: bool, rng: &mut Rng) -> Result<Tensor> {
    if shift == 0 && !flip {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let src = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; src.len()];
    let max = shift as i64;
    let span = (2 * max + 1) as u64;
    for i in 0..b {
        let dy = rng.below(span) as i64 - max;
        let dx = rng.below(span) as i64 - max;
        let flip = flip && rng.below(2) == 1;
        for ch in 0..c {
            let plane = (i * c + ch) * h * w;
            for y in 0..h {
                let sy = (y as i64 - dy).clamp(0, h as i64 - 1) as usize;
                for xx in 0..w {
                    let tx = if flip { w - 1 - xx } else { xx };
                    let sx = (tx as i64 - dx).clamp(0, w as i64 - 1) as usize;
                    out[plane + y * w + xx] = src[plane + sy * w + sx];
                }
            }
        }
    }
    Tensor::from_vec(out, (b, c, h, w), x.device())
}

/// Loads the classifier cached at `path`, or trains one on `images` (`[N, C, H, W]`) with
/// `labels` and caches it there (atomically); deterministic for a seed.
pub fn load_or_train(
    path: &std::path::Path,
    images: &Tensor,
    labels: &[u32],
    classes: usize,
    cfg: &ClassifierConfig,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<EvalClassifier> {
    let targets = Targets::Classes {
        labels: labels.to_vec(),
        classes,
    };
    let settings = TrainSettings {
        pooling: Pooling::Mean,
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        lr: cfg.lr,
    };
    let (shift, flip) = (cfg.shift, cfg.flip);
    eval_classifier::load_or_train(
        path,
        images,
        &targets,
        Dims::Two,
        &settings,
        seed,
        quiet,
        &|x, rng| augment(x, shift, flip, rng),
    )
}

pub use sugarcube_core::nn::eval_classifier::classes_of;

/// Fraction of `predicted` equal to `expected`.
pub fn accuracy(predicted: &[u32], expected: &[u32]) -> f64 {
    eval_classifier::accuracy(predicted, expected)
}
