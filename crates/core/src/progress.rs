//! Progress reporting: an indicatif bar on a terminal, plain log lines (at most one every few
//! seconds) when stderr is a file or pipe.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A progress display for `total` units of work.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    unit: String,
    total: u64,
    first: u64,
    start: Instant,
    last_line: Instant,
    quiet: bool,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Starts a display at `pos` of `total` (non-zero when resuming). `unit` names the work
    /// (for example "step"); `quiet` silences it.
    pub fn new(label: &str, unit: &str, total: u64, pos: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit}s {{per_sec}} ETA {{eta}} {{msg}}"
                ))
                .expect("valid template"),
            );
            b.set_prefix(label.to_string());
            b.set_position(pos);
            b.reset_eta();
            b
        });
        let now = Instant::now();
        Self {
            bar,
            label: label.into(),
            unit: unit.into(),
            total,
            first: pos,
            start: now,
            last_line: now,
            quiet,
        }
    }

    /// Moves to `pos` with a short status message (for example the loss).
    pub fn set(&mut self, pos: u64, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg.to_string());
        } else if !self.quiet && (self.last_line.elapsed() >= LINE_EVERY || pos == self.total) {
            self.last_line = Instant::now();
            eprintln!("{}", self.line(pos, msg));
        }
    }

    fn line(&self, pos: u64, msg: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = (pos - self.first.min(pos)) as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(pos)) as f64 / rate
        } else {
            f64::NAN
        };
        format!(
            "{}: {pos}/{} {}s ({:.0}%), {rate:.2} {}/s, ETA {eta:.0}s {msg}",
            self.label,
            self.total,
            self.unit,
            100.0 * pos as f64 / self.total.max(1) as f64,
            self.unit
        )
    }

    /// Prints a line above the bar (or as a plain line without one), unless quiet.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    /// Ends the display with a final message.
    pub fn finish(&mut self, msg: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_with_message(msg.to_string());
        } else if !self.quiet {
            eprintln!("{}: done, {msg}", self.label);
        }
    }
}
