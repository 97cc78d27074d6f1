//! Run reports: `RUN/report.html`, one self-contained page per run (or several runs overlaid),
//! laid out here once: the experiment, the training curves, the checkpoints, the evaluation
//! beside its floors, then the sections each domain contributes through
//! [`Domain::report`](crate::domain::Domain::report). The page model and the plots live in
//! `sugarcube-report` (re-exported as [`page`] and [`plot`]).

use crate::checkpoint::{self, write_atomic};
use crate::config::ExperimentOf;
use crate::domain::Domain;
use crate::train::MetricsLine;
use anyhow::Context;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use sugarcube_report::{page, plot, Block, Page, Section, Series};

/// The file in a run directory that names the machine it trained on.
pub const MACHINE_FILE: &str = "machine.txt";
/// The report's file name in a run directory.
pub const REPORT_FILE: &str = "report.html";

/// The machine, in words: CPU model and hardware threads.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {threads} threads")
}

/// Records the machine in `RUN/machine.txt` (called when training starts).
pub fn record_machine(run_dir: &Path) -> anyhow::Result<()> {
    write_atomic(
        &run_dir.join(MACHINE_FILE),
        format!("{}\n", machine_description()).as_bytes(),
    )
}

/// What a run directory holds, read once for its report.
#[derive(Clone, Debug, Default)]
pub struct RunFiles {
    /// The run directory.
    pub dir: PathBuf,
    /// The experiment's name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its domain.
    pub domain: String,
    /// The resolved experiment, `config.toml` as written.
    pub config: String,
    /// `[train] batch_size` (0 when unknown).
    pub batch_size: usize,
    /// The lines of `metrics.jsonl`.
    pub metrics: Vec<MetricsLine>,
    /// Checkpoints: step, tensors file, its size in bytes.
    pub checkpoints: Vec<(usize, PathBuf, u64)>,
    /// Parameters of the newest checkpoint's model.
    pub parameters: Option<u64>,
    /// The machine it trained on (`machine.txt`).
    pub machine: Option<String>,
    /// `eval.json`, in file order.
    pub eval: Vec<(String, f64)>,
    /// `eval-details.json`.
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct Head {
    name: String,
    #[serde(default)]
    description: String,
    domain: String,
    #[serde(default)]
    train: Option<HeadTrain>,
}

#[derive(serde::Deserialize)]
struct HeadTrain {
    #[serde(default)]
    batch_size: usize,
}

impl RunFiles {
    /// Reads a run directory; only `config.toml` is required.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let cfg = dir.join("config.toml");
        let config = std::fs::read_to_string(&cfg).with_context(|| {
            format!(
                "{} is not a run directory: cannot read its config.toml",
                dir.display()
            )
        })?;
        let head: Head = toml::from_str(&config)
            .with_context(|| format!("{}: not a sugarcube experiment", cfg.display()))?;
        let mut metrics = vec![];
        let mpath = dir.join("metrics.jsonl");
        if let Ok(text) = std::fs::read_to_string(&mpath) {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let m: MetricsLine = serde_json::from_str(line).with_context(|| {
                    format!("{} line {}: not a metrics line", mpath.display(), i + 1)
                })?;
                metrics.push(m);
            }
        }
        let checkpoints: Vec<(usize, PathBuf, u64)> = checkpoint::list(&dir.join("checkpoints"))
            .into_iter()
            .map(|c| {
                let size = std::fs::metadata(&c.tensors).map(|m| m.len()).unwrap_or(0);
                (c.step, c.tensors, size)
            })
            .collect();
        let parameters = checkpoints.last().and_then(|c| model_parameters(&c.1).ok());
        let machine = std::fs::read_to_string(dir.join(MACHINE_FILE))
            .ok()
            .map(|s| s.trim().to_string());
        let mut eval = vec![];
        let epath = dir.join("eval.json");
        if epath.exists() {
            let text = std::fs::read_to_string(&epath)
                .with_context(|| format!("cannot read {}", epath.display()))?;
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| {
                    format!("{}: expected a JSON object of figures", epath.display())
                })?;
            for (k, v) in obj {
                if let Some(x) = v.as_f64() {
                    eval.push((k, x));
                }
            }
        }
        let dpath = dir.join("eval-details.json");
        let details = match std::fs::read_to_string(&dpath) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: expected a JSON object", dpath.display()))?,
            Err(_) => Default::default(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            name: head.name,
            description: head.description,
            domain: head.domain,
            config,
            batch_size: head.train.map(|t| t.batch_size).unwrap_or(0),
            metrics,
            checkpoints,
            parameters,
            machine,
            eval,
            details,
        })
    }

    /// The figure `name` of `eval.json`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.eval.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// The number of model parameters (`model.*` tensors) in a checkpoint, read from the
