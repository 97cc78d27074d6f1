//! Times the fused CPU convolution at the shape of issue 3's table (batch 32, 64 -> 64
//! channels, 3x3, 32x32, f32): forward, and forward + backward. Median of 7 after warm-up.
//!
//! `cargo run --release -p sugarcube-core --example conv_bench`
use candle_core::{DType, Device, Tensor, Var};
use sugarcube_core::bench::median_ms;
use sugarcube_core::nn::conv::conv2d;

fn main() -> candle_core::Result<()> {
    sugarcube_core::tune_allocator();
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, 64, 32, 32), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, (64, 64, 3, 3), &dev)?)?;
    let b = Var::from_tensor(&Tensor::zeros(64, DType::F32, &dev)?)?;
    let fwd = median_ms(2, 7, || conv2d(x.as_tensor(), w.as_tensor(), b.as_tensor(), (1, 1), (1, 1)).map(|_| ()))?;
    let both = median_ms(2, 7, || {
        let y = conv2d(x.as_tensor(), w.as_tensor(), b.as_tensor(), (1, 1), (1, 1))?;
        y.sum_all()?.backward().map(|_| ())
    })?;
    sugarcube_core::profile::enable(true);
    for _ in 0..3 {
        let y = conv2d(x.as_tensor(), w.as_tensor(), b.as_tensor(), (1, 1), (1, 1))?;
        y.sum_all()?.backward()?;
    }
    for e in sugarcube_core::profile::take() {
        println!("  {:<40} {:.1} ms/call", e.name, 1e3 * e.seconds / e.calls as f64);
    }
    let flops = 2.0 * 64.0 * 64.0 * 9.0 * 1024.0 * 32.0;
    println!("conv2d 3x3 64->64 32x32 batch 32 f32: forward {fwd:.1} ms ({:.0} GFLOP/s), forward+backward {both:.1} ms", flops / fwd / 1e6);
    Ok(())
}
