//! A BERT-style transformer denoiser over sequences of feature vectors, in the manner of
//! FoldingDiff (Wu et al. 2022, `foldingdiff/modelling.py`, `BertForDiffusionBase`): the input
//! is `[B, L, F]` (for protein backbones, L residues by F = 6 internal angles) and the output
//! has the same shape.
//!
//! Layout, with parameter names following FoldingDiff and HuggingFace's `BertEncoder` (so that a
//! PyTorch state dict maps onto them name for name):
//! - `inputs_to_hidden_dim`: Linear from F features to `hidden`;
//! - `embeddings`: with absolute positions, a learned `position_embeddings` table
//!   (`max_len x hidden`) is added; then `LayerNorm` and dropout;
//! - the time encoding of `t` (`[B, hidden]`, no parameters) is added to every position;
//! - `encoder.layer.{i}`, `layers` post-LayerNorm BERT layers:
//!   - `attention.self.{query,key,value}`: multi-head self-attention with `heads` heads of
//!     width `d = hidden / heads`; with relative positions, `distance_embedding`
//!     (`(2 max_len - 1) x d`) adds `q_l . E[l - r + max_len - 1]` to the score of query `l`
//!     and key `r` (HuggingFace's `relative_key`); scores are scaled by `1 / sqrt(d)`, padded
//!     keys get `-10000`, then softmax and dropout on the probabilities;
//!   - `attention.output.dense` -> dropout -> add the layer input -> `attention.output.LayerNorm`;
//!   - `intermediate.dense` (`hidden -> intermediate`) -> GELU (erf form) -> `output.dense` ->
//!     dropout -> add -> `output.LayerNorm`;
//! - `token_decoder`: FoldingDiff's `AnglesPredictor` (`dense1` -> GELU -> `layer_norm` ->
//!   `dense2` to F outputs), or a single Linear with [`DecoderHead::Linear`].
//!
//! The time encoding is FoldingDiff's default `gaussian_fourier` (`GaussianFourierProjection`):
//! `[sin(2 pi t w), cos(2 pi t w)]` with `w ~ N(0, scale^2)` fixed at construction (`hidden / 2`
//! frequencies, `scale = 2 pi`), or its `sinusoidal` alternative: `[sin(t f), cos(t f)]` with
//! `f_i = 10000^(-i / (hidden/2 - 1))`.
//!
//! Weights start as in HuggingFace's `BertPreTrainedModel` (which FoldingDiff calls): Linear and
//! embedding weights normal with std `init_std` (0.02), biases zero, LayerNorm weight one and bias
//! zero. Nothing here wraps angles: as in FoldingDiff, that is the process's and domain's job.
//!
//! Where it differs from FoldingDiff, and why:
//! - The Fourier frequencies `w` are drawn from sugarcube's generator seeded with
//!   `fourier_seed` (they are a buffer, not a parameter, in FoldingDiff too); they do not depend
//!   on the parameter seed and are not stored in checkpoints, since the config fixes them.
//!   Importing FoldingDiff weights would need its `time_embed.W` as well.
//! - With FoldingDiff's scale the frequencies are large (`2 pi w` has a standard deviation of
//!   about 39 radians per timestep), so the encodings of nearby fractional timesteps are
//!   unrelated: FoldingDiff only evaluates integer timesteps. Use samplers that stay on training
//!   timesteps, or the `sinusoidal` encoding, which is smooth in `t`.
//! - Query, key and value are applied as one fused matmul (still three parameters), and `q` is
//!   scaled by `1 / sqrt(d)` before both the content and the relative products rather than
//!   scaling their sum: the same function, less work.
//! - Dropout (hidden and attention probabilities share `dropout`, as FoldingDiff sets both to its
//!   `dropout_p`) draws its masks from sugarcube's seeded generator, so runs are reproducible.
//! - LayerNorm is sugarcube's fused kernel ([`super::norm::LayerNorm`]): in candle 0.11.1,
//!   `candle_nn::LayerNorm` on a contiguous input calls `candle_nn::ops::layer_norm`, which is
//!   recorded without a backward pass, so gradients would silently stop there.
//! - Softmax, GELU (exact, erf: HuggingFace's `"gelu"`) and the dense layers' bias are the fused
//!   kernels of [`super::ops`] (candle's `softmax_last_dim` has no backward; its `gelu_erf`
//!   backward rounds `1/sqrt(2 pi)` to 0.398942).
//! - No class conditioning: `cond` must be None.
//! - Only HuggingFace's `relative_key` and `absolute` position embeddings (not
//!   `relative_key_query`).
//!
//! Assumed, for settings FoldingDiff leaves to HuggingFace's `BertConfig` defaults:
//! `layer_norm_eps = 1e-12`, `initializer_range = 0.02`, `hidden_act = "gelu"` (erf);
//! `max_position_embeddings = max_len` as in FoldingDiff's training scripts (128 for the
//! published models). Outputs at padded positions are computed but meaningless, as in
//! FoldingDiff: the loss must mask them.

use super::attention::self_attention;
use super::dropout;
use super::ops::Linear;
use crate::cond::{CondBatch, CondSpec};
use crate::denoiser::Denoiser;
use crate::denoiser::Inputs;
use crate::rng::{Rng, Rows};
use candle_core::{bail, DType, Result, Tensor};
use candle_nn::{Init, Module, VarBuilder};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// How positions enter the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionEmbedding {
    /// HuggingFace's `relative_key`: a learned vector per signed distance, dotted with the query
    /// and added to the attention scores (FoldingDiff's choice).
    RelativeKey,
    /// A learned vector per absolute position, added to the embedded input.
    Absolute,
}

