//! A noise-aware classifier for classifier guidance (Dhariwal and Nichol 2021): it reads a
//! noised sample `x_t` and its time (the process's own coordinate) and predicts one
//! categorical condition field, so that its gradient `grad_x log p(y | x_t, t)` can steer a
//! sampler ([`crate::scorer`]).
//!
//! The architecture follows the data's shape:
//! - `[C, L]` and `[C, H, W]` data: the encoder half of the UNet, as guided-diffusion's
//!   `EncoderUNetModel`: `conv_in`, then per level `layers_per_block` residual blocks taking
//!   the time embedding (`down.{i}.res.{j}`) and a stride-2 conv (`down.{i}.downsample`) on
//!   every level but the last, a middle residual block (`mid`), then GroupNorm -> SiLU -> mean
//!   over positions (guided-diffusion's "adaptive" pooling; real positions only when a padding
//!   mask is given) -> `head`;
//! - flat `[D]` data: a residual MLP (`input`, `blocks.{i}`, `head`) of width `hidden`, with
//!   the time embedding added to its input projection.
//!
//! Unlike the UNet it accepts any spatial size (stride-2 convs round up).

use super::norm::Norm;
use super::ops::Linear;
use super::unet::{Conv, Dims, ResBlock};
use super::{dropout, TimeEmbedding};
use crate::denoiser::{Denoiser, Inputs};
use crate::rng::Rows;
use candle_core::{Result, Tensor, D};
use candle_nn::{Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// The `[classifier]` table of an experiment whose `task` is `"classifier"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The categorical condition field to predict; default: the data's only categorical field.
    pub field: Option<String>,
    /// Base width of the convolutional encoder. Default 32.
    pub channels: usize,
    /// Width multiplier per level of the encoder; for flat data, one MLP block per entry.
    /// Default `[1, 2, 2]`.
    pub channel_mults: Vec<usize>,
    /// Residual blocks per encoder level. Default 1.
    pub layers_per_block: usize,
    /// GroupNorm groups; every level's width must be a multiple. Default 8.
    pub groups: usize,
    /// Width of the MLP for flat data. Default 256.
    pub hidden: usize,
    /// Dropout inside the residual blocks during training. Default 0.
    pub dropout: f64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            field: None,
            channels: 32,
            channel_mults: vec![1, 2, 2],
            layers_per_block: 1,
            groups: 8,
            hidden: 256,
            dropout: 0.0,
        }
    }
}

// one per network: the variants' size difference costs nothing
#[allow(clippy::large_enum_variant)]
enum Body {
    Conv {
        dims: Dims,
        conv_in: Conv,
        levels: Vec<(Vec<ResBlock>, Option<Conv>)>,
        mid: ResBlock,
        norm_out: Norm,
    },
    Mlp {
        input: Linear,
        blocks: Vec<Linear>,
        p: f64,
    },
}

/// A noise-aware classifier: `[B, ...]` noised data and `[B]` times to `[B, classes]` logits.
/// It implements [`Denoiser`] so the trainer trains it like any network (its output is the
/// logits; conditions are not inputs).
pub struct Classifier {
    body: Body,
    time: TimeEmbedding,
    head: Linear,
    item_shape: Vec<usize>,
    classes: usize,
}