/// safetensors header alone.
fn model_parameters(path: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len);
    anyhow::ensure!(n < 100 << 20, "implausible safetensors header");
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head)?;
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&head)?;
    let mut total = 0u64;
    for (k, v) in &obj {
        if !k.starts_with("model.") {
            continue;
        }
        if let Some(shape) = v.get("shape").and_then(|s| s.as_array()) {
            total += shape
                .iter()
                .map(|d| d.as_u64().unwrap_or(0))
                .product::<u64>();
        }
    }
    Ok(total)
}

/// What a domain's report sections are made from: the run's files and its parsed experiment.
pub struct ReportContext<'a, D: Domain> {
    /// The run's files.
    pub run: &'a RunFiles,
    /// The experiment, parsed with the domain's tables.
    pub exp: &'a ExperimentOf<D>,
}

impl<D: Domain> ReportContext<'_, D> {
    /// The newest folder of samples under `RUN/samples` that holds a file called `file`
    /// (samples written by `sample` or `eval`, else by training).
    pub fn newest_samples(&self, file: &str) -> Option<PathBuf> {
        let dir = self.run.dir.join("samples");
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(file).is_file())
            .filter_map(|p| {
                let t = std::fs::metadata(p.join(file)).ok()?.modified().ok()?;
                Some((t, p))
            })
            .collect();
        found.sort();
        found.pop().map(|f| f.1)
    }

    /// The folders of samples drawn during training (`samples/train-step-N`), by step.
    pub fn training_samples(&self) -> Vec<(usize, PathBuf)> {
        let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(self.run.dir.join("samples"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name.strip_prefix("train-step-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort();
        out
    }
}

/// The sections `D` adds to the report of the run in `dir` (none when the experiment no longer
/// parses: the common sections still show it).
pub fn domain_sections<D: Domain>(run: &RunFiles) -> anyhow::Result<Vec<Section>> {
    let exp = ExperimentOf::<D>::load(&run.dir.join("config.toml"))?;
    D::report(&ReportContext { run, exp: &exp })
}

fn fmt(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".into()
        } else {
            s.to_string()
        }
    } else {
        format!("{v:.3e}")
    }
}

