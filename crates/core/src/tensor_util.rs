//! Small tensor helpers shared by processes and samplers.

use candle_core::{DType, Device, Result, Tensor};

/// A per-row coefficient tensor shaped `[B, 1, 1, ...]` to broadcast against `like` (`[B, ...]`),
/// in `like`'s dtype and device.
pub fn per_row(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = values.len();
    Tensor::from_vec(values.to_vec(), values.len(), like.device())?
        .to_dtype(like.dtype())?
        .reshape(shape)
}

/// `a * x + b * y` with per-row coefficients.
pub fn combine(a: &[f64], x: &Tensor, b: &[f64], y: &Tensor) -> Result<Tensor> {
    per_row(a, x)?.broadcast_mul(x)?.add(&per_row(b, y)?.broadcast_mul(y)?)
}

/// A `[B]` float32 tensor holding one timestep per row.
pub fn timesteps_tensor(t: &[f64], device: &Device) -> Result<Tensor> {
    Tensor::from_vec(t.iter().map(|v| *v as f32).collect::<Vec<_>>(), t.len(), device)
}

/// Wraps angles to [-pi, pi). The offset is computed without gradient, so gradients flow
/// through unchanged (the wrap is a piecewise translation).
pub fn wrap_angles(x: &Tensor) -> Result<Tensor> {
    let two_pi = 2.0 * std::f64::consts::PI;
    let turns = x.detach().affine(1.0 / two_pi, 0.5)?.floor()?;
    x.sub(&turns.affine(two_pi, 0.0)?)
}

/// A standard-normal tensor of `shape` drawn from `rng` (float32 draws, cast to `dtype`).
pub fn randn(
    rng: &mut crate::rng::Rng,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Tensor::from_vec(rng.normal_vec(n), shape, device)?.to_dtype(dtype)
}

/// Converts a scalar tensor to f64 whatever its float dtype.
pub fn scalar_f64(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}
