//! The evaluation classifier the domains share: a small convolutional network over `[C, L]`
//! or `[C, H, W]` items, trained (deterministically, from a seed) on a domain's real labelled
//! data. Its predictions give `cond_accuracy` (does a sample show the condition it was asked
//! for?) beside `classifier_accuracy` (the same on held-out real items: the measure's own
//! ceiling), and its penultimate features the space of a Fréchet distance.
//!
//! Two kinds of targets: one class per item (softmax, cross-entropy, argmax), or a set of
//! labels per item (one sigmoid per label, binary cross-entropy; the predicted set is the
//! labels with a positive logit, and a prediction is right when the sets are equal).
//! Domain-specific augmentation (image shifts and mirrors, DNA reverse complements) is passed
//! in as a function of the batch.

use super::unet::Conv;
use super::Dims;
use crate::optim::{AdamW, AdamWConfig};
use crate::params::Params;
use crate::progress::Progress;
use crate::rng::Rng;
use anyhow::Context;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use std::path::Path;

/// Width of the feature vector (the Fréchet distance is computed on it).
pub const FEATURES: usize = 128;

/// What the classifier is trained to predict.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class per item, `0..classes`.
    Classes {
        /// Each item's class.
        labels: Vec<u32>,
        /// How many classes there are.
        classes: usize,
    },
    /// A set of labels per item (possibly empty), each in `0..labels`.
    Sets {
        /// Each item's labels.
        sets: Vec<Vec<u32>>,
        /// How many labels there are.
        labels: usize,
    },
}

impl Targets {
    /// How many items the targets describe.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Sets { sets, .. } => sets.len(),
        }
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The network's output width.
    pub fn outputs(&self) -> usize {
        match self {
            Targets::Classes { classes, .. } => *classes,
            Targets::Sets { labels, .. } => *labels,
        }
    }

    /// The targets of the items at `idx`, as the loss takes them: `[b]` u32 classes or
    /// `[b, labels]` float32 indicators.
    fn batch(&self, idx: &[u32], device: &candle_core::Device) -> Result<Tensor> {
        match self {
            Targets::Classes { labels, .. } => Tensor::from_vec(
                idx.iter().map(|&i| labels[i as usize]).collect::<Vec<_>>(),
                idx.len(),
                device,
            ),
            Targets::Sets { sets, labels } => {
                let mut y = vec![0f32; idx.len() * labels];
                for (r, &i) in idx.iter().enumerate() {
                    for &l in &sets[i as usize] {
                        y[r * labels + l as usize] = 1.0;
                    }
                }
                Tensor::from_vec(y, (idx.len(), *labels), device)
            }
        }
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        match self {
            Targets::Classes { .. } => candle_nn::loss::cross_entropy(logits, y),
            // binary cross-entropy with logits, stably: max(z, 0) - z y + log(1 + exp(-|z|))
            Targets::Sets { .. } => (logits.relu()? - (logits * y)?
                + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?
            .mean_all(),
        }
    }
}

/// A prediction: a class, or a sorted set of labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The most likely class.
    Class(u32),
    /// The labels with a positive logit, ascending.
    Set(Vec<u32>),
}

/// How the last stage's feature map becomes one feature vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Global average: the share of the item that shows a feature (images).
    Mean,
    /// Global maximum: whether a feature occurs anywhere (motif presence in DNA, as in
    /// DeepBind-style sequence models).
    Max,
}

/// The classifier's pooling and training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    /// The network's global pooling.
    pub pooling: Pooling,
    /// Passes over the training items.
    pub epochs: usize,
    /// Items per step.
    pub batch_size: usize,
    /// AdamW learning rate (cosine-decayed to 0 after a 5% warm-up).
    pub lr: f64,
}

/// conv3 -> SiLU, twice per stage (the second with stride 2), three stages (32, 64 and
/// [`FEATURES`] channels), global pooling ([`Pooling`]), then a linear layer to the outputs, on
/// sugarcube's fused CPU convolutions ([`Conv`]), 1-D or 2-D.
pub struct EvalClassifier {
    convs: Vec<Conv>,
    head: Linear,
    sets: bool,
    pooling: Pooling,
}