fn experiment_section(runs: &[RunFiles]) -> Section {
    let mut s = Section::new("Experiment");
    let head = std::iter::once("".to_string())
        .chain(runs.iter().map(|r| r.name.clone()))
        .collect();
    let row = |label: &str, f: &dyn Fn(&RunFiles) -> String| -> Vec<String> {
        std::iter::once(label.to_string())
            .chain(runs.iter().map(f))
            .collect()
    };
    let rows = vec![
        row("description", &|r| r.description.clone()),
        row("domain", &|r| r.domain.clone()),
        row("run directory", &|r| r.dir.display().to_string()),
        row("parameters", &|r| {
            r.parameters
                .map(|p| format!("{p} ({:.2}M)", p as f64 / 1e6))
                .unwrap_or_else(|| "no checkpoint".into())
        }),
        row("steps trained", &|r| {
            r.metrics
                .last()
                .map(|m| m.step.to_string())
                .unwrap_or_else(|| "0".into())
        }),
        row("batch size", &|r| r.batch_size.to_string()),
        row("training time", &|r| {
            r.metrics
                .last()
                .map(|m| format!("{:.1} s", m.seconds))
                .unwrap_or_default()
        }),
        row("machine", &|r| {
            r.machine.clone().unwrap_or_else(|| "not recorded".into())
        }),
        row("sugarcube", &|_| env!("CARGO_PKG_VERSION").to_string()),
    ];
    s.push(Block::Table { head, rows });
    for r in runs {
        s.push(Block::figure(
            Block::Pre(r.config.clone()),
            format!("{}/config.toml, the resolved experiment", r.dir.display()),
        ));
    }
    s
}

/// Examples per second between consecutive metrics lines.
fn throughput(r: &RunFiles) -> Vec<(f64, f64, f64)> {
    r.metrics
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].seconds - w[0].seconds;
            let ds = w[1].step.saturating_sub(w[0].step);
            (dt > 0.0 && ds > 0).then(|| {
                (
                    w[1].step as f64,
                    w[1].seconds,
                    (ds * r.batch_size.max(1)) as f64 / dt,
                )
            })
        })
        .collect()
}

