//! Spectrogram images: audio to mel spectrogram pictures and back, with the conventions of the
//! tools our users know.
//!
//! - `riffusion`: Riffusion's `SpectrogramParams` and `image_util` exactly: 44.1 kHz, 10 ms
//!   hop, 100 ms Hann window zero-padded to 400 ms, 512 HTK mel bins over 0 to 10 kHz (no
//!   filter norm) of the STFT magnitude of int16-scaled samples; the image is `255 - 255 *
//!   (S / max)^0.25` truncated to a byte, low frequencies at the bottom, RGB with R = G = B
//!   (stereo: R = 0, G = left, B = right), the parameters and the maximum in EXIF tags
//!   11000 to 11080; 512 frames (5.11 s) per image.
//! - `teticio` (audio-diffusion's `Mel`): 22.05 kHz, n_fft 2048, hop 512, 256 Slaney mel bins
//!   with Slaney norm of the power spectrum, in dB below the maximum with an 80 dB floor mapped
//!   to 0..255 (rounded), grayscale, low frequencies at the top, 256 frames per image.
//! - `cpu`: a small preset for training on CPUs, Riffusion's encoding at 16 kHz with 64 HTK mel
//!   bins from 40 Hz to 4 kHz (a 128 ms FFT, 64 ms window, 16 ms hop), 64 frames (1.0 s) per
//!   image.
//!
//! Every image also carries the full parameters as JSON in EXIF tag 11100, so an image made
//! with any preset decodes without being told which.

use crate::exif::{decode_tiff, encode_tiff, exif_of_png, png_with_exif, ExifValue};
use crate::griffin_lim::griffin_lim;
use crate::inverse_mel::InverseMel;
use crate::mel::{MelBank, MelNorm, MelScale};
use crate::resample::resample;
use crate::stft::Stft;
use crate::wav::Audio;
use anyhow::{bail, ensure, Context};
use image::ImageEncoder;
use serde::{Deserialize, Serialize};

/// How spectrogram values become pixel bytes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Encoding {
    /// Riffusion: `255 - 255 * (S / max)^power`, truncated.
    Riffusion {
        /// The power curve (0.25).
        power: f64,
    },
    /// audio-diffusion: dB below the maximum, `top_db` below mapped to 0, rounded.
    Decibels {
        /// The dynamic range (80 dB).
        top_db: f64,
    },
}

/// Everything that fixes a spectrogram image: the STFT, the mel filters, the encoding and
/// the inversion's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectrogramParams {
    /// The preset it came from (`riffusion`, `teticio`, `cpu`, or `exif`).
    pub preset: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Two channels (left, right) rather than one.
    pub stereo: bool,
    /// FFT size (the window zero-padded).
    pub n_fft: usize,
    /// Samples between frames.
    pub hop: usize,
    /// The Hann window's length.
    pub win_length: usize,
    /// Mel bins (the image's height).
    pub n_mels: usize,
    /// Lowest filter edge, Hz.
    pub fmin: f64,
    /// Highest filter edge, Hz.
    pub fmax: f64,
    /// The mel scale.
    pub mel_scale: MelScale,
    /// The filters' norm.
    pub mel_norm: MelNorm,
    /// 1 for magnitudes, 2 for powers.
    pub spectrogram_power: f64,
    /// How values become bytes.
    pub encoding: Encoding,
    /// Low frequencies at the bottom of the image.
    pub flip: bool,
    /// Frames (pixels) per image when a clip is split.
    pub frames_per_image: usize,
    /// Samples are multiplied by this before the STFT (Riffusion works on int16 values).
    pub sample_scale: f32,
    /// Griffin-Lim iterations.
    pub griffin_lim_iters: usize,
    /// Griffin-Lim momentum.
    pub momentum: f32,
    /// Projected-gradient steps of the inverse mel.
    pub inverse_mel_iters: usize,
}

