//! Network blocks shared by the domains' denoisers: sinusoidal timestep embeddings, the
//! time-embedding MLP, class embeddings with a learned null class, seeded dropout, a UNet
//! generic over 1-D and 2-D data ([`unet`]), and a BERT-style transformer over sequences of
//! feature vectors in the manner of FoldingDiff ([`transformer`]). Their layers run on the
//! CPU kernels of [`sugarcube_kernels`], re-exported here ([`conv`], [`norm`], [`attention`],
//! [`ops`], the kernel switches).

use crate::rng::Rng;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Module, VarBuilder};

pub mod transformer;
pub mod unet;

// The kernels and the layers around them live in sugarcube-kernels; re-exported here under the
// paths the networks and the domain crates use.
pub use sugarcube_kernels::{attention, conv, elementwise, linear, norm, relative, resample};
pub use sugarcube_kernels::{bf16_compute, bf16_supported, set_bf16_compute, set_fused_kernels, Bf16Compute};
pub(crate) use sugarcube_kernels::output_vec;
#[cfg(test)]
pub(crate) use sugarcube_kernels::testing as test_util;

/// The small ops under their earlier common path (`nn::ops`): element-wise ones, resampling,
/// the relative-position term and the linear layer, from [`sugarcube_kernels`].
pub mod ops {
    pub use sugarcube_kernels::elementwise::{add, add_bias, gelu_erf, softmax_last};
    pub use sugarcube_kernels::linear::Linear;
    pub use sugarcube_kernels::relative::add_relative_scores;
    pub use sugarcube_kernels::resample::{cat_channels, upsample_nearest};
}

pub use transformer::{DecoderHead, PositionEmbedding, SequenceTransformer, TimeEncoding, TransformerConfig};
pub use unet::{Dims, UNet, UNetConfig};

/// Sinusoidal embedding of a `[B]` tensor of timesteps, giving `[B, dim]` float32.
///
/// Matches diffusers' `get_timestep_embedding` with `flip_sin_to_cos = true` and
/// `downscale_freq_shift = 0`: with `half = dim / 2` and frequencies
/// `f_i = exp(-ln(max_period) * i / half)`, the row for `t` is
/// `[cos(t f_0), ..., cos(t f_{half-1}), sin(t f_0), ..., sin(t f_{half-1})]`, zero-padded by one
/// column when `dim` is odd.
pub fn timestep_embedding(t: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    let b = t.dim(0)?;
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-max_period.ln() * i as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.to_dtype(DType::F32)?.reshape((b, 1))?.broadcast_mul(&freqs)?;
    let mut parts = vec![args.cos()?, args.sin()?];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros((b, 1), DType::F32, t.device())?);
    }
    Tensor::cat(&parts, D::Minus1)
}

/// Timestep embedding: sinusoidal features, then `Linear -> SiLU -> Linear` (diffusers'
/// `TimestepEmbedding`, parameters `linear_1` and `linear_2`).
#[derive(Clone, Debug)]
pub struct TimeEmbedding {
    linear_1: ops::Linear,
    linear_2: ops::Linear,
    sinusoidal_dim: usize,
    max_period: f64,
}

impl TimeEmbedding {
    /// Builds the MLP mapping `sinusoidal_dim` sinusoidal features to `out_dim` (max period 10000).
    pub fn new(vb: VarBuilder, sinusoidal_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: ops::Linear::new(sinusoidal_dim, out_dim, vb.pp("linear_1"))?,
            linear_2: ops::Linear::new(out_dim, out_dim, vb.pp("linear_2"))?,
            sinusoidal_dim,
            max_period: 10_000.0,
        })
    }

    /// Embeds a `[B]` tensor of timesteps as `[B, out_dim]`.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let emb = timestep_embedding(t, self.sinusoidal_dim, self.max_period)?;
        let emb = emb.to_dtype(self.linear_1.weight().dtype())?;
        self.linear_2.forward(&self.linear_1.forward(&emb)?.silu()?)
    }
}

/// A learned embedding per class, plus one extra row (id `num_classes`) for the null class used
/// by classifier-free guidance.
#[derive(Clone, Debug)]
pub struct ClassEmbedding {
    embedding: Embedding,
    num_classes: usize,
}

impl ClassEmbedding {
    /// Builds a `(num_classes + 1) x dim` table (parameter `weight`).
    pub fn new(vb: VarBuilder, num_classes: usize, dim: usize) -> Result<Self> {
        Ok(Self { embedding: candle_nn::embedding(num_classes + 1, dim, vb)?, num_classes })
    }

    /// The id of the null class (equal to the number of real classes).
    pub fn null_class(&self) -> u32 {
        self.num_classes as u32
    }

