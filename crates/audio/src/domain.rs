//! The `audio` domain: notes as spectrogram images (a preset of [`crate::codec`], the `cpu` one
//! by default: 64 mel bins x 64 frames of 16 ms for a one-second note), conditioned on two
//! fields, `instrument` and `pitch`, denoised by the core's 2-D UNet; samples are written as
//! spectrogram PNGs (with their parameters in EXIF, so `sugarcube audio to-wav` reads them)
//! and WAV files. Some (instrument, pitch) pairs are held out of training altogether, every
//! instrument and pitch still seen in other pairs, so the model has to compose the two fields;
//! the evaluation scores every generated note and again the held-out pairs alone
//! (`heldout_`):
//!
//! - `pitch_accuracy`: the fraction of generated notes whose fundamental (YIN, on the WAV
//!   decoded from the image) is within a semitone of the requested pitch, beside
//!   `pitch_accuracy_floor`, the same for the held-out real notes after the preset's own
//!   wav -> image -> wav round trip (the codec's ceiling);
//! - `instrument_accuracy`: the requested instrument as an evaluation classifier trained on the
//!   real training spectrograms sees it, beside `classifier_accuracy`, that classifier's
//!   accuracy on the held-out real notes;
//! - `fd` / `fd_floor`: the Fréchet distance in the classifier's features, generated vs
//!   held-out notes, beside as many training notes vs held-out;
//! - `nearest_train_ratio`: the median distance of a generated spectrogram to its nearest
//!   training spectrogram over the same median for the held-out real notes (below 1: closer to
//!   the training notes than new real notes are, i.e. copying).

use crate::codec::{
    clip_of_images, encode_pixels, mel_spectrogram, png_of, round_trip, Pixels, SpectrogramParams,
};
use crate::pitch::{midi_of_hz, Yin};
use crate::wav::{read_wav, write_wav, Audio, WavFormat};
use anyhow::{bail, ensure, Context};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use sugarcube_core::cond::{CondSpec, Condition, Field, Value};
use sugarcube_core::denoiser::Denoiser;
use sugarcube_core::domain::{Batch, DataInfo, Dataset, Domain, Evaluation, Samples, Split};
use sugarcube_core::frechet::frechet_between;
use sugarcube_core::nn::eval_classifier::{self, classes_of, Pooling, Targets, TrainSettings};
use sugarcube_core::nn::unet::{Dims, UNet, UNetConfig};
use sugarcube_core::rng::Rng;
use sugarcube_core::run::{load_run, Interpolation, InterpolationEnds, SampleRequest};

/// Which (instrument, pitch) pairs never appear in training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeldoutPairs {
    /// This many pairs drawn by the experiment's seed, so that every instrument and every pitch
    /// keeps at least one pair in training.
    Count(usize),
    /// These pairs, as `INSTRUMENT:PITCH` (`violin:60`).
    Pairs(Vec<String>),
}

impl Default for HeldoutPairs {
    fn default() -> Self {
        HeldoutPairs::Count(5)
    }
}

/// The `[data]` table of an audio experiment. Paths are relative to the working directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioData {
    /// A folder of WAV notes with a `notes.csv` (columns `file`, `instrument`, `pitch`; others
    /// ignored), as `sugarcube audio render-notes` writes it.
    pub notes: PathBuf,
    /// The spectrogram preset: `cpu` (default), `riffusion` or `teticio`.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// The (instrument, pitch) pairs held out of training: a count (default 5) or a list.
    #[serde(default)]
    pub heldout_pairs: HeldoutPairs,
}

fn default_preset() -> String {
    "cpu".into()
}

/// The `[eval]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioEval {
    /// Notes to generate (every (instrument, pitch) pair in turn). Default 200.
    pub n: usize,
    /// Passes of the instrument classifier over the training notes. Default 40.
    pub classifier_epochs: usize,
    /// The classifier's seed. Default 0.
    pub classifier_seed: u64,
}