/// Riffusion's EXIF tags.
pub mod tags {
    /// Sample rate.
    pub const SAMPLE_RATE: u16 = 11000;
    /// Stereo flag.
    pub const STEREO: u16 = 11005;
    /// Hop, ms.
    pub const STEP_SIZE_MS: u16 = 11010;
    /// Window, ms.
    pub const WINDOW_DURATION_MS: u16 = 11020;
    /// Padded window (FFT size), ms.
    pub const PADDED_DURATION_MS: u16 = 11030;
    /// Mel bins.
    pub const NUM_FREQUENCIES: u16 = 11040;
    /// Lowest frequency.
    pub const MIN_FREQUENCY: u16 = 11050;
    /// Highest frequency.
    pub const MAX_FREQUENCY: u16 = 11060;
    /// The image's power curve.
    pub const POWER_FOR_IMAGE: u16 = 11070;
    /// The spectrogram's maximum.
    pub const MAX_VALUE: u16 = 11080;
    /// sugarcube's own: the whole [`super::SpectrogramParams`] as JSON.
    pub const SUGARCUBE_PARAMS: u16 = 11100;
}

/// Riffusion's integer-millisecond window sizes, as its properties compute them
/// (`int(ms / 1000.0 * sample_rate)`).
fn samples_of_ms(ms: f64, rate: u32) -> usize {
    (ms / 1000.0 * rate as f64) as usize
}

impl SpectrogramParams {
    /// Riffusion's defaults.
    pub fn riffusion() -> Self {
        Self::riffusion_with(44100, false, 10.0, 100.0, 400.0, 512, 0.0, 10000.0, 0.25)
    }

    /// Riffusion's parameterisation (as in its EXIF tags).
    #[allow(clippy::too_many_arguments)]
    fn riffusion_with(
        sample_rate: u32,
        stereo: bool,
        step_ms: f64,
        window_ms: f64,
        padded_ms: f64,
        n_mels: usize,
        fmin: f64,
        fmax: f64,
        power: f64,
    ) -> Self {
        Self {
            preset: "riffusion".into(),
            sample_rate,
            stereo,
            n_fft: samples_of_ms(padded_ms, sample_rate),
            hop: samples_of_ms(step_ms, sample_rate),
            win_length: samples_of_ms(window_ms, sample_rate),
            n_mels,
            fmin,
            fmax,
            mel_scale: MelScale::Htk,
            mel_norm: MelNorm::None,
            spectrogram_power: 1.0,
            encoding: Encoding::Riffusion { power },
            flip: true,
            frames_per_image: 512,
            sample_scale: 32768.0,
            griffin_lim_iters: 32,
            momentum: 0.99,
            inverse_mel_iters: 40,
        }
    }

    /// audio-diffusion's (teticio) defaults.
    pub fn teticio() -> Self {
        Self {
            preset: "teticio".into(),
            sample_rate: 22050,
            stereo: false,
            n_fft: 2048,
            hop: 512,
            win_length: 2048,
            n_mels: 256,
            fmin: 0.0,
            fmax: 11025.0,
            mel_scale: MelScale::Slaney,
            mel_norm: MelNorm::Slaney,
            spectrogram_power: 2.0,
            encoding: Encoding::Decibels { top_db: 80.0 },
            flip: false,
            frames_per_image: 256,
            sample_scale: 1.0,
            griffin_lim_iters: 32,
            momentum: 0.99,
            inverse_mel_iters: 40,
        }
    }

