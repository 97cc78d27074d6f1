//! The command line as users meet it: experiment listing, config errors, and a small
//! train -> sample -> eval round trip whose run directory has the documented layout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sugarcube"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sugarcube-cli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn lists_experiments() {
    let o = run(bin().current_dir(root()).arg("experiments"));
    assert!(o.status.success(), "{}", text(&o));
    let s = text(&o);
    for name in [
        "toy-moons.toml",
        "toy-8gaussians-cfg.toml",
        "toy-swissroll.toml",
        "toy-checkerboard.toml",
    ] {
        assert!(s.contains(name), "{name} missing from:\n{s}");
    }
}

const SMALL: &str = r#"
name = "tiny"
domain = "toy"
seed = 3

[data]
dataset = "8gaussians"
n = 2000
conditional = true

[model]
hidden = 32
blocks = 1

[process]
schedule = "cosine"
prediction = "v"

[train]
steps = 60
batch_size = 64
checkpoint_every = 25
log_every = 10

[sample]
sampler = "ddim"
steps = 10
n = 40

[eval]
n = 200
"#;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn config_errors_name_file_key_and_expectation() {
    let d = tmp("errors");
    let bad_key = write(
        &d,
        "bad-key.toml",
        &SMALL.replace("blocks = 1", "blocks = 1\nwidth = 3"),
    );
    let o = run(bin()
        .args(["train", bad_key.to_str().unwrap(), "--out"])
        .arg(d.join("r1")));
    assert!(!o.status.success());
    let s = text(&o);
    assert!(
        s.contains("bad-key.toml") && s.contains("width") && s.contains("line"),
        "{s}"
    );
    assert!(s.contains("expected"), "{s}");

    let bad_type = write(
        &d,
        "bad-type.toml",
        &SMALL.replace("steps = 60", "steps = \"many\""),
    );
    let o = run(bin()
        .args(["train", bad_type.to_str().unwrap(), "--out"])
        .arg(d.join("r2")));
    let s = text(&o);
    assert!(
        !o.status.success() && s.contains("bad-type.toml") && s.contains("steps"),
        "{s}"
    );

    let bad_sampler = write(
        &d,
        "bad-sampler.toml",
        &SMALL.replace("sampler = \"ddim\"", "sampler = \"fast\""),
    );
    let o = run(bin()
        .args(["train", bad_sampler.to_str().unwrap(), "--out"])
        .arg(d.join("r3")));
    let s = text(&o);
    assert!(
        !o.status.success() && s.contains("fast") && s.contains("dpmpp_2m"),
        "{s}"
    );

    let o = run(bin().args(["train", "does/not/exist.toml"]));
    let s = text(&o);
    assert!(
        !o.status.success() && s.contains("does/not/exist.toml"),
        "{s}"
    );

    let o = run(bin().args(["sample", d.to_str().unwrap()]));
    let s = text(&o);
    assert!(
        !o.status.success() && s.contains("not a run directory"),
        "{s}"
    );
}

