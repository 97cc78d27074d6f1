//! A UNet in the manner of diffusers' `UNet2DModel`, written once for 1-D data (`[B, C, L]`:
//! audio features, one-hot DNA) and 2-D data (`[B, C, H, W]`: images, spectrograms).
//!
//! Layout, for `channel_mults = [m_0, ..., m_{n-1}]` and base width `c`:
//! - `conv_in`: 3-wide conv from the input channels to `c`;
//! - `time` (+ `class`): the timestep embedding plus, for conditional models, the class
//!   embedding, passed through SiLU once and fed to every residual block;
//! - `down.{i}`: `layers_per_block` residual blocks (`res.{j}`) of width `c * m_i`, each followed
//!   by self-attention (`attn.{j}`) when `i` is in `attention_levels`, then a stride-2 conv
//!   (`downsample`) on every level but the last;
//! - `mid`: `res.0`, `attn` (if `mid_attention`), `res.1`;
//! - `up.{i}` (run from the last level to the first): `layers_per_block + 1` residual blocks,
//!   each taking the previous output concatenated with a skip tensor saved on the way down
//!   (as in diffusers), with attention at the same levels, then a nearest-neighbour x2 upsample
//!   and a 3-wide conv (`upsample`) on every level but the first;
//! - `norm_out` -> SiLU -> `conv_out` to the output channels.
//!
//! Spatial sizes must be divisible by `patch_size * 2^(n-1)` ([`UNet::size_multiple`]); other
//! sizes are rejected with an error. With `patch_size > 1`, patches are folded into channels
//! before `conv_in` and unfolded after `conv_out`.
//!
//! Two candle 0.11.1 gradient bugs are worked around here, and the tests check every path
//! against finite differences:
//! - `upsample_nearest2d`'s backward overwrites instead of accumulating, so upsampling is done
//!   by reshape and broadcast ([`upsample_nearest`]);
//! - `conv1d`'s backward is wrong on the CPU: its kernel gradient calls conv1d with a
//!   non-contiguous kernel, which computes wrong values when the batch has more than one row,
//!   and `conv_transpose1d` with a 1-wide kernel is wrong, which breaks the input gradient of
//!   1x1 convs. 1-D convolutions therefore run as conv2d over a height-1 image ([`Conv`]).
//!
//! On the CPU every convolution is [`super::conv::conv2d`] (a fused im2col + gemm op with its
//! own backward) rather than candle's much slower direct convolution, and every GroupNorm
//! (with the SiLU after it, and the time embedding added before it in the residual blocks) is
//! the fused multithreaded kernel of [`super::norm`].

use super::norm::Norm;
use super::ops::Linear;
use super::{dropout, CondEmbedding, TimeEmbedding};
use crate::cond::{CondBatch, CondSpec};
use crate::denoiser::{Denoiser, Inputs};
use crate::rng::Rows;
use candle_core::{Result, Shape, Tensor};
use candle_nn::{Init, Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// How many spatial axes the data has: one (`[B, C, L]`) or two (`[B, C, H, W]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dims {
    /// Sequences, `[B, C, L]`.
    One,
    /// Images, `[B, C, H, W]`.
    Two,
}

impl Dims {
    /// The number of spatial axes (1 or 2).
    pub fn count(self) -> usize {
        match self {
            Dims::One => 1,
            Dims::Two => 2,
        }
    }
}

/// The shape of a [`UNet`] (the `[model]` table of an experiment, or part of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Base width: the channels of the first level. Default 64.
    pub channels: usize,
    /// Width multiplier of each level; one level per entry. Default `[1, 2, 2]`.
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more). Default 2.
    pub layers_per_block: usize,
    /// Indices of the levels that have self-attention after each residual block. Default `[2]`.
    pub attention_levels: Vec<usize>,
    /// Whether the middle block has self-attention between its two residual blocks. Default true.
    pub mid_attention: bool,
    /// Channels per attention head; a level's width must be a multiple of it. Default 32.
    pub head_dim: usize,
    /// Dropout probability inside the residual blocks, applied only in training. Default 0.
    pub dropout: f64,
    /// GroupNorm groups; every level's width must be a multiple of it. Default 32.
    pub groups: usize,
    /// GroupNorm epsilon. Default 1e-5.
    pub norm_eps: f64,
    /// Width of the sinusoidal timestep features; None means `channels`. Default None.
    pub time_dim: Option<usize>,
    /// Width of the time (and class) embedding; None means `4 * channels`. Default None.
    pub emb_dim: Option<usize>,
    /// Initialise the output convolution to zero, so the untrained network outputs zeros.
    /// Default false.
    pub zero_init_output: bool,
    /// Side of the square patches folded into channels before the first convolution (and
    /// unfolded after the last): with 2, a `[C, 28, 28]` image enters as `[4C, 14, 14]`, so
    /// every level works at half the resolution, a quarter of the cost, as in "simple
    /// diffusion" (Hoogeboom et al. 2023). Default 1 (no patching).
    pub patch_size: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            channels: 64,
            channel_mults: vec![1, 2, 2],
            layers_per_block: 2,
            attention_levels: vec![2],
            mid_attention: true,
            head_dim: 32,
            dropout: 0.0,
            groups: 32,
            norm_eps: 1e-5,
            time_dim: None,
            emb_dim: None,
            zero_init_output: false,
            patch_size: 1,
        }
    }
}

