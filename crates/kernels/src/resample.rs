//! Resampling and joining of feature maps as CPU kernels with hand-written backward passes:
//!
//! - [`upsample_nearest`]: x2 nearest-neighbour upsampling of the spatial axes. candle's
//!   `upsample_nearest2d` overwrites instead of accumulating in its backward pass, and the
//!   broadcast-based alternative leaves the gradient to candle's slow strided reduction. Its
//!   gradient here is the 2x2 (or 2) block sum.
//! - [`cat_channels`]: a UNet's skip concatenation on all threads (candle's copies run on the
//!   calling thread here, while the worker threads wait); its gradient is split into two
//!   contiguous parts in one pass.
//!
//! Off the CPU (or for dtypes other than f32/f64) they fall back to candle ops with the same
//! result.

use crate::machinery::{contiguous, dispatch, output_vec, unpack, Float};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Nearest x2 upsampling of `[N, H, W]` planes to `[N, H * sh, W * 2]` (`sh` is 1 or 2).
#[derive(Clone, Copy, Debug)]
struct Upsample {
    sh: usize,
}

/// The adjoint of [`Upsample`]: sums each `sh x 2` block of `[N, H * sh, W * 2]`.
#[derive(Clone, Copy, Debug)]
struct BlockSum {
    sh: usize,
}

/// `(planes, h, w)` of the input of an upsample: the last one or two axes are spatial.
fn planes(shape: &Shape, sh: usize) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    let spatial = if sh == 2 { 2 } else { 1 };
    if dims.len() < 2 + spatial {
        bail!("upsample: expected [B, C, ...] with {spatial} spatial axes, got {dims:?}");
    }
    let (h, w) = if sh == 2 {
        (dims[dims.len() - 2], dims[dims.len() - 1])
    } else {
        (1, dims[dims.len() - 1])
    };
    Ok((shape.elem_count() / (h * w).max(1), h, w))
}

impl Upsample {
    fn run<T: Float>(&self, x: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let x = contiguous(x, layout, "upsample")?;
        let (n, h, w) = planes(layout.shape(), self.sh)?;
        let (oh, ow) = (h * self.sh, w * 2);
        let mut out = output_vec(n * oh * ow);
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .for_each(|(dst, src)| {
                    for (i, row) in src.chunks(w).enumerate() {
                        for r in 0..self.sh {
                            let d = &mut dst[(i * self.sh + r) * ow..][..ow];
                            for (pair, &v) in d.chunks_mut(2).zip(row) {
                                pair[0] = v;
                                pair[1] = v;
                            }
                        }
                    }
                });
        }
        let mut dims = layout.shape().dims().to_vec();
        let rank = dims.len();
        dims[rank - 1] = ow;
        if self.sh == 2 {
            dims[rank - 2] = oh;
        }
        Ok((out, Shape::from(dims)))
    }
}

impl BlockSum {
    fn run<T: Float>(&self, g: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let g = contiguous(g, layout, "upsample backward")?;
        let (n, oh, ow) = planes(layout.shape(), self.sh)?;
        if oh % self.sh != 0 || ow % 2 != 0 {
            bail!(
                "upsample backward: gradient {:?} is not a x2 upsampled shape",
                layout.shape().dims()
            );
        }
        let (h, w) = (oh / self.sh, ow / 2);
        let mut out = vec![T::default(); n * h * w];
        if !out.is_empty() {
            out.par_chunks_mut(h * w)
                .zip(g.par_chunks(oh * ow))
                .for_each(|(dst, src)| {
                    for (i, row) in dst.chunks_mut(w).enumerate() {
                        for r in 0..self.sh {
                            let s = &src[(i * self.sh + r) * ow..][..ow];
                            for (d, pair) in row.iter_mut().zip(s.chunks(2)) {
                                *d += pair[0];
                                *d += pair[1];
                            }
                        }
                    }
                });
        }
        let mut dims = layout.shape().dims().to_vec();
        let rank = dims.len();
        dims[rank - 1] = w;
        if self.sh == 2 {
            dims[rank - 2] = h;
        }
        Ok((out, Shape::from(dims)))
    }
}

impl CustomOp1 for Upsample {
    fn name(&self) -> &'static str {
        "upsample-nearest-x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("upsample");
        dispatch!("upsample", (s => v), self.run(v, l))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?.apply_op1(BlockSum { sh: self.sh })?,
        ))
    }
}

impl CustomOp1 for BlockSum {
    fn name(&self) -> &'static str {
        "upsample-nearest-x2-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("upsample");
        dispatch!("upsample backward", (s => v), self.run(v, l))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?.apply_op1(Upsample { sh: self.sh })?,
        ))
    }
}

