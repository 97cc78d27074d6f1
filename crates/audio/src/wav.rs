//! WAV files: read 8/16/24/32-bit integer and 32-bit float PCM, mono or multi-channel, any
//! rate; write 16-bit integer or 32-bit float, through a temporary file and a rename.

use anyhow::{bail, ensure, Context};
use std::io::Cursor;
use std::path::Path;
use sugarcube_core::checkpoint::write_atomic;

/// Audio in memory: one `Vec` of samples in [-1, 1] per channel, all of one length.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    /// Samples per second.
    pub rate: u32,
    /// The channels' samples.
    pub channels: Vec<Vec<f32>>,
}

/// Clips joined end to end, each overlapping the next by `fade` seconds with a linear
/// crossfade (the fade shortened to the shorter clip where a clip is shorter than it); mono
/// clips are spread over the widest clip's channels. All clips must share one sample rate.
pub fn crossfaded(clips: &[Audio], fade: f64) -> anyhow::Result<Audio> {
    anyhow::ensure!(!clips.is_empty(), "no clips to join");
    anyhow::ensure!(
        fade.is_finite() && fade >= 0.0,
        "the crossfade must be a non-negative number of seconds, got {fade}"
    );
    let rate = clips[0].rate;
    if let Some(c) = clips.iter().find(|c| c.rate != rate) {
        anyhow::bail!("clips at {} Hz and {} Hz cannot be joined", rate, c.rate);
    }
    let channels = clips.iter().map(|c| c.channels.len()).max().unwrap_or(1);
    let mut out = vec![Vec::<f32>::new(); channels];
    let mut previous = 0usize;
    for clip in clips {
        let clip = clip.with_channels(channels);
        let n = ((fade * rate as f64).round() as usize)
            .min(clip.len())
            .min(previous);
        for (dst, src) in out.iter_mut().zip(&clip.channels) {
            let start = dst.len() - n;
            for (i, (d, s)) in dst[start..].iter_mut().zip(src).enumerate() {
                let w = (i as f32 + 0.5) / n as f32;
                *d = (1.0 - w) * *d + w * s;
            }
            dst.extend_from_slice(&src[n..]);
        }
        previous = clip.len();
    }
    Ok(Audio {
        rate,
        channels: out,
    })
}

/// How samples are stored in a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavFormat {
    /// 16-bit integer PCM (rounded, clipped to [-1, 1]).
    Int16,
    /// 32-bit IEEE float.
    Float32,
}

impl Audio {
    /// Frames (samples per channel).
    pub fn len(&self) -> usize {
        self.channels.first().map_or(0, |c| c.len())
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.len() as f64 / self.rate.max(1) as f64
    }

    /// The channels averaged into one.
    pub fn mono(&self) -> Vec<f32> {
        let k = self.channels.len().max(1) as f32;
        (0..self.len())
            .map(|i| self.channels.iter().map(|c| c[i]).sum::<f32>() / k)
            .collect()
    }

    /// A copy with `n` channels: averaged to one, a mono channel duplicated, or the first `n`.
    pub fn with_channels(&self, n: usize) -> Audio {
        let channels = match (self.channels.len(), n) {
            (a, b) if a == b => self.channels.clone(),
            (_, 1) => vec![self.mono()],
            (1, b) => vec![self.channels[0].clone(); b],
            (_, b) => {
                let m = self.mono();
                (0..b)
                    .map(|i| self.channels.get(i).cloned().unwrap_or_else(|| m.clone()))
                    .collect()
            }
        };
        Audio {
            rate: self.rate,
            channels,
        }
    }
}

/// Reads a WAV file (see [`parse_wav`]).
pub fn read_wav(path: &Path) -> anyhow::Result<Audio> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_wav(&bytes, &path.display().to_string())
}

/// Parses WAV bytes: integer PCM of 8, 16, 24 or 32 bits or 32-bit float, any number of
/// channels and any rate, scaled to [-1, 1]. A malformed, truncated or empty file is an error
/// naming `source`.
pub fn parse_wav(bytes: &[u8], source: &str) -> anyhow::Result<Audio> {
    let _t = sugarcube_core::profile::scope("wav_read");
    let reader = hound::WavReader::new(Cursor::new(bytes))
        .map_err(|e| anyhow::anyhow!("{source}: not a readable WAV file: {e}"))?;
    let spec = reader.spec();
    ensure!(
        spec.channels > 0,
        "{source}: the WAV header declares no channels"
    );
    ensure!(
        spec.sample_rate > 0,
        "{source}: the WAV header declares a sample rate of 0"
    );
    let k = spec.channels as usize;
    // hound reports the data chunk's declared length; never trust it for allocation
    let declared = reader.len() as usize;
    ensure!(
        declared <= bytes.len(),
        "{source}: the data chunk declares {declared} samples but the file has {} bytes",
        bytes.len()
    );
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{source}: truncated or damaged sample data: {e}"))?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{source}: truncated or damaged sample data: {e}"))?
        }
        (f, bits) => bail!(
            "{source}: {bits}-bit {} samples are not supported (8/16/24/32-bit integer or 32-bit float)",
            if f == hound::SampleFormat::Float { "float" } else { "integer" }
        ),
    };
    ensure!(
        interleaved.len().is_multiple_of(k),
        "{source}: {} samples do not divide into {k} channels (truncated file?)",
        interleaved.len()
    );
    ensure!(
        !interleaved.is_empty(),
        "{source}: the file holds no samples"
    );
    let frames = interleaved.len() / k;
    let channels = (0..k)
        .map(|c| (0..frames).map(|i| interleaved[i * k + c]).collect())
        .collect();
    Ok(Audio {
        rate: spec.sample_rate,
        channels,
    })
}

