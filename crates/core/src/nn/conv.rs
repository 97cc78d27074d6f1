//! 2-D convolution as im2col + matmul, for the CPU.
//!
//! candle 0.11.1's CPU conv2d (and its backward, which goes through conv_transpose2d and a
//! conv2d with swapped axes) is a direct convolution that spends most of its time in scalar dot
//! products. Here the input is unfolded into columns by [`im2col`] (a custom op whose backward
//! is the scatter-add [`Col2Im`]), and the convolution becomes a batched matmul against the
//! flattened kernel, so both passes run on candle's gemm and its matmul backward gives the
//! kernel and column gradients.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry shared by [`Im2Col`] and [`Col2Im`]: kernel, stride and zero padding (dilation 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
}

impl Geometry {
    /// Output height and width for an `h x w` input.
    fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if self.kh == 0 || self.kw == 0 || self.sh == 0 || self.sw == 0 {
            bail!("im2col: kernel and stride must be positive, got {self:?}");
        }
        if h + 2 * self.ph < self.kh || w + 2 * self.pw < self.kw {
            bail!("im2col: kernel {}x{} larger than padded input {h}x{w} ({self:?})", self.kh, self.kw);
        }
        Ok(((h + 2 * self.ph - self.kh) / self.sh + 1, (w + 2 * self.pw - self.kw) / self.sw + 1))
    }

    /// The output positions `o < n_out` whose input index `o * s + k - p` lies in `0..n_in`.
    fn valid(n_in: usize, n_out: usize, k: usize, s: usize, p: usize) -> std::ops::Range<usize> {
        // o * s + k >= p  <=>  o >= ceil((p - k) / s)
        let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
        // o * s + k - p <= n_in - 1  <=>  o <= (n_in - 1 + p - k) / s
        let hi = if n_in + p > k { ((n_in - 1 + p - k) / s + 1).min(n_out) } else { 0 };
        lo.min(hi)..hi
    }
}

/// Unfolds one `[h, w]` channel into `kh * kw` rows of `hout * wout` columns (`out` pre-zeroed).
fn unfold_channel<T: Copy>(g: &Geometry, x: &[T], h: usize, w: usize, out: &mut [T], ho: usize, wo: usize) {
    let l = ho * wo;
    for i in 0..g.kh {
        let rows = Geometry::valid(h, ho, i, g.sh, g.ph);
        for j in 0..g.kw {
            let cols = Geometry::valid(w, wo, j, g.sw, g.pw);
            if cols.is_empty() {
                continue;
            }
            let row = &mut out[(i * g.kw + j) * l..][..l];
            for oh in rows.clone() {
                let src = &x[(oh * g.sh + i - g.ph) * w..][..w];
                let dst = &mut row[oh * wo..][..wo];
                if g.sw == 1 {
                    let start = cols.start + j - g.pw;
                    dst[cols.clone()].copy_from_slice(&src[start..start + cols.len()]);
                } else {
                    for ow in cols.clone() {
                        dst[ow] = src[ow * g.sw + j - g.pw];
                    }
                }
            }
        }
    }
}

/// Scatter-adds `kh * kw` rows of `hout * wout` columns into one `[h, w]` channel.
fn fold_channel<T: Copy + std::ops::AddAssign>(
    g: &Geometry,
    cols_in: &[T],
    h: usize,
    w: usize,
    out: &mut [T],
    ho: usize,
    wo: usize,
) {
    let l = ho * wo;
    for i in 0..g.kh {
        let rows = Geometry::valid(h, ho, i, g.sh, g.ph);
        for j in 0..g.kw {
            let cols = Geometry::valid(w, wo, j, g.sw, g.pw);
            let row = &cols_in[(i * g.kw + j) * l..][..l];
            for oh in rows.clone() {
                let dst = &mut out[(oh * g.sh + i - g.ph) * w..][..w];
                let src = &row[oh * wo..][..wo];
                for ow in cols.clone() {
                    dst[ow * g.sw + j - g.pw] += src[ow];
                }
            }
        }
    }
}

/// The contiguous slice of a storage/layout pair, or an error.
fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// im2col: `[B, C, H, W]` to `[B, C*kh*kw, Hout*Wout]`, row `c*kh*kw + i*kw + j`.
#[derive(Clone, Copy, Debug)]
pub struct Im2Col {
    g: Geometry,
}

impl Im2Col {
    fn run<T: Copy + Default + Send + Sync>(&self, x: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let x = contiguous(x, layout, "im2col")?;
        let (ho, wo) = self.g.out_size(h, w)?;
        let per_channel = self.g.kh * self.g.kw * ho * wo;
        let mut out = vec![T::default(); b * c * per_channel];
        if per_channel > 0 && h * w > 0 {
            out.par_chunks_mut(per_channel)
                .zip(x.par_chunks(h * w))
                .for_each(|(dst, src)| unfold_channel(&self.g, src, h, w, dst, ho, wo));
        }
        Ok((out, Shape::from((b, c * self.g.kh * self.g.kw, ho * wo))))
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        match storage {
            CpuStorage::F32(x) => self.run(x, layout).map(|(v, s)| (CpuStorage::F32(v), s)),
            CpuStorage::F64(x) => self.run(x, layout).map(|(v, s)| (CpuStorage::F64(v), s)),
            other => bail!("im2col: unsupported dtype {:?}", other.dtype()),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im { g: self.g, h, w })?;
        Ok(Some(grad))
    }
}

