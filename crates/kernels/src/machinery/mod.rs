//! What the fused CPU kernels share: how a custom op finds its input data ([`contiguous`]),
//! runs a kernel generic over [`Float`] on f32 or f64 storages ([`dispatch!`]), allocates its
//! output ([`output_vec`]), keeps values for its backward pass ([`Stash`]) and splits a packed
//! backward result into gradients ([`unpack`]); and, in submodules, the float trait, the
//! AVX-512 copies of element-wise loops, row reductions and softmax rows, and matrix products.

use candle_core::{bail, Layout, Result, Tensor};
use std::sync::Mutex;

pub(crate) mod float;
pub(crate) mod matmul;
pub(crate) mod rows;
pub(crate) mod wide;

pub use float::Float;
pub(crate) use matmul::{matmul, matmul_into_strides, matmul_parallel, matmul_strided, Mat};
pub(crate) use rows::{softmax_grad_row, softmax_row, sum_by, sum_zip};
pub(crate) use wide::{wide_fn, LANES};

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
pub fn output_vec<T: Float>(n: usize) -> Vec<T> {
    use rayon::prelude::*;
    const CHUNK: usize = 64 << 10;
    if n <= CHUNK {
        return vec![T::default(); n];
    }
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| {
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

/// Rows per parallel task of a row-wise op: enough work (about 16K elements) to amortise the
/// scheduling.
pub(crate) fn rows_per_task(row: usize) -> usize {
    (16_384 / row.max(1)).max(1)
}

/// What a forward custom op keeps for its backward: armed only when one of the op's inputs is
/// tracked (sampling keeps nothing), filled by the forward, and moved out by the first backward,
/// so that a second backward of the same graph finds it empty and recomputes.
#[derive(Debug)]
pub(crate) struct Stash<V>(Option<Mutex<Option<V>>>);

impl<V> Stash<V> {
    /// A stash armed when any of `inputs` is tracked by autograd.
    pub(crate) fn for_inputs(inputs: &[&Tensor]) -> Self {
        Stash(
            inputs
                .iter()
                .any(|t| t.track_op())
                .then(|| Mutex::new(None)),
        )
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
