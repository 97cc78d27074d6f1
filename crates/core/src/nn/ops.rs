//! Small fused CPU kernels with hand-written backward passes, for operations that candle 0.11.1
//! composes from many single-threaded passes (or gets wrong):
//!
//! - [`upsample_nearest`]: x2 nearest-neighbour upsampling of the spatial axes. candle's
//!   `upsample_nearest2d` overwrites instead of accumulating in its backward pass, and the
//!   broadcast-based alternative leaves the gradient to candle's slow strided reduction. Its
//!   gradient here is the 2x2 (or 2) block sum.
//! - [`softmax_last`]: softmax over the last axis with backward `y * (g - sum(g * y))`;
//!   candle's `softmax_last_dim` has no backward pass at all.
//! - [`gelu_erf`]: the exact (erf) GELU with backward `g (Phi(x) + x phi(x))` in one pass
//!   (candle composes its gradient from several passes and rounds 1/sqrt(2 pi) to 6 digits).
//! - [`add_relative_scores`]: the relative-position term of attention (HuggingFace's
//!   `relative_key`) gathered from one small product per query, instead of a matmul per query
//!   position and a permuted (strided) add.
//! - [`add_bias`]: adds a per-channel bias along one axis. With `broadcast_add` the bias
//!   gradient is a sum over the other axes, which candle 0.11.1 computes with a per-element
//!   index division unless the summed axes are the trailing ones (every linear layer's bias).
//! - [`Linear`]: a linear layer as one op over any leading axes (candle_nn's broadcasts the
//!   weight over them, and its gradient is again a leading-axis sum): the bias written into the
//!   output before one gemm adds `x W^T`, and one backward op for the input, weight and bias
//!   gradients. As one node of the autograd graph instead of five (reshape, transpose, matmul,
//!   bias, reshape) it also spares candle's backward pass a zero-filled gradient buffer and an
//!   add per node.
//! - [`add`] and [`cat_channels`]: residual sums and a UNet's skip concatenation on all threads
//!   (candle's element-wise ops and copies run on the calling thread here, while the worker
//!   threads wait); the concatenation's gradient is split into two contiguous parts in one pass.
//!
//! Off the CPU (or for dtypes other than f32/f64) they fall back to compositions of candle ops
//! with the same result.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use super::kernel::{contiguous, dispatch, matmul_parallel, output_vec, softmax_grad_row, softmax_row, unpack, wide_fn, Float, Mat};
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
    let (h, w) = if sh == 2 { (dims[dims.len() - 2], dims[dims.len() - 1]) } else { (1, dims[dims.len() - 1]) };
    Ok((shape.elem_count() / (h * w).max(1), h, w))
}

