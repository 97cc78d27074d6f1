//! Times GroupNorm + SiLU on a `[32, 64, 32, 32]` f32 batch, forward and forward + backward:
//! candle_nn's `GroupNorm` followed by `.silu()` against the fused kernel of
//! `sugarcube_kernels::norm`, without and with a per-channel shift added before the norm.
//!
//! `cargo run --release -p sugarcube-kernels --example norm_bench`

use candle_core::{Device, Result, Tensor, Var};
use candle_nn::Module;
use sugarcube_kernels::norm::group_norm;
use sugarcube_kernels::profile::median_ms;

fn main() -> Result<()> {
    let (b, c, h, w, groups, eps) = (32, 64, 32, 32, 32, 1e-5);
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?)?;
    let weight = Var::from_tensor(&Tensor::randn(0f32, 1.0, c, &dev)?)?;
    let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, c, &dev)?)?;
    let shift = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c), &dev)?)?;
    let r = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
    let norm = candle_nn::GroupNorm::new(
        weight.as_tensor().clone(),
        bias.as_tensor().clone(),
        c,
        groups,
        eps,
    )?;

    let candle = |with_shift: bool| -> Result<Tensor> {
        let x = if with_shift {
            x.as_tensor()
                .broadcast_add(&shift.as_tensor().reshape((b, c, 1, 1))?)?
        } else {
            x.as_tensor().clone()
        };
        norm.forward(&x)?.silu()
    };
    let fused = |with_shift: bool| -> Result<Tensor> {
        let s = with_shift.then(|| shift.as_tensor());
        group_norm(
            x.as_tensor(),
            weight.as_tensor(),
            bias.as_tensor(),
            groups,
            eps,
            s,
            true,
        )
    };

    println!(
        "GroupNorm({groups}) + SiLU on [{b}, {c}, {h}, {w}] f32, {} threads; median ms",
        rayon::current_num_threads()
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10}",
        "", "candle_nn", "fused", "speed-up"
    );
    for with_shift in [false, true] {
        let label = if with_shift {
            "shift + norm + silu"
        } else {
            "norm + silu"
        };
        let forward =
            |f: &dyn Fn(bool) -> Result<Tensor>| median_ms(1, 5, || f(with_shift).map(drop));
        let train = |f: &dyn Fn(bool) -> Result<Tensor>| {
            median_ms(1, 5, || {
                f(with_shift)?.mul(&r)?.sum_all()?.backward().map(drop)
            })
        };
        let (a, b) = (forward(&candle)?, forward(&fused)?);
        println!(
            "{:<36} {a:>10.1} {b:>10.1} {:>9.1}x",
            format!("{label}, forward"),
            a / b
        );
        let (a, b) = (train(&candle)?, train(&fused)?);
        println!(
            "{:<36} {a:>10.1} {b:>10.1} {:>9.1}x",
            format!("{label}, forward + backward"),
            a / b
        );
    }
    Ok(())
}