    /// Embeds `[B]` u32 class ids as `[B, dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.embedding.forward(ids)
    }
}

/// Inverted dropout with a mask drawn from a seeded generator: each element is zeroed with
/// probability `p` and the survivors are scaled by `1 / (1 - p)`. Unlike
/// `candle_nn::ops::dropout` (whose generator cannot be seeded), the same `rng` state gives the
/// same mask, so training runs are reproducible. `p = 0` returns `x` unchanged.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mask = Tensor::from_vec(dropout_mask(x.elem_count(), p, rng)?, x.shape(), x.device())?;
    x.mul(&mask.to_dtype(x.dtype())?)
}

/// The multipliers of [`dropout`] for `n` elements: 0 with probability `p`, else `1 / (1 - p)`,
/// one uniform draw from `rng` per element; `p` outside [0, 1) is an error. The transformer
/// draws its attention dropout ([`attention::self_attention`]) with it too.
pub(crate) fn dropout_mask(n: usize, p: f64, rng: &mut Rng) -> Result<Vec<f32>> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability must be in [0, 1), got {p}");
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    Ok((0..n).map(|_| if rng.uniform() < p { 0.0 } else { scale }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use candle_core::Device;

    #[test]
    fn timestep_embedding_matches_formula() -> Result<()> {
        let dev = Device::Cpu;
        let ts = [0.0f32, 1.0, 37.5, 999.0];
        let t = Tensor::new(&ts, &dev)?;
        let dim = 8;
        let emb = timestep_embedding(&t, dim, 10_000.0)?;
        assert_eq!(emb.dims(), &[4, dim]);
        let rows = emb.to_vec2::<f32>()?;
        for (row, &tv) in rows.iter().zip(ts.iter()) {
            for i in 0..dim / 2 {
                let f = (-(10_000f64.ln()) * i as f64 / (dim / 2) as f64).exp();
                let a = tv as f64 * f;
                assert!((row[i] as f64 - a.cos()).abs() < 1e-4, "cos t={tv} i={i}");
                assert!((row[dim / 2 + i] as f64 - a.sin()).abs() < 1e-4, "sin t={tv} i={i}");
            }
        }
        // t = 0: cos part is 1, sin part is 0.
        assert_eq!(rows[0], vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn odd_dim_is_zero_padded() -> Result<()> {
        let t = Tensor::new(&[3.0f32, 5.0], &Device::Cpu)?;
        let emb = timestep_embedding(&t, 7, 10_000.0)?;
        assert_eq!(emb.dims(), &[2, 7]);
        let rows = emb.to_vec2::<f32>()?;
        let even = timestep_embedding(&t, 6, 10_000.0)?.to_vec2::<f32>()?;
        for (row, even_row) in rows.iter().zip(even.iter()) {
            assert_eq!(&row[..6], &even_row[..]);
            assert_eq!(row[6], 0.0);
        }
        Ok(())
    }

    #[test]
    fn time_and_class_embedding_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let params = Params::new(0);
        let vb = params.var_builder(DType::F32, &dev);
        let te = TimeEmbedding::new(vb.pp("time"), 32, 64)?;
        let t = Tensor::new(&[0.0f32, 10.5, 999.0], &dev)?;
        assert_eq!(te.forward(&t)?.dims(), &[3, 64]);
        let ce = ClassEmbedding::new(vb.pp("class"), 4, 64)?;
        assert_eq!(ce.null_class(), 4);
        let ids = Tensor::new(&[0u32, 3, 4], &dev)?;
        assert_eq!(ce.forward(&ids)?.dims(), &[3, 64]);
        let names: Vec<String> = params.vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"time.linear_1.weight".to_string()));
        assert!(names.contains(&"class.weight".to_string()));
        Ok(())
    }

    #[test]
    fn seeded_dropout_is_reproducible_and_unbiased() -> Result<()> {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu)?;
        let a = dropout(&x, 0.3, &mut Rng::new(5))?;
        let b = dropout(&x, 0.3, &mut Rng::new(5))?;
        assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
        let vals = a.flatten_all()?.to_vec1::<f32>()?;
        let zeros = vals.iter().filter(|v| **v == 0.0).count() as f64 / vals.len() as f64;
        assert!((zeros - 0.3).abs() < 0.02, "dropped fraction {zeros}");
        let mean = vals.iter().map(|v| *v as f64).sum::<f64>() / vals.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        assert_eq!(dropout(&x, 0.0, &mut Rng::new(5))?.sum_all()?.to_scalar::<f32>()?, 10_000.0);
        assert!(dropout(&x, 1.0, &mut Rng::new(5)).is_err());
        Ok(())
    }
}
