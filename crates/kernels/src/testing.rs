//! Helpers for tests of ops and layers: flattening tensors to `f64`, checking backprop against
//! central finite differences, and a small seeded generator of test inputs. Compiled for this
//! crate's own tests and, with the `testing` feature, for other crates' tests.

use candle_core::{DType, Device, Result, Tensor, Var};

/// Every entry of `t`, flattened and converted to `f64`.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Largest |analytic - numeric| over the largest |numeric|.
pub fn rel_err(analytic: &[f64], numeric: &[f64]) -> f64 {
    assert_eq!(analytic.len(), numeric.len(), "gradient lengths differ");
    let diff = analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| (a - n).abs())
        .fold(0.0, f64::max);
    let scale = numeric.iter().map(|n| n.abs()).fold(0.0, f64::max);
    assert!(scale > 1e-8, "numeric gradient is (nearly) zero");
    diff / scale
}

/// Central differences (step 1e-5) of `loss` in the entries `idx` of `var`, restoring it
/// afterwards. Meant for `f64` variables.
pub fn numeric_grad(var: &Var, idx: &[usize], loss: &dyn Fn() -> Result<f64>) -> Result<Vec<f64>> {
    let eps = 1e-5;
    let orig = var.as_tensor().copy()?;
    let base = values(&orig)?;
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx {
        let at = |delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, orig.shape(), orig.device())?.to_dtype(orig.dtype())?)?;
            loss()
        };
        out.push((at(eps)? - at(-eps)?) / (2.0 * eps));
    }
    var.set(&orig)?;
    Ok(out)
}

/// A seeded generator of test inputs (O'Neill's PCG32, XSH-RR; uniform draws with 53 bits,
/// normal ones by Box-Muller). For tests only: no model or training run draws from it.
#[derive(Clone, Debug)]
pub struct TestRng {
    state: u64,
    inc: u64,
}

impl TestRng {
    /// A generator seeded from `seed` (PCG's seeding: one step, the seed added, another step).
    pub fn new(seed: u64) -> Self {
        let mut rng = TestRng {
            state: 0,
            inc: (0xDA3E_39CB_94B9_5BDB << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        let bits = ((self.next_u32() as u64) << 21) ^ (self.next_u32() as u64 >> 11);
        bits as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A standard-normal tensor of `shape` drawn from `rng` (float32 draws, cast to `dtype`).
pub fn randn(rng: &mut TestRng, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.normal() as f32)
        .collect();
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// Largest |a - b| over two lists of one length.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Checks `op` against `reference`, the composition of candle ops it replaces, on a random
/// input of `shape` (standard normal times 3, drawn from `seed`) in f32 and in f64: the outputs
/// agree to 2e-6 and 1e-13 and the gradients of a random projection of them to ten times that
/// (or to `gradient_tol` where given).
pub fn assert_matches_reference(
    name: &str,
    shape: &[usize],
    seed: u64,
    op: &dyn Fn(&Tensor) -> Result<Tensor>,
    reference: &dyn Fn(&Tensor) -> Result<Tensor>,
    gradient_tol: Option<f64>,
) -> Result<()> {
    let dev = Device::Cpu;
    for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-13)] {
        let mut rng = TestRng::new(seed);
        let x = Var::from_tensor(&randn(&mut rng, shape, dtype, &dev)?.affine(3.0, 0.0)?)?;
        let y = op(x.as_tensor())?;
        let want = reference(x.as_tensor())?;
        assert_eq!(y.dims(), want.dims(), "{name}");
        assert!(
            max_diff(&values(&y)?, &values(&want)?) < tol,
            "{name} {dtype:?} forward"
        );
        let r = randn(&mut rng, y.dims(), dtype, &dev)?;
        let g = y.mul(&r)?.sum_all()?.backward()?;
        let g_ref = want.mul(&r)?.sum_all()?.backward()?;
        let (a, b) = (
            values(g.get(x.as_tensor()).unwrap())?,
            values(g_ref.get(x.as_tensor()).unwrap())?,
        );
        let gtol = gradient_tol.unwrap_or(10.0 * tol);
        assert!(
            max_diff(&a, &b) < gtol,
            "{name} {dtype:?} gradient: {}",
            max_diff(&a, &b)
        );
    }
    Ok(())
}

/// Checks the gradient of `op` at a random f64 input of `shape` (drawn from `seed`) against
/// central differences (step 1e-6) of a random projection of its output, entry by entry, to
/// 1e-7.
pub fn assert_gradient_matches_differences(
    name: &str,
    shape: &[usize],
    seed: u64,
    op: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    let dev = Device::Cpu;
    let mut rng = TestRng::new(seed);
    let x0 = values(&randn(&mut rng, shape, DType::F64, &dev)?)?;
    let x = Var::from_tensor(&Tensor::from_vec(x0.clone(), shape, &dev)?)?;
    let y = op(x.as_tensor())?;
    let r = randn(&mut rng, y.dims(), DType::F64, &dev)?;
    let analytic = values(
        y.mul(&r)?
            .sum_all()?
            .backward()?
            .get(x.as_tensor())
            .unwrap(),
    )?;
    let loss = |v: Vec<f64>| -> Result<f64> {
        op(&Tensor::from_vec(v, shape, &dev)?)?
            .mul(&r)?
            .sum_all()?
            .to_scalar::<f64>()
    };
    for i in 0..x0.len() {
        let (mut up, mut down) = (x0.clone(), x0.clone());
        up[i] += 1e-6;
        down[i] -= 1e-6;
        let numeric = (loss(up)? - loss(down)?) / 2e-6;
        assert!(
            (numeric - analytic[i]).abs() < 1e-7,
            "{name} entry {i}: {numeric} vs {}",
            analytic[i]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rng_is_seeded_and_standard_normal() {
        assert_eq!(TestRng::new(3).next_u32(), TestRng::new(3).next_u32());
        assert_ne!(TestRng::new(3).next_u32(), TestRng::new(4).next_u32());
        let mut rng = TestRng::new(1);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "mean {mean}, variance {var}"
        );
        assert!((0..1000)
            .map(|_| rng.uniform())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
