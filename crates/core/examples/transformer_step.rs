//! Times one training step (forward + backward, no optimiser update) of the FoldingDiff-small
//! sequence transformer: 6 layers, hidden 192, 6 heads, intermediate 384, relative positions,
//! batch 64 x 128 positions x 6 angles, float32, dropout 0.
//!
//! `cargo run --release -p sugarcube-core --example transformer_step [STEPS]`

use candle_core::{DType, Device, Tensor};
use std::time::Instant;
use sugarcube_core::nn::{SequenceTransformer, TransformerConfig};
use sugarcube_core::params::Params;
use sugarcube_core::rng::Rng;
use sugarcube_core::tensor_util::randn;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    sugarcube_core::tune_allocator();
    let steps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let dev = Device::Cpu;
    let cfg = TransformerConfig { dropout: 0.0, ..TransformerConfig::foldingdiff_small() };
    let (b, l, f) = (64, 128, 6);
    let params = Params::new(0);
    let net = SequenceTransformer::new(params.var_builder(DType::F32, &dev), &cfg, f)?;
    println!("FoldingDiff-small: {} parameters, batch {b} x {l} x {f}, f32", params.count());

    let mut rng = Rng::new(1);
    let x = randn(&mut rng, &[b, l, f], DType::F32, &dev)?;
    let target = randn(&mut rng, &[b, l, f], DType::F32, &dev)?;
    let ts: Vec<f32> = (0..b).map(|_| rng.below(1000) as f32).collect();
    let t = Tensor::from_vec(ts, b, &dev)?;

    let (mut fwd, mut bwd) = (vec![], vec![]);
    for step in 0..=steps {
        let start = Instant::now();
        let out = net.forward_masked(&x, &t, None, Some(&mut rng))?;
        let loss = out.sub(&target)?.sqr()?.mean_all()?;
        let _ = loss.to_scalar::<f32>()?;
        let mid = Instant::now();
        let grads = loss.backward()?;
        drop(grads);
        let end = Instant::now();
        if step > 0 {
            // step 0 warms up the allocator and thread pool
            fwd.push((mid - start).as_secs_f64());
            bwd.push((end - mid).as_secs_f64());
        }
    }
    let total: Vec<f64> = fwd.iter().zip(&bwd).map(|(a, b)| a + b).collect();
    println!(
        "median over {steps} steps: forward {:.3} s, backward {:.3} s, step {:.3} s (min {:.3} s)",
        median(fwd),
        median(bwd),
        median(total.clone()),
        total.iter().cloned().fold(f64::INFINITY, f64::min)
    );
    Ok(())
}
