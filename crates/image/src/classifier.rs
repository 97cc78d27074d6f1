//! The evaluation classifier: a small convolutional network trained (deterministically, from a
//! seed) on the training split of an image dataset. Its penultimate features give the space in
//! which `fd` (the Fréchet distance) is measured, and its predictions give `cond_accuracy`.

use anyhow::Context;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use sugarcube_core::nn::unet::Conv;
use sugarcube_core::nn::Dims;
use sugarcube_core::optim::{AdamW, AdamWConfig};
use sugarcube_core::params::Params;
use sugarcube_core::progress::Progress;
use sugarcube_core::rng::Rng;

/// Width of the feature vector the Fréchet distance is computed on.
pub const FEATURES: usize = 128;

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
        Self { epochs: 20, batch_size: 64, lr: 2e-3, shift: 2, flip: true }
    }
}

/// conv3x3 -> SiLU, twice per stage (the second with stride 2), three stages, global average
/// pooling to `FEATURES` values, then a linear layer to the classes. The convolutions are
/// sugarcube's fused CPU convolutions ([`Conv`]).
pub struct Classifier {
    convs: Vec<Conv>,
    head: Linear,
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

impl Classifier {
    /// Builds the network for `channels`-channel images and `classes` classes.
    pub fn new(vb: VarBuilder, channels: usize, classes: usize) -> Result<Self> {
        let plan = [(channels, 32, 1), (32, 32, 2), (32, 64, 1), (64, 64, 2), (64, FEATURES, 1), (FEATURES, FEATURES, 2)];
        let convs = plan
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, stride))| Conv::new(vb.pp(format!("conv{i}")), Dims::Two, cin, cout, 3, stride, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { convs, head: candle_nn::linear(FEATURES, classes, vb.pp("head"))? })
    }

    /// `[B, FEATURES]` features of `[B, C, H, W]` images in [-1, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward(&h)?.silu()?;
        }
        h.flatten_from(2)?.mean(D::Minus1)
    }

    /// `[B, classes]` logits.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features(x)?)
    }

    /// Features and predicted classes of many images, in batches.
    pub fn describe(&self, images: &Tensor, batch: usize) -> Result<(Vec<f32>, Vec<u32>)> {
        let n = images.dim(0)?;
        let (mut feats, mut preds) = (Vec::with_capacity(n * FEATURES), Vec::with_capacity(n));
        for first in (0..n).step_by(batch) {
            let x = images.narrow(0, first, batch.min(n - first))?;
            let f = self.features(&x)?;
            let p = self.head.forward(&f)?.argmax(D::Minus1)?;
            feats.extend(f.flatten_all()?.to_vec1::<f32>()?);
            preds.extend(p.to_vec1::<u32>()?);
        }
        Ok((feats, preds))
    }
}

/// Trains a classifier on `images` (`[N, C, H, W]`) with `labels`; deterministic for a seed.
pub fn train(
    images: &Tensor,
    labels: &[u32],
    classes: usize,
    cfg: &ClassifierConfig,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<(Params, Classifier)> {
    let device = images.device().clone();
    let (n, c) = (images.dim(0)?, images.dim(1)?);
    anyhow::ensure!(n == labels.len() && n > 0, "classifier: {n} images but {} labels", labels.len());
    let params = Params::new(seed);
    let net = Classifier::new(params.var_builder(DType::F32, &device), c, classes)?;
    let vars = params.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWConfig { weight_decay: 1e-4, ..Default::default() })?;
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let mut progress = Progress::new("classifier", "step", total as u64, 0, quiet);
    let labels_t = Tensor::from_vec(labels.to_vec(), n, &device)?;
    let mut step = 0;
    let mut aug_rng = Rng::stream(seed, 999);
    for epoch in 0..cfg.epochs {
        let mut order: Vec<u32> = (0..n as u32).collect();
        Rng::stream(seed, 1000 + epoch as u64).shuffle(&mut order);
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::from_vec(chunk.to_vec(), chunk.len(), &device)?;
            let x = augment(&images.index_select(&idx, 0)?, cfg.shift, cfg.flip, &mut aug_rng)?;
            let y = labels_t.index_select(&idx, 0)?;
            let loss = candle_nn::loss::cross_entropy(&net.logits(&x)?, &y)?;
            let grads = loss.backward()?;
            let g = sugarcube_core::optim::gradients(&grads, &vars)?;
            let lr = sugarcube_core::optim::lr_at(sugarcube_core::optim::LrSchedule::Cosine, cfg.lr, total / 20, total, step);
            opt.step(&g, lr)?;
            step += 1;
            progress.set(step as u64, &format!("epoch {} loss {:.3}", epoch + 1, loss.to_scalar::<f32>()?));
        }
    }
    progress.finish("trained");
    Ok((params, net))
}

/// Loads the classifier cached at `path`, or trains one and caches it there (atomically).
pub fn load_or_train(
    path: &std::path::Path,
    images: &Tensor,
    labels: &[u32],
    classes: usize,
    cfg: &ClassifierConfig,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<Classifier> {
    let device = images.device().clone();
    if path.exists() {
        // plain tensors, not variables: scoring builds no autograd graph
        let t = sugarcube_core::checkpoint::load_tensors(path, &device)?;
        let vb = VarBuilder::from_tensors(t, DType::F32, &device);
        return Classifier::new(vb, images.dim(1)?, classes)
            .with_context(|| format!("in cached classifier {}", path.display()));
    }
    if !quiet {
        eprintln!("training the evaluation classifier (cached afterwards in {})", path.display());
    }
    let (params, net) = train(images, labels, classes, cfg, seed, quiet)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    sugarcube_core::checkpoint::save_tensors(path, &params.tensors().into_iter().collect())?;
    Ok(net)
}

/// Fraction of `predicted` equal to `expected`.
pub fn accuracy(predicted: &[u32], expected: &[u32]) -> f64 {
    let hits = predicted.iter().zip(expected).filter(|(a, b)| a == b).count();
    hits as f64 / expected.len().max(1) as f64
}

