//! Helpers shared by the network tests: flattening to f64 and finite-difference gradients.

use candle_core::{DType, Result, Tensor, Var};

/// All entries of `t` as f64, in row-major order.
pub(crate) fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Largest |analytic - numeric| over the largest |numeric|.
pub(crate) fn rel_err(analytic: &[f64], numeric: &[f64]) -> f64 {
    assert_eq!(analytic.len(), numeric.len());
    let diff = analytic.iter().zip(numeric).map(|(a, n)| (a - n).abs()).fold(0.0, f64::max);
    let scale = numeric.iter().map(|n| n.abs()).fold(0.0, f64::max);
    assert!(scale > 1e-8, "numeric gradient is (nearly) zero");
    diff / scale
}

/// Central differences of `loss` in the entries `idx` of `var`, restoring it afterwards.
pub(crate) fn numeric_grad(var: &Var, idx: &[usize], loss: &dyn Fn() -> Result<f64>) -> Result<Vec<f64>> {
    let eps = 1e-5;
    let orig = var.as_tensor().copy()?;
    let base = values(&orig)?;
    let mut out = Vec::new();
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