impl Upsample {
    fn run<T: Float>(&self, x: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let x = contiguous(x, layout, "upsample")?;
        let (n, h, w) = planes(layout.shape(), self.sh)?;
        let (oh, ow) = (h * self.sh, w * 2);
        let mut out = output_vec(n * oh * ow);
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(dst, src)| {
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
            bail!("upsample backward: gradient {:?} is not a x2 upsampled shape", layout.shape().dims());
        }
        let (h, w) = (oh / self.sh, ow / 2);
        let mut out = vec![T::default(); n * h * w];
        if !out.is_empty() {
            out.par_chunks_mut(h * w).zip(g.par_chunks(oh * ow)).for_each(|(dst, src)| {
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
        Ok(Some(grad.contiguous()?.apply_op1(BlockSum { sh: self.sh })?))
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
        Ok(Some(grad.contiguous()?.apply_op1(Upsample { sh: self.sh })?))
    }
}

/// Nearest-neighbour x2 upsampling of the last `spatial` axes (1 for `[B, C, L]`, 2 for
/// `[B, C, H, W]`), differentiable.
pub fn upsample_nearest(x: &Tensor, spatial: usize) -> Result<Tensor> {
    if !(1..=2).contains(&spatial) {
        bail!("upsample: 1 or 2 spatial axes, got {spatial}");
    }
    if super::use_fused(x) {
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

/// Softmax over the last axis (rows of a contiguous tensor).
#[derive(Clone, Copy, Debug)]
struct Softmax;

/// The softmax's backward: from the output `y` and its gradient `g`, `y * (g - sum(g * y))`.
#[derive(Clone, Copy, Debug)]
struct SoftmaxBackward;

/// Rows per parallel task: enough work to amortise the scheduling.
fn rows_per_task(row: usize) -> usize {
    (16_384 / row.max(1)).max(1)
}

impl Softmax {
    fn run<T: Float>(&self, x: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let x = contiguous(x, layout, "softmax")?;
        let n = layout.shape().dims().last().copied().unwrap_or(1);
        let mut out = output_vec(x.len());
        if n > 0 && !x.is_empty() {
            let chunk = n * rows_per_task(n);
            out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(dst, src)| {
                for (d, s) in dst.chunks_mut(n).zip(src.chunks(n)) {
                    d.copy_from_slice(s);
                    softmax_row(d);
                }
            });
        }
        Ok((out, layout.shape().clone()))
    }
}

impl SoftmaxBackward {
    fn run<T: Float>(&self, y: &[T], yl: &Layout, g: &[T], gl: &Layout) -> Result<(Vec<T>, Shape)> {
        let (y, g) = (contiguous(y, yl, "softmax backward")?, contiguous(g, gl, "softmax backward")?);
        if yl.shape() != gl.shape() {
            bail!("softmax backward: output {:?} and gradient {:?} differ", yl.shape(), gl.shape());
        }
        let n = yl.shape().dims().last().copied().unwrap_or(1);
        let mut out = output_vec(y.len());
        if n > 0 && !y.is_empty() {
            let chunk = n * rows_per_task(n);
            out.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(dst, (ys, gs))| {
                for ((d, yr), gr) in dst.chunks_mut(n).zip(ys.chunks(n)).zip(gs.chunks(n)) {
                    d.copy_from_slice(gr);
                    softmax_grad_row(yr, d, T::ONE);
                }
            });
        }
        Ok((out, yl.shape().clone()))
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("softmax");
        dispatch!("softmax", (s => v), self.run(v, l))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax-last-backward"
    }

    fn cpu_fwd(&self, y: &CpuStorage, yl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("softmax");
        dispatch!("softmax backward", (y => y, g => g), self.run(y, yl, g, gl))
    }
}

/// Softmax over the last axis, differentiable; row sums in f64.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if super::use_fused(x) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    // the max is subtracted without gradient: it cancels exactly
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// GELU with the exact normal CDF: `x Phi(x)`.
#[derive(Clone, Copy, Debug)]
struct Gelu;

/// GELU's backward from the input `x` and the output gradient `g`.
#[derive(Clone, Copy, Debug)]
struct GeluBackward;

/// The contiguous data of two inputs of one shape, or an error naming the op and both shapes.
fn same_shape<'a, T>(a: (&'a [T], &Layout), b: (&'a [T], &Layout), op: &str) -> Result<(&'a [T], &'a [T])> {
    if a.1.shape() != b.1.shape() {
        bail!("{op}: shapes {:?} and {:?} differ", a.1.shape(), b.1.shape());
    }
    Ok((contiguous(a.0, a.1, op)?, contiguous(b.0, b.1, op)?))
}

/// Applies `chunk(out, a, b)` over matching chunks of two equally shaped contiguous inputs (or
/// `a` twice), in parallel.
fn map_par<T: Float>(a: &[T], b: Option<&[T]>, chunk: impl Fn(&mut [T], &[T], &[T]) + Sync) -> Vec<T> {
    let mut out = output_vec(a.len());
    const CHUNK: usize = 16_384;
    let b = b.unwrap_or(a);
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (x, y))| chunk(o, x, y));
    out
}

#[inline(always)]
fn gelu<T: Float>(x: T) -> T {
    let half = T::from_f64(0.5);
    x * half * (T::from_f64(1.0) + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

#[inline(always)]
fn gelu_grad<T: Float>(x: T, g: T) -> T {
    let cdf = T::from_f64(0.5) * (T::from_f64(1.0) + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
    let pdf = (T::from_f64(-0.5) * x * x).exp() * T::from_f64(0.398_942_280_401_432_7);
    g * (cdf + x * pdf)
}

// The chunk loops index rather than zip: an iterator adapter's `fold` is a function of its own
// that is not inlined into the AVX-512 wrapper, and would run 8 lanes wide.

/// `out = gelu(x)` over one chunk.
#[inline(always)]
fn gelu_chunk<T: Float>(out: &mut [T], x: &[T], _: &[T]) {
    let x = &x[..out.len()];
    for i in 0..out.len() {
        out[i] = gelu(x[i]);
    }
}

/// `out = gelu'(x) g` over one chunk.
#[inline(always)]
fn gelu_grad_chunk<T: Float>(out: &mut [T], x: &[T], g: &[T]) {
    let (x, g) = (&x[..out.len()], &g[..out.len()]);
    for i in 0..out.len() {
        out[i] = gelu_grad(x[i], g[i]);
    }
}

wide_fn! {
    /// [`gelu_chunk`], 16 lanes wide where the CPU allows.
    fn gelu_chunk_wide<T: Float>(out: &mut [T], x: &[T], unused: &[T]) -> () = gelu_chunk
}

wide_fn! {
    /// [`gelu_grad_chunk`], 16 lanes wide where the CPU allows.
    fn gelu_grad_chunk_wide<T: Float>(out: &mut [T], x: &[T], g: &[T]) -> () = gelu_grad_chunk
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("gelu");
        dispatch!("gelu", (s => v), contiguous(v, l, "gelu").map(|x| (map_par(x, None, gelu_chunk_wide), l.shape().clone())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?))
    }
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-erf-backward"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("gelu");
        dispatch!(
            "gelu backward",
            (x => x, g => g),
            same_shape((x, xl), (g, gl), "gelu backward").map(|(x, g)| (map_par(x, Some(g), gelu_grad_chunk_wide), xl.shape().clone()))
        )
    }
}

/// The exact GELU `x Phi(x)` (PyTorch's default `gelu`, candle's `gelu_erf`), differentiable.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if super::use_fused(x) {
        return x.contiguous()?.apply_op1(Gelu);
    }
    x.gelu_erf()
}