    /// The small CPU training preset.
    pub fn cpu() -> Self {
        Self {
            preset: "cpu".into(),
            n_mels: 64,
            fmin: 40.0,
            fmax: 4000.0,
            frames_per_image: 64,
            ..Self::riffusion_with(16000, false, 16.0, 64.0, 128.0, 64, 40.0, 4000.0, 0.25)
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "riffusion" => Self::riffusion(),
            "teticio" => Self::teticio(),
            "cpu" => Self::cpu(),
            other => bail!("unknown spectrogram preset `{other}` (riffusion, teticio, cpu)"),
        })
    }

    /// Checks that the numbers make a spectrogram.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.sample_rate > 0, "sample_rate must be positive");
        ensure!(
            self.hop > 0 && self.win_length > 0 && self.win_length <= self.n_fft,
            "need 0 < hop, 0 < win_length <= n_fft (hop {}, win_length {}, n_fft {})",
            self.hop,
            self.win_length,
            self.n_fft
        );
        ensure!(
            (1..=4096).contains(&self.n_mels),
            "n_mels {} must be in 1..=4096",
            self.n_mels
        );
        ensure!(
            self.frames_per_image >= 2,
            "frames_per_image must be at least 2"
        );
        ensure!(
            self.spectrogram_power > 0.0 && self.sample_scale > 0.0,
            "spectrogram_power and sample_scale must be positive"
        );
        if let Encoding::Riffusion { power } = self.encoding {
            ensure!(power > 0.0, "the image power must be positive");
        }
        if let Encoding::Decibels { top_db } = self.encoding {
            ensure!(top_db > 0.0, "top_db must be positive");
            ensure!(!self.stereo, "the decibel (teticio) encoding is mono only");
        }
        MelBank::new(
            self.sample_rate,
            self.n_fft,
            self.n_mels,
            self.fmin,
            self.fmax,
            self.mel_scale,
            self.mel_norm,
        )?;
        Ok(())
    }

    /// The filterbank.
    pub fn mel_bank(&self) -> anyhow::Result<MelBank> {
        let _t = sugarcube_core::profile::scope("mel_plan");
        MelBank::new(
            self.sample_rate,
            self.n_fft,
            self.n_mels,
            self.fmin,
            self.fmax,
            self.mel_scale,
            self.mel_norm,
        )
    }

    /// The planned STFT.
    pub fn stft(&self) -> anyhow::Result<Stft> {
        let _t = sugarcube_core::profile::scope("stft_plan");
        Stft::new(self.n_fft, self.hop, self.win_length)
    }

    /// Channels of the images' audio.
    pub fn channels(&self) -> usize {
        if self.stereo {
            2
        } else {
            1
        }
    }

    /// Samples of the clip that one full image holds.
    pub fn samples_per_image(&self) -> usize {
        (self.frames_per_image - 1) * self.hop
    }

    /// `audio` at this preset's rate and channel count (downmixed or duplicated, resampled
    /// band-limited).
    pub fn prepare(&self, audio: &Audio) -> Audio {
        let _t = sugarcube_core::profile::scope("resample");
        let a = audio.with_channels(self.channels());
        Audio {
            rate: self.sample_rate,
            channels: a
                .channels
                .iter()
                .map(|c| resample(c, a.rate, self.sample_rate))
                .collect(),
        }
    }

    /// The EXIF tags of an image with spectrogram maximum `max_value`: Riffusion's (when the
    /// window sizes are whole milliseconds) and the JSON of all parameters.
    pub fn exif_tags(&self, max_value: f64) -> anyhow::Result<Vec<(u16, ExifValue)>> {
        let mut t = vec![];
        let ms = |n: usize| n as f64 * 1000.0 / self.sample_rate as f64;
        let whole = |v: f64| (v - v.round()).abs() < 1e-9;
        if let Encoding::Riffusion { power } = self.encoding {
            let (step, win, pad) = (ms(self.hop), ms(self.win_length), ms(self.n_fft));
            if whole(step) && whole(win) && whole(pad) && whole(self.fmin) && whole(self.fmax) {
                t.extend([
                    (tags::SAMPLE_RATE, ExifValue::Int(self.sample_rate as i64)),
                    (tags::STEREO, ExifValue::Int(self.stereo as i64)),
                    (tags::STEP_SIZE_MS, ExifValue::Int(step.round() as i64)),
                    (tags::WINDOW_DURATION_MS, ExifValue::Int(win.round() as i64)),
                    (tags::PADDED_DURATION_MS, ExifValue::Int(pad.round() as i64)),
                    (tags::NUM_FREQUENCIES, ExifValue::Int(self.n_mels as i64)),
                    (
                        tags::MIN_FREQUENCY,
                        ExifValue::Int(self.fmin.round() as i64),
                    ),
                    (
                        tags::MAX_FREQUENCY,
                        ExifValue::Int(self.fmax.round() as i64),
                    ),
                    (tags::POWER_FOR_IMAGE, ExifValue::Float(power)),
                ]);
            }
        }
        t.push((tags::MAX_VALUE, ExifValue::Float(max_value)));
        t.push((
            tags::SUGARCUBE_PARAMS,
            ExifValue::Text(serde_json::to_string(self)?),
        ));
        Ok(t)
    }

    /// The parameters an image's EXIF tags give (sugarcube's JSON when present, else
    /// Riffusion's tags over Riffusion's defaults), and the spectrogram maximum when recorded.
    pub fn from_exif(tags_: &[(u16, ExifValue)]) -> anyhow::Result<Option<(Self, Option<f64>)>> {
        let get = |t: u16| tags_.iter().find(|x| x.0 == t).map(|x| &x.1);
        let max_value = get(tags::MAX_VALUE).and_then(|v| v.as_f64());
        if let Some(ExifValue::Text(json)) = get(tags::SUGARCUBE_PARAMS) {
            let p: Self = serde_json::from_str(json)
                .context("EXIF tag 11100 does not hold sugarcube spectrogram parameters")?;
            p.validate()?;
            return Ok(Some((p, max_value)));
        }
        let Some(rate) = get(tags::SAMPLE_RATE) else {
            return Ok(None);
        };
        let num = |t: u16, name: &str| -> anyhow::Result<f64> {
            get(t)
                .and_then(|v| v.as_f64())
                .with_context(|| format!("the image's EXIF lacks Riffusion's {name} (tag {t})"))
        };
        let rate = rate.as_f64().context("EXIF sample rate is not a number")?;
        ensure!(
            (1.0..=1e6).contains(&rate),
            "EXIF sample rate {rate} is out of range"
        );
        let n_mels = num(tags::NUM_FREQUENCIES, "num_frequencies")?;
        ensure!(
            (1.0..=4096.0).contains(&n_mels),
            "EXIF num_frequencies {n_mels} is out of range"
        );
        let mut p = Self::riffusion_with(
            rate as u32,
            num(tags::STEREO, "stereo")? != 0.0,
            num(tags::STEP_SIZE_MS, "step_size_ms")?,
            num(tags::WINDOW_DURATION_MS, "window_duration_ms")?,
            num(tags::PADDED_DURATION_MS, "padded_duration_ms")?,
            n_mels as usize,
            num(tags::MIN_FREQUENCY, "min_frequency")?,
            num(tags::MAX_FREQUENCY, "max_frequency")?,
            num(tags::POWER_FOR_IMAGE, "power_for_image")?,
        );
        p.preset = "exif".into();
        p.validate().context("the image's EXIF parameters")?;
        Ok(Some((p, max_value)))
    }
}