impl Classifier {
    /// Builds a classifier of `classes` classes for items of `item_shape` (`[D]`, `[C, L]` or
    /// `[C, H, W]`); invalid settings are errors that name the key.
    pub fn new(
        vb: VarBuilder,
        cfg: &ClassifierConfig,
        item_shape: &[usize],
        classes: usize,
    ) -> Result<Self> {
        if classes < 2 {
            candle_core::bail!("a classifier needs at least 2 classes, the field has {classes}");
        }
        if cfg.channel_mults.is_empty()
            || cfg.channel_mults.contains(&0)
            || cfg.channels == 0
            || cfg.hidden == 0
        {
            candle_core::bail!("classifier.channels, classifier.hidden and every classifier.channel_mults entry must be positive, and channel_mults non-empty");
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            candle_core::bail!("classifier.dropout must lie in [0, 1), got {}", cfg.dropout);
        }
        let emb_dim = 4 * cfg.channels;
        let (body, width) = match item_shape.len() {
            1 => {
                let h = cfg.hidden;
                let blocks = (0..cfg.channel_mults.len()).map(|i| Linear::new(h, h, vb.pp("blocks").pp(i))).collect::<Result<_>>()?;
                (Body::Mlp { input: Linear::new(item_shape[0], h, vb.pp("input"))?, blocks, p: cfg.dropout }, h)
            }
            2 | 3 => {
                let dims = if item_shape.len() == 2 { Dims::One } else { Dims::Two };
                if cfg.groups == 0 {
                    candle_core::bail!("classifier.groups must be positive");
                }
                let width = |i: usize| cfg.channels * cfg.channel_mults[i];
                if let Some(i) = (0..cfg.channel_mults.len()).find(|&i| width(i) % cfg.groups != 0) {
                    candle_core::bail!("classifier level {i} has {} channels, not a multiple of classifier.groups = {}", width(i), cfg.groups);
                }
                let res = |vb: VarBuilder, i: usize, o: usize| ResBlock::new(vb, dims, i, o, emb_dim, cfg.groups, 1e-5, cfg.dropout);
                let mut ch = cfg.channels;
                let mut levels = vec![];
                let n = cfg.channel_mults.len();
                for i in 0..n {
                    let vb = vb.pp("down").pp(i);
                    let mut blocks = vec![];
                    for j in 0..cfg.layers_per_block {
                        blocks.push(res(vb.pp("res").pp(j), ch, width(i))?);
                        ch = width(i);
                    }
                    let down = if i + 1 < n { Some(Conv::new(vb.pp("downsample"), dims, ch, ch, 3, 2, false)?) } else { None };
                    levels.push((blocks, down));
                }
                let mid = res(vb.pp("mid"), ch, ch)?;
                let body = Body::Conv {
                    dims,
                    conv_in: Conv::new(vb.pp("conv_in"), dims, item_shape[0], cfg.channels, 3, 1, false)?,
                    levels,
                    mid,
                    norm_out: Norm::new(vb.pp("norm_out"), cfg.groups, ch, 1e-5)?,
                };
                (body, ch)
            }
            r => candle_core::bail!("a classifier takes items of rank 1, 2 or 3 ([D], [C, L], [C, H, W]); these have rank {r}"),
        };
        let time_out = match &body {
            Body::Mlp { .. } => cfg.hidden,
            Body::Conv { .. } => emb_dim,
        };
        Ok(Self {
            body,
            time: TimeEmbedding::new(vb.pp("time"), cfg.channels, time_out)?,
            head: Linear::new(width, classes, vb.pp("head"))?,
            item_shape: item_shape.to_vec(),
            classes,
        })
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `[B, classes]` logits for `x` at times `t`; `mask` (`[B, L]`, 1 at real positions) limits
    /// the pooling of 1-D data to real positions; `rows` given: training mode (dropout on).
    pub fn logits(
        &self,
        x: &Tensor,
        t: &Tensor,
        mask: Option<&Tensor>,
        mut rows: Option<&mut Rows>,
    ) -> Result<Tensor> {
        if x.dims().get(1..) != Some(&self.item_shape[..]) && mask.is_none() {
            candle_core::bail!(
                "the classifier was built for items of shape {:?}, got a batch of {:?}",
                self.item_shape,
                x.dims()
            );
        }
        let emb = self.time.forward(t)?;
        let h = match &self.body {
            Body::Mlp { input, blocks, p } => {
                let mut h = input.forward(x)?.add(&emb)?;
                for block in blocks {
                    let mut u = block.forward(&h.silu()?)?;
                    if let Some(r) = rows.as_deref_mut() {
                        u = dropout(&u, *p, r)?;
                    }
                    h = h.add(&u)?;
                }
                h.silu()?
            }
            Body::Conv {
                dims,
                conv_in,
                levels,
                mid,
                norm_out,
            } => {
                let emb = emb.silu()?;
                let mut m = mask.cloned();
                let x = match (&m, dims) {
                    (Some(m), Dims::One) => x.broadcast_mul(&m.unsqueeze(1)?)?,
                    (Some(_), Dims::Two) => {
                        candle_core::bail!("a padding mask needs 1-D data ([C, L])")
                    }
                    (None, _) => x.clone(),
                };
                let mut h = conv_in.forward(&x)?;
                for (blocks, down) in levels {
                    for block in blocks {
                        h = block.forward(&h, &emb, rows.as_deref_mut())?;
                    }
                    if let Some(down) = down {
                        h = down.forward(&h)?;
                        // a stride-2 conv centred on even positions: keep those of the mask
                        if let Some(mm) = &m {
                            let l = h.dim(2)?;
                            let idx = Tensor::arange_step(0u32, 2 * l as u32, 2, mm.device())?;
                            m = Some(mm.index_select(&idx, 1)?);
                        }
                    }
                }
                h = mid.forward(&h, &emb, rows)?;
                let h = norm_out.forward(&h, None, true)?;
                match &m {
                    Some(m) => {
                        let m = m.unsqueeze(1)?;
                        h.broadcast_mul(&m)?
                            .sum(D::Minus1)?
                            .broadcast_div(&m.sum(D::Minus1)?.clamp(1.0, f64::INFINITY)?)?
                    }
                    None => h.flatten_from(2)?.mean(D::Minus1)?,
                }
            }
        };
        self.head.forward(&h)
    }
}

impl Denoiser for Classifier {
    /// The logits (conditions are ignored: they are what the classifier predicts).
    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        self.logits(inputs.x, inputs.time, inputs.mask, None)
    }

