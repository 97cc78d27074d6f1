//! The toy denoiser: a residual MLP over 2-D points with time (and class) embeddings.

use crate::ToyModel;
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use sugarcube_core::nn::norm::LayerNorm;
use sugarcube_core::nn::ops::Linear;
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::DataInfo;
use sugarcube_core::nn::{ClassEmbedding, TimeEmbedding};

/// One residual block: `h + Linear(SiLU(Linear(SiLU(norm(h)))))`, the norm optional.
struct ResBlock {
    norm: Option<LayerNorm>,
    fc1: Linear,
    fc2: Linear,
}

impl ResBlock {
    fn new(hidden: usize, layer_norm: bool, vb: VarBuilder) -> Result<Self> {
        let norm = if layer_norm { Some(LayerNorm::new(vb.pp("norm"), hidden, 1e-5)?) } else { None };
        Ok(Self {
            norm,
            fc1: Linear::new(hidden, hidden, vb.pp("fc1"))?,
            fc2: Linear::new(hidden, hidden, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let x = match &self.norm {
            Some(norm) => norm.forward(h)?,
            None => h.clone(),
        };
        let x = self.fc2.forward(&self.fc1.forward(&x.silu()?)?.silu()?)?;
        h.add(&x)
    }
}

/// Residual MLP denoiser for `[B, dim]` points: `Linear(dim -> hidden)` plus the time embedding
/// (plus the class embedding for conditional data), `blocks` residual blocks, then
/// `SiLU -> Linear(hidden -> dim)`, the last layer zero-initialised so the untrained model predicts
/// 0 (a calm start, and a sane baseline). Parameters: `input`, `time`, `class`, `blocks.{i}`, `output`.
pub struct ToyDenoiser {
    input: Linear,
    time: TimeEmbedding,
    class: Option<ClassEmbedding>,
    blocks: Vec<ResBlock>,
    output: Linear,
}

impl ToyDenoiser {
    /// Builds the network a model table describes for data of shape `[dim]`.
    pub fn new(model: &ToyModel, info: &DataInfo, vb: VarBuilder) -> Result<Self> {
        let dim = match info.item_shape.as_slice() {
            [d] => *d,
            shape => candle_core::bail!("the toy model needs 1-D items, got item shape {shape:?}"),
        };
        let h = model.hidden;
        let class = match info.num_classes {
            Some(k) => Some(ClassEmbedding::new(vb.pp("class"), k, h)?),
            None => None,
        };
        let blocks = (0..model.blocks)
            .map(|i| ResBlock::new(h, model.layer_norm, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input: Linear::new(dim, h, vb.pp("input"))?,
            time: TimeEmbedding::new(vb.pp("time"), model.time_dim, h)?,
            class,
            blocks,
            output: zero_linear(h, dim, vb.pp("output"))?,
        })
    }
}

impl Denoiser for ToyDenoiser {
    /// For a conditional model, `cond = None` means the null class for every row; an
    /// unconditional model rejects class ids.
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.input.forward(x_t)?.add(&self.time.forward(t)?)?;
        match (&self.class, cond) {
            (Some(class), Some(ids)) => h = h.add(&class.forward(ids)?)?,
            (Some(class), None) => {
                let null = Tensor::full(class.null_class(), x_t.dim(0)?, x_t.device())?;
                h = h.add(&class.forward(&null)?)?;
            }
            (None, Some(_)) => candle_core::bail!("this toy model is unconditional but was given class ids"),
            (None, None) => {}
        }
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        self.output.forward(&h.silu()?)
    }
}

/// A linear layer whose weight and bias start at zero.
fn zero_linear(input: usize, output: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints((output, input), "weight", candle_nn::Init::Const(0.0))?;
    let b = vb.get_with_hints(output, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::from_parts(w, Some(b)))
}
