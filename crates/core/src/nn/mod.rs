//! Network blocks shared by the domains' denoisers: sinusoidal timestep embeddings, the
//! time-embedding MLP, class embeddings with a learned null class, seeded dropout, a UNet
//! generic over 1-D and 2-D data ([`unet`]), and a BERT-style transformer over sequences of
//! feature vectors in the manner of FoldingDiff ([`transformer`]).

use crate::rng::Rng;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Module, VarBuilder};

pub mod attention;
mod bf16;
pub mod conv;
mod direct;
mod kernel;
pub(crate) use kernel::output_vec;
pub mod norm;
pub mod ops;
#[cfg(test)]
pub(crate) mod test_util;
pub mod transformer;
pub mod unet;

/// Whether the fused CPU kernels ([`attention`], [`conv`], [`norm`], [`ops`]) are used; on by
/// default.
static FUSED_KERNELS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns sugarcube's fused CPU kernels on or off, process-wide. Off, every layer runs as a
/// composition of candle's own ops (much slower): for checking the kernels against candle, as
/// the `fused_kernels` test does for whole training runs.
pub fn set_fused_kernels(on: bool) {
    FUSED_KERNELS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether products run in bfloat16 where the CPU allows; off by default.
static BF16_COMPUTE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns bfloat16 compute on or off, process-wide: the direct convolution kernels (stride-1
/// convolutions' forward, input and weight gradients) and linear layers' forward and input
/// gradient then round both operands to bfloat16 and sum the products in float32
/// (`vdpbf16ps`), as PyTorch's CPU autocast does; weights, activations, gradients, norms,
/// attention and the optimiser stay float32 (the weights are their own float32 master copy).
/// Takes effect for ops built afterwards. Returns an error on a CPU without AVX-512 BF16
/// ([`bf16_supported`]).
pub fn set_bf16_compute(on: bool) -> Result<()> {
    if on && !bf16_supported() {
        candle_core::bail!("bfloat16 compute needs a CPU with AVX-512 BF16 (avx512_bf16 in /proc/cpuinfo); this one has none, use float32");
    }
    BF16_COMPUTE.store(on, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// bfloat16 compute switched on or off for a scope: [`set_bf16_compute`] on creation, the
/// previous setting restored on drop (a training run's `precision` does not outlive it).
pub struct Bf16Compute(bool);

impl Bf16Compute {
    /// Switches bfloat16 compute to `on` until the returned value is dropped.
    pub fn set(on: bool) -> Result<Self> {
        let previous = bf16_compute();
        set_bf16_compute(on)?;
        Ok(Bf16Compute(previous))
    }
}

impl Drop for Bf16Compute {
    fn drop(&mut self) {
        BF16_COMPUTE.store(self.0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether this CPU can compute in bfloat16 (AVX-512F and AVX-512 BF16).
pub fn bf16_supported() -> bool {
    bf16::available()
}

/// Whether bfloat16 compute is on ([`set_bf16_compute`]).
pub fn bf16_compute() -> bool {
    BF16_COMPUTE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the fused kernels apply to `x`: switched on, on the CPU, in f32 or f64.
pub(crate) fn use_fused(x: &Tensor) -> bool {
    FUSED_KERNELS.load(std::sync::atomic::Ordering::Relaxed)
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
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

pub(crate) use ops::softmax_last;

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
/// one uniform draw from `rng` per element; `p` outside [0, 1) is an error.
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