fn training_section(runs: &[RunFiles]) -> anyhow::Result<Section> {
    let mut s = Section::new("Training");
    if runs.iter().all(|r| r.metrics.is_empty()) {
        s.push(Block::Text(
            "No metrics.jsonl lines yet: the run has not logged a training step.".into(),
        ));
        return Ok(s);
    }
    let several = runs.len() > 1;
    let name = |r: &RunFiles, what: &str| {
        if several {
            format!("{} {what}", r.name)
        } else {
            what.to_string()
        }
    };
    let mut loss = vec![];
    let mut loss_time = vec![];
    for r in runs {
        let raw: Vec<f64> = r.metrics.iter().map(|m| m.loss).collect();
        // about a tenth of the curve's points in each average, an odd number
        let window = (raw.len() / 10) | 1;
        let smooth = plot::smooth(&raw, window);
        let steps: Vec<f64> = r.metrics.iter().map(|m| m.step as f64).collect();
        loss.push(Series::new(
            name(r, "loss"),
            steps.iter().copied().zip(raw.iter().copied()).collect(),
        ));
        loss.push(Series::new(
            name(r, &format!("smoothed ({window}-point average)")),
            steps.iter().copied().zip(smooth).collect(),
        ));
        loss_time.push(Series::new(
            name(r, "loss"),
            r.metrics.iter().map(|m| (m.seconds, m.loss)).collect(),
        ));
    }
    // one series per run, named by the run when there are several
    let per_run = |what: &str, points: &dyn Fn(&RunFiles) -> Vec<(f64, f64)>| -> Vec<Series> {
        runs.iter()
            .map(|r| {
                let name = if several {
                    r.name.clone()
                } else {
                    what.to_string()
                };
                Series::new(name, points(r))
            })
            .collect()
    };
    let by_step = |f: fn(&MetricsLine) -> f64| {
        move |r: &RunFiles| -> Vec<(f64, f64)> {
            r.metrics.iter().map(|m| (m.step as f64, f(m))).collect()
        }
    };
    let charts: [(&str, &str, &str, Vec<Series>, bool); 6] = [
        ("Loss", "step", "loss", loss, true),
        ("Loss against wall time", "seconds", "loss", loss_time, true),
        (
            "Learning rate",
            "step",
            "lr",
            per_run("lr", &by_step(|m| m.lr)),
            false,
        ),
        (
            "Gradient norm (before clipping)",
            "step",
            "norm",
            per_run("grad norm", &by_step(|m| m.grad_norm)),
            true,
        ),
        (
            "Throughput",
            "step",
            "examples/s",
            per_run("examples/s", &|r| {
                throughput(r).iter().map(|t| (t.0, t.2)).collect()
            }),
            false,
        ),
        (
            "Throughput against wall time",
            "seconds",
            "examples/s",
            per_run("examples/s", &|r| {
                throughput(r).iter().map(|t| (t.1, t.2)).collect()
            }),
            false,
        ),
    ];
    let plots = charts
        .iter()
        .map(|(title, x, y, series, log)| {
            Ok(Block::Svg(plot::line_chart(title, x, y, series, *log)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    s.push(Block::Row(plots));
    Ok(s)
}

fn checkpoints_section(runs: &[RunFiles]) -> Section {
    let mut s = Section::new("Checkpoints");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .flat_map(|r| {
            r.checkpoints.iter().map(move |(step, path, size)| {
                vec![
                    r.name.clone(),
                    step.to_string(),
                    path.display().to_string(),
                    format!("{:.2}", *size as f64 / 1e6),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        s.push(Block::Text("No checkpoints.".into()));
    } else {
        s.push(Block::Table {
            head: vec!["run".into(), "step".into(), "file".into(), "MB".into()],
            rows,
        });
    }
    s
}

/// The metrics of one run beside their floors: rows `X | value | X_floor | ratio` (the ratio
/// is `X_ratio` when the evaluation wrote one, else value / floor), for the figures whose
/// names pass `keep`.
pub fn metrics_table(r: &RunFiles, keep: &dyn Fn(&str) -> bool) -> Block {
    let rows = r
        .eval
        .iter()
        .filter(|(k, _)| !k.ends_with("_floor") && !k.ends_with("_ratio") && keep(k))
        .map(|(k, v)| {
            let floor = r.metric(&format!("{k}_floor"));
            let ratio = r
                .metric(&format!("{k}_ratio"))
                .or_else(|| floor.filter(|f| *f != 0.0).map(|f| v / f));
            vec![
                k.clone(),
                fmt(*v),
                floor.map(fmt).unwrap_or_default(),
                ratio.map(fmt).unwrap_or_default(),
            ]
        })
        .collect();
    Block::Table {
        head: vec![
            "metric".into(),
            "value".into(),
            "floor (data vs data)".into(),
            "ratio".into(),
        ],
        rows,
    }
}

/// Figures in families larger than this (names sharing the part before the first `_`, such
/// as per-class `motif_rate_*`) are folded under their family's name.
const FAMILY_SHOWN: usize = 6;

/// The family of a figure's name: the part before its first `_`.
fn family(name: &str) -> &str {
    name.split('_').next().unwrap_or(name)
}

/// Large families of `r`'s figures, in order of first appearance, with their sizes.
fn large_families(r: &RunFiles) -> Vec<(String, usize)> {
    let mut families: Vec<(String, usize)> = vec![];
    for (k, _) in &r.eval {
        if k.ends_with("_floor") || k.ends_with("_ratio") {
            continue;
        }
        match families.iter_mut().find(|f| f.0 == family(k)) {
            Some(f) => f.1 += 1,
            None => families.push((family(k).to_string(), 1)),
        }
    }
    families.retain(|f| f.1 > FAMILY_SHOWN);
    families
}

fn evaluation_section(runs: &[RunFiles]) -> Section {
    let mut s = Section::new("Evaluation");
    for r in runs {
        if r.eval.is_empty() {
            s.push(Block::Text(format!(
                "{}: no evaluation yet (sugarcube eval {} writes eval.json and refreshes this page).",
                r.name,
                r.dir.display()
            )));
            continue;
        }
        let folded = large_families(r);
        let is_folded = |k: &str| folded.iter().any(|f| f.0 == family(k));
        s.push(Block::figure(
            metrics_table(r, &|k| !is_folded(k)),
            format!(
                "{}/eval.json: each figure beside the same figure for real data against real data (its floor)",
                r.dir.display()
            ),
        ));
        for (name, n) in &folded {
            s.push(Block::Details {
                summary: format!("{n} more figures: {name}_*"),
                content: Box::new(metrics_table(r, &|k| family(k) == name)),
            });
        }
    }
    s
}

/// Lays out the page of `runs` (each with its domain's sections): the experiment, training
/// curves (several runs overlaid), checkpoints, evaluation, then the domain sections.
pub fn page(runs: &[(RunFiles, Vec<Section>)]) -> anyhow::Result<Page> {
    anyhow::ensure!(
        !runs.is_empty(),
        "a report needs at least one run directory"
    );
    let files: Vec<RunFiles> = runs.iter().map(|r| r.0.clone()).collect();
    let title = files
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    let subtitle = if files.len() == 1 {
        let r = &files[0];
        format!(
            "{} · {} domain · {}",
            r.description,
            r.domain,
            r.dir.display()
        )
    } else {
        format!("{} runs overlaid", files.len())
    };
    let mut sections = vec![
        experiment_section(&files),
        training_section(&files)?,
        checkpoints_section(&files),
        evaluation_section(&files),
    ];
    for (r, extra) in runs {
        for mut s in extra.iter().cloned() {
            if runs.len() > 1 {
                s.title = format!("{}: {}", r.name, s.title);
            }
            sections.push(s);
        }
    }
    Ok(Page {
        title,
        subtitle,
        sections,
    })
}

/// Writes the page of `runs` to `out` (through a temporary file and a rename).
pub fn write(runs: &[(RunFiles, Vec<Section>)], out: &Path) -> anyhow::Result<()> {
    let html = page(runs)?.to_html();
    write_atomic(out, html.as_bytes())
}

/// Rewrites `RUN/report.html` for the run in `dir` of domain `D`; returns its path.
pub fn refresh<D: Domain>(dir: &Path) -> anyhow::Result<PathBuf> {
    let run = RunFiles::read(dir)?;
    let sections = domain_sections::<D>(&run)?;
    let out = dir.join(REPORT_FILE);
    write(&[(run, sections)], &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_and_ratios_line_up() {
        let r = RunFiles {
            eval: vec![
                ("fd".into(), 2.0),
                ("fd_floor".into(), 0.5),
                ("sw2".into(), 1.0),
                ("sw2_floor".into(), 0.25),
                ("sw2_ratio".into(), 4.5),
                ("samples".into(), 10.0),
            ],
            ..Default::default()
        };
        let Block::Table { rows, .. } = metrics_table(&r, &|_| true) else {
            panic!("a table")
        };
        assert_eq!(rows[0], vec!["fd", "2", "0.5", "4"]);
        assert_eq!(
            rows[1],
            vec!["sw2", "1", "0.25", "4.5"],
            "the written ratio wins"
        );
        assert_eq!(rows[2], vec!["samples", "10", "", ""]);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn large_families_fold() {
        let mut eval: Vec<(String, f64)> = (0..10)
            .flat_map(|i| {
                [
                    (format!("motif_rate_M{i}"), 0.1),
                    (format!("motif_rate_M{i}_floor"), 0.2),
                ]
            })
            .collect();
        eval.push(("kmer6_js".into(), 0.3));
        let r = RunFiles {
            eval,
            ..Default::default()
        };
        assert_eq!(large_families(&r), vec![("motif".to_string(), 10)]);
        let s = evaluation_section(std::slice::from_ref(&r));
        let html = sugarcube_report::Page {
            title: "t".into(),
            subtitle: String::new(),
            sections: vec![s],
        }
        .to_html();
        assert!(html.contains("<summary>10 more figures: motif_*</summary>"));
    }

    #[test]
    fn small_and_large_numbers_stay_readable() {
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(1.25), "1.25");
        assert_eq!(fmt(1e-5), "1.000e-5");
    }
}
