//! sugarcube-core: the diffusion engine of sugarcube. It knows nothing of any domain: images,
//! audio, DNA and proteins plug in through the [`domain::Domain`] trait.
//!
//! - [`schedule`]: discrete noise schedules (linear, scaled-linear, cosine, sigmoid, zero-SNR)
//!   and Karras sigmas.
//! - [`process`]: forward processes that own both directions: the Gaussian process (epsilon /
//!   x0 / v, min-SNR weighting, torus wrap) and MDLM's masked process over tokens.
//! - [`sampler`]: samplers grouped by process, stateless functions in the style of k-diffusion.
//! - [`cond`]: conditions as data (categorical, multi-label, scalar fields) and guidance terms.
//! - [`denoiser`]: the network trait (one inputs struct: data, time, condition, padding mask),
//!   composable classifier-free guidance, scorers for classifier guidance.
//! - [`scorer`]: classifier guidance: the noise-aware classifier's loss and its scorer.
//! - [`domain`], [`registry`]: how a domain plugs in, and how the CLI finds it.
//! - [`report`]: `RUN/report.html`, the run's self-contained report page.
//! - [`train`], [`optim`], [`checkpoint`]: the trainer, AdamW with saveable state, checkpoints.
//! - [`config`]: experiment files; [`files`]: reading user files (gzipped or not).
//! - [`crashpoint`]: test-only points where the process kills itself (`SUGARCUBE_TEST_KILL`).
//! - [`params`]: seeded parameter initialisation.
//! - [`nn`]: shared network blocks: time and class embeddings, seeded dropout, a UNet
//!   for 1-D (`[B, C, L]`) and 2-D (`[B, C, H, W]`) data, and a FoldingDiff-style transformer
//!   for sequences of feature vectors (`[B, L, F]`), a noise-aware classifier; their layers run on the CPU kernels of
//!   `sugarcube-kernels` (re-exported in [`nn`]).
//! - [`profile`]: timing scopes (from `sugarcube-kernels`), read by [`bench`](mod@bench).

pub mod bench;
pub mod checkpoint;
pub mod cond;
pub mod config;
pub mod crashpoint;
pub mod denoiser;
pub mod domain;
pub mod files;
pub mod frechet;
pub mod nn;
pub mod optim;
pub mod params;
pub mod process;
pub use sugarcube_kernels::profile;
pub mod progress;
pub mod registry;
pub mod report;
pub mod rng;
pub mod run;
pub mod sampler;
pub mod schedule;
pub mod scorer;
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

/// Keeps candle's own worker threads off the cores: candle 0.11.1 runs its element-wise ops on a
/// pool of `threads - 1` workers that spin (25,000 pauses) after every op before they sleep, and
/// while they spin they take cores from the rayon threads that run sugarcube's convolution,
/// norm and attention kernels (6.5% of a DNA UNet step's samples were such spinning). With
/// `CANDLE_NUM_THREADS=1` candle's element-wise ops run on the calling thread instead: measured
/// on 2 cores, side by side over 4-5 rounds, unet1d_dna_train 65.5 -> 68.6 sequences/s,
/// unet2d_train 36.9 -> 40.7 images/s, sampling 109 -> 118 images/s, the transformer unchanged.
/// A `CANDLE_NUM_THREADS` the user set is kept. Call once at start-up, before other threads
/// exist.
pub fn tune_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
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
