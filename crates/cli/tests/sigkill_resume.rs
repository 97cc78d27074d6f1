//! A training run killed with SIGKILL at any moment resumes to the same weights, bit for bit.
//! The real binary is killed (by itself: `SUGARCUBE_TEST_KILL`, `sugarcube_core::crashpoint`)
//! between steps and inside checkpoint writes (half of the tensors file written; the tensors
//! in place but not the state; half of the state written), at points drawn from a fixed seed;
//! after each kill every checkpoint left loads, and the resumed runs end with the weights, EMA,
//! optimiser moments and metrics of an uninterrupted run. A checkpoint damaged afterwards
//! (truncated tensors, garbage state) is reported and skipped. Random and mutated checkpoint
//! bytes make the loaders return errors, never panic.

use candle_core::Device;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use sugarcube_core::checkpoint::{self, Checkpoint};
use sugarcube_core::crashpoint::{Phase, Point, ENV};
use sugarcube_core::rng::Rng;

const EXP: &str = r#"
name = "killed"
domain = "toy"
seed = 5

[data]
dataset = "moons"
n = 1000

[model]
hidden = 32
blocks = 1

[process]
schedule = "cosine"
prediction = "v"

[train]
steps = 40
batch_size = 32
warmup_steps = 5
checkpoint_every = 4
keep_checkpoints = 2
log_every = 3

[train.ema]
max_decay = 0.99

[sample]
sampler = "ddim"
steps = 5
n = 10
"#;

const STEPS: usize = 40;
const EVERY: usize = 4;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-sigkill-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `sugarcube train EXP --out RUN [--resume] [extra]`, crashing at `kill` if given.
fn train(exp: &Path, run: &Path, resume: bool, kill: Option<Point>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sugarcube"));
    cmd.arg("train")
        .arg(exp)
        .arg("--out")
        .arg(run)
        .args(extra)
        .env_remove(ENV);
    if resume {
        cmd.arg("--resume");
    }
    if let Some(p) = kill {
        cmd.env(ENV, p.to_text());
    }
    cmd.output().expect("the binary runs")
}

/// The experiment file and the uninterrupted run, trained once for all tests.
fn reference() -> &'static (PathBuf, PathBuf) {
    static REF: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    REF.get_or_init(|| {
        let d = tmp("reference");
        let exp = d.join("killed.toml");
        std::fs::write(&exp, EXP).unwrap();
        let run = d.join("run");
        let o = train(&exp, &run, false, None, &["--quiet"]);
        assert!(o.status.success(), "{}", text(&o));
        (exp, run)
    })
}

fn final_tensors(run: &Path) -> HashMap<String, Vec<f32>> {
    let c = Checkpoint::at(&run.join("checkpoints"), STEPS);
    checkpoint::load_tensors(&c.tensors, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// Everything of metrics.jsonl but the wall clock, one entry per line.
fn metrics(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad metrics line `{l}`: {e}"));
            format!("{} {} {} {}", v["step"], v["loss"], v["lr"], v["grad_norm"])
        })
        .collect()
}

/// The run ends as the reference does: model, EMA and optimiser tensors bit for bit, and the
/// same metrics lines, each step once.
fn assert_same_as_reference(run: &Path) {
    let (_, reference) = reference();
    let (want, got) = (final_tensors(reference), final_tensors(run));
    assert_eq!(want.len(), got.len());
    assert!(
        want.keys().any(|k| k.starts_with("model.")) && want.keys().any(|k| k.starts_with("ema."))
    );
    for (k, v) in &want {
        assert_eq!(v, &got[k], "{k} differs from the uninterrupted run");
    }
    assert_eq!(metrics(run), metrics(reference));
}

