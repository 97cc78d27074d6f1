//! The vendored candle-core's backward pass (vendor/candle-core/PATCH.md) stores a tensor's
//! first gradient contribution as it is and adds later ones: gradients are the same as the
//! analytic ones whether a tensor is used once or several times, through views (transpose,
//! narrow, broadcast) or not, and every stored gradient is contiguous.

use candle_core::{Device, Tensor, Var};

fn close(a: &Tensor, b: &[f32]) -> anyhow::Result<()> {
    let a = a.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
            "entry {i}: {x} vs {y}"
        );
    }
    Ok(())
}

#[test]
fn contributions_through_views_and_reuse_sum_to_the_analytic_gradient() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let xs: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let x = Var::from_vec(xs.clone(), (3, 4), &dev)?;
    let c = Tensor::from_vec(
        (0..12).map(|i| i as f32 + 1.0).collect::<Vec<f32>>(),
        (4, 3),
        &dev,
    )?;
    let b = Var::from_vec(vec![0.5f32, -1.0, 2.0, 3.0], 4, &dev)?;
    // f = sum(x^T * c) + sum(x * x) + sum(x + b) + sum(x[:, 1..3])
    let once_transposed = (x.t()? * &c)?.sum_all()?;
    let squared = (x.as_tensor() * x.as_tensor())?.sum_all()?;
    let broadcast = x.broadcast_add(b.as_tensor())?.sum_all()?;
    let narrowed = x.narrow(1, 1, 2)?.sum_all()?;
    let f = (((once_transposed + squared)? + broadcast)? + narrowed)?;
    let grads = f.backward()?;
    let gx = grads.get(&x).expect("x has a gradient");
    let gb = grads.get(&b).expect("b has a gradient");
    assert!(gx.is_contiguous() && gb.is_contiguous());
    let cs = c.t()?.flatten_all()?.to_vec1::<f32>()?;
    let expected: Vec<f32> = (0..12)
        .map(|i| {
            let col = i % 4;
            cs[i] + 2.0 * xs[i] + 1.0 + if (1..3).contains(&col) { 1.0 } else { 0.0 }
        })
        .collect();
    close(gx, &expected)?;
    close(gb, &[3.0; 4])?;
    Ok(())
}

#[test]
fn a_single_transposed_use_gets_a_contiguous_gradient() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_vec((0..6).map(|i| i as f32).collect::<Vec<f32>>(), (2, 3), &dev)?;
    let w = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (3, 2), &dev)?;
    // Only contribution: the transpose's backward, a strided view of w.
    let f = (x.t()? * &w)?.sum_all()?;
    let grads = f.backward()?;
    let gx = grads.get(&x).expect("x has a gradient");
    assert!(gx.is_contiguous());
    close(gx, &[1., 3., 5., 2., 4., 6.])?;
    Ok(())
}