/// A mel spectrogram: per channel, `frames` rows of `n_mels` values (`[frame][mel]`).
#[derive(Clone, Debug, PartialEq)]
pub struct MelSpectrogram {
    /// Frames.
    pub frames: usize,
    /// Mel bins.
    pub n_mels: usize,
    /// One `frames * n_mels` buffer per channel.
    pub channels: Vec<Vec<f32>>,
}

impl MelSpectrogram {
    /// The largest value over all channels.
    pub fn max(&self) -> f32 {
        self.channels.iter().flatten().fold(0f32, |a, &b| a.max(b))
    }
}

/// The mel spectrogram of `audio` (already at the preset's rate and channel count).
pub fn mel_spectrogram(p: &SpectrogramParams, audio: &Audio) -> anyhow::Result<MelSpectrogram> {
    ensure!(
        audio.rate == p.sample_rate && audio.channels.len() == p.channels(),
        "audio at {} Hz with {} channels for a {} Hz {}-channel spectrogram (prepare it first)",
        audio.rate,
        audio.channels.len(),
        p.sample_rate,
        p.channels()
    );
    let stft = p.stft()?;
    let bank = p.mel_bank()?;
    let mut channels = vec![];
    let mut frames = 0;
    for c in &audio.channels {
        let scaled: Vec<f32> = c.iter().map(|v| v * p.sample_scale).collect();
        let s = {
            let _t = sugarcube_core::profile::scope("stft");
            stft.forward(&scaled)?
        };
        let _t = sugarcube_core::profile::scope("mel_filterbank");
        frames = s.frames;
        let mut mel = vec![0f32; s.frames * p.n_mels];
        let mut row = vec![0f32; s.bins];
        for t in 0..s.frames {
            for (r, z) in row.iter_mut().zip(&s.data[t * s.bins..(t + 1) * s.bins]) {
                let m = z.norm_sqr().sqrt();
                *r = if p.spectrogram_power == 1.0 {
                    m
                } else {
                    m.powf(p.spectrogram_power as f32)
                };
            }
            bank.apply_frame(&row, &mut mel[t * p.n_mels..(t + 1) * p.n_mels]);
        }
        channels.push(mel);
    }
    Ok(MelSpectrogram {
        frames,
        n_mels: p.n_mels,
        channels,
    })
}

