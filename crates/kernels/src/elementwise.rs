//! Element-wise and row-wise CPU kernels with hand-written backward passes, for operations
//! that candle 0.11.1 composes from many single-threaded passes (or gets wrong):
//!
//! - [`softmax_last`]: softmax over the last axis with backward `y * (g - sum(g * y))`;
//!   candle's `softmax_last_dim` has no backward pass at all.
//! - [`gelu_erf`]: the exact (erf) GELU with backward `g (Phi(x) + x phi(x))` in one pass
//!   (candle composes its gradient from several passes and rounds 1/sqrt(2 pi) to 6 digits).
//! - [`add_bias`]: adds a per-channel bias along one axis. With `broadcast_add` the bias
//!   gradient is a sum over the other axes, which candle 0.11.1 computes with a per-element
//!   index division unless the summed axes are the trailing ones (every linear layer's bias).
//! - [`add`]: residual sums on all threads (candle's element-wise ops run on the calling thread
//!   here, while the worker threads wait).
//!
//! Off the CPU (or for dtypes other than f32/f64) they fall back to compositions of candle ops
//! with the same result.

use crate::machinery::{
    contiguous, dispatch, output_vec, rows_per_task, softmax_grad_row, softmax_row, wide_fn, Float,
};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Softmax over the last axis (rows of a contiguous tensor).
#[derive(Clone, Copy, Debug)]
struct Softmax;

/// The softmax's backward: from the output `y` and its gradient `g`, `y * (g - sum(g * y))`.
#[derive(Clone, Copy, Debug)]
struct SoftmaxBackward;

