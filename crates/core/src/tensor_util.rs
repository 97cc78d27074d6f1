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

/// Spherical linear interpolation from `a` (t = 0) to `b` (t = 1), as Riffusion interpolates
/// its seeds' noise (`riffusion/util/torch_util.py: slerp`): along the great circle between the
/// two vectors, so a blend of two normal draws keeps a normal draw's norm; nearly parallel
/// vectors (|cos| > 0.9995, Riffusion's threshold) are blended linearly.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "slerp of vectors of different lengths");
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let cos = dot / (norm(a) * norm(b));
    let (s0, s1) = if !cos.is_finite() || cos.abs() > 0.9995 {
        (1.0 - t, t)
    } else {
        let theta = cos.acos();
        (
            ((1.0 - t) * theta).sin() / theta.sin(),
            (t * theta).sin() / theta.sin(),
        )
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| (s0 * *x as f64 + s1 * *y as f64) as f32)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_ends_and_norm() {
        let mut r = crate::rng::Rng::new(3);
        let (a, b) = (r.normal_vec(4096), r.normal_vec(4096));
        assert_eq!(slerp(&a, &b, 0.0), a);
        let end = slerp(&a, &b, 1.0);
        assert!(end.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        // two independent draws are nearly orthogonal: halfway along the arc keeps the norm,
        // where the straight line's midpoint would shrink it by sqrt(2)
        let mid = slerp(&a, &b, 0.5);
        let ratio = norm(&mid) / (0.5 * (norm(&a) + norm(&b)));
        assert!((ratio - 1.0).abs() < 0.03, "norm ratio {ratio}");
        // parallel vectors blend linearly
        let twice: Vec<f32> = a.iter().map(|x| 2.0 * x).collect();
        let m = slerp(&a, &twice, 0.5);
        assert!(m.iter().zip(&a).all(|(x, y)| (x - 1.5 * y).abs() < 1e-5));
    }
}