/// An 8-bit image: `height x width` pixels of `channels` (1 or 3) bytes, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    /// Width (frames).
    pub width: usize,
    /// Height (mel bins).
    pub height: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: Vec<u8>,
}

/// Writes the pixel of frame `t`, bin `m`.
type PixelWriter<'a> = &'a dyn Fn(usize, usize, &mut [u8]);

/// Parameters read from an image's EXIF block, with the spectrogram maximum when recorded.
pub type ExifParams = (SpectrogramParams, Option<f64>);

/// The image of a mel spectrogram and the maximum it was scaled by.
pub fn encode_pixels(p: &SpectrogramParams, mel: &MelSpectrogram) -> anyhow::Result<(Pixels, f64)> {
    let _t = sugarcube_core::profile::scope("to_pixels");
    let max = mel.max() as f64;
    let (w, h) = (mel.frames, mel.n_mels);
    let byte = |v: f32| -> u8 {
        match p.encoding {
            Encoding::Riffusion { power } => {
                let x = if max > 0.0 {
                    (v as f64 / max).powf(power)
                } else {
                    0.0
                };
                // numpy: (255 - x * 255).astype(uint8) truncates
                (255.0 - x * 255.0).clamp(0.0, 255.0) as u8
            }
            Encoding::Decibels { top_db } => {
                let amin = 1e-10f64;
                let db = 10.0 * (v as f64).max(amin).log10() - 10.0 * max.max(amin).log10();
                let db = db.max(-top_db);
                (((db + top_db) * 255.0 / top_db).clamp(0.0, 255.0) + 0.5) as u8
            }
        }
    };
    let row_of = |m: usize| if p.flip { h - 1 - m } else { m };
    let (channels, layout): (usize, PixelWriter) = match (p.encoding, mel.channels.len()) {
        (Encoding::Decibels { .. }, 1) => (1, &|t, m, px| px[0] = byte(mel.channels[0][t * h + m])),
        (Encoding::Riffusion { .. }, 1) => (3, &|t, m, px| {
            let b = byte(mel.channels[0][t * h + m]);
            px.copy_from_slice(&[b, b, b]);
        }),
        (Encoding::Riffusion { .. }, 2) => (3, &|t, m, px| {
            px.copy_from_slice(&[
                0,
                byte(mel.channels[0][t * h + m]),
                byte(mel.channels[1][t * h + m]),
            ]);
        }),
        (_, k) => bail!("cannot encode {k} channels with this preset"),
    };
    let mut data = vec![0u8; w * h * channels];
    for t in 0..w {
        for m in 0..h {
            let at = (row_of(m) * w + t) * channels;
            layout(t, m, &mut data[at..at + channels]);
        }
    }
    Ok((
        Pixels {
            width: w,
            height: h,
            channels,
            data,
        },
        max,
    ))
}

