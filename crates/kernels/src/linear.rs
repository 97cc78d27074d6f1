//! A linear layer as one CPU custom op with a hand-written backward pass. candle_nn's
//! `Linear` broadcasts the weight over the leading axes, and its gradient is again a
//! leading-axis sum (slow in candle 0.11.1); here [`Linear`] is one op over any leading axes:
//! the bias written into the output before one gemm adds `x W^T`, and one backward op for the
//! input, weight and bias gradients. As one node of the autograd graph instead of five
//! (reshape, transpose, matmul, bias, reshape) it also spares candle's backward pass a
//! zero-filled gradient buffer and an add per node. With bfloat16 compute on
//! ([`crate::set_bf16_compute`]) the forward product and the input gradient run in bfloat16.
//!
//! Off the CPU (or for dtypes other than f32/f64, or without a bias) it is candle's matmul
//! followed by [`add_bias`].

use crate::elementwise::{add_bias, channel_sums};
use crate::machinery::{
    contiguous, dispatch, matmul_parallel, output_vec, rows_per_task, unpack, Float, Mat,
};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `y = x W^T + b` over the last axis of `x` as one op: `(x [.., in], W [out, in], b [out])` to
/// `[.., out]`, the bias written first and the product added by one gemm.
#[derive(Clone, Copy, Debug)]
struct LinearOp {
    /// Whether the products run in bfloat16 ([`crate::set_bf16_compute`]).
    bf16: bool,
}

/// `dst (+)= a b` on all threads: in bfloat16 with `bf16` (for f32 data), else by gemm.
fn product<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool, bf16: bool) {
    if bf16 {
        if let (Some(a32), Some(b32)) = (a.as_f32(), b.as_f32()) {
            if let Some(d32) = T::as_f32_mut(dst) {
                return crate::bf16::matmul(d32, a32, b32, accumulate);
            }
        }
    }
    matmul_parallel(dst, a, b, accumulate)
}

