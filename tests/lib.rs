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

/// What a report page said about itself once loaded in a browser (its `data-report-check`).
#[derive(Debug, serde::Deserialize)]
pub struct ReportCheck {
    /// `<img>` elements.
    pub images: usize,
    /// Those that loaded.
    pub images_loaded: usize,
    /// `<audio>` elements.
    pub audio: usize,
    /// Those whose metadata loaded.
    pub audio_loaded: usize,
    /// Inline `<svg>` plots.
    pub svgs: usize,
    /// Console errors and uncaught exceptions.
    pub errors: Vec<String>,
    /// The page's width in CSS pixels.
    pub width: f64,
    /// Its height.
    pub height: f64,
}

/// The browser for report tests: `SUGARCUBE_CHROMIUM`, else Debian's chromium.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SUGARCUBE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Opens `html` in headless Chromium offline, as a person would: returns what the page's load
/// check recorded, after writing a screenshot beside it (`report.png`). Without Chromium it
/// returns None with a printed reason, except under CI (`CI` set), where that is an error.
pub fn open_in_browser(html: &std::path::Path) -> anyhow::Result<Option<ReportCheck>> {
    use anyhow::Context;
    let Some(browser) = chromium() else {
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "CI is set but no Chromium was found (install Debian's chromium, or set SUGARCUBE_CHROMIUM)"
        );
        eprintln!(
            "skipping the browser check of {}: no Chromium (apt-get install chromium)",
            html.display()
        );
        return Ok(None);
    };
    let html = html.canonicalize()?;
    let url = format!("file://{}", html.display());
    let profile = html.with_file_name("chromium-profile");
    let common = |extra: &[String]| -> anyhow::Result<std::process::Output> {
        let out = std::process::Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-quic",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--virtual-time-budget=15000",
                &format!("--user-data-dir={}", profile.display()),
            ])
            .args(extra)
            .arg(&url)
            .output()
            .with_context(|| format!("cannot run {}", browser.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed on {}: {}",
            browser.display(),
            html.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    };
    let dom = String::from_utf8_lossy(&common(&["--dump-dom".into()])?.stdout).to_string();
    let key = "data-report-check=\"";
    let start = dom.find(key).with_context(|| {
        format!(
            "{}: the page's load check never ran (no data-report-check on <body>)",
            html.display()
        )
    })? + key.len();
    let end = start
        + dom[start..]
            .find('"')
            .context("unterminated data-report-check")?;
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let check: ReportCheck = serde_json::from_str(&json)
        .with_context(|| format!("data-report-check is not the expected JSON: {json}"))?;
    let shot = html.with_file_name("report.png");
    common(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1280,2000".into(),
    ])?;
    anyhow::ensure!(
        std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000,
        "no screenshot of {} was written",
        html.display()
    );
    let _ = std::fs::remove_dir_all(&profile);
    Ok(Some(check))
}

/// Opens a report in headless Chromium and asserts what a person would check: no console
/// errors, every image and audio clip loaded, at least `min_svgs` plots and `min_images`
/// images, and a page between 600 and 5000 CSS pixels wide and 400 to 100,000 tall.
pub fn assert_report_renders(
    html: &std::path::Path,
    min_svgs: usize,
    min_images: usize,
) -> anyhow::Result<()> {
    let Some(c) = open_in_browser(html)? else {
        return Ok(());
    };
    let name = html.display();
    anyhow::ensure!(c.errors.is_empty(), "{name}: console errors {:?}", c.errors);
    anyhow::ensure!(
        c.images_loaded == c.images,
        "{name}: {} of {} images loaded",
        c.images_loaded,
        c.images
    );
    anyhow::ensure!(
        c.audio_loaded == c.audio,
        "{name}: {} of {} audio clips loaded",
        c.audio_loaded,
        c.audio
    );
    anyhow::ensure!(
        c.svgs >= min_svgs,
        "{name}: {} plots, expected at least {min_svgs}",
        c.svgs
    );
    anyhow::ensure!(
        c.images >= min_images,
        "{name}: {} images, expected at least {min_images}",
        c.images
    );
    anyhow::ensure!(
        (600.0..=5000.0).contains(&c.width),
        "{name}: page {} px wide",
        c.width
    );
    anyhow::ensure!(
        (400.0..=100_000.0).contains(&c.height),
        "{name}: page {} px tall",
        c.height
    );
    Ok(())
}
