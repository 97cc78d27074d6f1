//! Notes and melodies rendered from a General MIDI soundfont (SF2) of recorded instruments
//! with rustysynth, a pure-Rust SoundFont synthesizer: the NSynth-like note sets (instrument x
//! pitch x velocity, a fixed held duration then the release) and the committed music clip.
//! Reverb and chorus are off, so notes are dry.

use anyhow::{ensure, Context};
use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};
use std::path::Path;
use std::sync::Arc;

/// A soundfont opened for rendering.
pub struct Renderer {
    font: Arc<SoundFont>,
    /// Samples per second of what it renders.
    pub rate: u32,
}

/// One note of a melody: start and length in seconds, MIDI key and velocity, MIDI channel
/// (each channel its own program).
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// Onset, s.
    pub start: f64,
    /// Held for, s.
    pub length: f64,
    /// MIDI key (60 = middle C).
    pub key: u8,
    /// MIDI velocity, 1..=127.
    pub velocity: u8,
    /// MIDI channel, 0..16 (not 9, the drums).
    pub channel: u8,
}

impl Renderer {
    /// Opens an SF2 file. A damaged file is an error naming it (rustysynth's own panics on
    /// malformed data are caught and reported the same way).
    pub fn open(path: &Path, rate: u32) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let font = std::panic::catch_unwind(|| SoundFont::new(&mut std::io::Cursor::new(&bytes)))
            .map_err(|_| {
                anyhow::anyhow!(
                    "{}: not a readable SF2 soundfont (malformed data)",
                    path.display()
                )
            })?
            .map_err(|e| {
                anyhow::anyhow!("{}: not a readable SF2 soundfont: {e:?}", path.display())
            })?;
        ensure!(
            (8000..=192000).contains(&rate),
            "render rate {rate} Hz is outside 8000..=192000"
        );
        Ok(Self {
            font: Arc::new(font),
            rate,
        })
    }

    /// The name of General MIDI program `program` (bank 0) in this soundfont.
    pub fn program_name(&self, program: u8) -> Option<String> {
        self.font
            .get_presets()
            .iter()
            .find(|p| p.get_bank_number() == 0 && p.get_patch_number() == program as i32)
            .map(|p| p.get_name().trim().to_string())
    }

    fn synth(&self, programs: &[(u8, u8)]) -> anyhow::Result<Synthesizer> {
        let mut settings = SynthesizerSettings::new(self.rate as i32);
        settings.enable_reverb_and_chorus = false;
        let mut s = Synthesizer::new(&self.font, &settings)
            .map_err(|e| anyhow::anyhow!("cannot start the synthesizer: {e:?}"))?;
        for &(channel, program) in programs {
            s.process_midi_message(channel as i32, 0xC0, program as i32, 0);
        }
        Ok(s)
    }

    /// `events` (channels playing `programs`: `(channel, program)` pairs) rendered to
    /// `seconds` of mono audio (the two output channels averaged).
    pub fn render(
        &self,
        programs: &[(u8, u8)],
        events: &[Event],
        seconds: f64,
    ) -> anyhow::Result<Vec<f32>> {
        ensure!(
            seconds > 0.0 && seconds < 3600.0,
            "render length {seconds} s is out of range"
        );
        let mut synth = self.synth(programs)?;
        let total = (seconds * self.rate as f64).round() as usize;
        // note-on and note-off times in samples, in order
        let mut marks: Vec<(usize, bool, Event)> = events
            .iter()
            .flat_map(|e| {
                let on = (e.start * self.rate as f64).round() as usize;
                let off = ((e.start + e.length) * self.rate as f64).round() as usize;
                [(on, true, *e), (off, false, *e)]
            })
            .collect();
        marks.sort_by_key(|m| (m.0, m.1));
        let (mut left, mut right) = (vec![0f32; total], vec![0f32; total]);
        let mut at = 0;
        let mut next = 0;
        while at < total {
            while next < marks.len() && marks[next].0 <= at {
                let (_, on, e) = marks[next];
                if on {
                    synth.note_on(e.channel as i32, e.key as i32, e.velocity as i32);
                } else {
                    synth.note_off(e.channel as i32, e.key as i32);
                }
                next += 1;
            }
            let until = marks
                .get(next)
                .map_or(total, |m| m.0.min(total))
                .max(at + 1);
            synth.render(&mut left[at..until], &mut right[at..until]);
            at = until;
        }
        Ok(left
            .iter()
            .zip(&right)
            .map(|(l, r)| 0.5 * (l + r))
            .collect())
    }

    /// One note of `program`: held `hold` seconds, then `release` seconds after the note-off.
    pub fn note(
        &self,
        program: u8,
        key: u8,
        velocity: u8,
        hold: f64,
        release: f64,
    ) -> anyhow::Result<Vec<f32>> {
        let e = Event {
            start: 0.0,
            length: hold,
            key,
            velocity,
            channel: 0,
        };
        self.render(&[(0, program)], &[e], hold + release)
    }
}

/// The committed music clip's score: the first phrase of Beethoven's "Ode to Joy" (public
/// domain) at 120 beats per minute on channel 0, over a bass line on channel 1.
pub fn ode_to_joy() -> Vec<Event> {
    let melody = [64u8, 64, 65, 67, 67, 65, 64, 62, 60, 60, 62, 64];
    let mut events: Vec<Event> = melody
        .iter()
        .enumerate()
        .map(|(i, &key)| Event {
            start: 0.5 * i as f64,
            length: 0.45,
            key,
            velocity: 96,
            channel: 0,
        })
        .collect();
    for (i, &key) in [48u8, 43, 45, 41, 48, 43].iter().enumerate() {
        events.push(Event {
            start: 1.0 * i as f64,
            length: 0.95,
            key,
            velocity: 80,
            channel: 1,
        });
    }
    events
}
