//! The `sugarcube` command line: train, sample, evaluate and benchmark diffusion models
//! described by experiment files.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::{Path, PathBuf};
use sugarcube_core::registry::{self, DomainEntry, Entry};
use sugarcube_core::run::{Lengths, SampleRequest, TrainOptions};

/// Every domain the binary knows: adding a domain is one line here.
static DOMAINS: &[&dyn DomainEntry] = &[
    &Entry::<sugarcube_toy::Toy>::NEW,
    &Entry::<sugarcube_image::Image>::NEW,
    &Entry::<sugarcube_dna::Dna>::NEW,
    &Entry::<sugarcube_protein::Protein>::NEW,
    &Entry::<sugarcube_audio::AudioNotes>::NEW,
];

#[derive(Parser)]
#[command(
    name = "sugarcube",
    version,
    about = "Diffusion models for images, audio, DNA and protein backbones"
)]
struct Cli {
    /// Where tensors live: cpu, or cuda when built with the `cuda` feature.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// No progress bars or log lines.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an experiment into a run directory (default runs/NAME).
    Train {
        /// The experiment file (see experiments/).
        experiment: PathBuf,
        /// Run directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the newest checkpoint in the run directory.
        #[arg(long)]
        resume: bool,
        /// Override the experiment's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Stop after this step (writing a checkpoint); continue later with --resume.
        #[arg(long)]
        until: Option<usize>,
        /// Fine-tune: start from the newest weights of this run directory (overrides the
        /// experiment's [train] init; a resumed run's own checkpoint wins).
        #[arg(long, value_name = "RUN_DIR")]
        init: Option<PathBuf>,
    },
    /// Draw samples from a trained run into RUN_DIR/samples/.
    Sample {
        /// The run directory.
        run_dir: PathBuf,
        #[command(flatten)]
        req: SampleArgs,
        /// Multiply in bfloat16 with float32 sums (CPUs with AVX-512 BF16): faster; the samples
        /// differ slightly from float32's, and still not with the batch size.
        #[arg(long)]
        bf16: bool,
    },
    /// Sample and score a trained run; prints a table and writes RUN_DIR/eval.json.
    Eval {
        /// The run directory.
        run_dir: PathBuf,
        #[command(flatten)]
        req: SampleArgs,
    },
    /// Write the HTML report of one run (RUN_DIR/report.html), or of several runs overlaid
    /// (their curves on shared axes; written into the first run directory unless --out).
    Report {
        /// The run directories.
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        /// Where to write the page (default RUN_DIR/report.html of the first run).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the experiments in a folder, one line each.
    Experiments {
        /// The folder.
        #[arg(default_value = "experiments")]
        dir: PathBuf,
    },
    /// Measure throughput: the standard workloads (unet2d_train, unet1d_dna_train,
    /// transformer_angles_train, unet2d_sample_forward) with a per-operation breakdown, or an
    /// experiment's own training and sampling when an experiment file is given.
    Bench {
        /// An experiment file; without one, the standard workloads run.
        experiment: Option<PathBuf>,
        /// Run only this workload (repeatable): a standard one, or a domain's own
        /// (audio_to_image, audio_to_wav: Riffusion's conversions of a 6.5 s music clip).
        #[arg(long)]
        workload: Vec<String>,
        /// Timed steps per standard workload (the median is reported).
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Untimed warm-up steps per standard workload.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// With an experiment: training steps to time.
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// With an experiment: samples to draw.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Standard workloads: multiply in bfloat16 (float32 sums and weights) on CPUs with
        /// AVX-512 BF16. (An experiment trains with its own `[train] precision`.)
        #[arg(long)]
        bf16: bool,
    },
}

#[derive(clap::Args, Clone, Debug)]
struct SampleArgs {
    /// Number of samples (default: the experiment's [sample] n; for eval, [eval] n).
    #[arg(long)]
    n: Option<usize>,
    /// Sampler: for the Gaussian process ddpm, ddim, euler, heun, dpmpp_2m; for the masked
    /// process ancestral.
    #[arg(long)]
    sampler: Option<String>,
    /// Sampling steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance: the weight of each --cond term (1 = plain conditional).
    #[arg(long)]
    guidance: Option<f64>,
    /// A condition to generate from, `field=value,field=value` (a multi-label value joins labels
    /// with +, e.g. celltype=HepG2+K562). Repeat to compose several positive terms. Without it,
    /// sample i takes the model's default condition i mod K (every class in turn).
    #[arg(long = "cond", value_name = "FIELD=VALUE,...")]
    cond: Vec<String>,
    /// A condition to steer away from (a negative term, e.g. celltype=GM12878). Repeatable.
    #[arg(long = "not", value_name = "FIELD=VALUE,...")]
    not: Vec<String>,
    /// The weight of each --not term (default: the --guidance weight).
    #[arg(long)]
    not_guidance: Option<f64>,
    /// Per-sample lengths for variable-length data: N, or A..B (each sample's length drawn
    /// from the seed and its index).
    #[arg(long, value_parser = parse_lengths)]
    lengths: Option<Lengths>,
    /// Seed (default: the experiment's).
    #[arg(long)]
    seed: Option<u64>,
    /// Samples per batch (affects memory and speed, never the samples).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Classifier guidance: a classifier run (an experiment with task = "classifier") whose
    /// gradient steers any Gaussian sampler toward each sample's class, alone or with --guidance.
    #[arg(long, value_name = "RUN_DIR")]
    scorer: Option<PathBuf>,
    /// The scale of the classifier's gradient (default 1).
    #[arg(long, requires = "scorer")]
    scorer_scale: Option<f64>,
}

fn parse_lengths(s: &str) -> Result<Lengths, String> {
    Lengths::parse(s).map_err(|e| e.to_string())
}

impl SampleArgs {
    fn request(&self, quiet: bool) -> SampleRequest {
        SampleRequest {
            n: self.n,
            sampler: self.sampler.clone(),
            steps: self.steps,
            guidance: self.guidance,
            not_guidance: self.not_guidance,
            cond: self.cond.clone(),
            not: self.not.clone(),
            lengths: self.lengths.clone(),
            seed: self.seed,
            batch_size: self.batch_size,
            scorer: self.scorer.clone(),
            scorer_scale: self.scorer_scale,
            quiet,
        }
    }
}

fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => {
            let d = candle_core::Device::new_cuda(0)
                .context("--device cuda: this build has no CUDA support or no GPU was found (build with --features cuda)")?;
            Ok(d)
        }
        other => anyhow::bail!("--device: expected cpu or cuda, got `{other}`"),
    }
}