/// col2im, the adjoint of [`Im2Col`]: scatter-adds `[B, C*kh*kw, Hout*Wout]` into `[B, C, H, W]`.
#[derive(Clone, Copy, Debug)]
pub struct Col2Im {
    g: Geometry,
    h: usize,
    w: usize,
}

impl Col2Im {
    fn run<T: Copy + Default + Send + Sync + std::ops::AddAssign>(
        &self,
        cols: &[T],
        layout: &Layout,
    ) -> Result<(Vec<T>, Shape)> {
        let (b, k, l) = layout.shape().dims3()?;
        let cols = contiguous(cols, layout, "col2im")?;
        let (h, w) = (self.h, self.w);
        let (ho, wo) = self.g.out_size(h, w)?;
        let kk = self.g.kh * self.g.kw;
        if k % kk != 0 || l != ho * wo {
            bail!("col2im: columns [{b}, {k}, {l}] do not fit {h}x{w} with {:?}", self.g);
        }
        let c = k / kk;
        let mut out = vec![T::default(); b * c * h * w];
        if h * w > 0 && kk * l > 0 {
            out.par_chunks_mut(h * w)
                .zip(cols.par_chunks(kk * l))
                .for_each(|(dst, src)| fold_channel(&self.g, src, h, w, dst, ho, wo));
        }
        Ok((out, Shape::from((b, c, h, w))))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        match storage {
            CpuStorage::F32(x) => self.run(x, layout).map(|(v, s)| (CpuStorage::F32(v), s)),
            CpuStorage::F64(x) => self.run(x, layout).map(|(v, s)| (CpuStorage::F64(v), s)),
            other => bail!("col2im: unsupported dtype {:?}", other.dtype()),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Im2Col { g: self.g })?))
    }
}

/// Unfolds `x: [B, C, H, W]` into `[B, C*kh*kw, Hout*Wout]` (zero padding, dilation 1), with
/// `Hout = (H + 2 ph - kh) / sh + 1`; differentiable (the gradient is col2im). CPU only.
pub fn im2col(x: &Tensor, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
    let g = Geometry { kh: kernel.0, kw: kernel.1, sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1 };
    x.contiguous()?.apply_op1(Im2Col { g })
}

/// Column-buffer elements per chunk of a batch (4M floats = 16 MB).
const COLS_BUDGET: usize = 4 << 20;

