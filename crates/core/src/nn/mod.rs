//! Network blocks shared by the domains' denoisers: sinusoidal timestep embeddings, the
//! time-embedding MLP, condition embeddings with a learned null, per-row seeded dropout, a UNet
//! generic over 1-D and 2-D data ([`unet`]), and a BERT-style transformer over sequences of
//! feature vectors in the manner of FoldingDiff ([`transformer`]). Their layers run on the
//! CPU kernels of [`sugarcube_kernels`], re-exported here ([`conv`], [`norm`], [`attention`],
//! [`ops`], the kernel switches).

use crate::rng::Rows;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Module, VarBuilder};

pub mod classifier;
pub mod eval_classifier;
pub mod transformer;
pub mod unet;

// The kernels and the layers around them live in sugarcube-kernels; re-exported here under the
// paths the networks and the domain crates use.
pub(crate) use sugarcube_kernels::output_vec;
#[cfg(test)]
pub(crate) use sugarcube_kernels::testing as test_util;
pub use sugarcube_kernels::{attention, conv, elementwise, linear, norm, relative, resample};
pub use sugarcube_kernels::{
    bf16_compute, bf16_supported, flush_denormals, set_bf16_compute, set_fused_kernels, Bf16Compute,
};

/// The small ops under their earlier common path (`nn::ops`): element-wise ones, resampling,
/// the relative-position term and the linear layer, from [`sugarcube_kernels`].
pub mod ops {
    pub use sugarcube_kernels::elementwise::{add, add_bias, gelu_erf, softmax_last};
    pub use sugarcube_kernels::linear::Linear;
    pub use sugarcube_kernels::relative::add_relative_scores;
    pub use sugarcube_kernels::resample::{cat_channels, upsample_nearest};
}

pub use transformer::{
    DecoderHead, PositionEmbedding, SequenceTransformer, TimeEncoding, TransformerConfig,
};
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
    let args = t
        .to_dtype(DType::F32)?
        .reshape((b, 1))?
        .broadcast_mul(&freqs)?;
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

/// Embeds a batch of conditions ([`crate::cond::CondBatch`]): one learned table per field of
/// the spec, `[width, dim]` (parameter `{field}.weight`), and the embedding is the sum over
/// fields of `encoding @ table`. A categorical field's row is its class's (or the null's) row
/// of the table, exactly an embedding lookup; a multi-label field sums the rows of its labels
/// (the null row alone for the null); a scalar field is `value * row_0` (the null: `row_1`).
/// Tables start as standard normal draws (as `candle_nn::embedding`).
#[derive(Clone, Debug)]
pub struct CondEmbedding {
    tables: Vec<Tensor>,
    dim: usize,
}

