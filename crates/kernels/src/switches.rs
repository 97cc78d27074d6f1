//! The process-wide kernel switches: the fused CPU kernels on or off ([`set_fused_kernels`]),
//! and bfloat16 compute ([`set_bf16_compute`], for a scope [`Bf16Compute`]) where the CPU has it
//! ([`bf16_supported`]).

use candle_core::{DType, Result, Tensor};

/// Whether the fused CPU kernels are used; on by default.
static FUSED_KERNELS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns sugarcube's fused CPU kernels on or off, process-wide. Off, every layer runs as a
/// composition of candle's own ops (much slower): for checking the kernels against candle, as
/// the `fused_kernels` test does for whole training runs.
pub fn set_fused_kernels(on: bool) {
    FUSED_KERNELS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether products run in bfloat16 where the CPU allows; off by default.
static BF16_COMPUTE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns bfloat16 compute on or off, process-wide: the direct convolution kernels (stride-1
/// convolutions' forward, input and weight gradients) and linear layers' forward and input
/// gradient then round both operands to bfloat16 and sum the products in float32
/// (`vdpbf16ps`), as PyTorch's CPU autocast does; weights, activations, gradients, norms,
/// attention and the optimiser stay float32 (the weights are their own float32 master copy).
/// Takes effect for ops built afterwards. Returns an error on a CPU without AVX-512 BF16
/// ([`bf16_supported`]).
pub fn set_bf16_compute(on: bool) -> Result<()> {
    if on && !bf16_supported() {
        candle_core::bail!("bfloat16 compute needs a CPU with AVX-512 BF16 (avx512_bf16 in /proc/cpuinfo); this one has none, use float32");
    }
    BF16_COMPUTE.store(on, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// bfloat16 compute switched on or off for a scope: [`set_bf16_compute`] on creation, the
/// previous setting restored on drop (a training run's `precision` does not outlive it).
pub struct Bf16Compute(bool);

impl Bf16Compute {
    /// Switches bfloat16 compute to `on` until the returned value is dropped.
    pub fn set(on: bool) -> Result<Self> {
        let previous = bf16_compute();
        set_bf16_compute(on)?;
        Ok(Bf16Compute(previous))
    }
}

impl Drop for Bf16Compute {
    fn drop(&mut self) {
        BF16_COMPUTE.store(self.0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether this CPU can compute in bfloat16 (AVX-512F and AVX-512 BF16).
pub fn bf16_supported() -> bool {
    crate::bf16::available()
}

/// Whether bfloat16 compute is on ([`set_bf16_compute`]).
pub fn bf16_compute() -> bool {
    BF16_COMPUTE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the fused kernels apply to `x`: switched on, on the CPU, in f32 or f64.
pub(crate) fn use_fused(x: &Tensor) -> bool {
    FUSED_KERNELS.load(std::sync::atomic::Ordering::Relaxed)
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
}