/// The mel spectrogram an image holds (`max_value` undoes the scaling; 1 when unknown).
pub fn decode_pixels(
    p: &SpectrogramParams,
    px: &Pixels,
    max_value: f64,
) -> anyhow::Result<MelSpectrogram> {
    let _t = sugarcube_core::profile::scope("from_pixels");
    ensure!(
        px.height == p.n_mels,
        "the image is {} pixels tall but the parameters have {} mel bins",
        px.height,
        p.n_mels
    );
    let (w, h) = (px.width, px.height);
    let pick: Vec<usize> = match (px.channels, p.stereo) {
        (1, false) => vec![0],
        (3, false) => vec![0],
        (3, true) => vec![1, 2],
        (1, true) => bail!("a grayscale image cannot hold stereo audio"),
        (c, _) => bail!("images of {c} channels are not spectrograms"),
    };
    let value = |b: u8| -> f32 {
        match p.encoding {
            Encoding::Riffusion { power } => {
                ((255.0 - b as f64) / 255.0).powf(1.0 / power) as f32 * max_value as f32
            }
            Encoding::Decibels { top_db } => {
                let db = b as f64 * top_db / 255.0 - top_db;
                (10f64.powf(db / 10.0) * max_value) as f32
            }
        }
    };
    let channels = pick
        .iter()
        .map(|&c| {
            let mut mel = vec![0f32; w * h];
            for t in 0..w {
                for m in 0..h {
                    let row = if p.flip { h - 1 - m } else { m };
                    mel[t * h + m] = value(px.data[(row * w + t) * px.channels + c]);
                }
            }
            mel
        })
        .collect();
    Ok(MelSpectrogram {
        frames: w,
        n_mels: h,
        channels,
    })
}

/// PNG bytes of `px` with the parameters in its EXIF block.
pub fn png_of(p: &SpectrogramParams, px: &Pixels, max_value: f64) -> anyhow::Result<Vec<u8>> {
    let _t = sugarcube_core::profile::scope("png_encode");
    let mut png = Vec::new();
    let colour = if px.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        &px.data,
        px.width as u32,
        px.height as u32,
        colour,
    )?;
    png_with_exif(&png, &encode_tiff(&p.exif_tags(max_value)?)?)
}

/// Decodes PNG (or other image) bytes: the pixels, and the parameters from the EXIF block if
/// it has them.
pub fn read_image(bytes: &[u8], source: &str) -> anyhow::Result<(Pixels, Option<ExifParams>)> {
    let _t = sugarcube_core::profile::scope("png_decode");
    let img = image::load_from_memory(bytes)
        .map_err(|e| anyhow::anyhow!("{source}: not a readable image: {e}"))?;
    let exif = if bytes.starts_with(b"\x89PNG") {
        match exif_of_png(bytes).with_context(|| source.to_string())? {
            Some(t) => SpectrogramParams::from_exif(
                &decode_tiff(&t).with_context(|| format!("{source}: EXIF"))?,
            )
            .with_context(|| source.to_string())?,
            None => None,
        }
    } else {
        None
    };
    let (channels, data, width, height) = match img.color().channel_count() {
        1 | 2 => {
            let g = img.to_luma8();
            (1, g.as_raw().clone(), g.width(), g.height())
        }
        _ => {
            let c = img.to_rgb8();
            (3, c.as_raw().clone(), c.width(), c.height())
        }
    };
    Ok((
        Pixels {
            width: width as usize,
            height: height as usize,
            channels,
            data,
        },
        exif,
    ))
}

/// The linear spectrogram magnitudes (`[frame][bin]` per channel) of a mel spectrogram, by
/// the non-negative least-squares inverse of the filterbank (planned once by the caller).
fn linear_magnitudes(
    p: &SpectrogramParams,
    inverse: &InverseMel,
    mel: &MelSpectrogram,
) -> Vec<Vec<f32>> {
    let _t = sugarcube_core::profile::scope("inverse_mel");
    mel.channels
        .iter()
        .map(|c| {
            let mut linear = inverse.apply(c);
            if p.spectrogram_power != 1.0 {
                let e = (1.0 / p.spectrogram_power) as f32;
                linear.iter_mut().for_each(|v| *v = v.max(0.0).powf(e));
            }
            linear
        })
        .collect()
}

