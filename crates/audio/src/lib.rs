//! sugarcube-audio: the audio half of Riffusion-style spectrogram diffusion.
//!
//! - [`wav`]: WAV files in and out (hound);
//! - [`stft`]: torch-convention STFT and inverse STFT (realfft);
//! - [`mel`]: HTK and Slaney mel filterbanks, with or without Slaney's norm;
//! - [`inverse_mel`]: mel back to linear by non-negative least squares;
//! - [`griffin_lim`]: fast Griffin-Lim with momentum, seeded;
//! - [`metrics`]: spectral convergence and log-spectral distance;
//! - [`resample`]: band-limited resampling;
//! - [`pitch`]: fundamental frequency by YIN;
//! - [`render`]: notes and melodies from SF2 soundfonts;
//! - [`codec`]: spectrogram images (Riffusion's, audio-diffusion's, a CPU preset), with
//!   their parameters in [`exif`] tags;
//! - [`bench`]: the `sugarcube bench` workloads `audio_to_image` and `audio_to_wav`;
//! - [`domain`]: the `audio` domain (notes as spectrogram images conditioned on instrument
//!   and pitch) and its report section ([`report`]).

pub mod bench;
pub mod cli;
pub mod codec;
pub mod domain;
pub mod exif;
pub mod griffin_lim;
pub mod inverse_mel;
pub mod mel;
pub mod metrics;
pub mod pitch;
pub mod render;
pub mod report;
pub mod resample;
pub mod stft;
pub mod wav;

pub use codec::SpectrogramParams;
pub use domain::AudioNotes;
pub use wav::{read_wav, write_wav, Audio, WavFormat};