/// `scores[n, l, r] + qe[n, l, l - r + m - 1]` for `scores: [N, L, L]`, `qe: [N, L, 2m - 1]`.
#[derive(Clone, Copy, Debug)]
struct RelativeScores;

/// The `qe` gradient of [`RelativeScores`]: each row of the score gradient scattered to the
/// distances it read.
#[derive(Clone, Copy, Debug)]
struct RelativeScoresBackward {
    distances: usize,
}

/// `(n, l, distances)` of a relative-score pair, or an error naming the shapes.
fn relative_shapes(scores: &Shape, qe: &Shape) -> Result<(usize, usize, usize)> {
    let (n, l, l2) = scores.dims3()?;
    let (n2, l3, r) = qe.dims3()?;
    if l != l2 || n != n2 || l3 != l || r % 2 == 0 || r + 1 < 2 * l {
        bail!("relative scores: scores {:?} need per-distance products [N, L, 2m - 1] with m >= L, got {:?}", scores.dims(), qe.dims());
    }
    Ok((n, l, r))
}

impl RelativeScores {
    fn run<T: Float>(&self, s: (&[T], &Layout), qe: (&[T], &Layout)) -> Result<(Vec<T>, Shape)> {
        let (n, l, r) = relative_shapes(s.1.shape(), qe.1.shape())?;
        let (ss, qs) = (contiguous(s.0, s.1, "relative scores")?, contiguous(qe.0, qe.1, "relative scores")?);
        let m = r.div_ceil(2);
        let mut out = ss.to_vec();
        if n * l > 0 {
            out.par_chunks_mut(l).zip(qs.par_chunks(r)).enumerate().for_each(|(row, (o, q))| {
                let li = row % l;
                for (ri, v) in o.iter_mut().enumerate() {
                    *v += q[li + m - 1 - ri];
                }
            });
        }
        Ok((out, s.1.shape().clone()))
    }
}

impl RelativeScoresBackward {
    fn run<T: Float>(&self, g: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let g = contiguous(g, layout, "relative scores backward")?;
        let (n, l, _) = layout.shape().dims3()?;
        let (r, m) = (self.distances, self.distances.div_ceil(2));
        let mut out = vec![T::default(); n * l * r];
        if n * l > 0 {
            out.par_chunks_mut(r).zip(g.par_chunks(l)).enumerate().for_each(|(row, (o, gr))| {
                let li = row % l;
                for (ri, &v) in gr.iter().enumerate() {
                    o[li + m - 1 - ri] = v;
                }
            });
        }
        Ok((out, Shape::from((n, l, r))))
    }
}

impl CustomOp2 for RelativeScores {
    fn name(&self) -> &'static str {
        "relative-scores"
    }

    fn cpu_fwd(&self, s: &CpuStorage, sl: &Layout, q: &CpuStorage, ql: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("relative positions");
        dispatch!("relative scores", (s => s, q => q), self.run((s, sl), (q, ql)))
    }

    fn bwd(&self, _s: &Tensor, qe: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dq = grad.contiguous()?.apply_op1_no_bwd(&RelativeScoresBackward { distances: qe.dim(2)? })?;
        Ok((Some(grad.clone()), Some(dq)))
    }
}

impl CustomOp1 for RelativeScoresBackward {
    fn name(&self) -> &'static str {
        "relative-scores-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("relative positions");
        dispatch!("relative scores backward", (s => v), self.run(v, l))
    }
}