/// Audio from linear magnitudes of `frames` frames per channel: Griffin-Lim (seeded per
/// channel) and the sample scale undone.
fn phase_and_scale(
    p: &SpectrogramParams,
    linear: &[Vec<f32>],
    frames: usize,
    seed: u64,
) -> anyhow::Result<Audio> {
    let stft = p.stft()?;
    let mut channels = vec![];
    for (i, m) in linear.iter().enumerate() {
        let y = griffin_lim(
            &stft,
            m,
            frames,
            p.griffin_lim_iters,
            p.momentum,
            None,
            seed.wrapping_add(i as u64),
        )?;
        channels.push(y.iter().map(|v| v / p.sample_scale).collect());
    }
    Ok(Audio {
        rate: p.sample_rate,
        channels,
    })
}

/// A clip as spectrogram images: split into pieces of [`SpectrogramParams::samples_per_image`]
/// samples (`wide`: one image of the whole clip), each the PNG bytes of its image. The last
/// piece is shorter, and padded with silence only when it is too short for the STFT. An image
/// of `F` frames decodes to `(F - 1) * hop` samples, so the last piece's reconstruction may be
/// up to one hop shorter than the piece.
pub fn images_of_clip(
    p: &SpectrogramParams,
    audio: &Audio,
    wide: bool,
) -> anyhow::Result<Vec<Vec<u8>>> {
    p.validate()?;
    let a = p.prepare(audio);
    ensure!(!a.is_empty(), "the clip is empty");
    let step = if wide { a.len() } else { p.samples_per_image() };
    // the shortest piece whose reconstruction (frames - 1 hops) still outlasts the STFT's
    // reflect padding
    let min = p.hop * (p.n_fft / 2 / p.hop + 2);
    let mut out = vec![];
    let mut start = 0;
    while start < a.len() {
        let end = (start + step).min(a.len());
        let piece = Audio {
            rate: a.rate,
            channels: a
                .channels
                .iter()
                .map(|c| {
                    let mut v = c[start..end].to_vec();
                    if v.len() < min {
                        v.resize(min, 0.0);
                    }
                    v
                })
                .collect(),
        };
        let mel = mel_spectrogram(p, &piece)?;
        let (px, max) = encode_pixels(p, &mel)?;
        out.push(png_of(p, &px, max)?);
        start = end;
    }
    Ok(out)
}

/// The audio of spectrogram images (in order, joined end to end), with the parameters taken
/// from each image's EXIF when present, else `fallback`; all images must share them. The
/// images' linear spectrograms are joined before Griffin-Lim (an image's last frame and the
/// next image's first fall on the same sample, so they are averaged), so the phase runs on
/// across the joins instead of jumping at each.
pub fn clip_of_images(
    images: &[(Vec<u8>, String)],
    fallback: &SpectrogramParams,
    iterations: Option<usize>,
    seed: u64,
) -> anyhow::Result<(Audio, SpectrogramParams)> {
    let mut used: Option<(SpectrogramParams, InverseMel)> = None;
    let mut joined: Vec<Vec<f32>> = vec![];
    let mut frames = 0usize;
    let mut scaled = true;
    for (bytes, source) in images {
        let (px, exif) = read_image(bytes, source)?;
        let (mut p, max) = exif.unwrap_or_else(|| (fallback.clone(), None));
        if let Some(n) = iterations {
            p.griffin_lim_iters = n;
        }
        scaled &= max.is_some();
        let mel = decode_pixels(&p, &px, max.unwrap_or(1.0)).with_context(|| source.clone())?;
        let bins = p.n_fft / 2 + 1;
        match &used {
            None => {
                let inverse = InverseMel::new(p.mel_bank()?, p.inverse_mel_iters)?;
                joined = linear_magnitudes(&p, &inverse, &mel);
                frames = mel.frames;
                used = Some((p, inverse));
            }
            Some((first, inverse)) => {
                let mut a = first.clone();
                a.preset.clone_from(&p.preset);
                ensure!(
                    a == p,
                    "{source}: its spectrogram parameters differ from the first image's"
                );
                for (j, l) in joined.iter_mut().zip(linear_magnitudes(&p, inverse, &mel)) {
                    // average the shared frame, then append the rest
                    let last = j.len() - bins;
                    for k in 0..bins {
                        j[last + k] = 0.5 * (j[last + k] + l[k]);
                    }
                    j.extend_from_slice(&l[bins..]);
                }
                frames += mel.frames - 1;
            }
        }
    }
    let (p, _) = used.context("no images given")?;
    let mut a = phase_and_scale(&p, &joined, frames, seed)?;
    if !scaled {
        // no recorded scale: peak at -0.1 dB, as Riffusion's pydub normalisation does
        let peak = a
            .channels
            .iter()
            .flatten()
            .fold(0f32, |m, v| m.max(v.abs()));
        if peak > 0.0 {
            let g = 10f32.powf(-0.1 / 20.0) / peak;
            a.channels.iter_mut().flatten().for_each(|v| *v *= g);
        }
    }
    Ok((a, p))
}

