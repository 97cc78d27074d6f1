//! The `image` domain: experiment tables, the dataset and denoiser the trainer sees, sample
//! writing (one PNG per sample and a grid with one row per class) and evaluation (Fréchet
//! distance and conditional accuracy in the feature space of the dataset's own classifier).

use crate::classifier::{self, ClassifierConfig};
use crate::frechet::frechet_between;
use crate::{grid_layout, load_digits_csv, load_folder, load_idx, write_grid, write_png, ImageSet};
use anyhow::{ensure, Context};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use sugarcube_core::cond::{Condition, Value};
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{Batch, DataInfo, Dataset, Domain, Evaluation, Samples, Split};
use sugarcube_core::nn::unet::{Dims, UNet, UNetConfig};
use sugarcube_core::rng::Rng;

/// How the image files are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// MNIST-style IDX files (gzipped or not): `train` images plus `train_labels`.
    Idx,
    /// A folder of PNG/JPEG files, one subfolder per class when labelled.
    Folder,
    /// scikit-learn's UCI digits CSV (8x8).
    DigitsCsv,
}

/// The `[data]` table of an image experiment. Paths are relative to the working directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageData {
    /// File format.
    pub format: ImageFormat,
    /// Training images: an IDX file, a folder, or a CSV file.
    pub train: PathBuf,
    /// Training labels (IDX only).
    #[serde(default)]
    pub train_labels: Option<PathBuf>,
    /// Held-out images for evaluation; without them a tenth of `train` is held out.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Held-out labels (IDX only).
    #[serde(default)]
    pub test_labels: Option<PathBuf>,
    /// Side of the square images the model sees: IDX and CSV images are padded to it, folder
    /// images resized (shorter side) and centre-cropped to it.
    pub size: usize,
    /// Channels for folder images: 1 (grayscale) or 3 (RGB).
    #[serde(default = "one")]
    pub channels: usize,
    /// Train a class-conditional model (needs labels).
    #[serde(default)]
    pub conditional: bool,
    /// Skip unreadable folder images with a warning instead of stopping.
    #[serde(default)]
    pub skip_bad: bool,
    /// Keep only this many training images per class (0 keeps all).
    #[serde(default)]
    pub per_class: usize,
}

fn one() -> usize {
    1
}

/// The `[eval]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageEval {
    /// Samples generated and scored (and held-out images compared).
    pub n: usize,
    /// Seed of the evaluation classifier.
    pub classifier_seed: u64,
    /// How the evaluation classifier is trained.
    pub classifier: ClassifierConfig,
}

impl Default for ImageEval {
    fn default() -> Self {
        Self {
            n: 1000,
            classifier_seed: 0,
            classifier: ClassifierConfig::default(),
        }
    }
}

impl ImageData {
    fn load_raw(&self, images: &Path, labels: Option<&Path>) -> anyhow::Result<ImageSet> {
        let set = match self.format {
            ImageFormat::Idx => load_idx(images, labels)?,
            ImageFormat::DigitsCsv => load_digits_csv(images)?,
            ImageFormat::Folder => {
                ensure!(
                    self.channels == 1 || self.channels == 3,
                    "data.channels must be 1 or 3, got {}",
                    self.channels
                );
                load_folder(images, self.size, self.channels, self.skip_bad)?
            }
        };
        ensure!(
            set.height <= self.size && set.width <= self.size,
            "{}: images are {}x{}, larger than data.size = {}",
            images.display(),
            set.height,
            set.width,
            self.size
        );
        let set = if set.height < self.size || set.width < self.size {
            set.pad_to(self.size)?
        } else {
            set
        };
        if self.conditional {
            ensure!(
                set.labels.is_some(),
                "data.conditional is true but {} has no labels (give data.train_labels, or class subfolders)",
                images.display()
            );
        }
        Ok(set)
    }

