//! Reductions over a row in a fixed order of 16 interleaved lanes (loops the compiler
//! vectorises, reproducible results), and softmax of a row with its backward.

use super::float::Float;
use super::wide::wide_fn;

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
        let tail: f64 = xc
            .remainder()
            .iter()
            .zip(yc.remainder())
            .map(|(&x, &y)| f(x, y).to_f64())
            .sum();
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
    let mut max = chunks
        .remainder()
        .iter()
        .fold(xs[0], |m, &v| if v > m { v } else { m });
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
    g.iter_mut()
        .zip(p)
        .for_each(|(g, &p)| *g = scale * p * (*g - dot));
}
