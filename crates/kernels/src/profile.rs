//! Opt-in timing of named operations, for the benchmark's per-operation breakdown.
//!
//! Code marks a region with `let _t = profile::scope("name");`; while profiling is off (the
//! default) that costs one relaxed atomic load. `sugarcube bench` turns it on, runs a workload
//! and reads the totals with [`take`]. Scopes may nest (a phase such as "backward" contains the
//! kernels that run inside it), so the totals of different names can overlap. [`median_ms`]
//! times a closure for micro-benchmarks.

use candle_core::Result;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<&'static str, (f64, u64)>> = Mutex::new(BTreeMap::new());

/// Turns recording on or off (process-wide).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A timed region: records its wall time under its name when dropped.
#[must_use = "the region ends when this guard is dropped"]
pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

/// Starts timing a region called `name` (a no-op while profiling is off).
pub fn scope(name: &'static str) -> Scope {
    Scope {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let secs = start.elapsed().as_secs_f64();
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            let entry = totals.entry(self.name).or_insert((0.0, 0));
            entry.0 += secs;
            entry.1 += 1;
        }
    }
}

/// One recorded name: total seconds and number of calls.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Entry {
    /// The region's name.
    pub name: String,
    /// Total wall time, seconds.
    pub seconds: f64,
    /// How many times it ran.
    pub calls: u64,
}

/// Returns everything recorded since the last call, largest total first, and clears it.
pub fn take() -> Vec<Entry> {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<Entry> = std::mem::take(&mut *totals)
        .into_iter()
        .map(|(name, (seconds, calls))| Entry {
            name: name.to_string(),
            seconds,
            calls,
        })
        .collect();
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    out
}

/// Median wall time of `f` over `reps` calls (at least 1) after `warmup` untimed ones, in
/// milliseconds: for micro-benchmarks of single kernels (the kernels' examples).
pub fn median_ms(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let times = (0..reps.max(1))
        .map(|_| {
            let began = Instant::now();
            f().map(|()| 1e3 * began.elapsed().as_secs_f64())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(median(times))
}

/// The median of a non-empty list.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_while_enabled() {
        // one test touches the global state, so tests cannot race on it
        enable(false);
        drop(scope("profile-test-off"));
        enable(true);
        drop(scope("profile-test-on"));
        drop(scope("profile-test-on"));
        enable(false);
        let got = take();
        assert!(got.iter().all(|e| e.name != "profile-test-off"));
        let on = got
            .iter()
            .find(|e| e.name == "profile-test-on")
            .expect("recorded");
        assert_eq!(on.calls, 2);
        assert!(on.seconds >= 0.0);
        assert!(take().is_empty());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