/// Every checkpoint `list` shows reads and loads.
fn assert_checkpoints_load(run: &Path, when: &str) {
    let all = checkpoint::list(&run.join("checkpoints"));
    for c in &all {
        c.read_state().unwrap_or_else(|e| panic!("{when}: {e:#}"));
        checkpoint::load_tensors(&c.tensors, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{when}: {e:#}"));
    }
}

/// Kill points in increasing steps, one per window of eight steps, each phase at least once:
/// between steps anywhere, inside a checkpoint write at a checkpoint step.
fn kill_points(seed: u64) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    let mut phases = vec![
        None,
        Some(Phase::TensorsHalf),
        Some(Phase::BeforeState),
        Some(Phase::StateHalf),
    ];
    rng.shuffle(&mut phases);
    phases.push(if rng.below(2) == 0 {
        None
    } else {
        Some(Phase::TensorsHalf)
    });
    phases
        .iter()
        .enumerate()
        .map(|(w, phase)| {
            let lo = 8 * w + 1;
            match phase {
                None => Point::AfterStep(lo + rng.below(7) as usize),
                Some(p) => {
                    Point::Checkpoint(EVERY * (lo.div_ceil(EVERY) + rng.below(2) as usize), *p)
                }
            }
        })
        .collect()
}

#[test]
fn killed_anywhere_the_run_resumes_bit_for_bit() {
    let (exp, _) = reference();
    let points = kill_points(0x5EED_0009);
    eprintln!(
        "kill points: {}",
        points
            .iter()
            .map(|p| p.to_text())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(points.windows(2).all(|w| step_of(w[0]) < step_of(w[1])));
    let run = tmp("killed").join("run");
    for (i, &p) in points.iter().enumerate() {
        let o = train(exp, &run, i > 0, Some(p), &["--quiet"]);
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{}: expected death by SIGKILL, got {:?}: {}",
            p.to_text(),
            o.status,
            text(&o)
        );
        // the kill happened where it was asked for
        let ckpts = run.join("checkpoints");
        match p {
            Point::Checkpoint(n, Phase::TensorsHalf) => {
                let tmp = checkpoint::tmp_path(&Checkpoint::at(&ckpts, n).tensors);
                let full = std::fs::metadata(
                    Checkpoint::at(&reference().1.join("checkpoints"), STEPS).tensors,
                )
                .unwrap()
                .len();
                assert_eq!(
                    std::fs::metadata(&tmp).unwrap().len(),
                    full / 2,
                    "{} is half written",
                    tmp.display()
                );
            }
            Point::Checkpoint(n, Phase::BeforeState) => {
                assert!(
                    Checkpoint::at(&ckpts, n).tensors.exists()
                        && !Checkpoint::at(&ckpts, n).state.exists()
                );
            }
            Point::Checkpoint(n, Phase::StateHalf) => {
                assert!(checkpoint::tmp_path(&Checkpoint::at(&ckpts, n).state).exists());
            }
            Point::AfterStep(n) => {
                let newest = checkpoint::latest(&ckpts).map_or(0, |c| c.step);
                assert_eq!(
                    newest,
                    n / EVERY * EVERY,
                    "after step {n}, the newest checkpoint"
                );
            }
        }
        let newest = checkpoint::latest(&ckpts).map_or(0, |c| c.step);
        assert!(
            newest < step_of(p) || matches!(p, Point::AfterStep(_)),
            "{}: newest checkpoint {newest}",
            p.to_text()
        );
        assert_checkpoints_load(&run, &p.to_text());
    }
    let o = train(exp, &run, true, None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming from"), "{}", text(&o));
    assert_same_as_reference(&run);
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().ends_with(".tmp")),
        "temporary files overwritten and renamed: {leftovers:?}"
    );
}

fn step_of(p: Point) -> usize {
    match p {
        Point::AfterStep(n) | Point::Checkpoint(n, _) => n,
    }
}

