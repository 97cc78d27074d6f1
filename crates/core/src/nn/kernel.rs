//! What the fused CPU kernels ([`super::conv`], [`super::norm`], [`super::ops`]) share: the
//! float trait they are generic over and the storage helper that finds their input data.

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};
use std::sync::Mutex;

/// Runs a kernel generic over [`Float`] on one or more CPU storages that are all f32 or all f64:
/// `dispatch!("op", (a => x, b => y), body)` binds `x` and `y` to the slices and evaluates
/// `body`, a `Result<(Vec<T>, Shape)>`, wrapping the vector back into a storage; mixed or other
/// dtypes are an error naming the op.
macro_rules! dispatch {
    ($op:expr, ($($s:expr => $v:ident),+), $body:expr) => {
        match ($($s,)+) {
            ($(candle_core::CpuStorage::F32($v),)+) => $body.map(|(out, shape)| (candle_core::CpuStorage::F32(out), shape)),
            ($(candle_core::CpuStorage::F64($v),)+) => $body.map(|(out, shape)| (candle_core::CpuStorage::F64(out), shape)),
            _ => candle_core::bail!(
                "{}: inputs must all be f32 or all f64, got {:?}",
                $op,
                [$(candle_core::backend::BackendStorage::dtype($s)),+]
            ),
        }
    };
}
pub(crate) use dispatch;

/// A zero-filled vector of `n` elements for an op's output, filled on all threads when it is
/// large. Filling a multi-megabyte output on the calling thread (as `vec![0; n]` does) cost a
/// UNet training step about 5%, with the worker threads waiting.
pub(crate) fn output_vec<T: Float>(n: usize) -> Vec<T> {
    use rayon::prelude::*;
    const CHUNK: usize = 64 << 10;
    if n <= CHUNK {
        return vec![T::default(); n];
    }
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n].par_chunks_mut(CHUNK).for_each(|chunk| {
        for x in chunk {
            x.write(T::default());
        }
    });
    // SAFETY: the capacity is at least `n` and its first `n` elements were written just above.
    unsafe { v.set_len(n) };
    v
}

/// The contiguous slice of a storage/layout pair, or an error naming the op.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: inputs must be contiguous"),
    }
}

/// What a forward custom op keeps for its backward: armed only when one of the op's inputs is
/// tracked (sampling keeps nothing), filled by the forward, and moved out by the first backward,
/// so that a second backward of the same graph finds it empty and recomputes.
#[derive(Debug)]
pub(crate) struct Stash<V>(Option<Mutex<Option<V>>>);

impl<V> Stash<V> {
    /// A stash armed when any of `inputs` is tracked by autograd.
    pub(crate) fn for_inputs(inputs: &[&Tensor]) -> Self {
        Stash(inputs.iter().any(|t| t.track_op()).then(|| Mutex::new(None)))
    }

    /// Whether the forward should keep its values.
    pub(crate) fn armed(&self) -> bool {
        self.0.is_some()
    }

    /// Keeps `value` (if armed; a poisoned lock keeps nothing, and the backward recomputes).
    pub(crate) fn put(&self, value: V) {
        if let Some(mut slot) = self.0.as_ref().and_then(|m| m.lock().ok()) {
            *slot = Some(value);
        }
    }

    /// The kept value, moved out.
    pub(crate) fn take(&self) -> Option<V> {
        self.0.as_ref().and_then(|m| m.lock().ok()?.take())
    }
}

/// The float types the kernels run on (f32 and f64).
pub(crate) trait Float:
    Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    /// 1.
    const ONE: Self;
    /// The nearest value of this type.
    fn from_f64(v: f64) -> Self;
    /// The value as f64 (exact).
    fn to_f64(self) -> f64;
    /// e^x: for f32 [`exp_f32`] (branch-free, so loops of it vectorise), for f64 the standard
    /// library's.
    fn exp(self) -> Self;
    /// The error function: for f32 [`erf_f32`], for f64 candle's (libm's).
    fn erf(self) -> Self;
    /// The values as a CPU storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// The values of a CPU storage of this type.
    fn of_storage(s: &CpuStorage) -> Option<&[Self]>;
    /// The slice as f32, where this type is f32 (for kernels written for f32 only).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// The mutable slice as f32, where this type is f32.
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

