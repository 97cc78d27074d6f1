//! Shared helpers for sugarcube's cross-crate tests: loading the reference fixtures under
//! `tests/fixtures/` and measuring how far a result lies from a reference.
//!
//! Tests read fixtures only from this crate's directory (`CARGO_MANIFEST_DIR`), never from
//! outside the repository.

use serde_json::Value;
use std::path::PathBuf;

/// The path of a fixture file, relative to `tests/fixtures/` (e.g. `"reference/schedules.json"`).
pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Parses a JSON fixture under `tests/fixtures/`, panicking with the path on failure.
pub fn load_fixture(rel: &str) -> Value {
    let path = fixture_path(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("cannot parse fixture {}: {e}", path.display()))
}

/// Loads one of the diffusers reference files in `tests/fixtures/reference/`.
pub fn load_reference(name: &str) -> Value {
    load_fixture(&format!("reference/{name}"))
}

/// Flattens a number or a nested list of numbers into a `Vec<f64>` in row-major order.
pub fn flatten(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    flatten_into(v, &mut out);
    out
}

fn flatten_into(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flatten_into(x, out)),
        Value::Number(n) => out.push(n.as_f64().expect("number fits f64")),
        other => panic!("expected a number or a list of numbers, got {other}"),
    }
}

/// The shape of a nested list (lengths along each axis, outermost first).
pub fn shape_of(v: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    shape
}

/// A JSON number as `f64`, panicking when it is not one.
pub fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// The reference files' trajectory error measure: `max_i |a_i - r_i| / max(|r_i|, 1)`.
pub fn scaled_err(a: &[f64], r: &[f64]) -> f64 {
    assert_eq!(
        a.len(),
        r.len(),
        "length mismatch: {} vs {}",
        a.len(),
        r.len()
    );
    a.iter()
        .zip(r)
        .map(|(a, r)| (a - r).abs() / r.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Largest relative error `|a_i - r_i| / |r_i|`; where `r_i == 0` only an exact match counts
/// as error 0 (anything else is infinite).
pub fn max_rel_err(a: &[f64], r: &[f64]) -> f64 {
    assert_eq!(
        a.len(),
        r.len(),
        "length mismatch: {} vs {}",
        a.len(),
        r.len()
    );
    a.iter()
        .zip(r)
        .map(|(a, r)| {
            let d = (a - r).abs();
            if d == 0.0 {
                0.0
            } else if *r == 0.0 {
                f64::INFINITY
            } else {
                d / r.abs()
            }
        })
        .fold(0.0, f64::max)
}

/// Largest absolute error `|a_i - r_i|`.
pub fn max_abs_err(a: &[f64], r: &[f64]) -> f64 {
    assert_eq!(
        a.len(),
        r.len(),
        "length mismatch: {} vs {}",
        a.len(),
        r.len()
    );
    a.iter()
        .zip(r)
        .map(|(a, r)| (a - r).abs())
        .fold(0.0, f64::max)
}

/// Whether every element satisfies `|a_i - r_i| <= abs + rel * |r_i|` (numpy's `allclose`);
/// on failure returns the worst index with its values.
pub fn check_close(a: &[f64], r: &[f64], abs: f64, rel: f64) -> Result<(), String> {
    assert_eq!(
        a.len(),
        r.len(),
        "length mismatch: {} vs {}",
        a.len(),
        r.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    for (i, (x, y)) in a.iter().zip(r).enumerate() {
        let (d, allowed) = ((x - y).abs(), abs + rel * y.abs());
        if d <= allowed {
            continue;
        }
        // NaN counts as the worst excess
        let excess = if d.is_nan() {
            f64::INFINITY
        } else {
            d - allowed
        };
        if worst.is_none_or(|(_, w)| excess > w) {
            worst = Some((i, excess));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "index {i}: got {:e}, reference {:e} (abs err {:e}, allowed {:e} + {:e} * |ref|)",
            a[i],
            r[i],
            (a[i] - r[i]).abs(),
            abs,
            rel
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flatten_is_row_major() {
        let v = json!([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]);
        assert_eq!(flatten(&v), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(shape_of(&v), vec![2, 2, 2]);
        assert_eq!(flatten(&json!(3)), vec![3.0]);
    }

    #[test]
    fn error_measures() {
        assert_eq!(scaled_err(&[1.5, 300.0], &[1.0, 303.0]), 0.5);
        assert_eq!(scaled_err(&[0.1], &[0.2]), 0.1);
        assert_eq!(max_rel_err(&[0.0, 2.0], &[0.0, 1.0]), 1.0);
        assert!(max_rel_err(&[1e-30], &[0.0]).is_infinite());
        assert!(check_close(&[1.0, 2.0], &[1.0, 2.1], 0.0, 0.1).is_ok());
        assert!(check_close(&[1.0, 2.0], &[1.0, 2.5], 0.0, 0.1).is_err());
        assert!(check_close(&[f64::NAN], &[1.0], 1.0, 1.0).is_err());
    }
}
