//! How a domain plugs into the core: a [`Dataset`] of clean examples, a denoiser preset, a
//! writer for generated samples and its metrics, bundled as a [`Domain`].

use crate::denoiser::Denoiser;
use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A batch of clean training examples.
pub struct Batch {
    /// `[B, ...]` float32 examples.
    pub x0: Tensor,
    /// `[B]` u32 class ids, for conditional data.
    pub cond: Option<Tensor>,
}

/// What a model needs to know about its data (saved as `data_info.json` in a run directory, so
/// sampling needs no data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DataInfo {
    /// Shape of one example (without the batch axis).
    pub item_shape: Vec<usize>,
    /// Number of classes (the null class for guidance is this id), None if unconditional.
    pub num_classes: Option<usize>,
    /// Class names, when known.
    pub class_names: Vec<String>,
}

/// A finite, indexable set of training examples.
pub trait Dataset {
    /// Number of examples.
    fn len(&self) -> usize;
    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shapes and classes.
    fn info(&self) -> DataInfo;
    /// The examples at `indices`, stacked.
    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch>;
}

/// Which part of the data to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The examples the model trains on.
    Train,
    /// Examples kept apart for evaluation (for generated data: a fresh draw).
    Heldout,
}

/// One named evaluation figure.
pub type Metric = (String, f64);

/// A kind of data sugarcube can model. The CLI picks a domain by the experiment's `domain` key.
pub trait Domain {
    /// The domain's name in experiment files (`domain = "..."`).
    const NAME: &'static str;
    /// The `[data]` table.
    type Data: DeserializeOwned + Serialize + Clone + std::fmt::Debug;
    /// The `[model]` table.
    type Model: DeserializeOwned + Serialize + Clone + std::fmt::Debug;
    /// The `[eval]` table.
    type Eval: DeserializeOwned + Serialize + Clone + std::fmt::Debug + Default;

    /// Loads (or generates) a split of the data; `seed` is the experiment's.
    fn dataset(data: &Self::Data, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>>;

    /// Builds the denoiser a model table describes, its parameters created through `vb`.
    fn denoiser(model: &Self::Model, info: &DataInfo, vb: VarBuilder) -> anyhow::Result<Box<dyn Denoiser>>;

    /// Writes generated samples (`[N, ...]`, with their class ids when conditional) in the
    /// domain's file formats under `dir`; returns the files written.
    fn write_samples(
        data: &Self::Data,
        info: &DataInfo,
        samples: &Tensor,
        labels: Option<&[u32]>,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>>;

    /// How many samples `eval` draws by default.
    fn eval_samples(eval: &Self::Eval) -> usize;

    /// Scores generated samples against held-out data.
    fn evaluate(
        data: &Self::Data,
        eval: &Self::Eval,
        seed: u64,
        samples: &Tensor,
        labels: Option<&[u32]>,
    ) -> anyhow::Result<Vec<Metric>>;
}
