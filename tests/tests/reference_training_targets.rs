//! Training targets against diffusers 0.42.1 (fixtures/reference/training_targets.json):
//! `DDPMScheduler.add_noise`, `get_velocity`, `training_utils.compute_snr` and the min-SNR-gamma
//! weights of diffusers' example training scripts, on the default linear schedule
//! (1e-4..0.02, T = 1000).
//!
//! `f64` must match to 1e-12 (relative, or the trajectory measure for tensors); `f32` is stock
//! diffusers, where `1 - alphas_cumprod[0]` is computed in float32, so SNR and the weights at
//! t = 0 and 1 differ by up to 1.7e-4 relative (README: 5e-4 at small t, 1e-6 elsewhere).

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use sugarcube_core::process::{GaussianConfig, GaussianProcess, LossWeighting, Prediction};
use sugarcube_tests::{flatten, load_reference, max_rel_err, scaled_err, shape_of};

struct Fixture {
    json: Value,
    timesteps: Vec<usize>,
    shape: Vec<usize>,
    x0: Vec<f64>,
    noise: Vec<f64>,
}

fn fixture() -> Fixture {
    let json = load_reference("training_targets.json");
    let timesteps: Vec<usize> = flatten(&json["timesteps"])
        .iter()
        .map(|&t| t as usize)
        .collect();
    let shape = shape_of(&json["x0"]["values"]);
    let x0 = flatten(&json["x0"]["values"]);
    let noise = flatten(&json["noise"]["values"]);
    assert_eq!(timesteps, vec![0, 1, 250, 500, 999]);
    assert_eq!(shape, vec![5, 2, 3, 4]);
    assert_eq!(json["snr_gamma"].as_f64(), Some(5.0));
    Fixture {
        json,
        timesteps,
        shape,
        x0,
        noise,
    }
}

fn process() -> GaussianProcess {
    let cfg = GaussianConfig::default();
    assert_eq!(
        (
            cfg.schedule.timesteps,
            cfg.schedule.beta_start,
            cfg.schedule.beta_end
        ),
        (1000, 1e-4, 0.02)
    );
    GaussianProcess::new(cfg).unwrap()
}