impl Softmax {
    fn run<T: Float>(&self, x: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let x = contiguous(x, layout, "softmax")?;
        let n = layout.shape().dims().last().copied().unwrap_or(1);
        let mut out = output_vec(x.len());
        if n > 0 && !x.is_empty() {
            let chunk = n * rows_per_task(n);
            out.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .for_each(|(dst, src)| {
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
        let (y, g) = (
            contiguous(y, yl, "softmax backward")?,
            contiguous(g, gl, "softmax backward")?,
        );
        if yl.shape() != gl.shape() {
            bail!(
                "softmax backward: output {:?} and gradient {:?} differ",
                yl.shape(),
                gl.shape()
            );
        }
        let n = yl.shape().dims().last().copied().unwrap_or(1);
        let mut out = output_vec(y.len());
        if n > 0 && !y.is_empty() {
            let chunk = n * rows_per_task(n);
            out.par_chunks_mut(chunk)
                .zip(y.par_chunks(chunk).zip(g.par_chunks(chunk)))
                .for_each(|(dst, (ys, gs))| {
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
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax-last-backward"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("softmax");
        dispatch!("softmax backward", (y => y, g => g), self.run(y, yl, g, gl))
    }
}

/// Softmax over the last axis, differentiable; row sums in f64.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if crate::switches::use_fused(x) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    // the max is subtracted without gradient: it cancels exactly
    let e = x
        .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// GELU with the exact normal CDF: `x Phi(x)`.
#[derive(Clone, Copy, Debug)]
struct Gelu;

/// GELU's backward from the input `x` and the output gradient `g`.
#[derive(Clone, Copy, Debug)]
struct GeluBackward;

/// The contiguous data of two inputs of one shape, or an error naming the op and both shapes.
fn same_shape<'a, T>(
    a: (&'a [T], &Layout),
    b: (&'a [T], &Layout),
    op: &str,
) -> Result<(&'a [T], &'a [T])> {
    if a.1.shape() != b.1.shape() {
        bail!(
            "{op}: shapes {:?} and {:?} differ",
            a.1.shape(),
            b.1.shape()
        );
    }
    Ok((contiguous(a.0, a.1, op)?, contiguous(b.0, b.1, op)?))
}

/// Applies `chunk(out, a, b)` over matching chunks of two equally shaped contiguous inputs (or
/// `a` twice), in parallel.
fn map_par<T: Float>(
    a: &[T],
    b: Option<&[T]>,
    chunk: impl Fn(&mut [T], &[T], &[T]) + Sync,
) -> Vec<T> {
    let mut out = output_vec(a.len());
    const CHUNK: usize = 16_384;
    let b = b.unwrap_or(a);
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (x, y))| chunk(o, x, y));
    out
}

#[inline(always)]
fn gelu<T: Float>(x: T) -> T {
    let half = T::from_f64(0.5);
    x * half * (T::from_f64(1.0) + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

#[inline(always)]
fn gelu_grad<T: Float>(x: T, g: T) -> T {
    let cdf = T::from_f64(0.5)
        * (T::from_f64(1.0) + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
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
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?,
        ))
    }
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
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
    if crate::switches::use_fused(x) {
        return x.contiguous()?.apply_op1(Gelu);
    }
    x.gelu_erf()
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
    Ok((
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    ))
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
        let (xs, bs) = (
            contiguous(x.0, x.1, "add_bias")?,
            contiguous(b.0, b.1, "add_bias")?,
        );
        let (_, c, inner) = split_at_axis(x.1.shape(), self.axis)?;
        if bs.len() != c {
            bail!(
                "add_bias: bias of {} entries for axis {} of size {c} in {:?}",
                bs.len(),
                self.axis,
                x.1.shape().dims()
            );
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
pub(crate) fn channel_sums<T: Float>(g: &[T], outer: usize, c: usize, inner: usize) -> Vec<T> {
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

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("bias add");
        dispatch!("add_bias", (x => x, b => b), self.run((x, xl), (b, bl)))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad
            .contiguous()?
            .apply_op1_no_bwd(&ChannelSum { axis: self.axis })?;
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
    if crate::switches::use_fused(x) && x.dtype() == bias.dtype() {
        return x
            .contiguous()?
            .apply_op2(&bias.contiguous()?, AddBias { axis });
    }
    let mut shape = vec![1; x.rank()];
    if axis >= shape.len() {
        bail!(
            "add_bias: axis {axis} out of range for shape {:?}",
            x.dims()
        );
    }
    shape[axis] = bias.elem_count();
    x.broadcast_add(&bias.reshape(shape)?)
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

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("add");
        dispatch!("add", (a => a, b => b), same_shape((a, al), (b, bl), "add").map(|(a, b)| (map_par(a, Some(b), add_chunk), al.shape().clone())))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.clone())))
    }
}

/// `a + b` for tensors of one shape (a residual connection), differentiable. On the CPU in
/// f32/f64 it runs on all threads (candle's element-wise ops run on the calling thread here,
/// see `tune_threads`); otherwise it is candle's `add`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::switches::use_fused(a)
        && a.shape() == b.shape()
        && a.dtype() == b.dtype()
        && a.device().same_device(b.device())
    {
        return a.contiguous()?.apply_op2(&b.contiguous()?, Sum);
    }
    a.add(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        assert_gradient_matches_differences, assert_matches_reference, max_diff, randn, values,
        TestRng,
    };
    use candle_core::{DType, Device, Var};

    /// Softmax over the last axis as candle ops (the fallback's formula).
    fn composite_softmax(x: &Tensor) -> Result<Tensor> {
        let e = x
            .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
            .exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }

    #[test]
    fn forward_and_gradients_match_candle_composites() -> Result<()> {
        assert_matches_reference(
            "softmax",
            &[3, 2, 7],
            0,
            &softmax_last,
            &composite_softmax,
            None,
        )?;
        assert_matches_reference(
            "softmax",
            &[5, 1],
            1,
            &softmax_last,
            &composite_softmax,
            None,
        )?;
        // candle's own gelu_erf gradient rounds 1/sqrt(2 pi) to 6 digits (the finite
        // difference test below checks ours exactly)
        assert_matches_reference("gelu", &[4, 9], 4, &gelu_erf, &|x| x.gelu_erf(), Some(1e-6))
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        assert_gradient_matches_differences("softmax", &[2, 6], 10, &softmax_last)?;
        assert_gradient_matches_differences("gelu", &[3, 4], 13, &gelu_erf)
    }

    #[test]
    fn bias_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, axis) in [
            (vec![3, 4, 5], 1),
            (vec![70, 3], 1),
            (vec![2, 3, 2, 2], 1),
            (vec![4, 6], 0),
        ] {
            let mut rng = TestRng::new(shape.len() as u64 + axis as u64);
            let x = Var::from_tensor(&randn(&mut rng, &shape, DType::F64, &dev)?)?;
            let b = Var::from_tensor(&randn(&mut rng, &[shape[axis]], DType::F64, &dev)?)?;
            let y = add_bias(x.as_tensor(), b.as_tensor(), axis)?;
            let mut bshape = vec![1; shape.len()];
            bshape[axis] = shape[axis];
            let want = x
                .as_tensor()
                .broadcast_add(&b.as_tensor().reshape(bshape)?)?;
            assert!(max_diff(&values(&y)?, &values(&want)?) < 1e-14);
            let r = randn(&mut rng, &shape, DType::F64, &dev)?;
            let (g, gw) = (
                y.mul(&r)?.sum_all()?.backward()?,
                want.mul(&r)?.sum_all()?.backward()?,
            );
            for v in [&x, &b] {
                let d = max_diff(
                    &values(g.get(v.as_tensor()).unwrap())?,
                    &values(gw.get(v.as_tensor()).unwrap())?,
                );
                assert!(d < 1e-12, "{shape:?} axis {axis}: gradient differs by {d}");
            }
        }
        Ok(())
    }
}