/// A 1-D or 2-D convolution with a square kernel, "same" padding (`kernel / 2`) and a bias.
///
/// Parameters `weight` (`[out, in, k]` or `[out, in, k, k]`, Kaiming-normal) and `bias`
/// (uniform in `±1/sqrt(fan_in)`), or both zero when built with `zero = true`.
#[derive(Clone, Debug)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    dims: Dims,
    stride: usize,
    padding: usize,
}

impl Conv {
    /// Builds a `kernel`-wide convolution from `in_ch` to `out_ch` channels with `stride`.
    pub fn new(
        vb: VarBuilder,
        dims: Dims,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        zero: bool,
    ) -> Result<Self> {
        let mut shape = vec![out_ch, in_ch];
        shape.extend(std::iter::repeat_n(kernel, dims.count()));
        let fan_in = in_ch * kernel.pow(dims.count() as u32);
        let bound = 1.0 / (fan_in as f64).sqrt();
        let (w_init, b_init) = if zero {
            (Init::Const(0.0), Init::Const(0.0))
        } else {
            (
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )
        };
        Ok(Self {
            weight: vb.get_with_hints(Shape::from(shape), "weight", w_init)?,
            bias: vb.get_with_hints(out_ch, "bias", b_init)?,
            dims,
            stride,
            padding: kernel / 2,
        })
    }

    /// Applies the convolution to `[B, in, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (p, s) = (self.padding, self.stride);
        match self.dims {
            Dims::One => super::conv::conv1d(x, &self.weight, &self.bias, s, p),
            Dims::Two => super::conv::conv2d(x, &self.weight, &self.bias, (s, s), (p, p)),
        }
    }
}

/// Nearest-neighbour x2 upsampling of every spatial axis ([`super::ops::upsample_nearest`]).
///
/// candle's `upsample_nearest2d` is avoided on purpose: in candle 0.11.1 its backward pass
/// overwrites instead of accumulating the input's gradient, which is wrong whenever the input
/// also feeds another branch (as in a UNet).
pub fn upsample_nearest(x: &Tensor, dims: Dims) -> Result<Tensor> {
    super::ops::upsample_nearest(x, dims.count())
}

/// Folds `p x p` patches (`p` for 1-D data) into channels: `[B, C, H, W]` to
/// `[B, C p^2, H/p, W/p]`, channel `c p^2 + i p + j` holding pixel `(i, j)` of each patch.
fn patchify(x: &Tensor, p: usize, dims: Dims) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    match dims {
        Dims::One => {
            let (b, c, l) = x.dims3()?;
            x.reshape((b, c, l / p, p))?
                .permute((0, 1, 3, 2))?
                .reshape((b, c * p, l / p))
        }
        Dims::Two => {
            let (b, c, h, w) = x.dims4()?;
            x.reshape((b, c, h / p, p, w / p, p))?
                .permute((0, 1, 3, 5, 2, 4))?
                .reshape((b, c * p * p, h / p, w / p))
        }
    }
}

/// The inverse of [`patchify`].
fn unpatchify(x: &Tensor, p: usize, dims: Dims) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    match dims {
        Dims::One => {
            let (b, cp, l) = x.dims3()?;
            x.reshape((b, cp / p, p, l))?
                .permute((0, 1, 3, 2))?
                .reshape((b, cp / p, l * p))
        }
        Dims::Two => {
            let (b, cp, h, w) = x.dims4()?;
            let c = cp / (p * p);
            x.reshape((b, c, p, p, h, w))?
                .permute((0, 1, 4, 2, 5, 3))?
                .reshape((b, c, h * p, w * p))
        }
    }
}

/// Residual block: `GroupNorm -> SiLU -> Conv3 -> + Linear(emb) -> GroupNorm -> SiLU ->
/// Dropout -> Conv3`, added to the input (through a 1-wide conv when the widths differ).
///
/// Parameters `norm1`, `conv1`, `time_proj`, `norm2`, `conv2` and, when needed, `skip`.
#[derive(Clone, Debug)]
pub struct ResBlock {
    norm1: Norm,
    conv1: Conv,
    time_proj: Linear,
    norm2: Norm,
    conv2: Conv,
    skip: Option<Conv>,
    dropout: f64,
}