impl Default for AudioEval {
    fn default() -> Self {
        Self {
            n: 200,
            classifier_epochs: 40,
            classifier_seed: 0,
        }
    }
}

/// One labelled note file.
#[derive(Clone, Debug)]
pub struct Note {
    /// The WAV file.
    pub file: PathBuf,
    /// Its instrument.
    pub instrument: String,
    /// Its MIDI key.
    pub pitch: u32,
}

/// Reads `DIR/notes.csv`.
pub fn read_notes(dir: &Path) -> anyhow::Result<Vec<Note>> {
    let path = dir.join("notes.csv");
    let mut reader =
        csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let head = reader
        .headers()
        .with_context(|| format!("{}: no header line", path.display()))?
        .clone();
    let column = |name: &str| {
        head.iter().position(|h| h.trim() == name).with_context(|| {
            format!(
                "{}: no `{name}` column (expected file, instrument, pitch)",
                path.display()
            )
        })
    };
    let (f, i, p) = (column("file")?, column("instrument")?, column("pitch")?);
    let mut notes = vec![];
    for (k, row) in reader.records().enumerate() {
        let line = k + 2;
        let row = row.with_context(|| format!("{} line {line}", path.display()))?;
        let get = |c: usize| row.get(c).map(str::trim).unwrap_or("");
        let pitch: u32 = get(p).parse().map_err(|_| {
            anyhow::anyhow!(
                "{} line {line}: pitch `{}` is not a MIDI key (0..127)",
                path.display(),
                get(p)
            )
        })?;
        ensure!(
            pitch < 128,
            "{} line {line}: pitch {pitch} is not a MIDI key (0..127)",
            path.display()
        );
        ensure!(
            !get(f).is_empty() && !get(i).is_empty(),
            "{} line {line}: empty file or instrument",
            path.display()
        );
        notes.push(Note {
            file: dir.join(get(f)),
            instrument: get(i).to_string(),
            pitch,
        });
    }
    ensure!(!notes.is_empty(), "{} lists no notes", path.display());
    Ok(notes)
}

/// The notes of an experiment: the spectrogram parameters, the condition spec, the
/// held-out pairs, and both splits.
pub struct NoteSet {
    /// The preset.
    pub params: SpectrogramParams,
    /// Instrument names and pitches, in the order of the condition fields' classes.
    pub instruments: Vec<String>,
    /// The pitches, ascending.
    pub pitches: Vec<u32>,
    /// Held-out (instrument, pitch) pairs.
    pub heldout: BTreeSet<(String, u32)>,
    /// Training notes.
    pub train: Vec<Note>,
    /// Notes of the held-out pairs.
    pub held: Vec<Note>,
}

impl NoteSet {
    /// The condition spec: `instrument` and `pitch`, both categorical.
    pub fn spec(&self) -> CondSpec {
        CondSpec {
            fields: vec![
                Field::categorical("instrument", self.instruments.clone()),
                Field::categorical(
                    "pitch",
                    self.pitches.iter().map(|p| p.to_string()).collect(),
                ),
            ],
        }
    }

    /// A note's condition.
    pub fn condition(&self, n: &Note) -> Condition {
        let i = self.instruments.iter().position(|x| *x == n.instrument);
        let p = self.pitches.iter().position(|x| *x == n.pitch);
        Condition(vec![
            Value::Class(i.expect("listed") as u32),
            Value::Class(p.expect("listed") as u32),
        ])
    }
}