#[test]
fn train_sample_eval_round_trip() {
    let d = tmp("roundtrip");
    let exp = write(&d, "tiny.toml", SMALL);
    let run_dir = d.join("run");
    let o = run(bin()
        .args(["train", exp.to_str().unwrap(), "--out"])
        .arg(&run_dir)
        .arg("--until")
        .arg("30"));
    assert!(o.status.success(), "{}", text(&o));
    // a second plain train refuses to overwrite
    let o = run(bin()
        .args(["train", exp.to_str().unwrap(), "--out"])
        .arg(&run_dir));
    assert!(
        !o.status.success() && text(&o).contains("--resume"),
        "{}",
        text(&o)
    );
    let o = run(bin()
        .args(["train", exp.to_str().unwrap(), "--resume", "--out"])
        .arg(&run_dir));
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "config.toml",
        "data_info.json",
        "metrics.jsonl",
        "checkpoints/step-00000060.safetensors",
        "checkpoints/step-00000060.json",
    ] {
        assert!(run_dir.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for k in ["step", "loss", "lr", "grad_norm", "seconds"] {
        assert!(first.get(k).is_some(), "metrics line lacks {k}: {first}");
    }
    assert_eq!(metrics.lines().count(), 6);

    let o = run(bin().args(["sample"]).arg(&run_dir).args([
        "--n",
        "24",
        "--sampler",
        "dpmpp_2m",
        "--steps",
        "8",
        "--guidance",
        "2",
    ]));
    assert!(o.status.success(), "{}", text(&o));
    let samples = run_dir.join("samples/dpmpp_2m-8steps-g2-seed3-n24");
    assert!(samples.join("samples.safetensors").exists());
    assert!(samples.join("samples.png").exists() && samples.join("samples.csv").exists());

    let o = run(bin().args(["eval"]).arg(&run_dir));
    assert!(o.status.success(), "{}", text(&o));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval.json")).unwrap()).unwrap();
    let obj = eval.as_object().unwrap();
    assert!(
        obj.values().all(|v| v.is_number()),
        "eval.json must be flat: {eval}"
    );
    assert!(obj["sw2"].as_f64().unwrap() > 0.0 && obj["sw2_floor"].as_f64().unwrap() > 0.0);
    assert!(text(&o).contains("sw2"));
}

#[test]
fn a_domain_mounts_its_own_subcommands() {
    // the toy domain's `draw`, found through the registry: real data written as samples are
    let d = tmp("draw");
    let o = run(bin()
        .args(["toy", "draw", "moons", "--n", "50", "--conditional"])
        .arg(d.join("out")));
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(d.join("out/samples.csv")).unwrap();
    assert_eq!(csv.lines().count(), 51);
    assert!(csv.starts_with("x,y,label\n"));
    let o = run(bin().args(["toy", "draw", "spiral"]).arg(d.join("bad")));
    assert!(
        !o.status.success() && text(&o).contains("unknown toy dataset `spiral`"),
        "{}",
        text(&o)
    );
    let o = run(bin().args(["--help"]));
    assert!(text(&o).contains("toy"), "{}", text(&o));
}

#[test]
fn init_fine_tunes_from_another_run() {
    let d = tmp("init");
    let exp = write(&d, "tiny.toml", SMALL);
    let source = d.join("source");
    let o = run(bin()
        .args([
            "--quiet",
            "train",
            exp.to_str().unwrap(),
            "--until",
            "25",
            "--out",
        ])
        .arg(&source));
    assert!(o.status.success(), "{}", text(&o));
    // the flag overrides [train] init, the resolved config records it
    let with_key = write(
        &d,
        "with-key.toml",
        &SMALL.replace("[train]\n", "[train]\ninit = \"does/not/exist\"\n"),
    );
    let tuned = d.join("tuned");
    let o = run(bin()
        .args([
            "train",
            with_key.to_str().unwrap(),
            "--until",
            "5",
            "--init",
        ])
        .arg(&source)
        .arg("--out")
        .arg(&tuned));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("fine-tuning from") && text(&o).contains("step-00000025.safetensors"),
        "{}",
        text(&o)
    );
    let cfg = std::fs::read_to_string(tuned.join("config.toml")).unwrap();
    assert!(
        cfg.contains(&format!("init = \"{}\"", source.display())),
        "{cfg}"
    );
    let o = run(bin()
        .args(["train", with_key.to_str().unwrap(), "--until", "5", "--out"])
        .arg(d.join("missing")));
    assert!(
        !o.status.success() && text(&o).contains("does/not/exist"),
        "{}",
        text(&o)
    );
    // another model size: the first mismatched tensor and both shapes
    let wide = write(
        &d,
        "wide.toml",
        &SMALL.replace("hidden = 32", "hidden = 48"),
    );
    let o = run(bin()
        .args(["train", wide.to_str().unwrap(), "--init"])
        .arg(&source)
        .arg("--out")
        .arg(d.join("wide")));
    let s = text(&o);
    assert!(
        !o.status.success() && s.contains("train.init") && s.contains("[48]") && s.contains("[32]"),
        "{s}"
    );
}