impl ResBlock {
    /// Builds a block from `in_ch` to `out_ch` channels taking an `emb_dim`-wide embedding.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        dims: Dims,
        in_ch: usize,
        out_ch: usize,
        emb_dim: usize,
        groups: usize,
        eps: f64,
        dropout: f64,
    ) -> Result<Self> {
        let skip = if in_ch != out_ch {
            Some(Conv::new(vb.pp("skip"), dims, in_ch, out_ch, 1, 1, false)?)
        } else {
            None
        };
        Ok(Self {
            norm1: Norm::new(vb.pp("norm1"), groups, in_ch, eps)?,
            conv1: Conv::new(vb.pp("conv1"), dims, in_ch, out_ch, 3, 1, false)?,
            time_proj: Linear::new(emb_dim, out_ch, vb.pp("time_proj"))?,
            norm2: Norm::new(vb.pp("norm2"), groups, out_ch, eps)?,
            conv2: Conv::new(vb.pp("conv2"), dims, out_ch, out_ch, 3, 1, false)?,
            skip,
            dropout,
        })
    }

    /// `x` is `[B, in, ...]`, `emb` is `[B, emb_dim]` (already passed through SiLU). Dropout is
    /// applied only when `rng` is given (training), with masks drawn from it.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, rng: Option<&mut Rows>) -> Result<Tensor> {
        let _t = crate::profile::scope("resblock (forward)");
        let h = self.conv1.forward(&self.norm1.forward(x, None, true)?)?;
        // The [B, out] time projection is added to every position as the norm's shift.
        let t = self.time_proj.forward(emb)?;
        let mut h = self.norm2.forward(&h, Some(&t), true)?;
        if let Some(rng) = rng {
            h = dropout(&h, self.dropout, rng)?;
        }
        let h = self.conv2.forward(&h)?;
        match &self.skip {
            Some(skip) => super::ops::add(&skip.forward(x)?, &h),
            None => super::ops::add(x, &h),
        }
    }
}

/// Multi-head self-attention over all spatial positions, with a residual connection:
/// `x + out(attention(qkv(GroupNorm(x))))`, positions flattened to a sequence.
///
/// Parameters `norm`, `qkv` (one `C -> 3C` projection) and `out`.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    norm: Norm,
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl SelfAttention {
    /// Builds attention over `channels` with `channels / head_dim` heads; `channels` must be a
    /// multiple of `head_dim`.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        head_dim: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        if head_dim == 0 || !channels.is_multiple_of(head_dim) {
            candle_core::bail!(
                "attention over {channels} channels needs a head_dim dividing it, got {head_dim}"
            );
        }
        Ok(Self {
            norm: Norm::new(vb.pp("norm"), groups, channels, eps)?,
            qkv: Linear::new(channels, 3 * channels, vb.pp("qkv"))?,
            out: Linear::new(channels, channels, vb.pp("out"))?,
            heads: channels / head_dim,
        })
    }

    /// Applies the block to `[B, C, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _t = crate::profile::scope("attention block (forward)");
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let n = x.elem_count() / (b * c);
        let heads = self.heads;
        // [B, C, N] -> [B, N, C]
        let h = self
            .norm
            .forward(x, None, false)?
            .reshape((b, c, n))?
            .transpose(1, 2)?
            .contiguous()?;
        let o = super::attention::self_attention(&self.qkv.forward(&h)?, heads, None, None, None)?;
        let o = self.out.forward(&o)?.transpose(1, 2)?.reshape(x.shape())?;
        super::ops::add(x, &o)
    }
}

/// One resolution level: residual blocks (each optionally followed by attention) and an
/// optional resampling conv (stride-2 down, or after the x2 upsample on the way up).
#[derive(Debug)]
struct Level {
    blocks: Vec<(ResBlock, Option<SelfAttention>)>,
    resample: Option<Conv>,
}

/// A diffusers-style UNet denoiser for 1-D or 2-D data, see the [module docs](self).
#[derive(Debug)]
pub struct UNet {
    dims: Dims,
    in_channels: usize,
    out_channels: usize,
    size_multiple: usize,
    patch: usize,
    conv_in: Conv,
    time: TimeEmbedding,
    cond: Option<CondEmbedding>,
    down: Vec<Level>,
    mid: (ResBlock, Option<SelfAttention>, ResBlock),
    up: Vec<Level>,
    norm_out: Norm,
    conv_out: Conv,
}