impl EvalClassifier {
    /// Builds the network for `channels`-channel items of `dims` and `targets`' outputs.
    pub fn new(
        vb: VarBuilder,
        dims: Dims,
        channels: usize,
        outputs: usize,
        sets: bool,
        pooling: Pooling,
    ) -> Result<Self> {
        let plan = [
            (channels, 32, 1),
            (32, 32, 2),
            (32, 64, 1),
            (64, 64, 2),
            (64, FEATURES, 1),
            (FEATURES, FEATURES, 2),
        ];
        let convs = plan
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, stride))| {
                Conv::new(vb.pp(format!("conv{i}")), dims, cin, cout, 3, stride, false)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            convs,
            head: candle_nn::linear(FEATURES, outputs, vb.pp("head"))?,
            sets,
            pooling,
        })
    }

    /// `[B, FEATURES]` features of a `[B, C, ...]` batch.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward(&h)?.silu()?;
        }
        let h = h.flatten_from(2)?;
        match self.pooling {
            Pooling::Mean => h.mean(D::Minus1),
            Pooling::Max => h.max(D::Minus1),
        }
    }

    /// `[B, outputs]` logits.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features(x)?)
    }

    /// Features (`FEATURES` per item, flat) and predictions of many items, in batches.
    pub fn describe(&self, items: &Tensor, batch: usize) -> Result<(Vec<f32>, Vec<Prediction>)> {
        let n = items.dim(0)?;
        let (mut feats, mut preds) = (Vec::with_capacity(n * FEATURES), Vec::with_capacity(n));
        for first in (0..n).step_by(batch.max(1)) {
            let x = items.narrow(0, first, batch.max(1).min(n - first))?;
            let f = self.features(&x)?;
            let z = self.head.forward(&f)?;
            if self.sets {
                let k = z.dim(1)?;
                let z = z.flatten_all()?.to_vec1::<f32>()?;
                preds.extend(z.chunks(k).map(|row| {
                    Prediction::Set((0..k as u32).filter(|&j| row[j as usize] > 0.0).collect())
                }));
            } else {
                preds.extend(
                    z.argmax(D::Minus1)?
                        .to_vec1::<u32>()?
                        .into_iter()
                        .map(Prediction::Class),
                );
            }
            feats.extend(f.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((feats, preds))
    }
}

/// An augmentation of a training batch, drawing from the classifier's own stream.
pub type Augment<'a> = &'a dyn Fn(&Tensor, &mut Rng) -> Result<Tensor>;

/// No augmentation.
pub fn no_augment(x: &Tensor, _: &mut Rng) -> Result<Tensor> {
    Ok(x.clone())
}

/// Trains a classifier on `items` (`[N, C, ...]`) for `targets`; deterministic for a seed.
pub fn train(
    items: &Tensor,
    targets: &Targets,
    dims: Dims,
    settings: &TrainSettings,
    seed: u64,
    quiet: bool,
    augment: Augment,
) -> anyhow::Result<(Params, EvalClassifier)> {
    crate::nn::flush_denormals();
    let device = items.device().clone();
    let (n, c) = (items.dim(0)?, items.dim(1)?);
    anyhow::ensure!(
        n == targets.len() && n > 0,
        "classifier: {n} items but {} targets",
        targets.len()
    );
    let params = Params::new(seed);
    let net = EvalClassifier::new(
        params.var_builder(DType::F32, &device),
        dims,
        c,
        targets.outputs(),
        matches!(targets, Targets::Sets { .. }),
        settings.pooling,
    )?;
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig {
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let steps_per_epoch = n.div_ceil(settings.batch_size);
    let total = steps_per_epoch * settings.epochs;
    let mut progress = Progress::new("classifier", "step", total as u64, 0, quiet);
    let mut step = 0;
    let mut aug_rng = Rng::stream(seed, 999);
    for epoch in 0..settings.epochs {
        let mut order: Vec<u32> = (0..n as u32).collect();
        Rng::stream(seed, 1000 + epoch as u64).shuffle(&mut order);
        for chunk in order.chunks(settings.batch_size) {
            let idx = Tensor::from_vec(chunk.to_vec(), chunk.len(), &device)?;
            let x = augment(&items.index_select(&idx, 0)?, &mut aug_rng)?;
            let y = targets.batch(chunk, &device)?;
            let loss = targets.loss(&net.logits(&x)?, &y)?;
            let grads = loss.backward()?;
            let g = crate::optim::gradients(&grads, &vars)?;
            let lr = crate::optim::lr_at(
                crate::optim::LrSchedule::Cosine,
                settings.lr,
                total / 20,
                total,
                step,
            );
            opt.step(&g, lr)?;
            step += 1;
            progress.set(
                step as u64,
                &format!("epoch {} loss {:.3}", epoch + 1, loss.to_scalar::<f32>()?),
            );
        }
    }
    progress.finish("trained");
    Ok((params, net))
}

/// Loads the classifier cached at `path`, or trains one ([`train`]) and caches it there
/// (atomically).
#[allow(clippy::too_many_arguments)]
pub fn load_or_train(
    path: &Path,
    items: &Tensor,
    targets: &Targets,
    dims: Dims,
    settings: &TrainSettings,
    seed: u64,
    quiet: bool,
    augment: Augment,
) -> anyhow::Result<EvalClassifier> {
    let device = items.device().clone();
    let sets = matches!(targets, Targets::Sets { .. });
    if path.exists() {
        // plain tensors, not variables: scoring builds no autograd graph
        let t = crate::checkpoint::load_tensors(path, &device)?;
        let vb = VarBuilder::from_tensors(t, DType::F32, &device);
        return EvalClassifier::new(
            vb,
            dims,
            items.dim(1)?,
            targets.outputs(),
            sets,
            settings.pooling,
        )
        .with_context(|| format!("in cached classifier {}", path.display()));
    }
    if !quiet {
        eprintln!(
            "training the evaluation classifier (cached afterwards in {})",
            path.display()
        );
    }
    let (params, net) = train(items, targets, dims, settings, seed, quiet, augment)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::checkpoint::save_tensors(path, &params.tensors().into_iter().collect())?;
    Ok(net)
}

/// The classes of single-class predictions (`u32::MAX` for a label set).
pub fn classes_of(predictions: &[Prediction]) -> Vec<u32> {
    predictions
        .iter()
        .map(|p| match p {
            Prediction::Class(c) => *c,
            Prediction::Set(_) => u32::MAX,
        })
        .collect()
}

/// Fraction of `predicted` equal to `expected`.
pub fn accuracy<T: PartialEq>(predicted: &[T], expected: &[T]) -> f64 {
    let hits = predicted
        .iter()
        .zip(expected)
        .filter(|(a, b)| a == b)
        .count();
    hits as f64 / expected.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Items whose class is written in their mean: a few epochs separate them, for both kinds
    /// of targets, and describe() gives one prediction and FEATURES values per item.
    #[test]
    fn learns_separable_classes_and_label_sets() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let n = 64;
        let mut rng = Rng::stream(3, 0);
        let mut x = vec![];
        let mut classes = vec![];
        for i in 0..n {
            let c = (i % 2) as u32;
            classes.push(c);
            x.extend(
                (0..2 * 16).map(|_| rng.normal() as f32 * 0.3 + if c == 1 { 1.0 } else { -1.0 }),
            );
        }
        let items = Tensor::from_vec(x, (n, 2, 16), &dev)?;
        let settings = TrainSettings {
            pooling: Pooling::Mean,
            epochs: 15,
            batch_size: 16,
            lr: 3e-3,
        };
        let targets = Targets::Classes {
            labels: classes.clone(),
            classes: 2,
        };
        let (_, net) = train(&items, &targets, Dims::One, &settings, 0, true, &no_augment)?;
        let (f, p) = net.describe(&items, 10)?;
        assert_eq!((f.len(), p.len()), (n * FEATURES, n));
        let expected: Vec<Prediction> = classes.iter().map(|&c| Prediction::Class(c)).collect();
        assert!(
            accuracy(&p, &expected) > 0.95,
            "{}",
            accuracy(&p, &expected)
        );
        // as label sets: class 1 is the set {0}, class 0 the empty set
        let sets: Vec<Vec<u32>> = classes
            .iter()
            .map(|&c| if c == 1 { vec![0] } else { vec![] })
            .collect();
        let (_, net) = train(
            &items,
            &Targets::Sets {
                sets: sets.clone(),
                labels: 1,
            },
            Dims::One,
            &settings,
            0,
            true,
            &no_augment,
        )?;
        let (_, p) = net.describe(&items, 64)?;
        let expected: Vec<Prediction> = sets.into_iter().map(Prediction::Set).collect();
        assert!(
            accuracy(&p, &expected) > 0.95,
            "{}",
            accuracy(&p, &expected)
        );
        Ok(())
    }
}