fn tensor(values: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// add_noise and velocity in `dtype`, compared with mode `mode` under the trajectory measure:
/// `tol` over all rows, `tol_late` over the rows at t >= 250.
fn check_tensors(dtype: DType, mode: &str, tol: f64, tol_late: f64) {
    let f = fixture();
    let p = process();
    let x0 = tensor(&f.x0, &f.shape, dtype);
    let noise = tensor(&f.noise, &f.shape, dtype);
    let r = &f.json[mode];
    let noised = values(&p.add_noise(&x0, &noise, &f.timesteps).unwrap());
    let v = values(&p.velocity(&x0, &noise, &f.timesteps).unwrap());
    let en = scaled_err(&noised, &flatten(&r["add_noise"]));
    let ev = scaled_err(&v, &flatten(&r["velocity"]));
    eprintln!("{dtype:?} vs {mode}: add_noise err {en:.3e}, velocity err {ev:.3e}");
    assert!(en <= tol, "add_noise {dtype:?} vs {mode}: {en:e}");
    assert!(ev <= tol, "velocity {dtype:?} vs {mode}: {ev:e}");
    let row = f.x0.len() / f.shape[0];
    let late = 2 * row..;
    let en = scaled_err(
        &noised[late.clone()],
        &flatten(&r["add_noise"])[late.clone()],
    );
    let ev = scaled_err(&v[late.clone()], &flatten(&r["velocity"])[late]);
    eprintln!("{dtype:?} vs {mode} at t >= 250: add_noise err {en:.3e}, velocity err {ev:.3e}");
    assert!(
        en <= tol_late && ev <= tol_late,
        "{dtype:?} vs {mode} at t >= 250: {en:e} {ev:e}"
    );
}

#[test]
fn add_noise_and_velocity_match_f64() {
    check_tensors(DType::F64, "f64", 1e-12, 1e-12);
}

#[test]
fn add_noise_and_velocity_match_f32() {
    // float32 tensors against stock float32 diffusers. At t = 0 diffusers' float32
    // sqrt(1 - alphas_cumprod) is 8e-5 relative off (cancellation in 1 - 0.9999), which moves
    // add_noise and velocity by up to 3.2e-6; elsewhere the match is float32 rounding.
    check_tensors(DType::F32, "f32", 1e-5, 1e-6);
}

#[test]
fn alphas_and_coefficients_at_t_match() {
    let f = fixture();
    let p = process();
    for (mode, tol) in [("f64", 1e-12), ("f32", 1e-6)] {
        let r = &f.json[mode];
        let ab: Vec<f64> = f
            .timesteps
            .iter()
            .map(|&t| p.schedule.alphas_cumprod[t])
            .collect();
        let sa: Vec<f64> = ab.iter().map(|a| a.sqrt()).collect();
        let sb: Vec<f64> = ab.iter().map(|a| (1.0 - a).sqrt()).collect();
        let ea = max_rel_err(&ab, &flatten(&r["alphas_cumprod_at_t"]));
        let es = max_rel_err(&sa, &flatten(&r["sqrt_alpha_prod"]));
        // sqrt(1 - ab) at t = 0 carries the float32 cancellation of 1 - 0.9999
        let eb = max_rel_err(&sb[2..], &flatten(&r["sqrt_one_minus_alpha_prod"])[2..]);
        eprintln!(
            "{mode}: alphas_cumprod {ea:.3e}, sqrt_alpha_prod {es:.3e}, sqrt_one_minus (t >= 250) {eb:.3e}"
        );
        assert!(
            ea <= tol && es <= tol && eb <= tol,
            "{mode}: {ea:e} {es:e} {eb:e}"
        );
        let eb_all = max_rel_err(&sb, &flatten(&r["sqrt_one_minus_alpha_prod"]));
        assert!(
            eb_all <= if mode == "f64" { 1e-12 } else { 1e-4 },
            "{mode}: sqrt_one_minus {eb_all:e}"
        );
    }
}

/// `(snr, min-SNR epsilon weight, min-SNR v weight)` per fixture timestep.
fn snr_and_weights(p: &GaussianProcess, ts: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let snr: Vec<f64> = ts.iter().map(|&t| p.schedule.snr(t)).collect();
    let we = snr
        .iter()
        .map(|&s| LossWeighting::MinSnr.weight(s, Prediction::Epsilon, 5.0))
        .collect();
    let wv = snr
        .iter()
        .map(|&s| LossWeighting::MinSnr.weight(s, Prediction::V, 5.0))
        .collect();
    (snr, we, wv)
}

#[test]
fn snr_and_min_snr_weights_match_f64() {
    let f = fixture();
    let p = process();
    let r = &f.json["f64"];
    assert_eq!(r["snr_dtype"], "float64");
    let (snr, we, wv) = snr_and_weights(&p, &f.timesteps);
    for (name, got) in [
        ("snr", &snr),
        ("min_snr_weight_epsilon", &we),
        ("min_snr_weight_v_prediction", &wv),
    ] {
        let e = max_rel_err(got, &flatten(&r[name]));
        eprintln!("f64 {name}: max rel err {e:.3e}");
        assert!(e <= 1e-12, "{name}: {e:e}");
    }
    // the process applies the same weights when configured for min-SNR
    for prediction in [Prediction::Epsilon, Prediction::V] {
        let cfg = GaussianConfig {
            weighting: LossWeighting::MinSnr,
            prediction,
            ..Default::default()
        };
        let got = GaussianProcess::new(cfg)
            .unwrap()
            .loss_weights(&f.timesteps);
        let key = if prediction == Prediction::V {
            "min_snr_weight_v_prediction"
        } else {
            "min_snr_weight_epsilon"
        };
        let e = max_rel_err(&got, &flatten(&r[key]));
        assert!(e <= 1e-12, "loss_weights {prediction:?}: {e:e}");
    }
    // the clamp is active at small t and inactive at large t
    assert_eq!(we[4], 1.0);
    assert!((wv[0] - 5.0 / (snr[0] + 1.0)).abs() < 1e-15);
}

#[test]
fn snr_and_min_snr_weights_match_f32() {
    let f = fixture();
    let p = process();
    let r = &f.json["f32"];
    assert_eq!(r["snr_dtype"], "float32");
    let (snr, we, wv) = snr_and_weights(&p, &f.timesteps);
    for (name, got) in [
        ("snr", &snr),
        ("min_snr_weight_epsilon", &we),
        ("min_snr_weight_v_prediction", &wv),
    ] {
        let reference = flatten(&r[name]);
        // t = 0 and t = 1: float32 cancellation in 1 - alpha_bar (README: 5e-4 relative)
        let small = max_rel_err(&got[..2], &reference[..2]);
        let rest = max_rel_err(&got[2..], &reference[2..]);
        eprintln!("f32 {name}: max rel err {small:.3e} at t <= 1, {rest:.3e} at t >= 250");
        assert!(small <= 5e-4, "{name} at small t: {small:e}");
        assert!(rest <= 1e-6, "{name} at t >= 250: {rest:e}");
    }
}