impl CondEmbedding {
    /// Builds the tables of every field of `spec`, each `[width, dim]`, under `vb.pp(name)`.
    pub fn new(vb: VarBuilder, spec: &crate::cond::CondSpec, dim: usize) -> Result<Self> {
        let tables = spec
            .fields
            .iter()
            .map(|f| {
                vb.pp(&f.name).get_with_hints(
                    (f.width(), dim),
                    "weight",
                    candle_nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { tables, dim })
    }

    /// Embeds `[B]` conditions as `[B, dim]`; None (or an empty spec) embeds the null
    /// condition of every row (zero without fields).
    pub fn forward(
        &self,
        cond: Option<&crate::cond::CondBatch>,
        batch: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let dtype = self.tables.first().map_or(DType::F32, |t| t.dtype());
        let mut out = Tensor::zeros((batch, self.dim), dtype, device)?;
        for (i, table) in self.tables.iter().enumerate() {
            let w = table.dim(0)?;
            let enc = match cond {
                Some(c) => c.fields.get(i).cloned().ok_or_else(|| {
                    candle_core::Error::Msg(format!("condition batch has no field {i}"))
                })?,
                None => {
                    // the null: the last column
                    let mut v = vec![0f32; batch * w];
                    for r in 0..batch {
                        v[r * w + w - 1] = 1.0;
                    }
                    Tensor::from_vec(v, (batch, w), device)?
                }
            };
            if enc.dims() != [batch, w] {
                candle_core::bail!(
                    "condition field {i} is encoded as {:?}, expected [{batch}, {w}]",
                    enc.dims()
                );
            }
            out = out.add(&enc.to_dtype(dtype)?.matmul(table)?)?;
        }
        Ok(out)
    }

    /// Whether there is any field to embed.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// Inverted dropout with masks drawn per row: each element is zeroed with probability `p` and
/// the survivors are scaled by `1 / (1 - p)`, row `i` of `x` (`[B, ...]`) drawing its mask from
/// stream `i` of `rows` (one uniform per element). Unlike `candle_nn::ops::dropout` (whose
/// generator cannot be seeded), the same streams give the same masks, whatever the batch a
/// row sits in. `p = 0` returns `x` unchanged.
pub fn dropout(x: &Tensor, p: f64, rows: &mut Rows) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mask = Tensor::from_vec(rows.dropout_mask(x.dims(), p)?, x.shape(), x.device())?;
    x.mul(&mask.to_dtype(x.dtype())?)
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
                assert!(
                    (row[dim / 2 + i] as f64 - a.sin()).abs() < 1e-4,
                    "sin t={tv} i={i}"
                );
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
        let spec = crate::cond::CondSpec::classes("class", (0..4).map(|i| i.to_string()).collect());
        let ce = CondEmbedding::new(vb.pp("cond"), &spec, 64)?;
        let conds: Vec<_> = [0u32, 3]
            .iter()
            .map(|&c| crate::cond::Condition(vec![crate::cond::Value::Class(c)]))
            .chain([spec.null()])
            .collect();
        let emb = ce.forward(Some(&spec.encode(&conds, &dev)?), 3, &dev)?;
        assert_eq!(emb.dims(), &[3, 64]);
        // a class's embedding is its row of the table; None is the null row
        let table = params
            .vars()
            .into_iter()
            .find(|(n, _)| n == "cond.class.weight")
            .unwrap()
            .1;
        assert_eq!(
            emb.get(1)?.to_vec1::<f32>()?,
            table.as_tensor().get(3)?.to_vec1::<f32>()?
        );
        assert_eq!(
            ce.forward(None, 1, &dev)?.get(0)?.to_vec1::<f32>()?,
            table.as_tensor().get(4)?.to_vec1::<f32>()?
        );
        let names: Vec<String> = params.vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"time.linear_1.weight".to_string()));
        Ok(())
    }

    #[test]
    fn seeded_dropout_is_reproducible_and_unbiased() -> Result<()> {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu)?;
        let a = dropout(&x, 0.3, &mut Rows::new(5, 0, 100))?;
        let b = dropout(&x, 0.3, &mut Rows::new(5, 0, 100))?;
        // row 40's mask does not depend on the rows before it
        let tail = dropout(&x.narrow(0, 40, 60)?, 0.3, &mut Rows::new(5, 40, 60))?;
        assert_eq!(
            tail.to_vec2::<f32>()?,
            a.narrow(0, 40, 60)?.to_vec2::<f32>()?
        );
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );
        let vals = a.flatten_all()?.to_vec1::<f32>()?;
        let zeros = vals.iter().filter(|v| **v == 0.0).count() as f64 / vals.len() as f64;
        assert!((zeros - 0.3).abs() < 0.02, "dropped fraction {zeros}");
        let mean = vals.iter().map(|v| *v as f64).sum::<f64>() / vals.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        assert_eq!(
            dropout(&x, 0.0, &mut Rows::new(5, 0, 100))?
                .sum_all()?
                .to_scalar::<f32>()?,
            10_000.0
        );
        assert!(dropout(&x, 1.0, &mut Rows::new(5, 0, 100)).is_err());
        Ok(())
    }
}
