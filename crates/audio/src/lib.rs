//! sugarcube-audio: the audio half of Riffusion-style spectrogram diffusion.
//!
//! - [`wav`]: WAV files in and out (hound);
//! - [`stft`]: torch-convention STFT and inverse STFT (realfft);
//! - [`mel`]: HTK and Slaney mel filterbanks, with or without Slaney's norm;
//! - [`inverse_mel`]: mel back to linear by non-negative least squares;
//! - [`griffin_lim`]: fast Griffin-Lim with momentum, seeded;
//! - [`metrics`]: spectral convergence and log-spectral distance.

pub mod griffin_lim;
pub mod inverse_mel;
pub mod mel;
pub mod metrics;
pub mod stft;
pub mod wav;

pub use wav::{read_wav, write_wav, Audio, WavFormat};
