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

/// Sets x86-64's flush-to-zero and denormals-are-zero bits (MXCSR bits 15 and 6) on the calling
/// thread: float results too small to be normal become 0, and such inputs read as 0. A no-op on
/// other architectures.
fn flush_denormals_here() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: stmxcsr/ldmxcsr only read and write the calling thread's SSE control register;
    // setting FTZ and DAZ changes rounding of subnormal values only.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
}

/// Flushes subnormal floats to zero on the calling thread and on every thread of rayon's global
/// pool (where the kernels and matrix products run). Subnormal operands (attention
/// probabilities of about 1e-40, tiny gradients) send a CPU's multiply-add units into
/// microcode assists: training FoldingDiff's transformer slowed to a fifth of its speed as
/// its attention sharpened. Values below 1.2e-38 become 0 instead, as on GPUs and in
/// `torch.set_flush_denormal(True)`. The trainer, the samplers and the benchmark call it.
pub fn flush_denormals() {
    flush_denormals_here();
    rayon::broadcast(|_| flush_denormals_here());
}

#[cfg(test)]
mod denormal_tests {
    #[test]
    fn subnormal_results_flush_to_zero() {
        super::flush_denormals();
        let tiny = std::hint::black_box(1e-30f32);
        assert_eq!(tiny * std::hint::black_box(1e-10f32), 0.0);
        let on_pool =
            rayon::broadcast(|_| std::hint::black_box(1e-30f32) * std::hint::black_box(1e-10f32));
        assert!(on_pool.iter().all(|&v| v == 0.0));
    }
}
