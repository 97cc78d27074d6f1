//! The toy denoisers: a residual MLP over 2-D points with time (and condition) embeddings, and
//! a small transformer over token sequences (for the masked process).

use crate::ToyModel;
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use sugarcube_core::denoiser::{Denoiser, Inputs};
use sugarcube_core::domain::DataInfo;
use sugarcube_core::nn::norm::LayerNorm;
use sugarcube_core::nn::ops::Linear;
use sugarcube_core::nn::{CondEmbedding, SequenceTransformer, TimeEmbedding, TransformerConfig};
use sugarcube_core::tensor_util::one_hot;

/// One residual block: `h + Linear(SiLU(Linear(SiLU(norm(h)))))`, the norm optional.
struct ResBlock {
    norm: Option<LayerNorm>,
    fc1: Linear,
    fc2: Linear,
}

impl ResBlock {
    fn new(hidden: usize, layer_norm: bool, vb: VarBuilder) -> Result<Self> {
        let norm = if layer_norm {
            Some(LayerNorm::new(vb.pp("norm"), hidden, 1e-5)?)
        } else {
            None
        };
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
/// (plus the condition embedding for conditional data), `blocks` residual blocks, then
/// `SiLU -> Linear(hidden -> dim)`, the last layer zero-initialised so the untrained model predicts
/// 0 (a calm start, and a sane baseline). Parameters: `input`, `time`, `cond.{field}`, `blocks.{i}`, `output`.
pub struct ToyDenoiser {
    input: Linear,
    time: TimeEmbedding,
    cond: Option<CondEmbedding>,
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
        let cond = if info.cond.is_empty() {
            None
        } else {
            Some(CondEmbedding::new(vb.pp("cond"), &info.cond, h)?)
        };
        let blocks = (0..model.blocks)
            .map(|i| ResBlock::new(h, model.layer_norm, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input: Linear::new(dim, h, vb.pp("input"))?,
            time: TimeEmbedding::new(vb.pp("time"), model.time_dim, h)?,
            cond,
            blocks,
            output: zero_linear(h, dim, vb.pp("output"))?,
        })
    }
}

impl Denoiser for ToyDenoiser {
    /// For a conditional model, no conditions means the null condition for every row; an
    /// unconditional model rejects conditions.
    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        let x_t = inputs.x;
        let mut h = self
            .input
            .forward(x_t)?
            .add(&self.time.forward(inputs.time)?)?;
        match (&self.cond, inputs.cond) {
            (Some(embed), c) => h = h.add(&embed.forward(c, x_t.dim(0)?, x_t.device())?)?,
            (None, Some(_)) => {
                candle_core::bail!("this toy model is unconditional but was given conditions")
            }
            (None, None) => {}
        }
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        self.output.forward(&h.silu()?)
    }
}

/// The toy model for token sequences: the core's sequence transformer over one-hot tokens
/// (`vocab + 1` features: the tokens and the mask), giving `vocab + 1` logits per position (the
/// masked process ignores the last). Its width is `hidden`, its depth `blocks`, its heads
/// `heads`; times in [0, 1] enter through Gaussian Fourier features.
pub struct TokenDenoiser {
    net: SequenceTransformer,
    vocab: usize,
}

impl TokenDenoiser {
    /// Builds the network for token data described by `info`.
    pub fn new(model: &ToyModel, info: &DataInfo, vb: VarBuilder) -> Result<Self> {
        let (Some(vocab), [length]) = (info.vocab, info.item_shape.as_slice()) else {
            candle_core::bail!(
                "the token model needs [L] token data with a vocabulary, got {info:?}"
            );
        };
        let cfg = TransformerConfig {
            hidden: model.hidden,
            layers: model.blocks,
            heads: model.heads,
            intermediate: 2 * model.hidden,
            max_len: *length,
            dropout: 0.0,
            ..TransformerConfig::default()
        };
        Ok(Self {
            net: SequenceTransformer::new(vb, &cfg, vocab + 1, &info.cond)?,
            vocab,
        })
    }
}

impl Denoiser for TokenDenoiser {
    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        let x = one_hot(inputs.x, self.vocab + 1)?;
        self.net.forward(&Inputs { x: &x, ..*inputs })
    }
}

/// A linear layer whose weight and bias start at zero.
fn zero_linear(input: usize, output: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints((output, input), "weight", candle_nn::Init::Const(0.0))?;
    let b = vb.get_with_hints(output, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::from_parts(w, Some(b)))
}