/// 2-D convolution (cross-correlation, as in candle and PyTorch) of `x: [B, Cin, H, W]` with
/// `weight: [Cout, Cin, kh, kw]` and an optional `bias: [Cout]`, zero padding, dilation 1,
/// one group: im2col, then a batched matmul on candle's gemm, in batch chunks whose column
/// buffer stays near 16 MB. CPU only (im2col has no CUDA kernel).
pub fn conv2d_im2col(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (cout, cin, kh, kw) = weight.dims4()?;
    if cin != c {
        bail!("conv2d_im2col: input has {c} channels, kernel expects {cin}");
    }
    let g = Geometry { kh, kw, sh: stride.0, sw: stride.1, ph: padding.0, pw: padding.1 };
    let (ho, wo) = g.out_size(h, w)?;
    // keep the column buffer near the caches' scale: large batches go through in chunks
    let per_image = c * kh * kw * ho * wo;
    let chunk = (COLS_BUDGET / per_image.max(1)).max(1);
    if b > chunk {
        let parts = (0..b)
            .step_by(chunk)
            .map(|first| conv2d_im2col(&x.narrow(0, first, chunk.min(b - first))?, weight, bias, stride, padding))
            .collect::<Result<Vec<_>>>()?;
        return Tensor::cat(&parts, 0);
    }
    let cols = if kh == 1 && kw == 1 && stride == (1, 1) && padding == (0, 0) {
        x.reshape((b, c, h * w))?
    } else {
        im2col(x, (kh, kw), stride, padding)?
    };
    let out = weight.reshape((cout, c * kh * kw))?.broadcast_left(b)?.matmul(&cols)?;
    let out = match bias {
        Some(bias) => out.broadcast_add(&bias.reshape((1, cout, 1))?)?,
        None => out,
    };
    out.reshape((b, cout, ho, wo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{numeric_grad, rel_err, values};
    use crate::rng::Rng;
    use crate::tensor_util::randn;
    use candle_core::{DType, Device, Var};

    /// (input [B, C, H, W], Cout, kernel, stride, padding)
    type Config = ([usize; 4], usize, (usize, usize), (usize, usize), (usize, usize));

    const CONFIGS: [Config; 8] = [
        ([2, 3, 6, 5], 4, (3, 3), (1, 1), (1, 1)),
        ([2, 3, 7, 6], 4, (3, 3), (2, 2), (1, 1)),
        ([2, 3, 5, 4], 4, (1, 1), (1, 1), (0, 0)),
        ([2, 3, 1, 9], 4, (1, 3), (1, 1), (0, 1)),
        ([2, 3, 1, 9], 4, (1, 3), (1, 2), (0, 1)),
        ([2, 2, 7, 5], 3, (3, 3), (1, 1), (1, 1)),
        ([2, 2, 7, 5], 3, (3, 2), (2, 1), (0, 1)),
        ([2, 2, 7, 5], 3, (1, 1), (2, 2), (0, 0)),
    ];

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        assert_eq!(a.dims(), b.dims());
        Ok(values(a)?.iter().zip(values(b)?).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
    }

    /// Reference: candle's conv2d, with asymmetric padding done by hand (candle pads equally).
    fn reference(x: &Tensor, w: &Tensor, bias: &Tensor, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        assert_eq!(stride.0, stride.1, "candle's conv2d takes one stride");
        let x = x.pad_with_zeros(2, padding.0, padding.0)?.pad_with_zeros(3, padding.1, padding.1)?;
        let y = x.conv2d(w, 0, stride.0, 1, 1)?;
        y.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)
    }

    #[test]
    fn forward_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for (n, &(shape, cout, k, s, p)) in CONFIGS.iter().enumerate() {
                let mut rng = Rng::new(n as u64);
                let x = randn(&mut rng, &shape, dtype, &dev)?;
                let w = randn(&mut rng, &[cout, shape[1], k.0, k.1], dtype, &dev)?;
                let bias = randn(&mut rng, &[cout], dtype, &dev)?;
                let y = conv2d_im2col(&x, &w, Some(&bias), s, p)?;
                if s.0 == s.1 {
                    let err = max_abs_diff(&y, &reference(&x, &w, &bias, s, p)?)?;
                    assert!(err < tol, "{dtype:?} config {n}: max diff {err}");
                }
                // A strided view of the input gives the same result.
                let xt = x.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
                assert_eq!(values(&conv2d_im2col(&xt, &w, Some(&bias), s, p)?)?, values(&y)?);
            }
        }
        Ok(())
    }

    #[test]
    fn im2col_layout_and_col2im_adjoint() -> Result<()> {
        let dev = Device::Cpu;
        // 1 x 1 x 2 x 3 input, 2x2 kernel, padding 1 on the width only.
        let x = Tensor::new(&[[[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]]]], &dev)?;
        let cols = im2col(&x, (2, 2), (1, 1), (0, 1))?;
        assert_eq!(cols.dims(), &[1, 4, 4]);
        let want = vec![
            vec![0.0, 1.0, 2.0, 3.0], // (i, j) = (0, 0)
            vec![1.0, 2.0, 3.0, 0.0], // (0, 1)
            vec![0.0, 4.0, 5.0, 6.0], // (1, 0)
            vec![4.0, 5.0, 6.0, 0.0], // (1, 1)
        ];
        assert_eq!(cols.squeeze(0)?.to_vec2::<f32>()?, want);
        // <im2col(x), y> = <x, col2im(y)>
        for (n, &(shape, _, k, s, p)) in CONFIGS.iter().enumerate() {
            let mut rng = Rng::new(100 + n as u64);
            let x = randn(&mut rng, &shape, DType::F64, &dev)?;
            let cols = im2col(&x, k, s, p)?;
            let y = randn(&mut rng, cols.dims(), DType::F64, &dev)?;
            let g = Geometry { kh: k.0, kw: k.1, sh: s.0, sw: s.1, ph: p.0, pw: p.1 };
            let back = y.apply_op1_no_bwd(&Col2Im { g, h: shape[2], w: shape[3] })?;
            let lhs = cols.mul(&y)?.sum_all()?.to_scalar::<f64>()?;
            let rhs = x.mul(&back)?.sum_all()?.to_scalar::<f64>()?;
            assert!((lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0), "config {n}: {lhs} vs {rhs}");
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (n, &(shape, cout, k, s, p)) in CONFIGS.iter().enumerate() {
            let mut rng = Rng::new(200 + n as u64);
            let x = Var::from_tensor(&randn(&mut rng, &shape, DType::F64, &dev)?)?;
            let w = Var::from_tensor(&randn(&mut rng, &[cout, shape[1], k.0, k.1], DType::F64, &dev)?)?;
            let bias = Var::from_tensor(&randn(&mut rng, &[cout], DType::F64, &dev)?)?;
            let y = conv2d_im2col(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), s, p)?;
            let r = randn(&mut rng, y.dims(), DType::F64, &dev)?;
            let loss_t = || {
                conv2d_im2col(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), s, p)?.mul(&r)?.sum_all()
            };
            let loss = || loss_t()?.to_scalar::<f64>();
            let grads = loss_t()?.backward()?;
            for (name, var) in [("input", &x), ("weight", &w), ("bias", &bias)] {
                let analytic = values(grads.get(var.as_tensor()).unwrap())?;
                let all: Vec<usize> = (0..var.elem_count()).collect();
                let err = rel_err(&analytic, &numeric_grad(var, &all, &loss)?);
                assert!(err < 1e-6, "config {n} {name}: relative error {err}");
            }
        }
        Ok(())
    }
}