impl UNet {
    /// Builds the network for `dims`-dimensional data with `in_channels` input and
    /// `out_channels` output channels; with a non-empty `cond` spec it is conditional (each
    /// field embedded, parameters `cond.{field}.weight`, and added to the time embedding).
    /// Parameters are created through `vb`.
    ///
    /// Invalid configurations (no levels, an attention level out of range, widths not divisible
    /// by `groups` or `head_dim`, dropout outside [0, 1)) are errors.
    pub fn new(
        vb: VarBuilder,
        cfg: &UNetConfig,
        dims: Dims,
        in_channels: usize,
        out_channels: usize,
        cond: &CondSpec,
    ) -> Result<Self> {
        let levels = cfg.channel_mults.len();
        if levels == 0 || cfg.channels == 0 || cfg.channel_mults.contains(&0) {
            candle_core::bail!("UNet needs channels > 0 and at least one non-zero channel_mult");
        }
        if let Some(&bad) = cfg.attention_levels.iter().find(|&&l| l >= levels) {
            candle_core::bail!(
                "attention level {bad} does not exist: the UNet has {levels} levels (0..{levels})"
            );
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            candle_core::bail!("dropout must be in [0, 1), got {}", cfg.dropout);
        }
        let width = |i: usize| cfg.channels * cfg.channel_mults[i];
        if cfg.groups == 0 {
            candle_core::bail!("groups must be positive");
        }
        for i in 0..levels {
            if width(i) % cfg.groups != 0 {
                candle_core::bail!(
                    "level {i} has {} channels, not a multiple of groups = {}",
                    width(i),
                    cfg.groups
                );
            }
        }
        if cfg.patch_size == 0 {
            candle_core::bail!("patch_size must be at least 1");
        }
        let folded = cfg.patch_size.pow(dims.count() as u32);
        let time_dim = cfg.time_dim.unwrap_or(cfg.channels);
        let emb_dim = cfg.emb_dim.unwrap_or(4 * cfg.channels);
        let (groups, eps, p) = (cfg.groups, cfg.norm_eps, cfg.dropout);
        let res = |vb: VarBuilder, i: usize, o: usize| {
            ResBlock::new(vb, dims, i, o, emb_dim, groups, eps, p)
        };
        let attn = |vb: VarBuilder, level: usize, ch: usize| -> Result<Option<SelfAttention>> {
            if cfg.attention_levels.contains(&level) {
                Ok(Some(SelfAttention::new(vb, ch, cfg.head_dim, groups, eps)?))
            } else {
                Ok(None)
            }
        };

        // Channel counts of the skip tensors, pushed on the way down and popped on the way up.
        let mut skips = vec![cfg.channels];
        let mut ch = cfg.channels;
        let mut down = Vec::with_capacity(levels);
        for i in 0..levels {
            let vb = vb.pp("down").pp(i);
            let mut blocks = Vec::new();
            for j in 0..cfg.layers_per_block {
                let block = res(vb.pp("res").pp(j), ch, width(i))?;
                ch = width(i);
                blocks.push((block, attn(vb.pp("attn").pp(j), i, ch)?));
                skips.push(ch);
            }
            let resample = if i + 1 < levels {
                skips.push(ch);
                Some(Conv::new(vb.pp("downsample"), dims, ch, ch, 3, 2, false)?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }

        let vb_mid = vb.pp("mid");
        let mid_attn = if cfg.mid_attention {
            Some(SelfAttention::new(
                vb_mid.pp("attn"),
                ch,
                cfg.head_dim,
                groups,
                eps,
            )?)
        } else {
            None
        };
        let mid = (
            res(vb_mid.pp("res").pp(0), ch, ch)?,
            mid_attn,
            res(vb_mid.pp("res").pp(1), ch, ch)?,
        );

        let mut up = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let vb = vb.pp("up").pp(i);
            let mut blocks = Vec::new();
            for j in 0..=cfg.layers_per_block {
                let skip = skips
                    .pop()
                    .expect("one skip tensor per up block by construction");
                let block = res(vb.pp("res").pp(j), ch + skip, width(i))?;
                ch = width(i);
                blocks.push((block, attn(vb.pp("attn").pp(j), i, ch)?));
            }
            let resample = if i > 0 {
                Some(Conv::new(vb.pp("upsample"), dims, ch, ch, 3, 1, false)?)
            } else {
                None
            };
            up.push(Level { blocks, resample });
        }
        debug_assert!(skips.is_empty());

        let cond = if cond.is_empty() {
            None
        } else {
            Some(CondEmbedding::new(vb.pp("cond"), cond, emb_dim)?)
        };
        Ok(Self {
            dims,
            in_channels,
            out_channels,
            size_multiple: cfg.patch_size << (levels - 1),
            patch: cfg.patch_size,
            conv_in: Conv::new(
                vb.pp("conv_in"),
                dims,
                in_channels * folded,
                cfg.channels,
                3,
                1,
                false,
            )?,
            time: TimeEmbedding::new(vb.pp("time"), time_dim, emb_dim)?,
            cond,
            down,
            mid,
            up,
            norm_out: Norm::new(vb.pp("norm_out"), groups, cfg.channels, eps)?,
            conv_out: Conv::new(
                vb.pp("conv_out"),
                dims,
                cfg.channels,
                out_channels * folded,
                3,
                1,
                cfg.zero_init_output,
            )?,
        })
    }

    /// The data's dimensionality.
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Every spatial size must be a multiple of this (`2^(levels - 1)`).
    pub fn size_multiple(&self) -> usize {
        self.size_multiple
    }

    /// Whether the network takes conditions.
    pub fn is_conditional(&self) -> bool {
        self.cond.is_some()
    }

    /// Checks the input's rank, channels and spatial sizes, and the timesteps' shape.
    fn check_input(&self, x: &Tensor, t: &Tensor) -> Result<()> {
        let rank = 2 + self.dims.count();
        let layout = match self.dims {
            Dims::One => "[B, C, L]",
            Dims::Two => "[B, C, H, W]",
        };
        if x.rank() != rank {
            candle_core::bail!("the UNet expects {layout} input, got shape {:?}", x.dims());
        }
        if x.dim(1)? != self.in_channels {
            candle_core::bail!(
                "the UNet expects {} input channels, got shape {:?}",
                self.in_channels,
                x.dims()
            );
        }
        for &s in &x.dims()[2..] {
            if s == 0 || s % self.size_multiple != 0 {
                candle_core::bail!(
                    "the UNet divides each spatial size by {0}, so sizes must be multiples of {0}; got shape {1:?} (pad or crop the data)",
                    self.size_multiple,
                    x.dims()
                );
            }
        }
        if t.dims() != [x.dim(0)?] {
            candle_core::bail!(
                "timesteps must have shape [{}], got {:?}",
                x.dim(0)?,
                t.dims()
            );
        }
        Ok(())
    }

    /// The time (+ condition) embedding after SiLU, `[B, emb_dim]`.
    fn embedding(&self, t: &Tensor, cond: Option<&CondBatch>, batch: usize) -> Result<Tensor> {
        let emb = self.time.forward(t)?;
        let emb = match (&self.cond, cond) {
            (Some(embed), c) => {
                emb.add(&embed.forward(c, batch, t.device())?.to_dtype(emb.dtype())?)?
            }
            (None, Some(_)) => {
                candle_core::bail!("this UNet is unconditional but was given conditions")
            }
            (None, None) => emb,
        };
        emb.silu()
    }

    /// The prediction for `x` (`[B, in, ...]`) at timesteps `t` (`[B]` f32) with encoded
    /// conditions `cond` (None means the null condition for a conditional model). With `rows`
    /// given the pass is in training mode: dropout on, each row's masks from its own stream.
    pub fn forward_t(
        &self,
        x: &Tensor,
        t: &Tensor,
        cond: Option<&CondBatch>,
        mut rng: Option<&mut Rows>,
    ) -> Result<Tensor> {
        self.check_input(x, t)?;
        let emb = self.embedding(t, cond, x.dim(0)?)?;

        let mut h = self.conv_in.forward(&patchify(x, self.patch, self.dims)?)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (block, attn) in &level.blocks {
                h = block.forward(&h, &emb, rng.as_deref_mut())?;
                if let Some(attn) = attn {
                    h = attn.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &level.resample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }

        let (res0, attn, res1) = &self.mid;
        h = res0.forward(&h, &emb, rng.as_deref_mut())?;
        if let Some(attn) = attn {
            h = attn.forward(&h)?;
        }
        h = res1.forward(&h, &emb, rng.as_deref_mut())?;

        for level in &self.up {
            for (block, attn) in &level.blocks {
                let skip = skips
                    .pop()
                    .expect("one skip tensor per up block by construction");
                h = block.forward(
                    &super::ops::cat_channels(&h, &skip)?,
                    &emb,
                    rng.as_deref_mut(),
                )?;
                if let Some(attn) = attn {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(up) = &level.resample {
                h = up.forward(&upsample_nearest(&h, self.dims)?)?;
            }
        }
        let out = self
            .conv_out
            .forward(&self.norm_out.forward(&h, None, true)?)?;
        unpatchify(&out, self.patch, self.dims)
    }
}

impl Denoiser for UNet {
    /// Evaluation-mode forward pass (no dropout), see [`UNet::forward_t`]. The UNet has no
    /// padding mask: its inputs' mask must be None.
    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        reject_mask(inputs)?;
        self.forward_t(inputs.x, inputs.time, inputs.cond, None)
    }

    /// Training-mode pass: each row's dropout masks come from its own stream.
    fn forward_train(&self, inputs: &Inputs, rows: &mut Rows) -> Result<Tensor> {
        reject_mask(inputs)?;
        self.forward_t(inputs.x, inputs.time, inputs.cond, Some(rows))
    }
}

fn reject_mask(inputs: &Inputs) -> Result<()> {
    if inputs.mask.is_some() {
        candle_core::bail!(
            "the UNet takes no padding mask: its data must have one fixed size (crop or pad it)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::{numeric_grad, rel_err, values};
    use crate::params::Params;
    use crate::rng::Rng;
    use crate::tensor_util::randn;
    use candle_core::{DType, Device, Var};

    /// A tiny network: two levels, attention on the lower one.
    fn tiny(layers: usize) -> UNetConfig {
        UNetConfig {
            channels: 8,
            channel_mults: vec![1, 2],
            layers_per_block: layers,
            attention_levels: vec![1],
            head_dim: 4,
            groups: 4,
            ..UNetConfig::default()
        }
    }

    fn spec(classes: Option<usize>) -> CondSpec {
        match classes {
            Some(k) => CondSpec::classes("class", (0..k).map(|i| i.to_string()).collect()),
            None => CondSpec::default(),
        }
    }

    fn build(
        params: &Params,
        cfg: &UNetConfig,
        dims: Dims,
        classes: Option<usize>,
        dtype: DType,
    ) -> Result<UNet> {
        UNet::new(
            params.var_builder(dtype, &Device::Cpu),
            cfg,
            dims,
            3,
            3,
            &spec(classes),
        )
    }

    /// Encoded class ids (id k is the null of a k-class spec).
    fn ids(ids: &[u32], k: usize) -> Result<CondBatch> {
        let s = spec(Some(k));
        let conds: Vec<_> = ids
            .iter()
            .map(|&i| {
                if i as usize == k {
                    s.null()
                } else {
                    crate::cond::Condition(vec![crate::cond::Value::Class(i)])
                }
            })
            .collect();
        s.encode(&conds, &Device::Cpu)
    }

    /// The evaluation-mode output for `x` at `t` with encoded conditions.
    fn fwd(net: &UNet, x: &Tensor, t: &Tensor, cond: Option<&CondBatch>) -> Result<Tensor> {
        net.forward(&Inputs {
            cond,
            ..Inputs::new(x, t)
        })
    }

    #[test]
    fn output_shape_matches_input_1d_and_2d() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1.0f32, 250.0], &dev)?;
        for (dims, shape) in [(Dims::One, vec![2, 3, 16]), (Dims::Two, vec![2, 3, 8, 8])] {
            for classes in [None, Some(4)] {
                let params = Params::new(1);
                let net = build(&params, &tiny(2), dims, classes, DType::F32)?;
                assert!(params.count() > 0);
                let x = randn(&mut Rng::new(2), &shape, DType::F32, &dev)?;
                let cond = classes.map(|k| ids(&[0, 4], k)).transpose()?;
                let out = fwd(&net, &x, &t, cond.as_ref())?;
                assert_eq!(out.dims(), shape.as_slice(), "{dims:?} classes {classes:?}");
                assert!(values(&out)?.iter().all(|v| v.is_finite()));
                if classes.is_some() {
                    // No ids means the null class for every row.
                    let null = ids(&[4, 4], 4)?;
                    let a = values(&fwd(&net, &x, &t, None)?)?;
                    assert_eq!(a, values(&fwd(&net, &x, &t, Some(&null))?)?);
                } else {
                    assert!(fwd(&net, &x, &t, Some(&ids(&[0, 1], 4)?)).is_err());
                }
            }
        }
        Ok(())
    }

    #[test]
    fn same_seed_same_output_and_class_matters() -> Result<()> {
        let dev = Device::Cpu;
        let x = randn(&mut Rng::new(3), &[2, 3, 8, 8], DType::F32, &dev)?;
        let t = Tensor::new(&[10.0f32, 900.0], &dev)?;
        let c = ids(&[1, 2], 3)?;
        let run = |seed| -> Result<Vec<f64>> {
            let params = Params::new(seed);
            values(
                &build(&params, &tiny(2), Dims::Two, Some(3), DType::F32)?.forward(&Inputs {
                    cond: Some(&c),
                    ..Inputs::new(&x, &t)
                })?,
            )
        };
        assert_eq!(run(5)?, run(5)?);
        assert_ne!(run(5)?, run(6)?);
        let params = Params::new(5);
        let net = build(&params, &tiny(2), Dims::Two, Some(3), DType::F32)?;
        assert_ne!(
            values(&fwd(&net, &x, &t, Some(&c))?)?,
            values(&fwd(&net, &x, &t, None)?)?
        );
        Ok(())
    }

    #[test]
    fn zero_init_output_gives_zeros() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = UNetConfig {
            zero_init_output: true,
            ..tiny(1)
        };
        let net = build(&Params::new(0), &cfg, Dims::One, None, DType::F32)?;
        let x = randn(&mut Rng::new(3), &[1, 3, 8], DType::F32, &dev)?;
        let out = fwd(&net, &x, &Tensor::new(&[5.0f32], &dev)?, None)?;
        assert!(values(&out)?.iter().all(|v| *v == 0.0));
        Ok(())
    }

    #[test]
    fn bad_shapes_and_configs_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = UNetConfig {
            channel_mults: vec![1, 2, 2],
            ..tiny(1)
        };
        let net = build(&Params::new(0), &cfg, Dims::Two, None, DType::F32)?;
        assert_eq!(net.size_multiple(), 4);
        let t = Tensor::new(&[1.0f32], &dev)?;
        let err = fwd(
            &net,
            &Tensor::zeros((1, 3, 8, 6), DType::F32, &dev)?,
            &t,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("multiples of 4"), "{err}");
        assert!(fwd(&net, &Tensor::zeros((1, 3, 8), DType::F32, &dev)?, &t, None).is_err());
        assert!(fwd(
            &net,
            &Tensor::zeros((1, 2, 8, 8), DType::F32, &dev)?,
            &t,
            None
        )
        .is_err());
        assert!(fwd(
            &net,
            &Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?,
            &t,
            None
        )
        .is_err());
        let net1 = build(&Params::new(0), &cfg, Dims::One, None, DType::F32)?;
        assert!(fwd(
            &net1,
            &Tensor::zeros((1, 3, 10), DType::F32, &dev)?,
            &t,
            None
        )
        .is_err());

        let bad = [
            UNetConfig {
                groups: 3,
                ..tiny(1)
            },
            UNetConfig {
                head_dim: 3,
                ..tiny(1)
            },
            UNetConfig {
                attention_levels: vec![2],
                ..tiny(1)
            },
            UNetConfig {
                channel_mults: vec![],
                ..tiny(1)
            },
            UNetConfig {
                dropout: 1.0,
                ..tiny(1)
            },
            UNetConfig {
                patch_size: 0,
                ..tiny(1)
            },
        ];
        for cfg in &bad {
            assert!(
                build(&Params::new(0), cfg, Dims::Two, None, DType::F32).is_err(),
                "{cfg:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn patches_fold_into_channels_and_back() -> Result<()> {
        let dev = Device::Cpu;
        // [1, 1, 2, 4] with patch 2: channel i*2+j holds pixel (i, j) of each 2x2 patch
        let x = Tensor::arange(0f32, 8.0, &dev)?.reshape((1, 1, 2, 4))?;
        let p = patchify(&x, 2, Dims::Two)?;
        assert_eq!(p.dims(), &[1, 4, 1, 2]);
        assert_eq!(values(&p)?, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(values(&unpatchify(&p, 2, Dims::Two)?)?, values(&x)?);
        let x1 = randn(&mut Rng::new(1), &[2, 3, 12], DType::F32, &dev)?;
        assert_eq!(
            values(&unpatchify(&patchify(&x1, 3, Dims::One)?, 3, Dims::One)?)?,
            values(&x1)?
        );
        // a patched UNet keeps the data's shape; sizes must be multiples of patch * 2^(levels-1)
        let cfg = UNetConfig {
            patch_size: 2,
            ..tiny(2)
        };
        let net = build(&Params::new(0), &cfg, Dims::Two, None, DType::F32)?;
        assert_eq!(net.size_multiple(), 4);
        let t = Tensor::new(&[3.0f32], &dev)?;
        let x = randn(&mut Rng::new(2), &[1, 3, 8, 12], DType::F32, &dev)?;
        assert_eq!(fwd(&net, &x, &t, None)?.dims(), x.dims());
        assert!(fwd(
            &net,
            &Tensor::zeros((1, 3, 8, 6), DType::F32, &dev)?,
            &t,
            None
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn config_from_toml_with_defaults_and_unknown_keys() {
        let cfg: UNetConfig = toml::from_str("channels = 32\nchannel_mults = [1, 2, 4]").unwrap();
        assert_eq!(cfg.channels, 32);
        assert_eq!(cfg.layers_per_block, 2);
        assert_eq!(cfg.groups, 32);
        let err = toml::from_str::<UNetConfig>("chanels = 32").unwrap_err();
        assert!(err.to_string().contains("chanels"), "{err}");
    }

    #[test]
    fn dropout_only_in_training_and_seeded() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = UNetConfig {
            dropout: 0.5,
            ..tiny(1)
        };
        let x = randn(&mut Rng::new(3), &[2, 3, 16], DType::F32, &dev)?;
        let t = Tensor::new(&[10.0f32, 900.0], &dev)?;
        let params = Params::new(1);
        let a = build(&params, &cfg, Dims::One, None, DType::F32)?;
        let eval = values(&fwd(&a, &x, &t, None)?)?;
        assert_eq!(eval, values(&fwd(&a, &x, &t, None)?)?);
        let train = |seed: u64| -> Result<Vec<f64>> {
            values(&a.forward_t(&x, &t, None, Some(&mut Rows::new(seed, 0, 2)))?)
        };
        let train_a = train(4)?;
        assert_ne!(train_a, eval);
        // The same streams replay the masks; other streams draw others.
        assert_eq!(train_a, train(4)?);
        assert_ne!(train_a, train(5)?);
        // Row 1's masks come from its own stream, whatever its batch.
        let alone = values(&a.forward_t(
            &x.narrow(0, 1, 1)?,
            &t.narrow(0, 1, 1)?,
            None,
            Some(&mut Rows::new(4, 1, 1)),
        )?)?;
        let half = train_a.len() / 2;
        assert!(
            alone
                .iter()
                .zip(&train_a[half..])
                .all(|(p, q)| (p - q).abs() < 1e-5),
            "row 1 depends on its batch"
        );
        Ok(())
    }

    #[test]
    fn upsample_values() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[1f32, 2.0]]], &dev)?;
        assert_eq!(
            upsample_nearest(&x, Dims::One)?.to_vec3::<f32>()?,
            vec![vec![vec![1.0, 1.0, 2.0, 2.0]]]
        );
        let x = Tensor::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &dev)?;
        let up = upsample_nearest(&x, Dims::Two)?
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        let want = [
            [1.0, 1.0, 2.0, 2.0],
            [1.0, 1.0, 2.0, 2.0],
            [3.0, 3.0, 4.0, 4.0],
            [3.0, 3.0, 4.0, 4.0],
        ];
        assert_eq!(up, want.map(|r| r.to_vec()).to_vec());
        Ok(())
    }