    /// Loads a split: the training images (optionally `per_class` of each), or the held-out ones.
    pub fn load(&self, split: Split, seed: u64) -> anyhow::Result<ImageSet> {
        let whole = self.load_raw(&self.train, self.train_labels.as_deref())?;
        let set = match (&self.test, split) {
            (Some(test), Split::Heldout) => self.load_raw(test, self.test_labels.as_deref())?,
            (Some(_), Split::Train) => whole,
            (None, split) => {
                // hold out every tenth image of a seeded shuffle
                let mut order: Vec<usize> = (0..whole.len()).collect();
                Rng::stream(seed, 0x4E1D).shuffle(&mut order);
                let cut = whole.len() / 10;
                let mut chosen: Vec<usize> = match split {
                    Split::Heldout => order[..cut].to_vec(),
                    Split::Train => order[cut..].to_vec(),
                };
                chosen.sort_unstable();
                whole.subset(&chosen)?
            }
        };
        if split == Split::Train && self.per_class > 0 {
            return set.take_per_class(self.per_class, &mut Rng::stream(seed, 0xC1A5));
        }
        Ok(set)
    }
}

/// An [`ImageSet`] seen through the trainer's [`Dataset`] trait.
pub struct ImageDataset {
    set: ImageSet,
    conditional: bool,
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn info(&self) -> DataInfo {
        let info = self.set.data_info();
        if self.conditional {
            info
        } else {
            DataInfo::new(info.item_shape)
        }
    }

    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let (x0, _) = self.set.batch(indices, device)?;
        let cond = match (&self.set.labels, self.conditional) {
            (Some(labels), true) => indices
                .iter()
                .map(|&i| Condition(vec![Value::Class(labels[i])]))
                .collect(),
            _ => vec![],
        };
        Ok(Batch {
            x0,
            cond,
            lengths: None,
        })
    }
}

/// The `image` domain.
pub struct Image;

