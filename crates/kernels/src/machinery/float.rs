//! The float types the kernels are generic over (f32 and f64), and branch-free f32 `exp` and
//! `erf` that the compiler can vectorise.

use candle_core::CpuStorage;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// Only f32 and f64 implement [`Float`].
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The float types the kernels run on (f32 and f64; sealed).
pub trait Float:
    sealed::Sealed
    + Copy
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
    /// e^x: for f32 `exp_f32` (branch-free, so loops of it vectorise), for f64 the standard
    /// library's.
    fn exp(self) -> Self;
    /// The error function: for f32 `erf_f32`, for f64 candle's (libm's).
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
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp_f32(-a * a)).copysign(x)
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
            worst =
                worst.max(((erf_f32(x) as f64) - candle_core::cpu::erf::erf_f64(x as f64)).abs());
            x += 0.000_9;
        }
        assert!(worst < 6e-7, "erf_f32: worst absolute error {worst:e}");
        assert!(erf_f32(0.0).abs() < 1e-7);
        assert_eq!(erf_f32(-0.5), -erf_f32(0.5));
    }
}