impl AudioData {
    /// Reads the notes and splits them by pair; `seed` draws the held-out pairs.
    pub fn notes(&self, seed: u64) -> anyhow::Result<NoteSet> {
        let params = SpectrogramParams::preset(&self.preset).context("data.preset")?;
        let all = read_notes(&self.notes)?;
        let mut instruments: Vec<String> = vec![];
        for n in &all {
            if !instruments.contains(&n.instrument) {
                instruments.push(n.instrument.clone());
            }
        }
        let pitches: Vec<u32> = all
            .iter()
            .map(|n| n.pitch)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let pairs: BTreeSet<(String, u32)> = all
            .iter()
            .map(|n| (n.instrument.clone(), n.pitch))
            .collect();
        let heldout = match &self.heldout_pairs {
            HeldoutPairs::Pairs(list) => {
                let mut out = BTreeSet::new();
                for s in list {
                    let (i, p) = s.rsplit_once(':').with_context(|| {
                        format!("data.heldout_pairs: `{s}` is not INSTRUMENT:PITCH")
                    })?;
                    let p: u32 = p
                        .parse()
                        .map_err(|_| anyhow::anyhow!("data.heldout_pairs: `{s}`: bad pitch"))?;
                    ensure!(
                        pairs.contains(&(i.to_string(), p)),
                        "data.heldout_pairs: `{s}` is not a pair of {}",
                        self.notes.join("notes.csv").display()
                    );
                    out.insert((i.to_string(), p));
                }
                out
            }
            HeldoutPairs::Count(k) => draw_pairs(&pairs, *k, seed)?,
        };
        for i in &instruments {
            ensure!(
                pairs.iter().any(|q| &q.0 == i && !heldout.contains(q)),
                "data.heldout_pairs holds out every pair of instrument {i}"
            );
        }
        for p in &pitches {
            ensure!(
                pairs.iter().any(|q| q.1 == *p && !heldout.contains(q)),
                "data.heldout_pairs holds out every pair of pitch {p}"
            );
        }
        let (held, train): (Vec<Note>, Vec<Note>) = all
            .into_iter()
            .partition(|n| heldout.contains(&(n.instrument.clone(), n.pitch)));
        Ok(NoteSet {
            params,
            instruments,
            pitches,
            heldout,
            train,
            held,
        })
    }
}

/// `k` pairs drawn by `seed`, each kept only while every instrument and pitch still has a
/// training pair.
fn draw_pairs(
    pairs: &BTreeSet<(String, u32)>,
    k: usize,
    seed: u64,
) -> anyhow::Result<BTreeSet<(String, u32)>> {
    let mut order: Vec<&(String, u32)> = pairs.iter().collect();
    Rng::named(seed, "audio-heldout-pairs").shuffle(&mut order);
    let mut held = BTreeSet::new();
    for q in order {
        if held.len() == k {
            break;
        }
        let left_i = pairs
            .iter()
            .filter(|r| r.0 == q.0 && !held.contains(*r) && *r != q)
            .count();
        let left_p = pairs
            .iter()
            .filter(|r| r.1 == q.1 && !held.contains(*r) && *r != q)
            .count();
        if left_i > 0 && left_p > 0 {
            held.insert(q.clone());
        }
    }
    ensure!(
        held.len() == k,
        "data.heldout_pairs = {k}: only {} pairs can be held out with every instrument and pitch still in training",
        held.len()
    );
    Ok(held)
}

/// A note's spectrogram image (one channel of bytes, `[n_mels, frames]`) and its maximum: the
/// clip resampled and downmixed to the preset, cut or padded with silence to exactly one
/// image.
pub fn note_image(p: &SpectrogramParams, audio: &Audio) -> anyhow::Result<(Pixels, f64)> {
    let mut a = p.prepare(audio);
    let len = (p.frames_per_image - 1) * p.hop;
    for c in a.channels.iter_mut() {
        c.resize(len, 0.0);
    }
    let mel = mel_spectrogram(p, &a)?;
    let (px, max) = encode_pixels(p, &mel)?;
    let data: Vec<u8> = px.data.iter().step_by(px.channels).copied().collect();
    Ok((
        Pixels {
            channels: 1,
            data,
            ..px
        },
        max,
    ))
}

fn to_unit(px: &Pixels) -> Vec<f32> {
    px.data.iter().map(|&b| b as f32 / 127.5 - 1.0).collect()
}

fn of_unit(values: &[f32], height: usize, width: usize) -> Pixels {
    Pixels {
        width,
        height,
        channels: 1,
        data: values
            .iter()
            .map(|v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8)
            .collect(),
    }
}