/// How well a clip survives the round trip through its images: spectral convergence and
/// log-spectral distance (dB) of the reconstruction's linear STFT magnitude against the
/// original's, both at the preset's rate and channels, over the bins of the mel filters'
/// band (`fmin..=fmax`, what the images hold).
#[derive(Clone, Debug)]
pub struct RoundTrip {
    /// Spectral convergence, dB.
    pub spectral_convergence_db: f64,
    /// Log-spectral distance, dB.
    pub log_spectral_distance_db: f64,
    /// The reconstructed clip.
    pub audio: Audio,
    /// Images made.
    pub images: usize,
}

/// wav -> images -> wav, measured.
pub fn round_trip(p: &SpectrogramParams, audio: &Audio, seed: u64) -> anyhow::Result<RoundTrip> {
    let original = p.prepare(audio);
    // already at the preset's rate and channels: not resampled again
    let images = images_of_clip(p, &original, false)?;
    let named: Vec<(Vec<u8>, String)> = images
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), format!("image {i}")))
        .collect();
    let (back, _) = clip_of_images(&named, p, None, seed)?;
    let (sc, lsd) = reconstruction_quality(p, &original, &back)?;
    Ok(RoundTrip {
        spectral_convergence_db: sc,
        log_spectral_distance_db: lsd,
        audio: back,
        images: images.len(),
    })
}

/// Spectral convergence and log-spectral distance (dB) of `back`'s linear STFT magnitude
/// against `original`'s (both at the preset's rate and channels; the shorter length of the
/// two), over the bins of the mel filters' band (`fmin..=fmax`, what the images hold).
pub fn reconstruction_quality(
    p: &SpectrogramParams,
    original: &Audio,
    back: &Audio,
) -> anyhow::Result<(f64, f64)> {
    let stft = p.stft()?;
    let hz = |k: usize| k as f64 * p.sample_rate as f64 / p.n_fft as f64;
    let band: Vec<usize> = (0..stft.bins())
        .filter(|&k| hz(k) >= p.fmin && hz(k) <= p.fmax)
        .collect();
    let in_band = |m: Vec<f32>| -> Vec<f32> {
        m.chunks(stft.bins())
            .flat_map(|f| band.iter().map(move |&k| f[k]))
            .collect()
    };
    let (mut reference, mut estimate) = (vec![], vec![]);
    for (a, b) in original.channels.iter().zip(&back.channels) {
        let n = a.len().min(b.len());
        reference.extend(in_band(stft.forward(&a[..n])?.magnitude()));
        estimate.extend(in_band(stft.forward(&b[..n])?.magnitude()));
    }
    Ok((
        crate::metrics::spectral_convergence_db(&reference, &estimate),
        crate::metrics::log_spectral_distance(&reference, &estimate, band.len()),
    ))
}