impl Float for f32 {
    const ONE: f32 = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        erf_f32(self)
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn of_storage(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl Float for f64 {
    const ONE: f64 = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn of_storage(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

/// e^x in f32 without branches or library calls, so that loops over it vectorise: Cephes'
/// `expf` (range reduction by ln 2 in two parts, a degree-5 polynomial; about 1 ulp on the
/// clamped range), with 2^n built from its bits. Inputs are clamped to [-87.3, 88.3]: below, the
/// result is about 1.2e-38 instead of a subnormal or 0; above, about 2.2e38 instead of infinity.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // n sits in the low bits of t's mantissa (offset by 2^22): shift it into the exponent.
    let n_bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    e * f32::from_bits((n_bits + 127).wrapping_shl(23) as u32)
}

/// The error function in f32 by Abramowitz and Stegun 7.1.26 (absolute error 1.5e-7 in exact
/// arithmetic, below 5e-7 in f32; the approximation PyTorch's vectorised CPU `erf` uses),
/// branch-free over [`exp_f32`].
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    (1.0 - poly * exp_f32(-a * a)).copysign(x)
}

/// Element-wise loops 16 lanes wide. The build targets x86-64-v3 (AVX2), so the compiler's
/// vectorised loops are 8 lanes wide; a function defined by [`wide_fn!`] calls its body (and the
/// helpers it calls, marked `#[inline(always)]`) compiled for AVX-512F too, on CPUs where
/// [`wide::available`] says so, and gets them 16 wide. Element order is unchanged (the sums keep
/// their 16 partials), so results are the same bit for bit.
pub(crate) mod wide {
    /// Whether this CPU has AVX-512F (checked once).
    pub(crate) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// `fn name<T: Float>(args) -> R = body_fn`: defines `name`, which calls `body_fn` (marked
/// `#[inline(always)]`) compiled for AVX-512F where this CPU has it (see [`wide`]). A closure
/// passed to a wrapper of this kind is not reliably inlined, hence a macro over named functions.
macro_rules! wide_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$t:ident: Float>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:ident) => {
        $(#[$m])*
        $vis fn $name<$t: Float>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if $crate::nn::kernel::wide::available() {
                #[target_feature(enable = "avx512f")]
                $(#[$m])*
                unsafe fn avx512<$t: Float>($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX-512F.
                return unsafe { avx512($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;

/// The sum of `f(x, y)` over the pairs of `xs` and `ys` as f64: 16 interleaved partial sums in
/// `T` over blocks of 256 elements (a loop the compiler vectorises), the blocks' sums added in
/// f64. The order is fixed, so the result is reproducible.
#[inline(always)]
pub(crate) fn sum_zip<T: Float>(xs: &[T], ys: &[T], f: impl Fn(T, T) -> T) -> f64 {
    const LANES: usize = 16;
    let mut total = 0.0f64;
    for (xb, yb) in xs.chunks(256).zip(ys.chunks(256)) {
        let mut acc = [T::default(); LANES];
        let (xc, yc) = (xb.chunks_exact(LANES), yb.chunks_exact(LANES));
        let tail: f64 = xc.remainder().iter().zip(yc.remainder()).map(|(&x, &y)| f(x, y).to_f64()).sum();
        for (x, y) in xc.zip(yc) {
            for ((a, &x), &y) in acc.iter_mut().zip(x).zip(y) {
                *a += f(x, y);
            }
        }
        total += acc.iter().map(|a| a.to_f64()).sum::<f64>() + tail;
    }
    total
}

/// The sum of `f` over `xs` as f64, see [`sum_zip`].
#[inline(always)]
pub(crate) fn sum_by<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> f64 {
    sum_zip(xs, xs, |x, _| f(x))
}

/// The largest element of a non-empty slice (16 interleaved maxima, so the loop vectorises).
#[inline(always)]
pub(crate) fn max_of<T: Float>(xs: &[T]) -> T {
    let mut acc = [xs[0]; 16];
    let chunks = xs.chunks_exact(16);
    let mut max = chunks.remainder().iter().fold(xs[0], |m, &v| if v > m { v } else { m });
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    for a in acc {
        max = if a > max { a } else { max };
    }
    max
}

wide_fn! {
    /// Softmax of one non-empty row in place (max-subtracted; the sum as in [`sum_by`]).
    pub(crate) fn softmax_row<T: Float>(row: &mut [T]) -> () = softmax_row_body
}

/// [`softmax_row`]'s body.
#[inline(always)]
fn softmax_row_body<T: Float>(row: &mut [T]) {
    let max = max_of(row);
    row.iter_mut().for_each(|v| *v = (*v - max).exp());
    let inv = T::from_f64(1.0 / sum_by(row, |v| v));
    row.iter_mut().for_each(|v| *v = *v * inv);
}

wide_fn! {
    /// Softmax's backward for one row in place: with `p` the softmax output and `g` the gradient
    /// of the output, `g = scale * p * (g - sum(g * p))`.
    pub(crate) fn softmax_grad_row<T: Float>(p: &[T], g: &mut [T], scale: T) -> () = softmax_grad_row_body
}

/// [`softmax_grad_row`]'s body.
#[inline(always)]
fn softmax_grad_row_body<T: Float>(p: &[T], g: &mut [T], scale: T) {
    let dot = T::from_f64(sum_zip(g, p, |g, p| g * p));
    g.iter_mut().zip(p).for_each(|(g, &p)| *g = scale * p * (*g - dot));
}

/// Splits the flat output of a backward op into gradients shaped like `like`, in order (views,
/// no copies).
pub(crate) fn unpack(packed: &Tensor, like: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut at = 0;
    like.iter()
        .map(|t| {
            let n = t.elem_count();
            let part = packed.narrow(0, at, n)?.reshape(t.shape());
            at += n;
            part
        })
        .collect()
}

/// A matrix view: `rows x cols` elements at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// A `rows x cols` matrix whose rows are `rs` apart (a column block of a wider matrix).
    pub(crate) fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        Self { data, rows, cols, rs, cs: 1 }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

impl<'a, T: Float> Mat<'a, T> {
    /// The same view of f32 data, where `T` is f32.
    pub(crate) fn as_f32(self) -> Option<Mat<'a, f32>> {
        T::as_f32(self.data).map(|data| Mat { data, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs })
    }
}

/// `dst = a b`, or `dst += a b` with `accumulate`, for a row-major `dst` of `a.rows x b.cols`;
/// single-threaded (callers parallelise over images).
pub(crate) fn matmul<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool) {
    matmul_strided(dst, b.cols, a, b, accumulate)
}

/// [`matmul`] into a destination whose rows are `dst_rs` apart.
pub(crate) fn matmul_strided<T: Float>(dst: &mut [T], dst_rs: usize, a: Mat<T>, b: Mat<T>, accumulate: bool) {
    gemm_into(dst, (dst_rs, 1), a, b, accumulate, gemm::Parallelism::None)
}

/// [`matmul`] into a destination whose rows are `dst_rs` and columns `dst_cs` apart.
pub(crate) fn matmul_into_strides<T: Float>(dst: &mut [T], (dst_rs, dst_cs): (usize, usize), a: Mat<T>, b: Mat<T>, accumulate: bool) {
    gemm_into(dst, (dst_rs, dst_cs), a, b, accumulate, gemm::Parallelism::None)
}

/// [`matmul`] on all of rayon's threads, which split the destination between them (each entry
/// is still summed by one thread in a fixed order, so the result does not depend on their
/// number).
pub(crate) fn matmul_parallel<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool) {
    gemm_into(dst, (b.cols, 1), a, b, accumulate, gemm::Parallelism::Rayon(0))
}

/// `dst (+)= a b` by the gemm crate, `dst[r * dst_rs + c * dst_cs]`; the destination's entries
/// must not overlap (`n * dst_cs <= dst_rs` or `m * dst_rs <= dst_cs`).
fn gemm_into<T: Float>(dst: &mut [T], (dst_rs, dst_cs): (usize, usize), a: Mat<T>, b: Mat<T>, accumulate: bool, parallelism: gemm::Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner sizes differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(n * dst_cs <= dst_rs || m * dst_rs <= dst_cs, "matmul: destination entries overlap");
    assert!((m - 1) * dst_rs + (n - 1) * dst_cs < dst.len(), "matmul: destination too small");
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                for col in 0..n {
                    dst[row * dst_rs + col * dst_cs] = T::default();
                }
            }
        }
        return;
    }
    for v in [&a, &b] {
        assert!((v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len(), "matmul: view out of bounds");
    }
    // SAFETY: every index the gemm reads or writes was bounds-checked above; the views and the
    // destination are distinct borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64) - want).abs() / want);
            x += 0.001_7;
        }
        assert!(worst < 3e-7, "exp_f32: worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1e4) < 2e-38 && exp_f32(-1e4) >= 0.0);
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn erf_f32_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max(((erf_f32(x) as f64) - candle_core::cpu::erf::erf_f64(x as f64)).abs());
            x += 0.000_9;
        }
        assert!(worst < 6e-7, "erf_f32: worst absolute error {worst:e}");
        assert!(erf_f32(0.0).abs() < 1e-7);
        assert_eq!(erf_f32(-0.5), -erf_f32(0.5));
    }
}