/// The bytes of a WAV file holding `audio`.
pub fn encode_wav(audio: &Audio, format: WavFormat) -> anyhow::Result<Vec<u8>> {
    let _t = sugarcube_core::profile::scope("wav_write");
    ensure!(
        !audio.channels.is_empty() && audio.channels.len() <= u16::MAX as usize,
        "a WAV file needs 1 to 65535 channels, got {}",
        audio.channels.len()
    );
    let n = audio.len();
    ensure!(
        audio.channels.iter().all(|c| c.len() == n),
        "channels of different lengths"
    );
    let spec = hound::WavSpec {
        channels: audio.channels.len() as u16,
        sample_rate: audio.rate,
        bits_per_sample: if format == WavFormat::Int16 { 16 } else { 32 },
        sample_format: if format == WavFormat::Int16 {
            hound::SampleFormat::Int
        } else {
            hound::SampleFormat::Float
        },
    };
    let mut out = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut out, spec)?;
        for i in 0..n {
            for c in &audio.channels {
                let x = if c[i].is_finite() { c[i] } else { 0.0 };
                match format {
                    WavFormat::Int16 => {
                        w.write_sample((x.clamp(-1.0, 1.0) * 32767.0).round() as i16)?
                    }
                    WavFormat::Float32 => w.write_sample(x)?,
                }
            }
        }
        w.finalize()?;
    }
    Ok(out.into_inner())
}

/// Writes `audio` as a WAV file through a temporary file and a rename.
pub fn write_wav(path: &Path, audio: &Audio, format: WavFormat) -> anyhow::Result<()> {
    let bytes =
        encode_wav(audio, format).with_context(|| format!("cannot write {}", path.display()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossfades_keep_a_constant_constant() {
        let clip = |v: f32, n: usize| Audio {
            rate: 100,
            channels: vec![vec![v; n]],
        };
        let joined = crossfaded(&[clip(0.5, 100), clip(0.5, 80), clip(0.5, 60)], 0.1).unwrap();
        assert_eq!(joined.len(), 100 + 80 + 60 - 2 * 10);
        assert!(joined.channels[0].iter().all(|v| (v - 0.5).abs() < 1e-6));
        // the fade runs from the first clip to the second
        let j = crossfaded(&[clip(0.0, 50), clip(1.0, 50)], 0.2).unwrap();
        let fade = &j.channels[0][30..50];
        assert!(fade.windows(2).all(|w| w[1] > w[0]) && fade[0] > 0.0 && fade[19] < 1.0);
        assert_eq!(j.len(), 80);
        // a fade longer than a clip is cut to it; different rates are an error
        assert_eq!(
            crossfaded(&[clip(0.0, 5), clip(1.0, 5)], 1.0)
                .unwrap()
                .len(),
            5
        );
        let other = Audio {
            rate: 8,
            channels: vec![vec![0.0; 4]],
        };
        assert!(crossfaded(&[clip(0.0, 5), other], 0.1).is_err());
    }

    fn tone(rate: u32, n: usize) -> Audio {
        let c: Vec<f32> = (0..n)
            .map(|i| 0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin())
            .collect();
        Audio {
            rate,
            channels: vec![c.clone(), c.iter().map(|x| -x).collect()],
        }
    }

    #[test]
    fn writes_and_reads_back() {
        let a = tone(22050, 1000);
        let f = parse_wav(&encode_wav(&a, WavFormat::Float32).unwrap(), "f").unwrap();
        assert_eq!(f, a);
        let i = parse_wav(&encode_wav(&a, WavFormat::Int16).unwrap(), "i").unwrap();
        assert_eq!(i.rate, 22050);
        for (x, y) in i.channels[1].iter().zip(&a.channels[1]) {
            assert!((x - y).abs() < 1.0 / 32000.0);
        }
    }

    #[test]
    fn reads_every_integer_width() {
        for bits in [8u16, 16, 24, 32] {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 8000,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let mut out = Cursor::new(Vec::new());
            {
                let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
                let half = 1i64 << (bits - 2);
                for v in [0, half, -half] {
                    match bits {
                        8 => w.write_sample(v as i8).unwrap(),
                        16 => w.write_sample(v as i16).unwrap(),
                        _ => w.write_sample(v as i32).unwrap(),
                    }
                }
                w.finalize().unwrap();
            }
            let a = parse_wav(&out.into_inner(), "w").unwrap();
            assert_eq!(a.channels[0], vec![0.0, 0.5, -0.5], "{bits} bits");
        }
    }

    #[test]
    fn channel_mixing() {
        let a = tone(8000, 10);
        assert!(a.mono().iter().all(|x| x.abs() < 1e-7));
        assert_eq!(a.with_channels(1).channels.len(), 1);
        let m = a.with_channels(1).with_channels(2);
        assert_eq!(m.channels[0], m.channels[1]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let e = parse_wav(b"RIFF", "clip.wav").unwrap_err();
        assert!(format!("{e:#}").contains("clip.wav"));
        let good = encode_wav(&tone(8000, 100), WavFormat::Int16).unwrap();
        let e = parse_wav(&good[..good.len() - 3], "cut.wav").unwrap_err();
        assert!(format!("{e:#}").contains("cut.wav"), "{e:#}");
    }
}