/// Adds the relative-position term of attention: `scores[n, l, r] + qe[n, l, l - r + m - 1]`
/// for `scores: [N, L, L]` and `qe: [N, L, 2m - 1]` (`qe = q E^T`, the queries against the
/// embedding of every distance `-(m - 1)..=(m - 1)`, `m >= L`). Differentiable in both.
pub fn add_relative_scores(scores: &Tensor, qe: &Tensor) -> Result<Tensor> {
    let (n, l, r) = relative_shapes(scores.shape(), qe.shape())?;
    if super::use_fused(scores) && scores.dtype() == qe.dtype() {
        return scores.contiguous()?.apply_op2(&qe.contiguous()?, RelativeScores);
    }
    let m = r.div_ceil(2);
    let idx: Vec<u32> = (0..l).flat_map(|q| (0..l).map(move |k| (q + m - 1 - k) as u32)).collect();
    let idx = Tensor::from_vec(idx, (1, l, l), scores.device())?.broadcast_as((n, l, l))?.contiguous()?;
    scores.add(&qe.contiguous()?.gather(&idx, 2)?)
}

/// Adds `bias[c]` to every element whose index along `axis` is `c`; viewed as `[outer, C, inner]`.
#[derive(Clone, Copy, Debug)]
struct AddBias {
    axis: usize,
}

/// The bias gradient of [`AddBias`]: sums `[outer, C, inner]` to `[C]`.
#[derive(Clone, Copy, Debug)]
struct ChannelSum {
    axis: usize,
}

/// `(outer, channels, inner)` of a shape split at `axis`.
fn split_at_axis(shape: &Shape, axis: usize) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if axis >= dims.len() {
        bail!("bias: axis {axis} out of range for shape {dims:?}");
    }
    Ok((dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product()))
}

/// Below this many elements the bias kernels run on the calling thread: handing so little work
/// to the thread pool costs more than it saves (the toy MLP's 256 x 256 activations).
const PARALLEL_MIN: usize = 1 << 17;

/// Outer rows per group when summing over them: fixed, so the sum does not depend on threads.
const ROWS_PER_GROUP: usize = 64;

/// Adds `bias[j]` to the `j`-th plane of `inner` elements of `row` (`bias.len()` planes).
fn add_row_bias<T: Float>(row: &mut [T], bias: &[T], inner: usize) {
    if inner == 1 {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
    } else {
        for (plane, &b) in row.chunks_mut(inner).zip(bias) {
            plane.iter_mut().for_each(|v| *v += b);
        }
    }
}

impl AddBias {
    fn run<T: Float>(&self, x: (&[T], &Layout), b: (&[T], &Layout)) -> Result<(Vec<T>, Shape)> {
        let (xs, bs) = (contiguous(x.0, x.1, "add_bias")?, contiguous(b.0, b.1, "add_bias")?);
        let (_, c, inner) = split_at_axis(x.1.shape(), self.axis)?;
        if bs.len() != c {
            bail!("add_bias: bias of {} entries for axis {} of size {c} in {:?}", bs.len(), self.axis, x.1.shape().dims());
        }
        let mut out = xs.to_vec();
        if let Some(rows) = 16_384usize.checked_div(c * inner) {
            let add = |chunk: &mut [T]| {
                for outer in chunk.chunks_mut(c * inner) {
                    add_row_bias(outer, bs, inner);
                }
            };
            if out.len() < PARALLEL_MIN {
                add(&mut out);
            } else {
                out.par_chunks_mut(rows.max(1) * c * inner).for_each(add);
            }
        }
        Ok((out, x.1.shape().clone()))
    }
}

impl ChannelSum {
    fn run<T: Float>(&self, g: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let g = contiguous(g, layout, "add_bias backward")?;
        let (outer, c, inner) = split_at_axis(layout.shape(), self.axis)?;
        Ok((channel_sums(g, outer, c, inner), Shape::from(c)))
    }
}

/// Sums `g` (`[outer, c, inner]`) to `[c]`: in fixed groups of outer rows in parallel, the
/// groups' sums added in order (the same result whatever the number of threads).
fn channel_sums<T: Float>(g: &[T], outer: usize, c: usize, inner: usize) -> Vec<T> {
    let mut out = vec![T::default(); c];
    if c * inner > 0 && outer > 0 {
        let partials: Vec<Vec<T>> = g
            .par_chunks(ROWS_PER_GROUP * c * inner)
            .map(|chunk| {
                let mut acc = vec![T::default(); c];
                for row in chunk.chunks(c * inner) {
                    if inner == 1 {
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                    } else {
                        for (a, plane) in acc.iter_mut().zip(row.chunks(inner)) {
                            *a = plane.iter().fold(*a, |s, &v| s + v);
                        }
                    }
                }
                acc
            })
            .collect();
        for p in partials {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
    }
    out
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("bias add");
        dispatch!("add_bias", (x => x, b => b), self.run((x, xl), (b, bl)))
    }

    fn bwd(&self, _x: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&ChannelSum { axis: self.axis })?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("bias add");
        dispatch!("add_bias backward", (s => v), self.run(v, l))
    }
}