/// Where the evaluation classifier of a dataset is cached: beside the training data, keyed by
/// the data settings, the classifier settings and its seed.
pub fn classifier_cache(data: &ImageData, eval: &ImageEval) -> anyhow::Result<PathBuf> {
    let key = format!(
        "v{}|{}|{:?}|{:?}|{}|{:?}|{}",
        crate::classifier::VERSION,
        data.train.display(),
        data.train_labels,
        data.format,
        data.size,
        eval.classifier,
        eval.classifier_seed
    );
    let hash = format!("{:x}", sha2::Sha256::digest(key.as_bytes()));
    let dir = if data.train.is_dir() {
        data.train.clone()
    } else {
        data.train.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    Ok(dir
        .join(".sugarcube-cache")
        .join(format!("classifier-{}.safetensors", &hash[..16])))
}

pub(crate) fn set_tensor(set: &ImageSet, device: &Device) -> anyhow::Result<Tensor> {
    let mut shape = vec![set.len()];
    shape.extend(set.item_shape());
    Ok(Tensor::from_vec(set.images.clone(), shape, device)?)
}

/// The first `n` images of a set (all of them when it is smaller).
fn first(set: &ImageSet, n: usize) -> anyhow::Result<ImageSet> {
    set.subset(&(0..n.min(set.len())).collect::<Vec<_>>())
}

impl Domain for Image {
    const NAME: &'static str = "image";
    type Data = ImageData;
    type Model = UNetConfig;
    type Eval = ImageEval;

    fn dataset(data: &ImageData, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>> {
        let set = data.load(split, seed)?;
        Ok(Box::new(ImageDataset {
            set,
            conditional: data.conditional,
        }))
    }

    fn denoiser(
        model: &UNetConfig,
        info: &DataInfo,
        vb: VarBuilder,
    ) -> anyhow::Result<Box<dyn Denoiser>> {
        ensure!(
            info.item_shape.len() == 3,
            "image data must be [C, H, W], got {:?}",
            info.item_shape
        );
        let c = info.item_shape[0];
        Ok(Box::new(UNet::new(vb, model, Dims::Two, c, c, &info.cond)?))
    }

    /// Writes `sample-NNNNN.png` per sample (`sample-NNNNN-CLASS.png` when conditional) and
    /// `grid.png`: one row per class for conditional models (up to 10 per row), else a square.
    fn write_samples(
        _data: &ImageData,
        info: &DataInfo,
        samples: &Samples,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let labels = class_labels(samples.conditions);
        let labels = labels.as_deref();
        let class_names: Vec<String> = match info.cond.fields.first().map(|f| &f.kind) {
            Some(sugarcube_core::cond::FieldKind::Categorical { classes }) => classes.clone(),
            _ => vec![],
        };
        let num_classes = (!class_names.is_empty()).then_some(class_names.len());
        let samples = samples.x.to_device(&Device::Cpu)?;
        let n = samples.dim(0)?;
        let mut files = vec![];
        for i in 0..n {
            let name = match labels {
                Some(l) => {
                    let class = class_names
                        .get(l[i] as usize)
                        .cloned()
                        .unwrap_or_else(|| l[i].to_string());
                    let safe: String = class
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    format!("sample-{i:05}-{safe}.png")
                }
                None => format!("sample-{i:05}.png"),
            };
            let path = dir.join(name);
            write_png(&path, &samples.get(i)?)?;
            files.push(path);
        }
        let grid = dir.join("grid.png");
        let (cells, rows, cols) = grid_layout(&samples, labels.zip(num_classes))?;
        write_grid(&grid, &cells, rows, cols, 2)?;
        files.insert(0, grid);
        Ok(files)
    }

    fn report(
        ctx: &sugarcube_core::report::ReportContext<Self>,
    ) -> anyhow::Result<Vec<sugarcube_core::report::Section>> {
        crate::report::sections(ctx)
    }

    fn eval_samples(eval: &ImageEval) -> usize {
        eval.n
    }

    /// - `fd`: Fréchet distance between the samples and as many held-out images, in the
    ///   classifier's feature space;
    /// - `fd_floor`: the same between as many real training images and the held-out images;
    /// - `cond_accuracy` (conditional): fraction of samples classified as their requested class;
    /// - `classifier_accuracy`: the classifier's accuracy on the held-out images.
    fn evaluate(
        data: &ImageData,
        eval: &ImageEval,
        seed: u64,
        samples: &Samples,
    ) -> anyhow::Result<Evaluation> {
        let labels = class_labels(samples.conditions);
        let labels = labels.as_deref();
        let samples = samples.x;
        let device = Device::Cpu;
        let train = data.load(Split::Train, seed)?;
        let held = data.load(Split::Heldout, seed)?;
        let train_labels = train
            .labels
            .clone()
            .context("evaluation trains a classifier and needs labelled training images")?;
        let classes = train.class_names.len();
        let cache = classifier_cache(data, eval)?;
        let net = classifier::load_or_train(
            &cache,
            &set_tensor(&train, &device)?,
            &train_labels,
            classes,
            &eval.classifier,
            eval.classifier_seed,
            false,
        )?;
        let n = samples.dim(0)?;
        let m = n.min(held.len()).min(train.len());
        ensure!(
            m > classifier::FEATURES,
            "the Fréchet distance needs more than {} samples, got {m}",
            classifier::FEATURES
        );
        let samples = samples.to_device(&device)?.narrow(0, 0, m)?;
        let (f_gen, p_gen) = net.describe(&samples, 256)?;
        let p_gen = classifier::classes_of(&p_gen);
        let held_m = first(&held, m)?;
        let (f_held, p_held) = net.describe(&set_tensor(&held_m, &device)?, 256)?;
        let p_held = classifier::classes_of(&p_held);
        // an even spread of training images, not the first m (which may be class-sorted)
        let mut pick: Vec<usize> = (0..train.len()).collect();
        Rng::stream(seed, 0xF1D).shuffle(&mut pick);
        pick.truncate(m);
        pick.sort_unstable();
        let (f_train, _) = net.describe(&set_tensor(&train.subset(&pick)?, &device)?, 256)?;
        let mut metrics = vec![
            (
                "fd".to_string(),
                frechet_between(&f_gen, &f_held, classifier::FEATURES),
            ),
            (
                "fd_floor".to_string(),
                frechet_between(&f_train, &f_held, classifier::FEATURES),
            ),
        ];
        metrics.push((
            "fd_ratio".to_string(),
            metrics[0].1 / metrics[1].1.max(1e-12),
        ));
        if let (Some(l), Some(held_labels)) = (labels, &held_m.labels) {
            metrics.push((
                "cond_accuracy".to_string(),
                classifier::accuracy(&p_gen, &l[..m]),
            ));
            metrics.push((
                "classifier_accuracy".to_string(),
                classifier::accuracy(&p_held, held_labels),
            ));
        } else if let Some(held_labels) = &held_m.labels {
            metrics.push((
                "classifier_accuracy".to_string(),
                classifier::accuracy(&p_held, held_labels),
            ));
        }
        Ok(Evaluation::of(metrics))
    }
}

/// The class of each sample, when every sample's condition names one.
fn class_labels(conditions: &[Condition]) -> Option<Vec<u32>> {
    if conditions.is_empty() {
        return None;
    }
    conditions.iter().map(|c| c.class(0)).collect()
}
