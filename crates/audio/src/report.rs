//! The audio domain's report section: the newest generated notes, each as its spectrogram
//! image and an audio player, beside a real note of the same instrument and pitch (the
//! training note, or the held-out one for a held-out pair), and the pitch and instrument
//! figures of the evaluation.

use crate::domain::{note_image, AudioNotes};
use crate::wav::{encode_wav, read_wav, WavFormat};
use sugarcube_core::report::{Block, ReportContext, Section};

/// Generated notes shown.
const SHOWN: usize = 8;

/// The report's audio sections.
pub fn sections(ctx: &ReportContext<AudioNotes>) -> anyhow::Result<Vec<Section>> {
    let Some(dir) = ctx.newest_samples("sample-00000.wav").or_else(|| {
        // conditional samples carry their labels in the name
        let samples = ctx.run.dir.join("samples");
        let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(&samples)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                std::fs::read_dir(p).is_ok_and(|mut r| {
                    r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wav")))
                })
            })
            .collect();
        found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        found.pop()
    }) else {
        return Ok(vec![]);
    };
    let mut wavs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    wavs.sort();
    let set = ctx.exp.data.notes(ctx.exp.seed).ok();
    let mut rows = vec![];
    // an even spread over the samples, so several conditions show
    let step = (wavs.len() / SHOWN).max(1);
    for wav in wavs.iter().step_by(step).take(SHOWN) {
        let stem = wav
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let png = wav.with_extension("png");
        let mut row = vec![];
        if let Ok(bytes) = std::fs::read(&png) {
            row.push(Block::Png {
                bytes,
                alt: format!("{stem} spectrogram"),
                width: Some(192),
            });
        }
        row.push(Block::Audio {
            wav: std::fs::read(wav)?,
            caption: format!("generated: {stem}"),
        });
        // sample-NNNNN-INSTRUMENT-PITCH
        let parts: Vec<&str> = stem.splitn(3, '-').collect();
        if let (Some(set), Some(label)) = (&set, parts.get(2)) {
            if let Some((inst, pitch)) = label.rsplit_once('-') {
                let real = set.train.iter().chain(&set.held).find(|n| {
                    n.instrument
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                        == inst
                        && n.pitch.to_string() == pitch
                });
                if let Some(note) = real {
                    let audio = read_wav(&note.file)?;
                    let (px, max) = note_image(&set.params, &audio)?;
                    row.push(Block::Png {
                        bytes: crate::codec::png_of(&set.params, &px, max)?,
                        alt: format!("real {inst} {pitch} spectrogram"),
                        width: Some(192),
                    });
                    let held = set.heldout.contains(&(note.instrument.clone(), note.pitch));
                    row.push(Block::Audio {
                        wav: encode_wav(&set.params.prepare(&audio), WavFormat::Int16)?,
                        caption: format!(
                            "real: {} {} ({})",
                            note.instrument,
                            note.pitch,
                            if held {
                                "held-out pair"
                            } else {
                                "training note"
                            }
                        ),
                    });
                }
            }
        }
        rows.push(Block::Row(row));
    }
    let mut section = Section::new("Generated notes").with(Block::Text(format!(
        "{} of the notes in {}: spectrogram and player, beside a real note of the same instrument and pitch.",
        rows.len(),
        dir.file_name().unwrap_or_default().to_string_lossy()
    )));
    for r in rows {
        section = section.with(r);
    }
    Ok(vec![section])
}