/// `x + bias` with `bias: [C]` laid along `axis` of `x` (size C), differentiable in both.
pub fn add_bias(x: &Tensor, bias: &Tensor, axis: usize) -> Result<Tensor> {
    if super::use_fused(x) && x.dtype() == bias.dtype() {
        return x.contiguous()?.apply_op2(&bias.contiguous()?, AddBias { axis });
    }
    let mut shape = vec![1; x.rank()];
    if axis >= shape.len() {
        bail!("add_bias: axis {axis} out of range for shape {:?}", x.dims());
    }
    shape[axis] = bias.elem_count();
    x.broadcast_add(&bias.reshape(shape)?)
}

/// `y = x W^T + b` over the last axis of `x` as one op: `(x [.., in], W [out, in], b [out])` to
/// `[.., out]`, the bias written first and the product added by one gemm.
#[derive(Clone, Copy, Debug)]
struct LinearOp {
    /// Whether the products run in bfloat16 ([`super::set_bf16_compute`]).
    bf16: bool,
}

/// `dst (+)= a b` on all threads: in bfloat16 with `bf16` (for f32 data), else by gemm.
fn product<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool, bf16: bool) {
    if bf16 {
        if let (Some(a32), Some(b32)) = (a.as_f32(), b.as_f32()) {
            if let Some(d32) = T::as_f32_mut(dst) {
                return super::bf16::matmul(d32, a32, b32, accumulate);
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
        bail!("linear: input {:?}, weight {:?} and bias {:?} do not fit", x.dims(), w.dims(), b.dims());
    }
    Ok((x.elem_count() / inp.max(1), inp, out))
}

impl LinearOp {
    fn run<T: Float>(&self, x: (&[T], &Layout), w: (&[T], &Layout), b: (&[T], &Layout)) -> Result<(Vec<T>, Shape)> {
        let (rows, inp, out) = linear_dims(x.1.shape(), w.1.shape(), b.1.shape())?;
        let (xs, ws, bs) = (contiguous(x.0, x.1, "linear")?, contiguous(w.0, w.1, "linear")?, contiguous(b.0, b.1, "linear")?);
        let mut y = output_vec(rows * out);
        if out > 0 {
            y.par_chunks_mut(out * rows_per_task(out)).for_each(|chunk| {
                chunk.chunks_mut(out).for_each(|row| row.copy_from_slice(bs));
            });
        }
        product(&mut y, Mat::new(xs, rows, inp), Mat::new(ws, out, inp).t(), true, self.bf16);
        let mut shape = x.1.shape().dims().to_vec();
        *shape.last_mut().expect("rank checked") = out;
        Ok((y, Shape::from(shape)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("linear (forward)");
        dispatch!("linear", (x => x, w => w, b => b), self.run((x, xl), (w, wl), (b, bl)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = grad.contiguous()?.apply_op3_no_bwd(x, w, &LinearBackward { bf16: self.bf16 })?;
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
    fn run<T: Float>(&self, g: (&[T], &Layout), x: (&[T], &Layout), w: (&[T], &Layout)) -> Result<(Vec<T>, Shape)> {
        let (out, inp) = w.1.shape().dims2()?;
        let (gs, xs, ws) = (contiguous(g.0, g.1, "linear backward")?, contiguous(x.0, x.1, "linear backward")?, contiguous(w.0, w.1, "linear backward")?);
        let rows = xs.len() / inp.max(1);
        if gs.len() != rows * out || xs.len() != rows * inp {
            bail!("linear backward: gradient {:?} does not fit input {:?} and weight [{out}, {inp}]", g.1.shape().dims(), x.1.shape().dims());
        }
        let mut packed = output_vec(rows * inp + out * inp + out);
        let (dx, rest) = packed.split_at_mut(rows * inp);
        let (dw, db) = rest.split_at_mut(out * inp);
        product(dx, Mat::new(gs, rows, out), Mat::new(ws, out, inp), false, self.bf16);
        // The weight gradient stays float32: in bfloat16 its operands (every row of the batch)
        // must be converted and transposed whole, which measured no faster than gemm's own
        // blocked packing (576 x 8192 x 192: 12.4 vs 11.3 ms).
        product(dw, Mat::new(gs, rows, out).t(), Mat::new(xs, rows, inp), false, false);
        db.copy_from_slice(&channel_sums(gs, rows, out, 1));
        let n = packed.len();
        Ok((packed, Shape::from(n)))
    }
}

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "linear-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
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
        Ok(Self { weight: l.weight().clone(), bias: l.bias().cloned() })
    }

    /// A layer without a bias.
    pub fn no_bias(in_dim: usize, out_dim: usize, vb: candle_nn::VarBuilder) -> Result<Self> {
        let l = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
        Ok(Self { weight: l.weight().clone(), bias: None })
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
        let Some((&last, lead)) = dims.split_last() else { bail!("linear: scalar input") };
        let (out, inp) = self.weight.dims2()?;
        if last != inp {
            bail!("linear: input {dims:?} does not end in the layer's {inp} features");
        }
        if let (Some(b), true) = (&self.bias, super::use_fused(x)) {
            if b.dtype() == x.dtype() && self.weight.dtype() == x.dtype() {
                return x.contiguous()?.apply_op3(&self.weight.contiguous()?, &b.contiguous()?, LinearOp { bf16: super::bf16_compute() });
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

/// `a + b` of equally shaped tensors (residual connections) in parallel chunks; its backward
/// passes the gradient on to both unchanged.
#[derive(Clone, Copy, Debug)]
struct Sum;

fn add_chunk<T: Float>(out: &mut [T], a: &[T], b: &[T]) {
    let (a, b) = (&a[..out.len()], &b[..out.len()]);
    for i in 0..out.len() {
        out[i] = a[i] + b[i];
    }
}

impl CustomOp2 for Sum {
    fn name(&self) -> &'static str {
        "add"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("add");
        dispatch!("add", (a => a, b => b), same_shape((a, al), (b, bl), "add").map(|(a, b)| (map_par(a, Some(b), add_chunk), al.shape().clone())))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.clone())))
    }
}

/// `a + b` for tensors of one shape (a residual connection), differentiable. On the CPU in
/// f32/f64 it runs on all threads (candle's element-wise ops run on the calling thread here,
/// see `tune_threads`); otherwise it is candle's `add`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::use_fused(a) && a.shape() == b.shape() && a.dtype() == b.dtype() && a.device().same_device(b.device()) {
        return a.contiguous()?.apply_op2(&b.contiguous()?, Sum);
    }
    a.add(b)
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

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("concat");
        let ((n, c1, rest), (nb, c2, _)) = (batch_channels_rest(al.shape(), "cat")?, batch_channels_rest(bl.shape(), "cat")?);
        if (n, &al.shape().dims()[2..]) != (nb, &bl.shape().dims()[2..]) {
            bail!("cat: {:?} and {:?} differ outside axis 1", al.shape(), bl.shape());
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

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = grad.contiguous()?.apply_op1_no_bwd(&SplitChannels { first: a.dim(1)? })?;
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
            bail!("cat backward: {} channels for the first part of {c}", self.first);
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
    if super::use_fused(a) && a.rank() >= 2 && a.dtype() == b.dtype() && a.device().same_device(b.device()) {
        return a.contiguous()?.apply_op2(&b.contiguous()?, CatChannels);
    }
    Tensor::cat(&[a, b], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor_util::randn;
    use candle_core::{DType, Device, Var};

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// The composite (candle-op) version of each op, for reference.
    fn reference(x: &Tensor, which: &str) -> Result<Tensor> {
        match which {
            "softmax" => {
                let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?.exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
            }
            "gelu" => x.gelu_erf(),
            "up1" | "up2" => {
                let spatial = if which == "up1" { 1 } else { 2 };
                let dims = x.dims().to_vec();
                let rank = dims.len();
                let (mut e, mut t, mut o) = (dims[..rank - spatial].to_vec(), dims[..rank - spatial].to_vec(), dims[..rank - spatial].to_vec());
                for &d in &dims[rank - spatial..] {
                    e.extend([d, 1]);
                    t.extend([d, 2]);
                    o.push(2 * d);
                }
                x.reshape(e)?.broadcast_as(t)?.reshape(o)
            }
            _ => unreachable!(),
        }
    }

    fn fused_op(x: &Tensor, which: &str) -> Result<Tensor> {
        match which {
            "softmax" => softmax_last(x),
            "gelu" => gelu_erf(x),
            "up1" => upsample_nearest(x, 1),
            "up2" => upsample_nearest(x, 2),
            _ => unreachable!(),
        }
    }

    #[test]
    fn forward_and_gradients_match_candle_composites() -> Result<()> {
        let dev = Device::Cpu;
        let cases: [(&str, &[usize]); 5] =
            [("softmax", &[3, 2, 7]), ("softmax", &[5, 1]), ("up1", &[2, 3, 5]), ("up2", &[2, 3, 4, 5]), ("gelu", &[4, 9])];
        for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-13)] {
            for (n, (which, shape)) in cases.iter().enumerate() {
                let mut rng = Rng::new(n as u64);
                let x = Var::from_tensor(&randn(&mut rng, shape, dtype, &dev)?.affine(3.0, 0.0)?)?;
                let y = fused_op(x.as_tensor(), which)?;
                let want = reference(x.as_tensor(), which)?;
                assert_eq!(y.dims(), want.dims(), "{which}");
                assert!(max_diff(&values(&y), &values(&want)) < tol, "{which} {dtype:?} forward");
                let r = randn(&mut rng, y.dims(), dtype, &dev)?;
                let g = y.mul(&r)?.sum_all()?.backward()?;
                let g_ref = want.mul(&r)?.sum_all()?.backward()?;
                let (a, b) = (values(g.get(x.as_tensor()).unwrap()), values(g_ref.get(x.as_tensor()).unwrap()));
                // candle's own gelu_erf gradient rounds 1/sqrt(2 pi) to 6 digits (the finite
                // difference test below checks ours exactly)
                let gtol = if *which == "gelu" { 1e-6 } else { 10.0 * tol };
                assert!(max_diff(&a, &b) < gtol, "{which} {dtype:?} gradient: {}", max_diff(&a, &b));
            }
        }
        Ok(())
    }

    #[test]
    fn add_and_cat_channels_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let mut rng = Rng::new(11);
            let a = Var::from_tensor(&randn(&mut rng, &[3, 2, 5], dtype, &dev)?)?;
            let b = Var::from_tensor(&randn(&mut rng, &[3, 4, 5], dtype, &dev)?)?;
            // A strided operand: [3, 5, 4] transposed to [3, 4, 5].
            let c = Var::from_tensor(&randn(&mut rng, &[3, 5, 4], dtype, &dev)?)?;
            let ct = c.transpose(1, 2)?;
            let fused = |a: &Tensor, b: &Tensor, ct: &Tensor| -> Result<Tensor> { cat_channels(a, &add(b, ct)?) };
            let plain = |a: &Tensor, b: &Tensor, ct: &Tensor| -> Result<Tensor> { Tensor::cat(&[a, &b.add(ct)?], 1) };
            let (y, want) = (fused(&a, &b, &ct)?, plain(&a, &b, &ct)?);
            assert_eq!(y.dims(), &[3, 6, 5]);
            assert_eq!(values(&y), values(&want), "{dtype:?} forward");
            let r = randn(&mut rng, y.dims(), dtype, &dev)?;
            // `a` is used twice: in the concatenation and, through b + a's channels, in a sum.
            let twice = |y: &Tensor| -> Result<Tensor> { y.mul(&r)?.sum_all()?.add(&a.sqr()?.sum_all()?) };
            let (g, g_ref) = (twice(&y)?.backward()?, twice(&want)?.backward()?);
            for v in [&a, &b, &c] {
                assert_eq!(values(g.get(v).unwrap()), values(g_ref.get(v).unwrap()), "{dtype:?} gradient");
            }
        }
        assert!(add(&Tensor::zeros((2, 3), DType::F32, &dev)?, &Tensor::zeros((3, 2), DType::F32, &dev)?).is_err());
        assert!(cat_channels(&Tensor::zeros((2, 3, 4), DType::F32, &dev)?, &Tensor::zeros((2, 3, 5), DType::F32, &dev)?).is_err());
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (n, (which, shape)) in
            [("softmax", vec![2, 6]), ("up1", vec![1, 2, 3]), ("up2", vec![1, 2, 2, 3]), ("gelu", vec![3, 4])].into_iter().enumerate()
        {
            let mut rng = Rng::new(10 + n as u64);
            let x0 = values(&randn(&mut rng, &shape, DType::F64, &dev)?);
            let x = Var::from_tensor(&Tensor::from_vec(x0.clone(), shape.as_slice(), &dev)?)?;
            let y = fused_op(x.as_tensor(), which)?;
            let r = randn(&mut rng, y.dims(), DType::F64, &dev)?;
            let analytic = values(y.mul(&r)?.sum_all()?.backward()?.get(x.as_tensor()).unwrap());
            let loss = |v: Vec<f64>| -> Result<f64> {
                fused_op(&Tensor::from_vec(v, shape.as_slice(), &dev)?, which)?.mul(&r)?.sum_all()?.to_scalar::<f64>()
            };
            for i in 0..x0.len() {
                let (mut up, mut down) = (x0.clone(), x0.clone());
                up[i] += 1e-6;
                down[i] -= 1e-6;
                let numeric = (loss(up)? - loss(down)?) / 2e-6;
                assert!((numeric - analytic[i]).abs() < 1e-7, "{which} entry {i}: {numeric} vs {}", analytic[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn bias_and_linear_match_candle() -> Result<()> {
        use candle_nn::Module;
        let dev = Device::Cpu;
        for (shape, axis) in [(vec![3, 4, 5], 1), (vec![70, 3], 1), (vec![2, 3, 2, 2], 1), (vec![4, 6], 0)] {
            let mut rng = Rng::new(shape.len() as u64 + axis as u64);
            let x = Var::from_tensor(&randn(&mut rng, &shape, DType::F64, &dev)?)?;
            let b = Var::from_tensor(&randn(&mut rng, &[shape[axis]], DType::F64, &dev)?)?;
            let y = add_bias(x.as_tensor(), b.as_tensor(), axis)?;
            let mut bshape = vec![1; shape.len()];
            bshape[axis] = shape[axis];
            let want = x.as_tensor().broadcast_add(&b.as_tensor().reshape(bshape)?)?;
            assert!(max_diff(&values(&y), &values(&want)) < 1e-14);
            let r = randn(&mut rng, &shape, DType::F64, &dev)?;
            let (g, gw) = (y.mul(&r)?.sum_all()?.backward()?, want.mul(&r)?.sum_all()?.backward()?);
            for v in [&x, &b] {
                let d = max_diff(&values(g.get(v.as_tensor()).unwrap()), &values(gw.get(v.as_tensor()).unwrap()));
                assert!(d < 1e-12, "{shape:?} axis {axis}: gradient differs by {d}");
            }
        }
        // Linear (the fused op) over [2, 3, 4], [70, 4] and [1, 4] -> 5 against candle_nn's
        let params = crate::params::Params::new(3);
        let vb = params.var_builder(DType::F64, &dev);
        let ours = Linear::new(4, 5, vb.pp("l"))?;
        let theirs = candle_nn::Linear::new(ours.weight.clone(), ours.bias.clone());
        for shape in [&[2, 3, 4][..], &[70, 4], &[1, 4]] {
            let x = Var::from_tensor(&randn(&mut Rng::new(9), shape, DType::F64, &dev)?)?;
            let (y1, y2) = (ours.forward(x.as_tensor())?, theirs.forward(x.as_tensor())?);
            assert_eq!(y1.dims(), y2.dims());
            assert!(max_diff(&values(&y1), &values(&y2)) < 1e-13);
            let (g1, g2) = (y1.sqr()?.sum_all()?.backward()?, y2.sqr()?.sum_all()?.backward()?);
            for t in [x.as_tensor(), &ours.weight, ours.bias.as_ref().unwrap()] {
                assert!(max_diff(&values(g1.get(t).unwrap()), &values(g2.get(t).unwrap())) < 1e-12, "{shape:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn relative_scores_match_the_definition_and_candle() -> Result<()> {
        let dev = Device::Cpu;
        let (n, l, m) = (3, 4, 5);
        let mut rng = Rng::new(21);
        let s = Var::from_tensor(&randn(&mut rng, &[n, l, l], DType::F64, &dev)?)?;
        let qe = Var::from_tensor(&randn(&mut rng, &[n, l, 2 * m - 1], DType::F64, &dev)?)?;
        let out = add_relative_scores(s.as_tensor(), qe.as_tensor())?;
        let (sv, qv, ov) = (values(s.as_tensor()), values(qe.as_tensor()), values(&out));
        for i in 0..n {
            for a in 0..l {
                for b in 0..l {
                    let want = sv[(i * l + a) * l + b] + qv[(i * l + a) * (2 * m - 1) + a + m - 1 - b];
                    assert!((ov[(i * l + a) * l + b] - want).abs() < 1e-14);
                }
            }
        }
        // gradients against a gather-based composite (the fallback's formula; the global
        // switch is not flipped here, other tests run at the same time)
        let r = randn(&mut rng, &[n, l, l], DType::F64, &dev)?;
        let g = out.mul(&r)?.sum_all()?.backward()?;
        let idx: Vec<u32> = (0..l).flat_map(|q| (0..l).map(move |k| (q + m - 1 - k) as u32)).collect();
        let idx = Tensor::from_vec(idx, (1, l, l), &dev)?.broadcast_as((n, l, l))?.contiguous()?;
        let plain = s.as_tensor().add(&qe.as_tensor().gather(&idx, 2)?)?;
        assert!(max_diff(&values(&plain), &ov) < 1e-14);
        let gp = plain.mul(&r)?.sum_all()?.backward()?;
        for v in [&s, &qe] {
            assert!(max_diff(&values(g.get(v.as_tensor()).unwrap()), &values(gp.get(v.as_tensor()).unwrap())) < 1e-14);
        }
        assert!(add_relative_scores(s.as_tensor(), &Tensor::zeros((n, l, 5), DType::F64, &dev)?).is_err());
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(upsample_nearest(&x, 2).is_err());
        assert!(upsample_nearest(&x, 3).is_err());
    }
}