    fn forward_train(&self, inputs: &Inputs, rows: &mut Rows) -> Result<Tensor> {
        self.logits(inputs.x, inputs.time, inputs.mask, Some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use candle_core::{DType, Device};

    #[test]
    fn logits_have_one_column_per_class_for_every_shape() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = ClassifierConfig {
            channels: 8,
            channel_mults: vec![1, 2],
            groups: 4,
            hidden: 16,
            ..Default::default()
        };
        for shape in [vec![3], vec![2, 9], vec![1, 7, 5]] {
            let params = Params::new(0);
            let c = Classifier::new(params.var_builder(DType::F32, &dev), &cfg, &shape, 4)?;
            let mut full = vec![2];
            full.extend(&shape);
            let x = Tensor::randn(0f32, 1.0, full, &dev)?;
            let t = Tensor::new(&[3f32, 500.0], &dev)?;
            assert_eq!(c.logits(&x, &t, None, None)?.dims(), [2, 4]);
        }
        Ok(())
    }

    #[test]
    fn pooling_ignores_padding_of_1d_data() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = ClassifierConfig {
            channels: 8,
            channel_mults: vec![1],
            groups: 4,
            ..Default::default()
        };
        let params = Params::new(1);
        let c = Classifier::new(params.var_builder(DType::F32, &dev), &cfg, &[2, 6], 3)?;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 6), &dev)?;
        let m = Tensor::new(&[[1f32, 1., 1., 1., 0., 0.]], &dev)?;
        let t = Tensor::new(&[10f32], &dev)?;
        let a = c.logits(&x, &t, Some(&m), None)?;
        // the input is zeroed at padding before the first conv: values there change nothing
        let noise = Tensor::new(
            &[[[0f32, 0., 0., 0., 5., -3.], [0., 0., 0., 0., 2., 9.]]],
            &dev,
        )?;
        let b = c.logits(&x.add(&noise)?, &t, Some(&m), None)?;
        let d = a.sub(&b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "padding changed the logits by {d}");
        Ok(())
    }

    #[test]
    fn bad_settings_name_their_key() {
        let params = Params::new(0);
        let vb = params.var_builder(DType::F32, &Device::Cpu);
        let cfg = ClassifierConfig {
            channels: 6,
            groups: 4,
            ..Default::default()
        };
        let e = Classifier::new(vb.clone(), &cfg, &[1, 8, 8], 3)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("classifier.groups"), "{e}");
        let e = Classifier::new(vb, &ClassifierConfig::default(), &[1, 2, 3, 4], 3)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("rank"), "{e}");
    }
}