/// Spectrogram images of notes as `[N, 1, H, W]` values in [-1, 1], with each note's maximum.
fn images(p: &SpectrogramParams, notes: &[Note]) -> anyhow::Result<(Vec<f32>, Vec<f64>)> {
    use rayon::prelude::*;
    let done: Vec<(Vec<f32>, f64)> = notes
        .par_iter()
        .map(|n| {
            let a = read_wav(&n.file)?;
            let (px, max) = note_image(p, &a).with_context(|| n.file.display().to_string())?;
            Ok((to_unit(&px), max))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((
        done.iter().flat_map(|d| d.0.iter().copied()).collect(),
        done.iter().map(|d| d.1).collect(),
    ))
}

/// What sampling needs from the training notes, kept in `data_info.json`.
#[derive(Serialize, Deserialize)]
struct Stats {
    /// The spectrogram parameters.
    params: SpectrogramParams,
    /// The median of the training notes' spectrogram maxima: the scale generated images are
    /// decoded with.
    max_value: f64,
}

struct NoteDataset {
    x: Vec<f32>,
    conds: Vec<Condition>,
    info: DataInfo,
}

impl Dataset for NoteDataset {
    fn len(&self) -> usize {
        self.conds.len()
    }

    fn info(&self) -> DataInfo {
        self.info.clone()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Batch> {
        let size: usize = self.info.item_shape.iter().product();
        let mut x = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            x.extend_from_slice(&self.x[i * size..(i + 1) * size]);
        }
        let mut shape = vec![indices.len()];
        shape.extend(&self.info.item_shape);
        Ok(Batch {
            x0: Tensor::from_vec(x, shape, device)?,
            cond: indices.iter().map(|&i| self.conds[i].clone()).collect(),
            lengths: None,
        })
    }
}

/// The audio domain.
pub struct AudioNotes;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Generated images as pixels, PNG bytes (with EXIF) and decoded audio; Griffin-Lim's
/// starting phases of image `i` come from seed `seed + i * seed_step`.
fn decode(
    stats: &Stats,
    samples: &Samples,
    seed: u64,
    seed_step: u64,
) -> anyhow::Result<Vec<(Pixels, Vec<u8>, Audio)>> {
    use rayon::prelude::*;
    let (n, c, h, w) = samples
        .x
        .dims4()
        .context("audio samples must be [N, 1, H, W] images")?;
    ensure!(c == 1, "audio samples must have one channel, got {c}");
    let all: Vec<f32> = samples.x.flatten_all()?.to_vec1()?;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let px = of_unit(&all[i * h * w..(i + 1) * h * w], h, w);
            let png = png_of(&stats.params, &px, stats.max_value)?;
            let (audio, _) = clip_of_images(
                &[(png.clone(), format!("sample {i}"))],
                &stats.params,
                None,
                seed.wrapping_add((i as u64).wrapping_mul(seed_step)),
            )?;
            Ok((px, png, audio))
        })
        .collect()
}

/// What `sugarcube audio interpolate` wrote.
pub struct InterpolationFiles {
    /// `frame-NNN.png` and `frame-NNN.wav` per frame, in order.
    pub frames: Vec<(PathBuf, PathBuf)>,
    /// The frames chained with crossfades, `interpolation.wav`.
    pub chained: PathBuf,
    /// Each frame's spectrogram image, values in [0, 1], row-major `[mels, frames]`.
    pub images: Vec<Vec<f32>>,
    /// The interpolation itself (ends, weights, sampler).
    pub interpolation: Interpolation,
}

