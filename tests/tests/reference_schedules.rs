//! Training schedules against diffusers 0.42.1 `DDPMScheduler` (fixtures/reference/schedules.json).
//!
//! The core builds every schedule in float64, so the `f64` reference must match to 1e-12
//! relative. The `f32` reference is stock diffusers (float32 torch tensors); against it the
//! float64 schedule can only match within float32 rounding, so the tolerances there follow the
//! reference README: ~1e-6 relative where float32 keeps full precision, 1e-6 absolute on
//! `alphas_cumprod`, and the documented cancellation-limited spots (cosine tail, zero-SNR betas).

use serde_json::Value;
use sugarcube_core::schedule::{BetaSchedule, Schedule};
use sugarcube_tests::{check_close, flatten, load_reference, max_abs_err, max_rel_err};

fn variant(name: &str) -> Value {
    load_reference("schedules.json")["variants"][name].clone()
}

fn build(name: &str) -> Schedule {
    match name {
        "linear" => Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02),
        "scaled_linear" => Schedule::new(BetaSchedule::ScaledLinear, 1000, 0.00085, 0.012),
        // beta_start / beta_end are ignored by the cosine schedule
        "squaredcos_cap_v2" => Schedule::new(BetaSchedule::Cosine, 1000, 1e-4, 0.02),
        "linear_zero_snr" => {
            Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).rescaled_zero_terminal_snr()
        }
        other => panic!("unknown variant {other}"),
    }
}

const VARIANTS: [&str; 4] = [
    "linear",
    "scaled_linear",
    "squaredcos_cap_v2",
    "linear_zero_snr",
];

#[test]
fn fixture_describes_the_built_schedules() {
    for name in VARIANTS {
        let v = variant(name);
        let cfg = &v["config"];
        assert_eq!(cfg["num_train_timesteps"], 1000, "{name}");
        let kind = cfg["beta_schedule"].as_str().unwrap();
        let zero_snr = cfg["rescale_betas_zero_snr"].as_bool().unwrap();
        let expected = match (kind, zero_snr) {
            ("linear", false) => "linear",
            ("scaled_linear", false) => "scaled_linear",
            ("squaredcos_cap_v2", false) => "squaredcos_cap_v2",
            ("linear", true) => "linear_zero_snr",
            other => panic!("unexpected config {other:?}"),
        };
        assert_eq!(expected, name);
        if kind != "squaredcos_cap_v2" {
            // the first beta is the configured beta_start (zero-SNR rescales it)
            let s = build(name);
            let b0 = cfg["beta_start"].as_f64().unwrap();
            assert!(
                zero_snr || (s.betas[0] - b0).abs() < 1e-15,
                "{name}: betas[0] = {}",
                s.betas[0]
            );
        }
    }
}

#[test]
fn schedules_match_diffusers_f64() {
    for name in VARIANTS {
        let v = variant(name);
        assert_eq!(v["f64"]["dtype"], "float64");
        let s = build(name);
        let betas = flatten(&v["f64"]["betas"]);
        let ab = flatten(&v["f64"]["alphas_cumprod"]);
        assert_eq!(
            (s.betas.len(), s.alphas_cumprod.len()),
            (betas.len(), ab.len())
        );
        let eb = max_rel_err(&s.betas, &betas);
        let ea = max_rel_err(&s.alphas_cumprod, &ab);
        eprintln!(
            "{name:>18} f64: betas max rel err {eb:.3e} (abs {:.3e}), alphas_cumprod max rel err {ea:.3e}",
            max_abs_err(&s.betas, &betas)
        );
        assert!(ea <= 1e-12, "{name}: alphas_cumprod rel err {ea:e}");
        if name == "linear_zero_snr" {
            // Zero-SNR betas are recovered as 1 - alpha_bar[t] / alpha_bar[t-1], a difference of
            // two numbers near 1: one ulp of the ratio (1.1e-16) is 1.8e-12 relative to a beta of
            // 1.2e-4. At 13 of the 1000 entries torch's float64 `rescale_zero_terminal_snr` lands
            // one ulp away from correctly rounded arithmetic (moving alpha_bar[t] by one ulp
            // before the sqrt reproduces it), so the betas are held to 1e-12 relative plus a
            // floor of a few ulps of 1. alphas_cumprod is unaffected (1.4e-14 relative).
            check_close(&s.betas, &betas, 1e-15, 1e-12)
                .unwrap_or_else(|e| panic!("{name} betas: {e}"));
        } else {
            assert!(eb <= 1e-12, "{name}: betas rel err {eb:e}");
        }
    }
}

