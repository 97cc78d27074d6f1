//! Deterministic crash points for tests: with `SUGARCUBE_TEST_KILL` set to a point, the process
//! kills itself with SIGKILL (elsewhere than Unix: aborts) when it gets there, so a test can
//! check that a run killed at any moment resumes to the same weights.
//!
//! Points:
//! - `after-step:N`: after step N (its metrics line, checkpoint and hook), before step N + 1;
//! - `checkpoint:N:tensors-half`: half of step N's temporary tensors file written;
//! - `checkpoint:N:before-state`: step N's tensors file renamed into place, its state file not
//!   yet written;
//! - `checkpoint:N:state-half`: half of step N's temporary state file written.
//!
//! Unset, the points cost one comparison each.

use std::sync::OnceLock;

/// The environment variable naming the point.
pub const ENV: &str = "SUGARCUBE_TEST_KILL";

/// Where in a checkpoint write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Half of the temporary tensors file written.
    TensorsHalf,
    /// The tensors file in place, the state file not yet written.
    BeforeState,
    /// Half of the temporary state file written.
    StateHalf,
}

/// A point in a training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Between step N and step N + 1.
    AfterStep(usize),
    /// Inside the checkpoint write of step N.
    Checkpoint(usize, Phase),
}

impl Point {
    /// Parses `after-step:N` or `checkpoint:N:PHASE` (PHASE: tensors-half, before-state,
    /// state-half).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "{ENV}: expected after-step:N or checkpoint:N:tensors-half|before-state|state-half, got `{text}`"
            )
        };
        let parts: Vec<&str> = text.trim().split(':').collect();
        let step = |s: &str| s.parse::<usize>().map_err(|_| bad());
        match parts.as_slice() {
            ["after-step", n] => Ok(Point::AfterStep(step(n)?)),
            ["checkpoint", n, phase] => {
                let phase = match *phase {
                    "tensors-half" => Phase::TensorsHalf,
                    "before-state" => Phase::BeforeState,
                    "state-half" => Phase::StateHalf,
                    _ => return Err(bad()),
                };
                Ok(Point::Checkpoint(step(n)?, phase))
            }
            _ => Err(bad()),
        }
    }

    /// The point's text, as [`Point::parse`] reads it.
    pub fn to_text(&self) -> String {
        match self {
            Point::AfterStep(n) => format!("after-step:{n}"),
            Point::Checkpoint(n, phase) => {
                let p = match phase {
                    Phase::TensorsHalf => "tensors-half",
                    Phase::BeforeState => "before-state",
                    Phase::StateHalf => "state-half",
                };
                format!("checkpoint:{n}:{p}")
            }
        }
    }
}

/// The point the environment names, read once (an invalid value is reported and ignored).
fn armed() -> Option<Point> {
    static ARMED: OnceLock<Option<Point>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let text = std::env::var(ENV).ok()?;
        match Point::parse(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: {e:#}; no crash point is armed");
                None
            }
        }
    })
}

/// Kills the process if `point` is the armed one.
pub fn reached(point: Point) {
    if armed() == Some(point) {
        kill_self();
    }
}

/// Ends the process at once, as a power cut or the OOM killer would: no destructors, no
/// flushing.
pub fn kill_self() -> ! {
    #[cfg(unix)]
    // SAFETY: sending a signal to our own process id.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_and_print() {
        for text in [
            "after-step:7",
            "checkpoint:10:tensors-half",
            "checkpoint:0:before-state",
            "checkpoint:3:state-half",
        ] {
            assert_eq!(Point::parse(text).unwrap().to_text(), text);
        }
        assert_eq!(Point::parse("after-step:7").unwrap(), Point::AfterStep(7));
        for bad in [
            "",
            "after-step",
            "after-step:x",
            "checkpoint:10",
            "checkpoint:10:middle",
            "before:3",
            "after-step:1:2",
        ] {
            let e = Point::parse(bad).unwrap_err().to_string();
            assert!(e.contains(ENV) && e.contains("after-step:N"), "{e}");
        }
    }
}