/// How the timestep is encoded before it is added to every position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeEncoding {
    /// Random Fourier features with fixed frequencies (FoldingDiff's default).
    GaussianFourier,
    /// Sinusoidal features with geometric frequencies from 1 to 1/10000.
    Sinusoidal,
}

/// The per-position output head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderHead {
    /// FoldingDiff's `AnglesPredictor`: Linear -> GELU -> LayerNorm -> Linear.
    Mlp,
    /// A single Linear.
    Linear,
}

/// The shape of a [`SequenceTransformer`] (the `[model]` table of an experiment). Defaults are
/// FoldingDiff's published model (`cath_full_angles_cosine.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerConfig {
    /// Width of the hidden states (`hidden_size`); a multiple of `heads`, and even. Default 384.
    pub hidden: usize,
    /// Number of BERT layers (`num_hidden_layers`). Default 12.
    pub layers: usize,
    /// Attention heads per layer (`num_heads`). Default 12.
    pub heads: usize,
    /// Width of the feed-forward layer (`intermediate_size`). Default 768.
    pub intermediate: usize,
    /// Longest sequence (`max_position_embeddings`, FoldingDiff's `max_seq_len`); sizes the
    /// position tables. Default 128.
    pub max_len: usize,
    /// Dropout on the embeddings, the attention probabilities and both residual branches,
    /// applied only in training (`dropout_p`). Default 0.1.
    pub dropout: f64,
    /// Relative or absolute positions (`position_embedding_type`). Default `relative_key`.
    pub position_embedding: PositionEmbedding,
    /// The timestep encoding (`time_encoding`). Default `gaussian_fourier`.
    pub time_encoding: TimeEncoding,
    /// Standard deviation of the Gaussian Fourier frequencies before the extra `2 pi`
    /// (`GaussianFourierProjection`'s `scale`). Default `2 pi`.
    pub fourier_scale: f64,
    /// Seed of the fixed Gaussian Fourier frequencies. Default 0x5EED_F0D1.
    pub fourier_seed: u64,
    /// The output head (`decoder`). Default `mlp`.
    pub decoder: DecoderHead,
    /// LayerNorm epsilon (`layer_norm_eps`). Default 1e-12.
    pub layer_norm_eps: f64,
    /// Standard deviation of the initial Linear and embedding weights (`initializer_range`).
    /// Default 0.02.
    pub init_std: f64,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        Self {
            hidden: 384,
            layers: 12,
            heads: 12,
            intermediate: 768,
            max_len: 128,
            dropout: 0.1,
            position_embedding: PositionEmbedding::RelativeKey,
            time_encoding: TimeEncoding::GaussianFourier,
            fourier_scale: 2.0 * PI,
            fourier_seed: 0x5EED_F0D1,
            decoder: DecoderHead::Mlp,
            layer_norm_eps: 1e-12,
            init_std: 0.02,
        }
    }
}

impl TransformerConfig {
    /// FoldingDiff's small model (`mini_model.json`): 6 layers, hidden 192, 6 heads,
    /// intermediate 384; everything else as the default. With 6 features it has 1,871,430
    /// parameters, as in PyTorch.
    pub fn foldingdiff_small() -> Self {
        Self {
            hidden: 192,
            layers: 6,
            heads: 6,
            intermediate: 384,
            ..Self::default()
        }
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.heads == 0 || self.intermediate == 0 || self.max_len == 0 {
            bail!("transformer hidden, heads, intermediate and max_len must be positive: {self:?}");
        }
        if !self.hidden.is_multiple_of(self.heads) {
            bail!(
                "transformer hidden = {} is not a multiple of heads = {}",
                self.hidden,
                self.heads
            );
        }
        if !self.hidden.is_multiple_of(2) || self.hidden < 4 {
            bail!(
                "the time encoding needs an even hidden width of at least 4, got {}",
                self.hidden
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout must be in [0, 1), got {}", self.dropout);
        }
        let eps_ok = self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0;
        let std_ok = self.init_std.is_finite() && self.init_std >= 0.0;
        if !eps_ok || !std_ok || !self.fourier_scale.is_finite() {
            bail!(
                "layer_norm_eps must be positive, init_std non-negative and fourier_scale finite, got {}, {}, {}",
                self.layer_norm_eps,
                self.init_std,
                self.fourier_scale
            );
        }
        Ok(())
    }
}

/// The transformer's LayerNorm: the fused kernel of [`super::norm`].
type Norm = super::norm::LayerNorm;

/// A Linear layer initialised as BERT's: parameters `weight` `[out, in]`, normal with std
/// `std`, and `bias`, zero.
fn dense(vb: VarBuilder, in_dim: usize, out_dim: usize, std: f64) -> Result<Linear> {
    Ok(Linear::from_parts(
        vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?,
        Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?),
    ))
}

/// Layers stacked along the output axis, as one layer (one matmul for q, k and v).
fn stacked(parts: &[&Linear]) -> Result<Linear> {
    let weights: Vec<&Tensor> = parts.iter().map(|p| p.weight()).collect();
    let biases = parts
        .iter()
        .map(|p| p.bias().cloned())
        .collect::<Option<Vec<Tensor>>>();
    Ok(Linear::from_parts(
        Tensor::cat(&weights, 0)?,
        biases.map(|b| Tensor::cat(&b, 0)).transpose()?,
    ))
}