#[test]
fn a_damaged_newest_checkpoint_is_reported_and_skipped() {
    let (exp, _) = reference();
    // (the file to damage, how): the newest tensors cut in half; the newest state garbage
    type Damage = fn(&Checkpoint);
    let cases: [(&str, Damage); 2] = [
        ("truncated", |c| {
            let bytes = std::fs::read(&c.tensors).unwrap();
            std::fs::write(&c.tensors, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("garbage-state", |c| {
            std::fs::write(&c.state, b"{\"step\": 12, \"config_h").unwrap()
        }),
    ];
    for (name, damage) in cases {
        let run = tmp(name).join("run");
        let o = train(exp, &run, false, None, &["--quiet", "--until", "12"]);
        assert!(o.status.success(), "{}", text(&o));
        let ckpts = run.join("checkpoints");
        let newest = checkpoint::latest(&ckpts).unwrap();
        assert_eq!(newest.step, 12);
        damage(&newest);
        let o = train(exp, &run, true, None, &[]);
        let s = text(&o);
        assert!(o.status.success(), "{name}: {s}");
        assert!(
            s.contains("warning") && s.contains("step-00000012.safetensors"),
            "{name}: the damaged checkpoint is named:\n{s}"
        );
        assert!(
            s.contains("step-00000008.json (step 8)"),
            "{name}: resumes from the older one:\n{s}"
        );
        assert_same_as_reference(&run);
        assert_checkpoints_load(&run, name);
    }
}

#[test]
fn damaged_checkpoint_bytes_are_errors_not_panics() {
    let (_, reference) = reference();
    let real = Checkpoint::at(&reference.join("checkpoints"), STEPS);
    let tensors = std::fs::read(&real.tensors).unwrap();
    let state = std::fs::read(&real.state).unwrap();
    let header = 8 + u64::from_le_bytes(tensors[..8].try_into().unwrap()) as usize;
    let dir = tmp("fuzz");
    let c = Checkpoint::at(&dir, 1);
    let mut rng = Rng::new(0xF022);
    let dev = Device::Cpu;
    let try_both = |t: &[u8], s: &[u8]| -> (bool, bool) {
        std::fs::write(&c.tensors, t).unwrap();
        std::fs::write(&c.state, s).unwrap();
        let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            checkpoint::load_tensors(&c.tensors, &dev).is_ok()
        }))
        .unwrap_or_else(|_| {
            panic!(
                "load_tensors panicked on {} bytes starting {:?}",
                t.len(),
                &t[..t.len().min(64)]
            )
        });
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| c.read_state().is_ok()))
            .unwrap_or_else(|_| panic!("read_state panicked on {:?}", String::from_utf8_lossy(s)));
        (loaded, read)
    };
    for case in 0..600 {
        let bytes =
            |rng: &mut Rng, n: usize| -> Vec<u8> { (0..n).map(|_| rng.below(256) as u8).collect() };
        match case % 6 {
            // random bytes of random lengths
            0 => {
                let n = rng.below(3000) as usize;
                let (t, s) = (bytes(&mut rng, n), bytes(&mut rng, n / 4));
                assert_eq!(try_both(&t, &s), (false, false), "random bytes load");
            }
            // a plausible header length followed by random bytes
            1 => {
                let n = 8 + rng.below(400) as usize;
                let mut t = bytes(&mut rng, n);
                t[..8].copy_from_slice(&((n - 8) as u64).to_le_bytes());
                assert!(!try_both(&t, &state).0, "random header loads");
            }
            // truncated anywhere
            2 => {
                let cut = rng.below(tensors.len() as u64) as usize;
                let scut = rng.below(state.len() as u64) as usize;
                let (t, s) = try_both(&tensors[..cut], &state[..scut]);
                assert!(!t && !s, "a file cut at {cut} / {scut} loads");
            }
            // bytes of the header changed (shapes, offsets, dtypes, names)
            3 => {
                let mut t = tensors.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(header as u64) as usize;
                    t[at] = rng.below(256) as u8;
                }
                try_both(&t, &state);
            }
            // header text spliced: digits and punctuation where the JSON expects them
            4 => {
                let mut t = tensors.clone();
                let at = 8 + rng.below((header - 8) as u64) as usize;
                let pieces: [&[u8]; 8] = [
                    b"99999999999999999999",
                    b"-1",
                    b"]",
                    b"\"",
                    b"{",
                    b"0",
                    b",",
                    b"F64",
                ];
                let piece = pieces[rng.below(8) as usize];
                let end = (at + piece.len()).min(header);
                t[at..end].copy_from_slice(&piece[..end - at]);
                try_both(&t, &state);
            }
            // the state JSON mutated
            _ => {
                let mut s = state.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(s.len() as u64) as usize;
                    s[at] = rng.below(256) as u8;
                }
                try_both(&tensors, &s);
            }
        }
    }
    // and the unharmed files still load
    assert_eq!(try_both(&tensors, &state), (true, true));
}