/// Nearest-neighbour x2 upsampling of the last `spatial` axes (1 for `[B, C, L]`, 2 for
/// `[B, C, H, W]`), differentiable.
pub fn upsample_nearest(x: &Tensor, spatial: usize) -> Result<Tensor> {
    if !(1..=2).contains(&spatial) {
        bail!("upsample: 1 or 2 spatial axes, got {spatial}");
    }
    if crate::switches::use_fused(x) {
        return x.contiguous()?.apply_op1(Upsample { sh: spatial });
    }
    // Broadcasting has a correct backward pass everywhere.
    let dims = x.dims().to_vec();
    let rank = dims.len();
    if rank < 2 + spatial {
        bail!("upsample: expected [B, C, ...] with {spatial} spatial axes, got {dims:?}");
    }
    let mut expanded: Vec<usize> = dims[..rank - spatial].to_vec();
    let mut target = expanded.clone();
    let mut out = expanded.clone();
    for &d in &dims[rank - spatial..] {
        expanded.extend([d, 1]);
        target.extend([d, 2]);
        out.push(2 * d);
    }
    x.reshape(expanded)?.broadcast_as(target)?.reshape(out)
}

/// Concatenation of `[B, C1, ...]` and `[B, C2, ...]` along axis 1 (a UNet's skip connection),
/// one batch item per parallel task.
#[derive(Clone, Copy, Debug)]
struct CatChannels;

/// The adjoint of [`CatChannels`]: splits `[B, C1 + C2, ...]` into the two parts, packed as
/// `[B * C1 * rest, B * C2 * rest]`.
#[derive(Clone, Copy, Debug)]
struct SplitChannels {
    first: usize,
}

/// `(batch, channels, rest)` of a tensor of rank 2 or more.
fn batch_channels_rest(shape: &Shape, op: &str) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if dims.len() < 2 {
        bail!("{op}: expected [B, C, ...], got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

impl CustomOp2 for CatChannels {
    fn name(&self) -> &'static str {
        "cat-channels"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("concat");
        let ((n, c1, rest), (nb, c2, _)) = (
            batch_channels_rest(al.shape(), "cat")?,
            batch_channels_rest(bl.shape(), "cat")?,
        );
        if (n, &al.shape().dims()[2..]) != (nb, &bl.shape().dims()[2..]) {
            bail!(
                "cat: {:?} and {:?} differ outside axis 1",
                al.shape(),
                bl.shape()
            );
        }
        let mut dims = al.shape().dims().to_vec();
        dims[1] = c1 + c2;
        dispatch!("cat", (a => a, b => b), {
            let (a, b) = (contiguous(a, al, "cat")?, contiguous(b, bl, "cat")?);
            let (la, lb) = (c1 * rest, c2 * rest);
            let mut out = output_vec(n * (la + lb));
            if la + lb > 0 {
                out.par_chunks_mut(la + lb).enumerate().for_each(|(i, o)| {
                    o[..la].copy_from_slice(&a[i * la..][..la]);
                    o[la..].copy_from_slice(&b[i * lb..][..lb]);
                });
            }
            Ok::<_, candle_core::Error>((out, Shape::from(dims.clone())))
        })
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = grad
            .contiguous()?
            .apply_op1_no_bwd(&SplitChannels { first: a.dim(1)? })?;
        let mut grads = unpack(&packed, &[a, b])?.into_iter();
        Ok((grads.next(), grads.next()))
    }
}

impl CustomOp1 for SplitChannels {
    fn name(&self) -> &'static str {
        "cat-channels-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("concat");
        let (n, c, rest) = batch_channels_rest(gl.shape(), "cat backward")?;
        if self.first > c {
            bail!(
                "cat backward: {} channels for the first part of {c}",
                self.first
            );
        }
        let (la, lb) = (self.first * rest, (c - self.first) * rest);
        dispatch!("cat backward", (g => g), {
            let g = contiguous(g, gl, "cat backward")?;
            let mut out = output_vec(n * (la + lb));
            let (da, db) = out.split_at_mut(n * la);
            if la > 0 && lb > 0 {
                da.par_chunks_mut(la).zip(db.par_chunks_mut(lb)).zip(g.par_chunks(la + lb)).for_each(|((da, db), g)| {
                    da.copy_from_slice(&g[..la]);
                    db.copy_from_slice(&g[la..]);
                });
            } else {
                // One part is empty: the other is the whole gradient.
                da.copy_from_slice(&g[..da.len()]);
                db.copy_from_slice(&g[..db.len()]);
            }
            Ok::<_, candle_core::Error>((out, Shape::from(n * (la + lb))))
        })
    }
}