/// The dropout to apply: probability `p` and the generator, in training (when `rng` is given)
/// with `p > 0`; None otherwise.
fn active_dropout<'a>(p: f64, rng: &'a mut Option<&mut Rows>) -> Option<(f64, &'a mut Rows)> {
    match rng {
        Some(rng) if p > 0.0 => Some((p, &mut **rng)),
        _ => None,
    }
}

/// Dropout in training (when `rng` is given), identity otherwise.
fn train_dropout(x: Tensor, p: f64, rng: &mut Option<&mut Rows>) -> Result<Tensor> {
    match active_dropout(p, rng) {
        Some((p, rng)) => dropout(&x, p, rng),
        None => Ok(x),
    }
}

/// One post-LayerNorm BERT layer (see the [module docs](self)).
#[derive(Clone, Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `[2 max_len - 1, head_dim]` for relative positions.
    distance: Option<Tensor>,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    out_norm: Norm,
    heads: usize,
    dropout: f64,
}

impl Layer {
    fn new(vb: VarBuilder, cfg: &TransformerConfig) -> Result<Self> {
        let (h, std) = (cfg.hidden, cfg.init_std);
        let attn = vb.pp("attention");
        let sa = attn.pp("self");
        let distance = match cfg.position_embedding {
            PositionEmbedding::RelativeKey => Some(sa.pp("distance_embedding").get_with_hints(
                (2 * cfg.max_len - 1, h / cfg.heads),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?),
            PositionEmbedding::Absolute => None,
        };
        Ok(Self {
            query: dense(sa.pp("query"), h, h, std)?,
            key: dense(sa.pp("key"), h, h, std)?,
            value: dense(sa.pp("value"), h, h, std)?,
            distance,
            attn_out: dense(attn.pp("output").pp("dense"), h, h, std)?,
            attn_norm: Norm::new(attn.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            intermediate: dense(vb.pp("intermediate").pp("dense"), h, cfg.intermediate, std)?,
            output: dense(vb.pp("output").pp("dense"), cfg.intermediate, h, std)?,
            out_norm: Norm::new(vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.heads,
            dropout: cfg.dropout,
        })
    }

    /// Multi-head attention of `x` (`[B, L, H]`) to itself, heads merged back to `[B, L, H]`
    /// (before the output projection). `key_bias` (`[B, L]`) is added to the scores.
    fn context(
        &self,
        x: &Tensor,
        key_bias: Option<&Tensor>,
        rng: &mut Option<&mut Rows>,
    ) -> Result<Tensor> {
        let _t = crate::profile::scope("attention block (forward)");
        let qkv = stacked(&[&self.query, &self.key, &self.value])?.forward(x)?;
        let keep = match active_dropout(self.dropout, rng) {
            Some((p, rows)) => {
                let (b, l, _) = qkv.dims3()?;
                Some(rows.dropout_mask(&[b, self.heads, l, l], p)?)
            }
            None => None,
        };
        self_attention(
            &qkv,
            self.heads,
            self.distance.as_ref(),
            key_bias,
            keep.as_deref(),
        )
    }

    fn forward(
        &self,
        x: &Tensor,
        key_bias: Option<&Tensor>,
        rng: &mut Option<&mut Rows>,
    ) -> Result<Tensor> {
        let a = self.attn_out.forward(&self.context(x, key_bias, rng)?)?;
        let x = self
            .attn_norm
            .forward(&super::ops::add(x, &train_dropout(a, self.dropout, rng)?)?)?;
        let f = self
            .output
            .forward(&super::ops::gelu_erf(&self.intermediate.forward(&x)?)?)?;
        self.out_norm
            .forward(&super::ops::add(&x, &train_dropout(f, self.dropout, rng)?)?)
    }
}

/// The per-position output head.
#[derive(Clone, Debug)]
enum Decoder {
    Mlp {
        dense1: Linear,
        norm: Norm,
        dense2: Linear,
    },
    Linear(Linear),
}

impl Decoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Decoder::Mlp {
                dense1,
                norm,
                dense2,
            } => dense2.forward(&norm.forward(&super::ops::gelu_erf(&dense1.forward(x)?)?)?),
            Decoder::Linear(dense) => dense.forward(x),
        }
    }
}

/// FoldingDiff's denoiser: a BERT encoder over `[B, L, F]` sequences with a timestep encoding,
/// see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SequenceTransformer {
    cfg: TransformerConfig,
    features: usize,
    dtype: DType,
    inputs_to_hidden: Linear,
    /// `[max_len, hidden]` for absolute positions.
    position: Option<Tensor>,
    emb_norm: Norm,
    /// The `hidden / 2` angular frequencies of the time encoding, per unit timestep.
    time_freqs: Vec<f64>,
    /// The condition embedding, added to the time encoding (conditional models only).
    cond: Option<super::CondEmbedding>,
    layers: Vec<Layer>,
    decoder: Decoder,
}