/// Seed interpolation on an audio run ([`sugarcube_core::run::LoadedRun::interpolate`]):
/// writes each frame's spectrogram image and WAV into `out`, and the frames chained into one
/// clip with `crossfade` seconds of linear crossfade between neighbours. Every frame is decoded
/// with the same Griffin-Lim starting phases (seed 0), so the clips differ only as the images do.
pub fn interpolate(
    run_dir: &Path,
    req: &SampleRequest,
    ends: &InterpolationEnds,
    out: &Path,
    crossfade: f64,
) -> anyhow::Result<InterpolationFiles> {
    let run = load_run::<AudioNotes>(run_dir, &candle_core::Device::Cpu)?;
    let stats: Stats = serde_json::from_value(run.info.stats.clone())
        .context("data_info.json has no audio stats: retrain with this version")?;
    let it = run.interpolate(req, ends)?;
    let decoded = decode(
        &stats,
        &Samples {
            x: &it.frames,
            conditions: &[],
            lengths: None,
        },
        0,
        0,
    )?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut frames = vec![];
    let mut clips = vec![];
    let mut images = vec![];
    for (k, (px, png, audio)) in decoded.into_iter().enumerate() {
        let png_path = out.join(format!("frame-{k:03}.png"));
        let wav_path = out.join(format!("frame-{k:03}.wav"));
        sugarcube_core::checkpoint::write_atomic(&png_path, &png)?;
        write_wav(&wav_path, &audio, WavFormat::Int16)?;
        frames.push((png_path, wav_path));
        images.push(px.data.iter().map(|&v| v as f32 / 255.0).collect());
        clips.push(audio);
    }
    let chained = out.join("interpolation.wav");
    write_wav(
        &chained,
        &crate::wav::crossfaded(&clips, crossfade)?,
        WavFormat::Int16,
    )?;
    Ok(InterpolationFiles {
        frames,
        chained,
        images,
        interpolation: it,
    })
}

/// The fundamental of a note as a MIDI key (YIN over its held part, the first 0.75 s).
fn midi_of(audio: &Audio) -> Option<f64> {
    Yin::default()
        .clip(&audio.mono(), audio.rate, Some(0.75))
        .map(midi_of_hz)
}

fn within_semitone(est: Option<f64>, pitch: u32) -> bool {
    est.is_some_and(|m| (m - pitch as f64).abs() < 1.0)
}

fn fraction(hits: impl Iterator<Item = bool>) -> f64 {
    let (mut k, mut n) = (0usize, 0usize);
    for h in hits {
        k += h as usize;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        k as f64 / n as f64
    }
}

