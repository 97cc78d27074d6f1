//! What the fused CPU kernels ([`super::conv`], [`super::norm`], [`super::ops`]) share: the
//! float trait they are generic over and the storage helper that finds their input data.

use candle_core::{bail, Layout, Result};
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

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

/// The contiguous slice of a storage/layout pair, or an error naming the op.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: inputs must be contiguous"),
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
    /// e^x.
    fn exp(self) -> Self;
    /// The error function (candle's implementation, as its `gelu_erf` uses).
    fn erf(self) -> Self;
}

impl Float for f32 {
    const ONE: f32 = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f32(self)
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
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
}