/// The registry entry of the domain an experiment file names.
fn experiment_domain(experiment: &Path) -> anyhow::Result<&'static dyn DomainEntry> {
    let name = sugarcube_core::config::domain_of(experiment)?;
    registry::find(DOMAINS, &name, &experiment.display().to_string())
}

/// The registry entry of a run directory's domain.
fn run_entry(run_dir: &Path) -> anyhow::Result<&'static dyn DomainEntry> {
    let name = run_domain(run_dir)?;
    registry::find(DOMAINS, &name, &run_dir.display().to_string())
}

fn run_domain(run_dir: &Path) -> anyhow::Result<String> {
    let cfg = run_dir.join("config.toml");
    anyhow::ensure!(
        cfg.exists(),
        "{} is not a run directory: it has no config.toml",
        run_dir.display()
    );
    sugarcube_core::config::domain_of(&cfg)
}

fn main() {
    sugarcube_core::tune_allocator();
    sugarcube_core::tune_threads();
    sugarcube_core::quiet_broken_pipe();
    // the domains' own subcommands (`sugarcube NAME ...`) mount beside the shared ones
    let mut command = Cli::command();
    for d in DOMAINS {
        if let Some(c) = d.command() {
            command = command.subcommand(c);
        }
    }
    let matches = command.get_matches();
    let result = match matches.subcommand() {
        Some((name, sub))
            if DOMAINS
                .iter()
                .any(|d| d.name() == name && d.command().is_some()) =>
        {
            let d = registry::find(DOMAINS, name, "command line").expect("found above");
            d.run_command(sub)
        }
        _ => Cli::from_arg_matches(&matches)
            .map_err(anyhow::Error::from)
            .and_then(real_main),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let dev = device(&cli.device)?;
    let quiet = cli.quiet;
    match cli.command {
        Command::Train {
            experiment,
            out,
            resume,
            seed,
            until,
            init,
        } => {
            let opts = TrainOptions {
                out,
                resume,
                seed,
                quiet,
                stop_at: until,
                init,
            };
            let (dir, report) = experiment_domain(&experiment)?.train(&experiment, &opts, &dev)?;
            refresh_report(&dir);
            println!(
                "trained {} steps ({} this call, {:.0} examples/s), final loss {:.4}; run directory {}",
                report.steps,
                report.steps_run,
                report.items_per_s,
                report.final_loss,
                dir.display()
            );
        }
        Command::Sample { run_dir, req, bf16 } => {
            let _precision = sugarcube_core::nn::Bf16Compute::set(bf16)?;
            let (out, files) = run_entry(&run_dir)?.sample(&run_dir, &req.request(quiet), &dev)?;
            println!("wrote {} files to {}", files.len(), out.display());
            for f in files {
                println!("  {}", f.display());
            }
        }
        Command::Eval { run_dir, req } => {
            let metrics = run_entry(&run_dir)?
                .eval(&run_dir, &req.request(quiet), &dev)?
                .metrics;
            let width = metrics
                .iter()
                .map(|(k, _)| k.len())
                .max()
                .unwrap_or(6)
                .max(6);
            println!("{:<width$}  value", "metric");
            for (k, v) in &metrics {
                println!("{k:<width$}  {v:.6}");
            }
            println!("wrote {}", run_dir.join("eval.json").display());
            refresh_report(&run_dir);
        }
        Command::Report { run_dirs, out } => {
            let out = out.unwrap_or_else(|| run_dirs[0].join(sugarcube_core::report::REPORT_FILE));
            write_report(&run_dirs, &out)?;
            println!("wrote {}", out.display());
        }
        Command::Experiments { dir } => list_experiments(&dir)?,
        Command::Bench {
            experiment: None,
            workload,
            iters,
            warmup,
            json,
            bf16,
            ..
        } => {
            sugarcube_core::nn::set_bf16_compute(bf16)?;
            bench_workloads(&workload, warmup, iters, json, &dev)?
        }
        Command::Bench {
            experiment: Some(experiment),
            steps,
            n,
            json,
            bf16,
            ..
        } => {
            anyhow::ensure!(!bf16, "--bf16 is for the standard workloads; for {}, set precision = \"bf16\" under [train]", experiment.display());
            let results = experiment_domain(&experiment)?.bench(&experiment, steps, n, &dev)?;
            let machine = sugarcube_core::report::machine_description();
            if json {
                for r in &results {
                    let mut v = serde_json::to_value(r)?;
                    v["machine"] = serde_json::json!(machine);
                    println!("{}", serde_json::to_string(&v)?);
                }
            } else {
                println!("machine: {machine}");
                println!(
                    "{:<36} {:>12} {:>12} {:>7}",
                    "workload", "items/s", "steps/s", "batch"
                );
                for r in &results {
                    println!(
                        "{:<36} {:>12.1} {:>12.2} {:>7}",
                        r.workload, r.items_per_s, r.steps_per_s, r.batch_size
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs the standard workloads (all, or those named) and prints each result as it comes.
fn bench_workloads(
    names: &[String],
    warmup: usize,
    iters: usize,
    json: bool,
    dev: &candle_core::Device,
) -> anyhow::Result<()> {
    use sugarcube_core::bench::{self, Workload};
    let domain_workloads: Vec<_> = DOMAINS.iter().flat_map(|d| d.workloads()).collect();
    // the standard workloads by default; a domain's by name
    let mut runs: Vec<(
        String,
        Box<dyn Fn() -> anyhow::Result<bench::WorkloadResult>>,
    )> = vec![];
    let standard = |w: Workload| -> (
        String,
        Box<dyn Fn() -> anyhow::Result<bench::WorkloadResult>>,
    ) {
        (
            w.name().to_string(),
            Box::new(move || bench::run(w, dev, warmup, iters)),
        )
    };
    if names.is_empty() {
        runs.extend(Workload::ALL.into_iter().map(standard));
    }
    for name in names {
        if let Some(d) = domain_workloads.iter().find(|d| d.name == name) {
            let run = d.run;
            runs.push((name.clone(), Box::new(move || run(warmup, iters))));
            continue;
        }
        let w = Workload::parse(name).map_err(|e| {
            let extra: Vec<_> = domain_workloads.iter().map(|d| d.name).collect();
            anyhow::anyhow!("{e}, {}", extra.join(", "))
        })?;
        runs.push(standard(w));
    }
    let machine = sugarcube_core::report::machine_description();
    if !json {
        println!("machine: {machine}; median of {iters} steps after {warmup} warm-up steps");
    }
    for (name, run) in runs {
        let r = run().with_context(|| format!("workload {name}"))?;
        if json {
            let mut v = serde_json::to_value(&r)?;
            v["machine"] = serde_json::json!(machine);
            v["device"] = serde_json::json!(format!("{dev:?}"));
            println!("{}", serde_json::to_string(&v)?);
            continue;
        }
        println!(
            "\n{}: {:.1} items/s (batch {}, {:.1} ms/step, {:.2}M parameters, {})",
            r.workload,
            r.items_per_s,
            r.batch_size,
            r.ms_per_step,
            r.parameters as f64 / 1e6,
            r.precision
        );
        for (name, value) in &r.quality {
            println!("  {name}: {value:.3}");
        }
        println!(
            "  {:<28} {:>10} {:>7} {:>10}",
            "region", "ms/step", "share", "calls/step"
        );
        for e in &r.breakdown {
            println!(
                "  {:<28} {:>10.2} {:>6.1}% {:>10.1}",
                e.name,
                e.ms_per_step,
                100.0 * e.share,
                e.calls_per_step
            );
        }
    }
    Ok(())
}

/// Writes the report of `run_dirs` to `out`: the common sections and each run's domain
/// sections.
fn write_report(run_dirs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    use sugarcube_core::report::{self, RunFiles};
    let mut runs = vec![];
    for dir in run_dirs {
        let files = RunFiles::read(dir)?;
        let sections = run_entry(dir)?.report(&files).with_context(|| {
            format!("the {} report sections of {}", files.domain, dir.display())
        })?;
        runs.push((files, sections));
    }
    report::write(&runs, out)
}

/// Rewrites RUN_DIR/report.html after `train` and `eval`; a report that fails is a warning,
/// never a failed run.
fn refresh_report(run_dir: &Path) {
    let out = run_dir.join(sugarcube_core::report::REPORT_FILE);
    match write_report(&[run_dir.to_path_buf()], &out) {
        Ok(()) => eprintln!("report: {}", out.display()),
        Err(e) => eprintln!("warning: could not write {}: {e:#}", out.display()),
    }
}

#[derive(serde::Deserialize)]
struct Summary {
    name: Option<String>,
    domain: Option<String>,
    description: Option<String>,
}

fn list_experiments(dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list experiments in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        match toml::from_str::<Summary>(&text) {
            Ok(s) => println!(
                "{:<38} {:<6} {}",
                f.display(),
                s.domain.unwrap_or_else(|| "?".into()),
                s.description.or(s.name).unwrap_or_default()
            ),
            Err(e) => println!(
                "{:<38} (invalid: {})",
                f.display(),
                e.to_string().lines().next().unwrap_or("")
            ),
        }
    }
    Ok(())
}