impl SequenceTransformer {
    /// Builds the network for `features` values per position, creating its parameters through
    /// `vb` (whose dtype the network computes in). Invalid configurations are errors.
    /// With a non-empty `cond` spec the network is conditional: each field is embedded
    /// (parameters `cond.{field}.weight`) and added to the time encoding of every position.
    pub fn new(
        vb: VarBuilder,
        cfg: &TransformerConfig,
        features: usize,
        cond: &CondSpec,
    ) -> Result<Self> {
        cfg.validate()?;
        if features == 0 {
            bail!("the transformer needs at least one feature per position");
        }
        let (h, std) = (cfg.hidden, cfg.init_std);
        let half = h / 2;
        let time_freqs = match cfg.time_encoding {
            TimeEncoding::GaussianFourier => {
                let mut rng = Rng::new(cfg.fourier_seed);
                (0..half)
                    .map(|_| rng.normal() * cfg.fourier_scale * 2.0 * PI)
                    .collect()
            }
            TimeEncoding::Sinusoidal => {
                let step = 10_000f64.ln() / (half - 1) as f64;
                (0..half).map(|i| (-(i as f64) * step).exp()).collect()
            }
        };
        let emb = vb.pp("embeddings");
        let position = match cfg.position_embedding {
            PositionEmbedding::Absolute => Some(emb.pp("position_embeddings").get_with_hints(
                (cfg.max_len, h),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?),
            PositionEmbedding::RelativeKey => None,
        };
        let layers = (0..cfg.layers)
            .map(|i| Layer::new(vb.pp("encoder").pp("layer").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let dec = vb.pp("token_decoder");
        let decoder = match cfg.decoder {
            DecoderHead::Mlp => Decoder::Mlp {
                dense1: dense(dec.pp("dense1"), h, h, std)?,
                norm: Norm::new(dec.pp("layer_norm"), h, cfg.layer_norm_eps)?,
                dense2: dense(dec.pp("dense2"), h, features, std)?,
            },
            DecoderHead::Linear => Decoder::Linear(dense(dec, h, features, std)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            features,
            dtype: vb.dtype(),
            inputs_to_hidden: dense(vb.pp("inputs_to_hidden_dim"), features, h, std)?,
            position,
            emb_norm: Norm::new(emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            time_freqs,
            cond: if cond.is_empty() {
                None
            } else {
                Some(super::CondEmbedding::new(vb.pp("cond"), cond, h)?)
            },
            layers,
            decoder,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// Features per position (F).
    pub fn features(&self) -> usize {
        self.features
    }

    /// The time encoding of `[B]` timesteps, `[B, hidden]`: `[sin(t f), cos(t f)]`, computed in
    /// f64 and cast to the network's dtype.
    fn time_encoding(&self, t: &Tensor) -> Result<Tensor> {
        let ts = t.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let half = self.time_freqs.len();
        let mut out = Vec::with_capacity(ts.len() * 2 * half);
        for &tv in &ts {
            out.extend(self.time_freqs.iter().map(|f| (tv * f).sin()));
            out.extend(self.time_freqs.iter().map(|f| (tv * f).cos()));
        }
        Tensor::from_vec(out, (ts.len(), 2 * half), t.device())?.to_dtype(self.dtype)
    }

    /// Checks the shapes of the input, timesteps and mask; returns (B, L).
    fn check_input(&self, x: &Tensor, t: &Tensor, mask: Option<&Tensor>) -> Result<(usize, usize)> {
        let f = self.features;
        if x.rank() != 3 || x.dim(2)? != f {
            bail!(
                "the transformer expects [B, L, {f}] input (F = {f} features), got shape {:?}",
                x.dims()
            );
        }
        let (b, l, _) = x.dims3()?;
        if l == 0 || l > self.cfg.max_len {
            bail!(
                "sequence length must be in 1..={} (max_len), got shape {:?}",
                self.cfg.max_len,
                x.dims()
            );
        }
        if t.dims() != [b] {
            bail!(
                "timesteps must have shape [{b}] for input {:?}, got {:?}",
                x.dims(),
                t.dims()
            );
        }
        if let Some(mask) = mask {
            if mask.dims() != [b, l] {
                bail!(
                    "the padding mask must have shape [{b}, {l}] for input {:?}, got {:?}",
                    x.dims(),
                    mask.dims()
                );
            }
        }
        Ok((b, l))
    }

    /// The prediction for `x` (`[B, L, F]`) at timesteps `t` (`[B]`), `[B, L, F]`.
    ///
    /// `mask` (`[B, L]`, any dtype, 1 for real positions and 0 for padding) keeps padded
    /// positions out of every attention, so outputs at real positions do not depend on the
    /// values at padded ones; outputs at padded positions are meaningless. With `rng` given the
    /// pass is in training mode: dropout is on, with masks drawn from `rng`.
    pub fn forward_masked(
        &self,
        x: &Tensor,
        t: &Tensor,
        cond: Option<&CondBatch>,
        mask: Option<&Tensor>,
        mut rng: Option<&mut Rows>,
    ) -> Result<Tensor> {
        let (b, l) = self.check_input(x, t, mask)?;
        let p = self.cfg.dropout;
        let mut h = self.inputs_to_hidden.forward(&x.to_dtype(self.dtype)?)?;
        if let Some(pos) = &self.position {
            h = h.broadcast_add(&pos.narrow(0, 0, l)?.unsqueeze(0)?)?;
        }
        h = train_dropout(self.emb_norm.forward(&h)?, p, &mut rng)?;
        let mut time = self.time_encoding(t)?;
        match (&self.cond, cond) {
            (Some(embed), c) => time = time.add(&embed.forward(c, b, x.device())?)?,
            (None, Some(_)) => bail!("this transformer is unconditional but was given conditions"),
            (None, None) => {}
        }
        h = h.broadcast_add(&time.unsqueeze(1)?)?;

        let key_bias = match mask {
            // 0 for real keys, -10000 for padded ones (FoldingDiff's extended attention mask).
            Some(mask) => Some(mask.to_dtype(self.dtype)?.affine(10_000.0, -10_000.0)?),
            None => None,
        };
        for layer in &self.layers {
            h = layer.forward(&h, key_bias.as_ref(), &mut rng)?;
        }
        self.decoder.forward(&h)
    }
}

impl Denoiser for SequenceTransformer {
    /// Evaluation-mode pass, attending only to real positions when the inputs carry a mask.
    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        self.forward_masked(inputs.x, inputs.time, inputs.cond, inputs.mask, None)
    }

    /// Training-mode pass: each row's dropout masks come from its own stream.
    fn forward_train(&self, inputs: &Inputs, rows: &mut Rows) -> Result<Tensor> {
        self.forward_masked(inputs.x, inputs.time, inputs.cond, inputs.mask, Some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::{numeric_grad, rel_err, values};
    use crate::params::Params;
    use crate::tensor_util::randn;
    use candle_core::{Device, Var};

    /// A tiny network for the exact checks.
    fn tiny() -> TransformerConfig {
        TransformerConfig {
            hidden: 8,
            layers: 2,
            heads: 2,
            intermediate: 16,
            max_len: 7,
            dropout: 0.0,
            init_std: 0.3,
            ..TransformerConfig::default()
        }
    }

    fn build(
        params: &Params,
        cfg: &TransformerConfig,
        features: usize,
        dtype: DType,
    ) -> Result<SequenceTransformer> {
        SequenceTransformer::new(
            params.var_builder(dtype, &Device::Cpu),
            cfg,
            features,
            &CondSpec::default(),
        )
    }

    fn tensor_of(params: &Params, name: &str) -> Tensor {
        params
            .tensors()
            .remove(name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }

    #[test]
    fn output_shape_for_every_variant() -> Result<()> {
        let dev = Device::Cpu;
        let x = randn(&mut Rng::new(1), &[2, 5, 3], DType::F32, &dev)?;
        let t = Tensor::new(&[0.0f32, 999.0], &dev)?;
        for position_embedding in [PositionEmbedding::RelativeKey, PositionEmbedding::Absolute] {
            for time_encoding in [TimeEncoding::GaussianFourier, TimeEncoding::Sinusoidal] {
                for decoder in [DecoderHead::Mlp, DecoderHead::Linear] {
                    let cfg = TransformerConfig {
                        position_embedding,
                        time_encoding,
                        decoder,
                        ..tiny()
                    };
                    let net = build(&Params::new(2), &cfg, 3, DType::F32)?;
                    let out = net.forward(&Inputs::new(&x, &t))?;
                    assert_eq!(out.dims(), &[2, 5, 3], "{cfg:?}");
                    assert!(values(&out)?.iter().all(|v| v.is_finite()), "{cfg:?}");
                    // The full length fits too.
                    let full = randn(&mut Rng::new(3), &[1, 7, 3], DType::F32, &dev)?;
                    assert_eq!(
                        net.forward(&Inputs::new(&full, &Tensor::new(&[4.0f32], &dev)?))?
                            .dims(),
                        &[1, 7, 3]
                    );
                }
            }
        }
        Ok(())
    }

    /// FoldingDiff-small in PyTorch (hidden 192, 6 layers, 6 heads of width 32, intermediate
    /// 384, max_position_embeddings 128, 6 angles, relative_key, mlp decoder):
    /// - inputs_to_hidden_dim: 6*192 + 192 = 1,344
    /// - embeddings.LayerNorm: 2*192 = 384 (no absolute position table with relative_key)
    /// - per layer: query/key/value 3*(192*192 + 192) = 111,168; distance_embedding
    ///   (2*128 - 1)*32 = 8,160; attention.output.dense 192*192 + 192 = 37,056 and its LayerNorm
    ///   384; intermediate.dense 192*384 + 384 = 74,112; output.dense 384*192 + 192 = 73,920 and
    ///   its LayerNorm 384; together 305,184, times 6 layers = 1,831,104
    /// - token_decoder: dense1 37,056 + layer_norm 384 + dense2 192*6 + 6 = 1,158 = 38,598
    /// - time_embed.W (96 Fourier frequencies) is a buffer, not a parameter
    ///
    /// Total 1,344 + 384 + 1,831,104 + 38,598 = 1,871,430. (A figure of 1.92M would fit
    /// max_position_embeddings = 256: 511-row distance tables add 6 * 8,192, giving 1,920,582.)
    #[test]
    fn foldingdiff_small_parameter_count() -> Result<()> {
        let params = Params::new(0);
        build(
            &params,
            &TransformerConfig::foldingdiff_small(),
            6,
            DType::F32,
        )?;
        assert_eq!(params.count(), 1_871_430);
        let names: Vec<String> = params.vars().into_iter().map(|(n, _)| n).collect();
        for name in [
            "inputs_to_hidden_dim.weight",
            "embeddings.LayerNorm.weight",
            "encoder.layer.5.attention.self.query.weight",
            "encoder.layer.5.attention.self.distance_embedding.weight",
            "encoder.layer.5.attention.output.LayerNorm.bias",
            "encoder.layer.5.intermediate.dense.weight",
            "encoder.layer.5.output.dense.bias",
            "token_decoder.dense2.weight",
        ] {
            assert!(names.iter().any(|n| n == name), "missing {name}");
        }
        assert_eq!(names.len(), 4 + 6 * 17 + 6);

        // Absolute positions instead: one 128 x 192 table, no distance tables.
        let params = Params::new(0);
        let cfg = TransformerConfig {
            position_embedding: PositionEmbedding::Absolute,
            ..TransformerConfig::foldingdiff_small()
        };
        build(&params, &cfg, 6, DType::F32)?;
        assert_eq!(params.count(), 1_871_430 - 6 * 8_160 + 128 * 192);
        Ok(())
    }

    #[test]
    fn time_encodings_match_foldingdiff_formulas() -> Result<()> {
        let dev = Device::Cpu;
        let ts = [0.0f32, 1.0, 17.0, 999.0];
        let t = Tensor::new(&ts, &dev)?;
        for kind in [TimeEncoding::GaussianFourier, TimeEncoding::Sinusoidal] {
            let cfg = TransformerConfig {
                time_encoding: kind,
                ..tiny()
            };
            let net = build(&Params::new(0), &cfg, 3, DType::F64)?;
            let rows = net.time_encoding(&t)?.to_vec2::<f64>()?;
            let half = cfg.hidden / 2;
            let freq = |i: usize| match kind {
                TimeEncoding::GaussianFourier => {
                    let mut rng = Rng::new(cfg.fourier_seed);
                    let w: Vec<f64> = (0..half).map(|_| rng.normal() * 2.0 * PI).collect();
                    w[i] * 2.0 * PI
                }
                TimeEncoding::Sinusoidal => {
                    (-(10_000f64.ln()) * i as f64 / (half - 1) as f64).exp()
                }
            };
            for (row, &tv) in rows.iter().zip(&ts) {
                for i in 0..half {
                    let a = tv as f64 * freq(i);
                    assert!(
                        (row[i] - a.sin()).abs() < 1e-12,
                        "{kind:?} sin t={tv} i={i}"
                    );
                    assert!(
                        (row[half + i] - a.cos()).abs() < 1e-12,
                        "{kind:?} cos t={tv} i={i}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn layer_norm_matches_definition() -> Result<()> {
        let dev = Device::Cpu;
        let x = randn(&mut Rng::new(1), &[3, 5], DType::F64, &dev)?;
        let w = randn(&mut Rng::new(2), &[5], DType::F64, &dev)?;
        let b = randn(&mut Rng::new(3), &[5], DType::F64, &dev)?;
        let got = crate::nn::norm::layer_norm(&x, &w, &b, 1e-5)?.to_vec2::<f64>()?;
        let (wv, bv) = (w.to_vec1::<f64>()?, b.to_vec1::<f64>()?);
        for (row, out) in x.to_vec2::<f64>()?.iter().zip(&got) {
            let mean = row.iter().sum::<f64>() / 5.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
            for i in 0..5 {
                let want = (row[i] - mean) / (var + 1e-5).sqrt() * wv[i] + bv[i];
                assert!((out[i] - want).abs() < 1e-12);
            }
        }
        Ok(())
    }

    /// The attention of the first layer against a direct loop over (batch, head, query, key),
    /// with relative positions, a padding mask and a length below `max_len`.
    #[test]
    fn relative_attention_matches_naive_loops() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = tiny();
        let params = Params::new(4);
        let net = build(&params, &cfg, 3, DType::F64)?;
        let (b, l, h, heads, m) = (2, 5, cfg.hidden, cfg.heads, cfg.max_len);
        let d = h / heads;
        let x = randn(&mut Rng::new(5), &[b, l, h], DType::F64, &dev)?;
        let mask = Tensor::new(
            &[[1f64, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]],
            &dev,
        )?;

        let key_bias = mask.affine(10_000.0, -10_000.0)?;
        let got = net.layers[0]
            .context(&x, Some(&key_bias), &mut None)?
            .to_vec3::<f64>()?;

        let p = "encoder.layer.0.attention.self";
        let lin = |name: &str| -> Result<(Vec<Vec<f64>>, Vec<f64>)> {
            Ok((
                tensor_of(&params, &format!("{p}.{name}.weight")).to_vec2::<f64>()?,
                tensor_of(&params, &format!("{p}.{name}.bias")).to_vec1::<f64>()?,
            ))
        };
        let (wq, bq) = lin("query")?;
        let (wk, bk) = lin("key")?;
        let (wv, bv) = lin("value")?;
        let dist =
            tensor_of(&params, &format!("{p}.distance_embedding.weight")).to_vec2::<f64>()?;
        let xs = x.to_vec3::<f64>()?;
        let mk = mask.to_vec2::<f64>()?;
        let apply = |w: &[Vec<f64>], bias: &[f64], v: &[f64], o: usize| -> f64 {
            bias[o] + (0..h).map(|i| w[o][i] * v[i]).sum::<f64>()
        };
        let mut max_diff: f64 = 0.0;
        for bi in 0..b {
            for hd in 0..heads {
                for qi in 0..l {
                    let q: Vec<f64> = (0..d)
                        .map(|e| apply(&wq, &bq, &xs[bi][qi], hd * d + e))
                        .collect();
                    let mut scores = Vec::new();
                    for ki in 0..l {
                        let k: Vec<f64> = (0..d)
                            .map(|e| apply(&wk, &bk, &xs[bi][ki], hd * d + e))
                            .collect();
                        let row = &dist[qi + m - 1 - ki];
                        let s: f64 = (0..d).map(|e| q[e] * k[e] + q[e] * row[e]).sum();
                        scores.push(s / (d as f64).sqrt() + (mk[bi][ki] - 1.0) * 10_000.0);
                    }
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    for e in 0..d {
                        let want: f64 = (0..l)
                            .map(|ki| exps[ki] / total * apply(&wv, &bv, &xs[bi][ki], hd * d + e))
                            .sum();
                        max_diff = max_diff.max((got[bi][qi][hd * d + e] - want).abs());
                    }
                }
            }
        }
        assert!(max_diff < 1e-12, "max difference {max_diff}");
        Ok(())
    }

    /// Backprop against finite differences for the input and parameters from every part of the
    /// network, in training mode (dropout masks replayed from a fixed seed) with a padding mask.
    /// The errors are about 1e-10.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = TransformerConfig {
            layers: 2,
            hidden: 8,
            heads: 2,
            max_len: 6,
            dropout: 0.2,
            ..tiny()
        };
        let params = Params::new(11);
        let net = build(&params, &cfg, 3, DType::F64)?;
        let x = Var::from_tensor(&randn(&mut Rng::new(12), &[2, 5, 3], DType::F64, &dev)?)?;
        let w = randn(&mut Rng::new(13), &[2, 5, 3], DType::F64, &dev)?;
        let t = Tensor::new(&[3.0f32, 600.0], &dev)?;
        let mask = Tensor::new(
            &[[1f32, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]],
            &dev,
        )?;
        let loss_t = || {
            let mut rows = Rows::new(14, 0, 2);
            net.forward_masked(x.as_tensor(), &t, None, Some(&mask), Some(&mut rows))?
                .mul(&w)?
                .sum_all()
        };
        let loss = || loss_t()?.to_scalar::<f64>();
        let grads = loss_t()?.backward()?;

        let all: Vec<usize> = (0..x.elem_count()).collect();
        let err = rel_err(
            &values(grads.get(x.as_tensor()).unwrap())?,
            &numeric_grad(&x, &all, &loss)?,
        );
        println!("input: relative error {err:.2e}");
        assert!(err < 1e-5, "input gradient: relative error {err}");

        let vars: std::collections::BTreeMap<_, _> = params.vars().into_iter().collect();
        // Every parameter is reached by backprop (an op without a backward pass would leave
        // some without a gradient), and only the key biases get (numerically) zero gradients.
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = values(g)?.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert_eq!(
                norm < 1e-9,
                name.ends_with("key.bias"),
                "{name}: gradient norm {norm}"
            );
        }
        for name in [
            "inputs_to_hidden_dim.weight",
            "embeddings.LayerNorm.bias",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.attention.self.distance_embedding.weight",
            // (not key.bias: it shifts every score of a query row equally, so its gradient is 0)
            "encoder.layer.1.attention.self.key.weight",
            "encoder.layer.1.attention.self.value.weight",
            "encoder.layer.0.attention.output.LayerNorm.weight",
            "encoder.layer.1.intermediate.dense.weight",
            "encoder.layer.1.output.dense.bias",
            "token_decoder.dense1.weight",
            "token_decoder.layer_norm.weight",
            "token_decoder.dense2.bias",
        ] {
            let var = &vars[name];
            let idx: Vec<usize> = (0..8).map(|k| (k * 37 + 5) % var.elem_count()).collect();
            let analytic = values(
                grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name}")),
            )?;
            let analytic: Vec<f64> = idx.iter().map(|&i| analytic[i]).collect();
            let err = rel_err(&analytic, &numeric_grad(var, &idx, &loss)?);
            println!("{name}: relative error {err:.2e}");
            assert!(err < 1e-5, "{name}: relative error {err}");
        }
        Ok(())
    }

    /// Changing the values at padded positions leaves the outputs at real positions unchanged,
    /// while without the mask they do change.
    #[test]
    fn padding_mask_isolates_real_positions() -> Result<()> {
        let dev = Device::Cpu;
        for position_embedding in [PositionEmbedding::RelativeKey, PositionEmbedding::Absolute] {
            let cfg = TransformerConfig {
                position_embedding,
                ..tiny()
            };
            let net = build(&Params::new(6), &cfg, 3, DType::F32)?;
            let x = randn(&mut Rng::new(7), &[2, 6, 3], DType::F32, &dev)?;
            let noise =
                randn(&mut Rng::new(8), &[2, 6, 3], DType::F32, &dev)?.affine(100.0, 0.0)?;
            let real = [
                [1f32, 1.0, 1.0, 1.0, 0.0, 0.0],
                [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            ];
            let mask = Tensor::new(&real, &dev)?;
            // Replace the padded positions by large unrelated values.
            let keep = mask.unsqueeze(2)?.broadcast_as(x.shape())?;
            let x2 = x.mul(&keep)?.add(&noise.mul(&keep.affine(-1.0, 1.0)?)?)?;
            let t = Tensor::new(&[5.0f32, 80.0], &dev)?;
            let a = net
                .forward_masked(&x, &t, None, Some(&mask), None)?
                .to_vec3::<f32>()?;
            let b = net
                .forward_masked(&x2, &t, None, Some(&mask), None)?
                .to_vec3::<f32>()?;
            let unmasked_a = net
                .forward_masked(&x, &t, None, None, None)?
                .to_vec3::<f32>()?;
            let unmasked_b = net
                .forward_masked(&x2, &t, None, None, None)?
                .to_vec3::<f32>()?;
            for (bi, row) in real.iter().enumerate() {
                for (li, &r) in row.iter().enumerate() {
                    if r == 1.0 {
                        assert_eq!(
                            a[bi][li], b[bi][li],
                            "{position_embedding:?} batch {bi} position {li}"
                        );
                        assert_ne!(unmasked_a[bi][li], unmasked_b[bi][li]);
                    }
                }
            }
            // An all-ones mask is the same as no mask.
            let ones = Tensor::ones((2, 6), DType::F32, &dev)?;
            let with_ones = net
                .forward_masked(&x, &t, None, Some(&ones), None)?
                .to_vec3::<f32>()?;
            assert_eq!(with_ones, unmasked_a);
        }
        Ok(())
    }

    #[test]
    fn dropout_only_in_training_and_determined_by_the_rng() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = TransformerConfig {
            dropout: 0.3,
            ..tiny()
        };
        let net = build(&Params::new(9), &cfg, 3, DType::F32)?;
        let x = randn(&mut Rng::new(10), &[2, 5, 3], DType::F32, &dev)?;
        let t = Tensor::new(&[1.0f32, 50.0], &dev)?;
        let eval = values(&net.forward(&Inputs::new(&x, &t))?)?;
        assert_eq!(eval, values(&net.forward(&Inputs::new(&x, &t))?)?);

        let train = |seed: u64| -> Result<Vec<f64>> {
            values(&net.forward_train(&Inputs::new(&x, &t), &mut Rows::new(seed, 0, 2))?)
        };
        let a = train(5)?;
        assert_eq!(a, train(5)?);
        assert_ne!(a, train(6)?);
        assert_ne!(a, eval);
        // Each row's masks come from its own stream: row 1 alone gives row 1 of the pair.
        let t1 = t.narrow(0, 1, 1)?;
        let alone = values(&net.forward_train(
            &Inputs::new(&x.narrow(0, 1, 1)?, &t1),
            &mut Rows::new(5, 1, 1),
        )?)?;
        assert!(
            alone
                .iter()
                .zip(&a[15..])
                .all(|(p, q)| (p - q).abs() < 1e-5),
            "row 1 depends on its batch"
        );

        // Without dropout, training and evaluation agree.
        let net0 = build(
            &Params::new(9),
            &TransformerConfig {
                dropout: 0.0,
                ..cfg
            },
            3,
            DType::F32,
        )?;
        let out0 = values(&net0.forward_train(&Inputs::new(&x, &t), &mut Rows::new(5, 0, 2))?)?;
        assert_eq!(out0, values(&net0.forward(&Inputs::new(&x, &t))?)?);
        Ok(())
    }

    #[test]
    fn bad_inputs_and_configs_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let net = build(&Params::new(0), &tiny(), 3, DType::F32)?;
        let t2 = Tensor::new(&[1.0f32, 2.0], &dev)?;
        let x = Tensor::zeros((2, 5, 3), DType::F32, &dev)?;
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(net.forward(&Inputs::new(
            &Tensor::zeros((2, 5, 4), DType::F32, &dev)?,
            &t2
        )))
        .contains("[2, 5, 4]"));
        assert!(err(net.forward(&Inputs::new(
            &Tensor::zeros((2, 15), DType::F32, &dev)?,
            &t2
        )))
        .contains("[B, L, 3]"));
        assert!(err(net.forward(&Inputs::new(
            &Tensor::zeros((2, 8, 3), DType::F32, &dev)?,
            &t2
        )))
        .contains("max_len"));
        assert!(
            err(net.forward(&Inputs::new(&x, &Tensor::new(&[1.0f32], &dev)?)))
                .contains("timesteps")
        );
        let bad_mask = Tensor::ones((2, 4), DType::F32, &dev)?;
        assert!(
            err(net.forward_masked(&x, &t2, None, Some(&bad_mask), None)).contains("padding mask")
        );
        let spec = CondSpec::classes("c", vec!["a".into(), "b".into()]);
        let cond = spec.encode(&[spec.null(), spec.null()], &dev)?;
        assert!(err(net.forward(&Inputs {
            cond: Some(&cond),
            ..Inputs::new(&x, &t2)
        }))
        .contains("unconditional"));

        let bad = [
            TransformerConfig { heads: 3, ..tiny() },
            TransformerConfig {
                hidden: 2,
                heads: 1,
                ..tiny()
            },
            TransformerConfig {
                hidden: 7,
                heads: 7,
                ..tiny()
            },
            TransformerConfig {
                max_len: 0,
                ..tiny()
            },
            TransformerConfig {
                dropout: 1.0,
                ..tiny()
            },
            TransformerConfig {
                layer_norm_eps: 0.0,
                ..tiny()
            },
        ];
        for cfg in &bad {
            assert!(
                build(&Params::new(0), cfg, 3, DType::F32).is_err(),
                "{cfg:?}"
            );
        }
        assert!(build(&Params::new(0), &tiny(), 0, DType::F32).is_err());
        Ok(())
    }

    #[test]
    fn config_from_toml_with_defaults_and_unknown_keys() {
        let cfg: TransformerConfig = toml::from_str(
            "hidden = 192\nlayers = 6\nheads = 6\nintermediate = 384\nposition_embedding = \"absolute\"\ntime_encoding = \"sinusoidal\"\ndecoder = \"linear\"",
        )
        .unwrap();
        assert_eq!(cfg.hidden, 192);
        assert_eq!(cfg.position_embedding, PositionEmbedding::Absolute);
        assert_eq!(cfg.time_encoding, TimeEncoding::Sinusoidal);
        assert_eq!(cfg.decoder, DecoderHead::Linear);
        assert_eq!(cfg.max_len, 128);
        assert_eq!(cfg.layer_norm_eps, 1e-12);
        let d: TransformerConfig = toml::from_str("").unwrap();
        assert_eq!(d, TransformerConfig::default());
        assert_eq!(d.position_embedding, PositionEmbedding::RelativeKey);
        assert_eq!(d.time_encoding, TimeEncoding::GaussianFourier);
        let err = toml::from_str::<TransformerConfig>("hiden = 32").unwrap_err();
        assert!(err.to_string().contains("hiden"), "{err}");
        assert!(
            toml::from_str::<TransformerConfig>("position_embedding = \"relative_key_query\"")
                .is_err()
        );
    }
}
