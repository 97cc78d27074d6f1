//! Matrix views and products on the gemm crate (the kernels candle itself uses).

use super::float::Float;

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
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// A `rows x cols` matrix whose rows are `rs` apart (a column block of a wider matrix).
    pub(crate) fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

impl<'a, T: Float> Mat<'a, T> {
    /// The same view of f32 data, where `T` is f32.
    pub(crate) fn as_f32(self) -> Option<Mat<'a, f32>> {
        T::as_f32(self.data).map(|data| Mat {
            data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        })
    }
}

/// `dst = a b`, or `dst += a b` with `accumulate`, for a row-major `dst` of `a.rows x b.cols`;
/// single-threaded (callers parallelise over images).
pub(crate) fn matmul<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool) {
    matmul_strided(dst, b.cols, a, b, accumulate)
}

/// [`matmul`] into a destination whose rows are `dst_rs` apart.
pub(crate) fn matmul_strided<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
) {
    gemm_into(dst, (dst_rs, 1), a, b, accumulate, gemm::Parallelism::None)
}

/// [`matmul`] into a destination whose rows are `dst_rs` and columns `dst_cs` apart.
pub(crate) fn matmul_into_strides<T: Float>(
    dst: &mut [T],
    (dst_rs, dst_cs): (usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
) {
    gemm_into(
        dst,
        (dst_rs, dst_cs),
        a,
        b,
        accumulate,
        gemm::Parallelism::None,
    )
}

/// [`matmul`] on all of rayon's threads, which split the destination between them (each entry
/// is still summed by one thread in a fixed order, so the result does not depend on their
/// number).
pub(crate) fn matmul_parallel<T: Float>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool) {
    gemm_into(
        dst,
        (b.cols, 1),
        a,
        b,
        accumulate,
        gemm::Parallelism::Rayon(0),
    )
}

/// `dst (+)= a b` by the gemm crate, `dst[r * dst_rs + c * dst_cs]`; the destination's entries
/// must not overlap (`n * dst_cs <= dst_rs` or `m * dst_rs <= dst_cs`).
fn gemm_into<T: Float>(
    dst: &mut [T],
    (dst_rs, dst_cs): (usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner sizes differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n * dst_cs <= dst_rs || m * dst_rs <= dst_cs,
        "matmul: destination entries overlap"
    );
    assert!(
        (m - 1) * dst_rs + (n - 1) * dst_cs < dst.len(),
        "matmul: destination too small"
    );
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
        assert!(
            (v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len(),
            "matmul: view out of bounds"
        );
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
