//! sugarcube-kernels: sugarcube's hand-written CPU kernels as candle custom ops with their
//! backward passes, and the layers that are thin wrappers around them. It knows nothing of
//! diffusion; `sugarcube-core` builds its networks on it.
//!
//! - [`conv`]: 2-D and 1-D convolution (im2col + gemm, and direct AVX-512 kernels for stride 1).
//! - [`norm`]: fused GroupNorm (with an optional shift before and SiLU after) and LayerNorm,
//!   and the [`norm::Norm`] and [`norm::LayerNorm`] layers.
//! - [`attention`]: fused multi-head self-attention with relative positions, key bias and
//!   dropout multipliers.
//! - [`linear`]: the [`linear::Linear`] layer as one op.
//! - [`elementwise`]: softmax, exact GELU, per-channel bias, residual sums.
//! - [`resample`]: x2 nearest upsampling and channel concatenation.
//! - [`relative`]: the relative-position term of attention scores.
//! - [`profile`]: opt-in timing of named regions, and [`profile::median_ms`] for benchmarks.
//! - The process-wide switches: [`set_fused_kernels`] (off, every op runs as candle ops),
//!   [`set_bf16_compute`] and [`Bf16Compute`] (products in bfloat16 where [`bf16_supported`]).
//!
//! Every op runs its kernel on the CPU in f32 and f64 (with the fused kernels switched on) and
//! falls back to a composition of candle ops with the same result elsewhere.

#![warn(missing_docs)]

pub mod attention;
mod bf16;
pub mod conv;
pub mod elementwise;
pub mod linear;
mod machinery;
pub mod norm;
pub mod profile;
pub mod relative;
pub mod resample;
mod switches;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use machinery::{output_vec, Float};
pub use switches::{
    bf16_compute, bf16_supported, flush_denormals, set_bf16_compute, set_fused_kernels, Bf16Compute,
};
