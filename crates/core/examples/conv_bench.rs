//! Times the fused CPU convolution, forward and forward + backward, median of 7 after warm-up,
//! and prints the per-region breakdown. With no arguments: issue 3's table shape (batch 32,
//! 64 -> 64 channels, 3x3, 32x32, f32); with `B C O H W K S` (batch, in and out channels,
//! height, width, kernel, stride; padding K / 2), that shape; `B C O H W KH KW S` for a
//! non-square kernel (`32 64 64 1 200 1 3 1`: a 1-D convolution).
//!
//! `cargo run --release -p sugarcube-core --example conv_bench [-- B C O H W K S]`
use candle_core::{DType, Device, Tensor, Var};
use sugarcube_core::nn::conv::conv2d;
use sugarcube_core::profile::median_ms;

fn main() -> candle_core::Result<()> {
    sugarcube_core::tune_allocator();
    sugarcube_core::tune_threads();
    let bf16 = std::env::args().any(|a| a == "--bf16");
    sugarcube_core::nn::set_bf16_compute(bf16)?;
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bf16")
        .map(|a| a.parse().expect("numbers: B C O H W K S"))
        .collect();
    let [b, c, o, h, w, kh, kw, s] = match args.len() {
        0 => [32, 64, 64, 32, 32, 3, 3, 1],
        7 => [
            args[0], args[1], args[2], args[3], args[4], args[5], args[5], args[6],
        ],
        8 => [
            args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7],
        ],
        _ => panic!("expected no arguments, B C O H W K S or B C O H W KH KW S (and --bf16)"),
    };
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?)?;
    let wt = Var::from_tensor(&Tensor::randn(0f32, 0.05, (o, c, kh, kw), &dev)?)?;
    let bias = Var::from_tensor(&Tensor::zeros(o, DType::F32, &dev)?)?;
    let conv = || {
        conv2d(
            x.as_tensor(),
            wt.as_tensor(),
            bias.as_tensor(),
            (s, s),
            (kh / 2, kw / 2),
        )
    };
    let fwd = median_ms(2, 7, || conv().map(|_| ()))?;
    let both = median_ms(2, 7, || conv()?.sum_all()?.backward().map(|_| ()))?;
    sugarcube_core::profile::enable(true);
    for _ in 0..3 {
        conv()?.sum_all()?.backward()?;
    }
    for e in sugarcube_core::profile::take() {
        println!(
            "  {:<40} {:.2} ms/call",
            e.name,
            1e3 * e.seconds / e.calls as f64
        );
    }
    let (ho, wo) = (
        (h + 2 * (kh / 2) - kh) / s + 1,
        (w + 2 * (kw / 2) - kw) / s + 1,
    );
    let flops = 2.0 * (o * c * kh * kw * ho * wo * b) as f64;
    println!(
        "conv2d {kh}x{kw}/{s} {c}->{o} {h}x{w} batch {b} {}: forward {fwd:.2} ms ({:.0} GFLOP/s), forward+backward {both:.2} ms",
        if bf16 { "bf16" } else { "f32" },
        flops / fwd / 1e6
    );
    Ok(())
}
