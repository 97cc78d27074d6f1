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
    per_row(a, x)?
        .broadcast_mul(x)?
        .add(&per_row(b, y)?.broadcast_mul(y)?)
}

/// A `[B]` float32 tensor holding one timestep per row.
pub fn timesteps_tensor(t: &[f64], device: &Device) -> Result<Tensor> {
    Tensor::from_vec(
        t.iter().map(|v| *v as f32).collect::<Vec<_>>(),
        t.len(),
        device,
    )
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

/// One-hot encoding of `[...]` u32 ids as `[..., classes]` float32 (ids at or above `classes`
/// give an all-zero row).
pub fn one_hot(ids: &Tensor, classes: usize) -> Result<Tensor> {
    let mut shape = ids.dims().to_vec();
    let flat = ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let mut data = vec![0f32; flat.len() * classes];
    for (i, &id) in flat.iter().enumerate() {
        if (id as usize) < classes {
            data[i * classes + id as usize] = 1.0;
        }
    }
    shape.push(classes);
    Tensor::from_vec(data, shape, ids.device())
}

/// The `[B, ...]` float32 padding mask of a batch whose items have shape `item` and whose rows
/// have `lengths[i]` real positions along item axis `axis`: 1 at real positions, 0 at padding,
/// with size-1 axes everywhere but the batch and length axes (so it broadcasts against the
/// batch).
pub fn position_mask(
    lengths: &[usize],
    item: &[usize],
    axis: usize,
    device: &Device,
) -> Result<Tensor> {
    let l = item[axis];
    let mut shape = vec![1usize; item.len() + 1];
    shape[0] = lengths.len();
    shape[axis + 1] = l;
    length_mask(lengths, l, device)?.reshape(shape)
}

/// The `[B, L]` float32 padding mask a denoiser receives ([`crate::denoiser::Inputs::mask`]):
/// row `i` is 1 at its first `lengths[i]` of `l` positions and 0 after.
pub fn length_mask(lengths: &[usize], l: usize, device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(lengths.len() * l);
    for &n in lengths {
        data.extend((0..l).map(|p| if p < n { 1f32 } else { 0.0 }));
    }
    Tensor::from_vec(data, (lengths.len(), l), device)
}
