//! Composable guidance on a toy whose classes are the product of two attributes: four Gaussians
//! at (+-2, +-2) with the condition fields x (left, right) and y (bottom, top), dropped
//! independently in training (experiments/toy-quadrants.toml, 1,500 steps, seconds on two cores).
//! Asking for one attribute, for both, and for one but not the other puts the samples where
//! they belong, each far from what the unguided model gives (a quarter per quadrant).

use candle_core::Device;
use std::path::{Path, PathBuf};
use sugarcube_core::run::{self, SampleRequest, TrainOptions};
use sugarcube_toy::Toy;

fn experiment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/toy-quadrants.toml")
}

/// Fractions of samples in each quadrant: (left-bottom, left-top, right-bottom, right-top).
fn quadrants(run: &run::LoadedRun<Toy>, cond: &[&str], not: &[&str]) -> anyhow::Result<[f64; 4]> {
    let req = SampleRequest {
        n: Some(1000),
        guidance: Some(2.0),
        cond: cond.iter().map(|s| s.to_string()).collect(),
        not: not.iter().map(|s| s.to_string()).collect(),
        quiet: true,
        ..Default::default()
    };
    let points = run.generate(&req)?.samples.to_vec2::<f32>()?;
    let mut f = [0.0; 4];
    for p in &points {
        f[2 * (p[0] > 0.0) as usize + (p[1] > 0.0) as usize] += 1.0 / points.len() as f64;
    }
    Ok(f)
}

#[test]
fn guidance_by_one_attribute_both_and_one_but_not_the_other() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let dir = std::env::temp_dir().join(format!("sugarcube-quadrants-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    run::train::<Toy>(
        &experiment(),
        &TrainOptions {
            out: Some(dir.clone()),
            quiet: true,
            ..Default::default()
        },
        &dev,
    )?;
    let run = run::load_run::<Toy>(&dir, &dev)?;

    // unguided (the null condition, weight 0): about a quarter in each quadrant
    let free = quadrants(&run, &["x=null"], &[])?;
    let right = quadrants(&run, &["x=right"], &[])?;
    let both = quadrants(&run, &["x=right,y=top"], &[])?;
    let negated = quadrants(&run, &["x=right"], &["y=top"])?;
    eprintln!("quadrant fractions (lb, lt, rb, rt): null {free:.3?}, x=right {right:.3?}, x=right,y=top {both:.3?}, x=right not y=top {negated:.3?}");
    for f in free {
        assert!(
            (0.15..0.35).contains(&f),
            "the null condition should spread over all quadrants: {free:?}"
        );
    }
    // one attribute: the right half, both right quadrants taken
    assert!(right[2] + right[3] > 0.95, "x=right: {right:?}");
    assert!(
        right[2] > 0.25 && right[3] > 0.25,
        "x=right says nothing of y: {right:?}"
    );
    // both attributes: the top-right quadrant
    assert!(both[3] > 0.95, "x=right,y=top: {both:?}");
    // one but not the other: the bottom-right quadrant (x=right alone puts about half there)
    assert!(
        negated[0] + negated[1] < 0.02,
        "x=right, not y=top stays right: {negated:?}"
    );
    assert!(negated[2] > 0.8, "x=right, not y=top: {negated:?}");
    assert!(
        negated[3] < 0.5 * right[3],
        "the negative term must move samples out of the top: {negated:?} vs {right:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