/// Concatenation of `a: [B, C1, ...]` and `b: [B, C2, ...]` along the channel axis,
/// differentiable: on the CPU in f32/f64 both ways (copy and split) run on all threads;
/// otherwise it is candle's `Tensor::cat`.
pub fn cat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::switches::use_fused(a)
        && a.rank() >= 2
        && a.dtype() == b.dtype()
        && a.device().same_device(b.device())
    {
        return a.contiguous()?.apply_op2(&b.contiguous()?, CatChannels);
    }
    Tensor::cat(&[a, b], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::add;
    use crate::testing::{
        assert_gradient_matches_differences, assert_matches_reference, randn, values, TestRng,
    };
    use candle_core::{DType, Device, Var};

    /// x2 nearest upsampling of the last `spatial` axes by broadcasting, for reference.
    fn broadcast_upsample(x: &Tensor, spatial: usize) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let rank = dims.len();
        let (mut e, mut t, mut o) = (
            dims[..rank - spatial].to_vec(),
            dims[..rank - spatial].to_vec(),
            dims[..rank - spatial].to_vec(),
        );
        for &d in &dims[rank - spatial..] {
            e.extend([d, 1]);
            t.extend([d, 2]);
            o.push(2 * d);
        }
        x.reshape(e)?.broadcast_as(t)?.reshape(o)
    }

    #[test]
    fn forward_and_gradients_match_candle_composites() -> Result<()> {
        let (up1, up2) = (
            |x: &Tensor| upsample_nearest(x, 1),
            |x: &Tensor| upsample_nearest(x, 2),
        );
        assert_matches_reference(
            "up1",
            &[2, 3, 5],
            2,
            &up1,
            &|x| broadcast_upsample(x, 1),
            None,
        )?;
        assert_matches_reference(
            "up2",
            &[2, 3, 4, 5],
            3,
            &up2,
            &|x| broadcast_upsample(x, 2),
            None,
        )
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        assert_gradient_matches_differences("up1", &[1, 2, 3], 11, &|x| upsample_nearest(x, 1))?;
        assert_gradient_matches_differences("up2", &[1, 2, 2, 3], 12, &|x| upsample_nearest(x, 2))
    }

    #[test]
    fn add_and_cat_channels_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let mut rng = TestRng::new(11);
            let a = Var::from_tensor(&randn(&mut rng, &[3, 2, 5], dtype, &dev)?)?;
            let b = Var::from_tensor(&randn(&mut rng, &[3, 4, 5], dtype, &dev)?)?;
            // A strided operand: [3, 5, 4] transposed to [3, 4, 5].
            let c = Var::from_tensor(&randn(&mut rng, &[3, 5, 4], dtype, &dev)?)?;
            let ct = c.transpose(1, 2)?;
            let fused = |a: &Tensor, b: &Tensor, ct: &Tensor| -> Result<Tensor> {
                cat_channels(a, &add(b, ct)?)
            };
            let plain = |a: &Tensor, b: &Tensor, ct: &Tensor| -> Result<Tensor> {
                Tensor::cat(&[a, &b.add(ct)?], 1)
            };
            let (y, want) = (fused(&a, &b, &ct)?, plain(&a, &b, &ct)?);
            assert_eq!(y.dims(), &[3, 6, 5]);
            assert_eq!(values(&y)?, values(&want)?, "{dtype:?} forward");
            let r = randn(&mut rng, y.dims(), dtype, &dev)?;
            // `a` is used twice: in the concatenation and, through b + a's channels, in a sum.
            let twice =
                |y: &Tensor| -> Result<Tensor> { y.mul(&r)?.sum_all()?.add(&a.sqr()?.sum_all()?) };
            let (g, g_ref) = (twice(&y)?.backward()?, twice(&want)?.backward()?);
            for v in [&a, &b, &c] {
                assert_eq!(
                    values(g.get(v).unwrap())?,
                    values(g_ref.get(v).unwrap())?,
                    "{dtype:?} gradient"
                );
            }
        }
        assert!(add(
            &Tensor::zeros((2, 3), DType::F32, &dev)?,
            &Tensor::zeros((3, 2), DType::F32, &dev)?
        )
        .is_err());
        assert!(cat_channels(
            &Tensor::zeros((2, 3, 4), DType::F32, &dev)?,
            &Tensor::zeros((2, 3, 5), DType::F32, &dev)?
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(upsample_nearest(&x, 2).is_err());
        assert!(upsample_nearest(&x, 3).is_err());
    }
}