    /// candle 0.11.1's `upsample_nearest2d` gets this wrong (it gives 4 instead of 5 in 2-D).
    #[test]
    fn upsample_gradient_accumulates_with_other_uses() -> Result<()> {
        let dev = Device::Cpu;
        for (dims, shape) in [(Dims::One, vec![2, 3, 5]), (Dims::Two, vec![2, 3, 4, 5])] {
            let x = Var::from_tensor(&randn(&mut Rng::new(1), &shape, DType::F64, &dev)?)?;
            let loss = upsample_nearest(x.as_tensor(), dims)?
                .sum_all()?
                .add(&x.as_tensor().sum_all()?)?;
            let grads = loss.backward()?;
            let dx = values(grads.get(x.as_tensor()).unwrap())?;
            let want = (1usize << dims.count()) as f64 + 1.0;
            assert!(dx.iter().all(|g| *g == want), "{dims:?}: {dx:?}");
        }
        Ok(())
    }

    /// Checks backprop against finite differences for the input and a few parameters along the
    /// down path, the upsampling conv, the middle attention, the time projection (which enters
    /// the fused norm as its shift) and the norms.
    fn gradient_check(dims: Dims, shape: &[usize]) -> Result<()> {
        let dev = Device::Cpu;
        let params = Params::new(11);
        let net = build(&params, &tiny(1), dims, Some(3), DType::F64)?;
        let x = Var::from_tensor(&randn(&mut Rng::new(12), shape, DType::F64, &dev)?)?;
        let w = randn(&mut Rng::new(13), shape, DType::F64, &dev)?;
        let t = Tensor::new(&[3.0f32, 600.0], &dev)?;
        let cond = ids(&[1, 3], 3)?;
        let loss_t = || {
            fwd(&net, x.as_tensor(), &t, Some(&cond))?
                .mul(&w)?
                .sum_all()
        };
        let loss = || loss_t()?.to_scalar::<f64>();
        let grads = loss_t()?.backward()?;

        let n = x.elem_count();
        let all: Vec<usize> = (0..n).collect();
        let err = rel_err(
            &values(grads.get(x.as_tensor()).unwrap())?,
            &numeric_grad(&x, &all, &loss)?,
        );
        println!("{dims:?} input: relative error {err:.2e} over {n} entries");
        assert!(err < 1e-4, "{dims:?} input gradient: relative error {err}");

        let vars: std::collections::BTreeMap<_, _> = params.vars().into_iter().collect();
        for name in [
            "down.0.res.0.conv1.weight",
            "down.0.downsample.weight",
            "up.1.upsample.weight",
            "up.0.res.1.skip.weight",
            "mid.attn.qkv.weight",
            "cond.class.weight",
            "down.0.res.0.time_proj.weight",
            "up.0.res.1.norm2.weight",
            "mid.attn.norm.bias",
            "norm_out.weight",
        ] {
            let var = &vars[name];
            let idx: Vec<usize> = (0..8).map(|k| (k * 37 + 5) % var.elem_count()).collect();
            let analytic = values(grads.get(var.as_tensor()).unwrap())?;
            let analytic: Vec<f64> = idx.iter().map(|&i| analytic[i]).collect();
            let err = rel_err(&analytic, &numeric_grad(var, &idx, &loss)?);
            println!("{dims:?} {name}: relative error {err:.2e}");
            assert!(err < 1e-4, "{dims:?} {name}: relative error {err}");
        }
        Ok(())
    }