/// Each row's Euclidean distance to its nearest row of `train` (rows of `size` values).
fn nearest(rows: &[f32], train: &[f32], size: usize) -> Vec<f64> {
    use rayon::prelude::*;
    rows.par_chunks(size)
        .map(|r| {
            train
                .chunks(size)
                .map(|t| {
                    r.iter()
                        .zip(t)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .collect()
}

/// Where the instrument classifier of a note set is cached: beside the notes, keyed by the
/// training notes, the preset and the classifier's settings.
fn classifier_cache(data: &AudioData, set: &NoteSet, eval: &AudioEval) -> PathBuf {
    let key = format!(
        "v1|{:?}|{}|{:?}|{}|{}",
        set.params,
        set.train
            .iter()
            .map(|n| n.file.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        set.heldout,
        eval.classifier_epochs,
        eval.classifier_seed
    );
    let hash = format!("{:x}", sha2::Sha256::digest(key.as_bytes()));
    data.notes
        .join(".sugarcube-cache")
        .join(format!("instrument-classifier-{}.safetensors", &hash[..16]))
}

impl Domain for AudioNotes {
    const NAME: &'static str = "audio";
    type Data = AudioData;
    type Model = UNetConfig;
    type Eval = AudioEval;

    fn dataset(data: &AudioData, split: Split, seed: u64) -> anyhow::Result<Box<dyn Dataset>> {
        let set = data.notes(seed)?;
        let notes = match split {
            Split::Train => &set.train,
            Split::Heldout => &set.held,
        };
        ensure!(
            !notes.is_empty(),
            "{}: no {} notes",
            data.notes.display(),
            if split == Split::Train {
                "training"
            } else {
                "held-out"
            }
        );
        let (x, maxima) = images(&set.params, notes)?;
        let (_, train_max) = if split == Split::Train {
            (vec![], maxima)
        } else {
            images(&set.params, &set.train)?
        };
        let info = DataInfo {
            stats: serde_json::to_value(Stats {
                params: set.params.clone(),
                max_value: median(train_max),
            })?,
            ..DataInfo::new(vec![1, set.params.n_mels, set.params.frames_per_image])
                .with_cond(set.spec())
        };
        Ok(Box::new(NoteDataset {
            x,
            conds: notes.iter().map(|n| set.condition(n)).collect(),
            info,
        }))
    }

    fn denoiser(
        model: &UNetConfig,
        info: &DataInfo,
        vb: VarBuilder,
    ) -> anyhow::Result<Box<dyn Denoiser>> {
        let &[1, _, _] = info.item_shape.as_slice() else {
            bail!(
                "audio data must be [1, mels, frames] spectrogram images, got {:?}",
                info.item_shape
            );
        };
        Ok(Box::new(UNet::new(vb, model, Dims::Two, 1, 1, &info.cond)?))
    }

    /// Writes `sample-NNNNN-INSTRUMENT-PITCH.png` (a spectrogram image with its parameters in
    /// EXIF) and the `.wav` it decodes to, per sample.
    fn write_samples(
        _data: &AudioData,
        info: &DataInfo,
        samples: &Samples,
        dir: &Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let stats: Stats = serde_json::from_value(info.stats.clone())
            .context("data_info.json has no audio stats: retrain with this version")?;
        let decoded = decode(&stats, samples, 0, 1)?;
        let spec = &info.cond;
        let mut files = vec![];
        for (i, (_, png, audio)) in decoded.iter().enumerate() {
            let label = samples
                .conditions
                .get(i)
                .map(|c| {
                    spec.format(c)
                        .split(',')
                        .filter_map(|kv| kv.split_once('=').map(|x| x.1.to_string()))
                        .collect::<Vec<_>>()
                        .join("-")
                })
                .unwrap_or_default();
            let safe: String = label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let stem = if safe.is_empty() {
                format!("sample-{i:05}")
            } else {
                format!("sample-{i:05}-{safe}")
            };
            let png_path = dir.join(format!("{stem}.png"));
            sugarcube_core::checkpoint::write_atomic(&png_path, png)?;
            let wav_path = dir.join(format!("{stem}.wav"));
            write_wav(&wav_path, audio, WavFormat::Int16)?;
            files.push(png_path);
            files.push(wav_path);
        }
        Ok(files)
    }

    fn eval_samples(eval: &AudioEval) -> usize {
        eval.n
    }

    fn evaluate(
        data: &AudioData,
        eval: &AudioEval,
        seed: u64,
        samples: &Samples,
    ) -> anyhow::Result<Evaluation> {
        let set = data.notes(seed)?;
        ensure!(
            !set.held.is_empty(),
            "the evaluation needs held-out pairs (data.heldout_pairs)"
        );
        let (train_x, train_max) = images(&set.params, &set.train)?;
        let (held_x, _) = images(&set.params, &set.held)?;
        let stats = Stats {
            params: set.params.clone(),
            max_value: median(train_max),
        };
        let decoded = decode(&stats, samples, seed, 1)?;
        let n = decoded.len();
        ensure!(
            samples.conditions.len() == n,
            "audio evaluation needs each sample's condition"
        );
        let asked: Vec<(u32, u32)> = samples
            .conditions
            .iter()
            .map(|c| {
                Ok((
                    c.class(0).context("a sample without an instrument")?,
                    c.class(1).context("a sample without a pitch")?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let in_held: Vec<bool> = asked
            .iter()
            .map(|&(i, p)| {
                set.heldout
                    .contains(&(set.instruments[i as usize].clone(), set.pitches[p as usize]))
            })
            .collect();
        // pitch, from the decoded WAVs
        let est: Vec<Option<f64>> = decoded.iter().map(|d| midi_of(&d.2)).collect();
        let pitch_ok: Vec<bool> = est
            .iter()
            .zip(&asked)
            .map(|(e, &(_, p))| within_semitone(*e, set.pitches[p as usize]))
            .collect();
        let floor_ok: Vec<bool> = {
            use rayon::prelude::*;
            set.held
                .par_iter()
                .map(|note| {
                    let a = read_wav(&note.file)?;
                    let back = round_trip(&set.params, &a, seed)?.audio;
                    Ok(within_semitone(midi_of(&back), note.pitch))
                })
                .collect::<anyhow::Result<_>>()?
        };
        // the instrument classifier
        let (h, w) = (set.params.n_mels, set.params.frames_per_image);
        let size = h * w;
        let device = Device::Cpu;
        let tensor = |x: &[f32]| Tensor::from_vec(x.to_vec(), (x.len() / size, 1, h, w), &device);
        let labels: Vec<u32> = set
            .train
            .iter()
            .map(|n| set.condition(n).class(0).expect("set"))
            .collect();
        let held_labels: Vec<u32> = set
            .held
            .iter()
            .map(|n| set.condition(n).class(0).expect("set"))
            .collect();
        let net = eval_classifier::load_or_train(
            &classifier_cache(data, &set, eval),
            &tensor(&train_x)?,
            &Targets::Classes {
                labels: labels.clone(),
                classes: set.instruments.len(),
            },
            Dims::Two,
            &TrainSettings {
                pooling: Pooling::Mean,
                epochs: eval.classifier_epochs,
                batch_size: 32,
                lr: 2e-3,
            },
            eval.classifier_seed,
            false,
            &eval_classifier::no_augment,
        )?;
        let gen_x: Vec<f32> = decoded.iter().flat_map(|d| to_unit(&d.0)).collect();
        let (f_gen, p_gen) = net.describe(&tensor(&gen_x)?, 256)?;
        let p_gen = classes_of(&p_gen);
        let (f_held, p_held) = net.describe(&tensor(&held_x)?, 256)?;
        let classifier_accuracy = eval_classifier::accuracy(&classes_of(&p_held), &held_labels);
        let inst_ok: Vec<bool> = p_gen.iter().zip(&asked).map(|(p, a)| *p == a.0).collect();
        // training notes for the floor: as many as generated, spread evenly
        let m = n.min(set.train.len());
        let mut pick: Vec<usize> = (0..set.train.len()).collect();
        Rng::stream(seed, 0xF1D).shuffle(&mut pick);
        pick.truncate(m);
        let train_m: Vec<f32> = pick
            .iter()
            .flat_map(|&i| train_x[i * size..(i + 1) * size].iter().copied())
            .collect();
        let (f_train, _) = net.describe(&tensor(&train_m)?, 256)?;
        let d = eval_classifier::FEATURES;
        let near_gen = nearest(&gen_x, &train_x, size);
        let near_held = median(nearest(&held_x, &train_x, size));
        let held_rows: Vec<usize> = (0..n).filter(|&i| in_held[i]).collect();
        let rows_of = |f: &[f32], rows: &[usize]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&i| f[i * d..(i + 1) * d].iter().copied())
                .collect()
        };
        let mut metrics: Vec<(String, f64)> = vec![];
        let mut push = |k: &str, v: f64| metrics.push((k.to_string(), v));
        let all: Vec<usize> = (0..n).collect();
        for (prefix, rows) in [("", &all), ("heldout_", &held_rows)] {
            push(
                &format!("{prefix}pitch_accuracy"),
                fraction(rows.iter().map(|&i| pitch_ok[i])),
            );
            if prefix.is_empty() {
                push("pitch_accuracy_floor", fraction(floor_ok.iter().copied()));
            }
            push(
                &format!("{prefix}instrument_accuracy"),
                fraction(rows.iter().map(|&i| inst_ok[i])),
            );
            if prefix.is_empty() {
                push("classifier_accuracy", classifier_accuracy);
            }
            if rows.len() >= 2 {
                push(
                    &format!("{prefix}fd"),
                    frechet_between(&rows_of(&f_gen, rows), &f_held, d),
                );
            }
            if prefix.is_empty() {
                push("fd_floor", frechet_between(&f_train, &f_held, d));
            }
            push(
                &format!("{prefix}nearest_train_ratio"),
                median(rows.iter().map(|&i| near_gen[i]).collect()) / near_held.max(1e-12),
            );
        }
        push("heldout_samples", held_rows.len() as f64);
        push("heldout_notes", set.held.len() as f64);
        push("train_notes", set.train.len() as f64);
        let mut ev = Evaluation::of(metrics);
        ev.details.insert(
            "heldout_pairs".into(),
            serde_json::json!(set
                .heldout
                .iter()
                .map(|(i, p)| format!("{i}:{p}"))
                .collect::<Vec<_>>()),
        );
        ev.details.insert(
            "estimated_pitch".into(),
            serde_json::json!(est
                .iter()
                .zip(&asked)
                .map(|(e, &(i, p))| serde_json::json!({
                    "instrument": set.instruments[i as usize],
                    "pitch": set.pitches[p as usize],
                    "estimated": e,
                    "heldout_pair": set.heldout.contains(&(set.instruments[i as usize].clone(), set.pitches[p as usize])),
                }))
                .collect::<Vec<_>>()),
        );
        Ok(ev)
    }

    fn report(
        ctx: &sugarcube_core::report::ReportContext<Self>,
    ) -> anyhow::Result<Vec<sugarcube_core::report::Section>> {
        crate::report::sections(ctx)
    }

    fn workloads() -> Vec<sugarcube_core::bench::DomainWorkload> {
        crate::bench::workloads()
    }

    fn command() -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    fn run_command(matches: &clap::ArgMatches) -> anyhow::Result<()> {
        crate::cli::run(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> BTreeSet<(String, u32)> {
        ["a", "b", "c"]
            .iter()
            .flat_map(|i| [48, 52, 56, 60].map(|p| (i.to_string(), p)))
            .collect()
    }

    #[test]
    fn drawn_pairs_leave_every_instrument_and_pitch_in_training() {
        for seed in 0..20 {
            let held = draw_pairs(&pairs(), 4, seed).unwrap();
            assert_eq!(held.len(), 4);
            for i in ["a", "b", "c"] {
                assert!(pairs().iter().any(|q| q.0 == i && !held.contains(q)));
            }
            for p in [48, 52, 56, 60] {
                assert!(pairs().iter().any(|q| q.1 == p && !held.contains(q)));
            }
            assert_eq!(held, draw_pairs(&pairs(), 4, seed).unwrap());
        }
        // 3 instruments x 4 pitches: four pairs must stay to cover the pitches
        assert!(draw_pairs(&pairs(), 9, 0).is_err());
    }

    #[test]
    fn random_and_mutated_note_tables_are_errors_or_notes_never_panics() {
        let dir = std::env::temp_dir().join(format!("sugarcube-notes-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = b"file,instrument,program,pitch,velocity\nviolin-060-100.wav,violin,40,60,100\n";
        let mut rng = Rng::new(7);
        for case in 0..300 {
            let bytes: Vec<u8> = if case % 2 == 0 {
                (0..rng.below(200)).map(|_| rng.below(256) as u8).collect()
            } else {
                let mut b = good.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.below(256) as u8;
                }
                b
            };
            std::fs::write(dir.join("notes.csv"), &bytes).unwrap();
            if let Err(e) = read_notes(&dir) {
                assert!(e.to_string().contains("notes.csv"), "{e}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unit_values_round_trip_to_bytes() {
        let px = Pixels {
            width: 3,
            height: 2,
            channels: 1,
            data: vec![0, 1, 127, 128, 254, 255],
        };
        assert_eq!(of_unit(&to_unit(&px), 2, 3), px);
    }
}