#[test]
fn zero_snr_end_points_are_exact() {
    let v = variant("linear_zero_snr");
    let s = build("linear_zero_snr");
    for mode in ["f32", "f64"] {
        assert_eq!(flatten(&v[mode]["betas"])[999], 1.0, "{mode}");
        assert_eq!(flatten(&v[mode]["alphas_cumprod"])[999], 0.0, "{mode}");
    }
    assert_eq!(s.betas[999], 1.0);
    assert_eq!(s.alphas_cumprod[999], 0.0);
    // the first alpha_bar is kept by the rescale
    assert!((s.alphas_cumprod[0] - build("linear").alphas_cumprod[0]).abs() < 1e-15);
}

/// `(betas: abs, rel), (alphas_cumprod: abs, rel)` tolerances of the float64 schedule against
/// stock float32 diffusers.
fn f32_tolerances(name: &str) -> ((f64, f64), (f64, f64)) {
    match name {
        // float32 rounding of each beta (linspace in float32: <= 1 ulp), and a float32 cumprod
        "linear" | "scaled_linear" => ((0.0, 1e-6), (1e-6, 1e-6)),
        // betas are float64 values rounded once to float32; the cumprod of the float32 betas
        // drifts to 1.3e-5 relative in the tail, where alpha_bar < 1e-2 (README: 2e-5 relative
        // in the cosine tail, 1e-6 absolute)
        "squaredcos_cap_v2" => ((0.0, 1e-6), (1e-6, 2e-5)),
        // betas come from ratios of float32 alpha_bars: 1 - alpha_bar[0]/1 cancels to ~2e-6
        // absolute (stored f32_vs_f64.betas_max_abs_diff); alpha_bar itself stays within 1e-6
        "linear_zero_snr" => ((2.5e-6, 1e-6), (1e-6, 1e-6)),
        other => panic!("unknown variant {other}"),
    }
}

#[test]
fn schedules_match_diffusers_f32_within_float32_rounding() {
    for name in VARIANTS {
        let v = variant(name);
        assert_eq!(v["f32"]["dtype"], "float32");
        let s = build(name);
        let betas = flatten(&v["f32"]["betas"]);
        let ab = flatten(&v["f32"]["alphas_cumprod"]);
        eprintln!(
            "{name:>18} f32: betas max abs {:.3e} rel {:.3e}; alphas_cumprod max abs {:.3e} rel {:.3e}",
            max_abs_err(&s.betas, &betas),
            max_rel_err(&s.betas, &betas),
            max_abs_err(&s.alphas_cumprod, &ab),
            max_rel_err(&s.alphas_cumprod, &ab),
        );
        let ((ba, br), (aa, ar)) = f32_tolerances(name);
        check_close(&s.betas, &betas, ba, br).unwrap_or_else(|e| panic!("{name} betas: {e}"));
        check_close(&s.alphas_cumprod, &ab, aa, ar)
            .unwrap_or_else(|e| panic!("{name} alphas_cumprod: {e}"));
        // where float32 keeps full precision (alpha_bar above 0.01) the match is 1e-6 relative
        let head: Vec<usize> = (0..1000).filter(|&t| ab[t] > 1e-2).collect();
        let a: Vec<f64> = head.iter().map(|&t| s.alphas_cumprod[t]).collect();
        let r: Vec<f64> = head.iter().map(|&t| ab[t]).collect();
        let e = max_rel_err(&a, &r);
        assert!(
            e <= 1e-6,
            "{name}: alphas_cumprod rel err {e:e} where alpha_bar > 0.01"
        );
    }
}