    /// The 1-D conv matches candle's conv1d forward, and both convs' gradients (batch of two,
    /// 1x1, 3x3 and strided) match finite differences: candle's own conv1d backward fails this.
    #[test]
    fn conv_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (dims, shape) in [(Dims::One, vec![2, 3, 8]), (Dims::Two, vec![2, 3, 8, 6])] {
            for (k, stride) in [(3, 1), (1, 1), (3, 2)] {
                let params = Params::new(4);
                let conv = Conv::new(
                    params.var_builder(DType::F64, &dev),
                    dims,
                    3,
                    4,
                    k,
                    stride,
                    false,
                )?;
                let x = Var::from_tensor(&randn(&mut Rng::new(5), &shape, DType::F64, &dev)?)?;
                let y = conv.forward(x.as_tensor())?;
                if dims == Dims::One {
                    let want = x.as_tensor().conv1d(&conv.weight, k / 2, stride, 1, 1)?;
                    let want = want.broadcast_add(&conv.bias.reshape((1, 4, 1))?)?;
                    assert!(rel_err(&values(&y)?, &values(&want)?) < 1e-12);
                }
                let r = randn(&mut Rng::new(6), y.dims(), DType::F64, &dev)?;
                let loss_t = || conv.forward(x.as_tensor())?.mul(&r)?.sum_all();
                let loss = || loss_t()?.to_scalar::<f64>();
                let grads = loss_t()?.backward()?;
                let all: Vec<usize> = (0..x.elem_count()).collect();
                let err = rel_err(
                    &values(grads.get(x.as_tensor()).unwrap())?,
                    &numeric_grad(&x, &all, &loss)?,
                );
                assert!(err < 1e-6, "{dims:?} k{k} s{stride} input: {err}");
                let w = &params.vars()[1].1; // sorted: bias, weight
                let all: Vec<usize> = (0..w.elem_count()).collect();
                let err = rel_err(
                    &values(grads.get(w.as_tensor()).unwrap())?,
                    &numeric_grad(w, &all, &loss)?,
                );
                assert!(err < 1e-6, "{dims:?} k{k} s{stride} weight: {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_2d() -> Result<()> {
        gradient_check(Dims::Two, &[2, 3, 8, 8])
    }

    #[test]
    fn gradients_match_finite_differences_1d() -> Result<()> {
        gradient_check(Dims::One, &[2, 3, 16])
    }
}
