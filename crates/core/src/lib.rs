//! sugarcube-core: the diffusion engine of sugarcube. It knows nothing of any domain: images,
//! audio, DNA and proteins plug in through the [`domain::Domain`] trait.
//!
//! - [`schedule`]: discrete noise schedules (linear, scaled-linear, cosine, sigmoid, zero-SNR)
//!   and Karras sigmas.
//! - [`process`]: the Gaussian forward process (epsilon / x0 / v, min-SNR weighting, torus wrap).
//! - [`sampler`]: DDPM, DDIM, Euler, Heun, DPM-Solver++(2M) as stateless functions.
//! - [`denoiser`]: the network trait and classifier-free guidance.
//! - [`train`], [`optim`], [`checkpoint`]: the trainer, AdamW with saveable state, checkpoints.
//! - [`config`]: experiment files.
//! - [`params`]: seeded parameter initialisation.
//! - [`nn`]: shared network blocks: time and class embeddings, seeded dropout, a UNet
//!   for 1-D (`[B, C, L]`) and 2-D (`[B, C, H, W]`) data, and a FoldingDiff-style transformer
//!   for sequences of feature vectors (`[B, L, F]`).

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod denoiser;
pub mod domain;
pub mod nn;
pub mod optim;
pub mod params;
pub mod process;
pub mod profile;
pub mod progress;
pub mod rng;
pub mod run;
pub mod sampler;
pub mod schedule;
pub mod tensor_util;
pub mod train;

/// Restores the default action of SIGPIPE (Rust ignores it), so that a command whose output is
/// piped into a reader that stops early (`sugarcube bench | head`) ends quietly, as other
/// command-line tools do, instead of panicking in `println!`. Call once at start-up. Unix only.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default, before other threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Tunes the C allocator for training: keeps freed memory in the process instead of returning
/// large blocks to the system, which otherwise page-faults every fresh tensor again (on a
/// 2-core VM this made the image UNet's training step 1.5x slower). Call once at start-up,
/// before other threads exist. A no-op except on glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