/// `(rows, in, out)` of a linear layer's input, weight and bias shapes.
fn linear_dims(x: &Shape, w: &Shape, b: &Shape) -> Result<(usize, usize, usize)> {
    let (out, inp) = w.dims2()?;
    let last = x.dims().last().copied().unwrap_or(0);
    if x.rank() == 0 || last != inp || b.dims() != [out] {
        bail!(
            "linear: input {:?}, weight {:?} and bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    Ok((x.elem_count() / inp.max(1), inp, out))
}

impl LinearOp {
    fn run<T: Float>(
        &self,
        x: (&[T], &Layout),
        w: (&[T], &Layout),
        b: (&[T], &Layout),
    ) -> Result<(Vec<T>, Shape)> {
        let (rows, inp, out) = linear_dims(x.1.shape(), w.1.shape(), b.1.shape())?;
        let (xs, ws, bs) = (
            contiguous(x.0, x.1, "linear")?,
            contiguous(w.0, w.1, "linear")?,
            contiguous(b.0, b.1, "linear")?,
        );
        let mut y = output_vec(rows * out);
        if out > 0 {
            y.par_chunks_mut(out * rows_per_task(out))
                .for_each(|chunk| {
                    chunk
                        .chunks_mut(out)
                        .for_each(|row| row.copy_from_slice(bs));
                });
        }
        product(
            &mut y,
            Mat::new(xs, rows, inp),
            Mat::new(ws, out, inp).t(),
            true,
            self.bf16,
        );
        let mut shape = x.1.shape().dims().to_vec();
        *shape.last_mut().expect("rank checked") = out;
        Ok((y, Shape::from(shape)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("linear (forward)");
        dispatch!("linear", (x => x, w => w, b => b), self.run((x, xl), (w, wl), (b, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed =
            grad.contiguous()?
                .apply_op3_no_bwd(x, w, &LinearBackward { bf16: self.bf16 })?;
        let mut grads = unpack(&packed, &[x, w, b])?.into_iter();
        Ok((grads.next(), grads.next(), grads.next()))
    }
}

/// The gradients of [`LinearOp`] from `(dy, x, W)`, packed as `[dx, dW, db]`: `dx = dy W`,
/// `dW = dy^T x`, `db` the column sums of `dy`.
#[derive(Clone, Copy, Debug)]
struct LinearBackward {
    bf16: bool,
}

impl LinearBackward {
    fn run<T: Float>(
        &self,
        g: (&[T], &Layout),
        x: (&[T], &Layout),
        w: (&[T], &Layout),
    ) -> Result<(Vec<T>, Shape)> {
        let (out, inp) = w.1.shape().dims2()?;
        let (gs, xs, ws) = (
            contiguous(g.0, g.1, "linear backward")?,
            contiguous(x.0, x.1, "linear backward")?,
            contiguous(w.0, w.1, "linear backward")?,
        );
        let rows = xs.len() / inp.max(1);
        if gs.len() != rows * out || xs.len() != rows * inp {
            bail!(
                "linear backward: gradient {:?} does not fit input {:?} and weight [{out}, {inp}]",
                g.1.shape().dims(),
                x.1.shape().dims()
            );
        }
        let mut packed = output_vec(rows * inp + out * inp + out);
        let (dx, rest) = packed.split_at_mut(rows * inp);
        let (dw, db) = rest.split_at_mut(out * inp);
        product(
            dx,
            Mat::new(gs, rows, out),
            Mat::new(ws, out, inp),
            false,
            self.bf16,
        );
        // The weight gradient stays float32: in bfloat16 its operands (every row of the batch)
        // must be converted and transposed whole, which measured no faster than gemm's own
        // blocked packing (576 x 8192 x 192: 12.4 vs 11.3 ms).
        product(
            dw,
            Mat::new(gs, rows, out).t(),
            Mat::new(xs, rows, inp),
            false,
            false,
        );
        db.copy_from_slice(&channel_sums(gs, rows, out, 1));
        let n = packed.len();
        Ok((packed, Shape::from(n)))
    }
}

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "linear-backward"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("linear (backward)");
        dispatch!("linear backward", (g => g, x => x, w => w), self.run((g, gl), (x, xl), (w, wl)))
    }
}

/// A linear layer `y = x W^T + b` over the last axis of `x` (any rank >= 1); parameters
/// `weight` (`[out, in]`) and `bias` (`[out]`), initialised as candle_nn's `linear`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from `in_dim` to `out_dim` features with a bias (arguments as candle_nn's `linear`).
    pub fn new(in_dim: usize, out_dim: usize, vb: candle_nn::VarBuilder) -> Result<Self> {
        let l = candle_nn::linear(in_dim, out_dim, vb)?;
        Ok(Self {
            weight: l.weight().clone(),
            bias: l.bias().cloned(),
        })
    }

    /// A layer without a bias.
    pub fn no_bias(in_dim: usize, out_dim: usize, vb: candle_nn::VarBuilder) -> Result<Self> {
        let l = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
        Ok(Self {
            weight: l.weight().clone(),
            bias: None,
        })
    }

    /// A layer from existing tensors: `weight` `[out, in]` and an optional `bias` `[out]`.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The `[out, in]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `[out]` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl candle_nn::Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&last, lead)) = dims.split_last() else {
            bail!("linear: scalar input")
        };
        let (out, inp) = self.weight.dims2()?;
        if last != inp {
            bail!("linear: input {dims:?} does not end in the layer's {inp} features");
        }
        if let (Some(b), true) = (&self.bias, crate::switches::use_fused(x)) {
            if b.dtype() == x.dtype() && self.weight.dtype() == x.dtype() {
                return x.contiguous()?.apply_op3(
                    &self.weight.contiguous()?,
                    &b.contiguous()?,
                    LinearOp {
                        bf16: crate::bf16_compute(),
                    },
                );
            }
        }
        let rows: usize = lead.iter().product();
        let y = {
            let _t = crate::profile::scope("linear matmul (forward)");
            x.reshape((rows, inp))?.matmul(&self.weight.t()?)?
        };
        let y = match &self.bias {
            Some(b) => add_bias(&y, b, 1)?,
            None => y,
        };
        let mut shape = lead.to_vec();
        shape.push(out);
        y.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_diff, randn, values, TestRng};
    use candle_core::{DType, Device, Var};
    use candle_nn::{Module, VarBuilder, VarMap};

    #[test]
    fn linear_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        // Linear (the fused op) over [2, 3, 4], [70, 4] and [1, 4] -> 5 against candle_nn's
        let mut varmap = VarMap::new();
        let ours = Linear::new(
            4,
            5,
            VarBuilder::from_varmap(&varmap, DType::F64, &dev).pp("l"),
        )?;
        // Seeded values in place of candle's (unseeded) initialisation.
        let mut rng = TestRng::new(3);
        varmap.set_one("l.weight", randn(&mut rng, &[5, 4], DType::F64, &dev)?)?;
        varmap.set_one("l.bias", randn(&mut rng, &[5], DType::F64, &dev)?)?;
        let theirs = candle_nn::Linear::new(ours.weight.clone(), ours.bias.clone());
        for shape in [&[2, 3, 4][..], &[70, 4], &[1, 4]] {
            let x = Var::from_tensor(&randn(&mut TestRng::new(9), shape, DType::F64, &dev)?)?;
            let (y1, y2) = (ours.forward(x.as_tensor())?, theirs.forward(x.as_tensor())?);
            assert_eq!(y1.dims(), y2.dims());
            assert!(max_diff(&values(&y1)?, &values(&y2)?) < 1e-13);
            let (g1, g2) = (
                y1.sqr()?.sum_all()?.backward()?,
                y2.sqr()?.sum_all()?.backward()?,
            );
            for t in [x.as_tensor(), &ours.weight, ours.bias.as_ref().unwrap()] {
                assert!(
                    max_diff(&values(g1.get(t).unwrap())?, &values(g2.get(t).unwrap())?) < 1e-12,
                    "{shape:?}"
                );
            }
        }
        Ok(())
    }
}
