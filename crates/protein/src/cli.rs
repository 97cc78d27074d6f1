//! `sugarcube protein ...`: backbones from structure files.

use crate::angles::{angles, NAMES};
use crate::dataset::{hold_out, read_chains, structure_files};
use crate::dssp::{secondary_structure, Ss};
use crate::metrics::{clashes, radius_of_gyration};
use crate::nerf::{build, BondLengths};
use crate::pdb::write_pdb;
use crate::structure::{read_structure, Backbone};
use crate::superpose::rmsd;
use anyhow::Context;
use clap::{value_parser, Arg, ArgMatches, Command};
use std::path::PathBuf;

/// The `protein` command and its subcommands.
pub fn command() -> Command {
    Command::new("protein")
        .about("Protein backbones: read PDB/mmCIF files, FoldingDiff's angles, NeRF")
        .subcommand_required(true)
        .subcommand(
            Command::new("info")
                .about("List the backbone chains of PDB/mmCIF files (gzipped or not): length, radius of gyration, helix and strand fractions (DSSP rules), clashes; breaks and missing atoms")
                .arg(Arg::new("files").required(true).num_args(1..).value_parser(value_parser!(PathBuf))),
        )
        .subcommand(
            Command::new("eval")
                .about("Score generated backbones against real ones (rama_kl, clash_rate, CA-CA validity, helix/strand fractions, rg_ratio, max TM-score to training), each beside its held-out floor")
                .arg(Arg::new("generated").required(true).num_args(1..).value_parser(value_parser!(PathBuf)).help("PDB/mmCIF files or folders of them"))
                .arg(Arg::new("reference").long("reference").required(true).num_args(1..).value_parser(value_parser!(PathBuf)).help("training structures: files or folders"))
                .arg(Arg::new("test").long("test").num_args(1..).value_parser(value_parser!(PathBuf)).help("held-out structures for the floors (default: a seeded tenth of the reference chains)"))
                .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64)))
                .arg(Arg::new("out").long("out").value_parser(value_parser!(PathBuf)).help("write OUT/eval.json")),
        )
        .subcommand(
            Command::new("extract")
                .about("Write each distinct backbone chain of PDB/mmCIF files (or folders of them) as its own backbone PDB file (N, CA, C, ideal O), gzipped with --gz: a training folder from any structures")
                .arg(Arg::new("inputs").required(true).num_args(1..).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("out").long("out").required(true).value_parser(value_parser!(PathBuf)).help("output folder"))
                .arg(Arg::new("min-length").long("min-length").default_value("40").value_parser(value_parser!(usize)).help("leave out chains (and pieces between breaks) shorter than this"))
                .arg(Arg::new("gz").long("gz").action(clap::ArgAction::SetTrue).help("write .pdb.gz")),
        )
        .subcommand(
            Command::new("angles")
                .about("Print a chain's six angles per residue (degrees) as CSV")
                .arg(Arg::new("file").required(true).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("chain").long("chain").default_value("0").value_parser(value_parser!(usize)).help("which backbone of the file (0 = the first)")),
        )
        .subcommand(
            Command::new("rebuild")
                .about("Rebuild a chain from its angles by NeRF and write it as PDB, printing the RMSD to the original")
                .arg(Arg::new("file").required(true).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("out").required(true).value_parser(value_parser!(PathBuf)))
                .arg(Arg::new("chain").long("chain").default_value("0").value_parser(value_parser!(usize)))
                .arg(Arg::new("lengths").long("lengths").default_value("engh-huber").help("bond lengths: engh-huber or foldingdiff")),
        )
}

fn chain_of(m: &ArgMatches) -> anyhow::Result<Backbone> {
    let file = m.get_one::<PathBuf>("file").expect("required");
    let k = *m.get_one::<usize>("chain").expect("defaulted");
    let mut p = read_structure(file)?;
    for n in &p.notes {
        eprintln!("note: {n}");
    }
    anyhow::ensure!(
        k < p.chains.len(),
        "{} has {} backbone chains; --chain {k} is out of range",
        file.display(),
        p.chains.len()
    );
    Ok(p.chains.swap_remove(k))
}

fn chains_of(files: &[PathBuf]) -> anyhow::Result<Vec<Backbone>> {
    let mut out = vec![];
    for f in files {
        out.extend(
            read_structure(f)?
                .chains
                .into_iter()
                .filter(|c| c.len() >= 3),
        );
    }
    Ok(out)
}

/// A file name for a chain id (`dir/1ubi.pdb.gz:A/2` -> `1ubi_A_2`): the file's stem without
/// its structure extensions, the chain, characters other than letters, digits, `-` and `.`
/// replaced by `_`.
fn file_name_of(id: &str) -> String {
    let (file, chain) = id.rsplit_once(':').unwrap_or((id, ""));
    let mut stem = std::path::Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    for ext in [".gz", ".pdb", ".ent", ".cif", ".mmcif"] {
        if stem.to_lowercase().ends_with(ext) {
            stem.truncate(stem.len() - ext.len());
        }
    }
    format!("{stem}_{chain}")
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' {
                ch
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_end_matches('_')
        .to_string()
}

/// Runs `sugarcube protein ...`.
pub fn run(matches: &ArgMatches) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("info", m)) => {
            for f in m.get_many::<PathBuf>("files").expect("required") {
                let p = read_structure(f)?;
                for (i, c) in p.chains.iter().enumerate() {
                    let ss = secondary_structure(c, None);
                    let frac = |s: Ss| {
                        ss.iter().filter(|x| **x == s).count() as f64 / ss.len().max(1) as f64
                    };
                    println!(
                        "{i}\t{}\t{} residues\tRg {:.1} Å\thelix {:.2}\tstrand {:.2}\tclashes {}",
                        c.id,
                        c.len(),
                        radius_of_gyration(c),
                        frac(Ss::Helix),
                        frac(Ss::Strand),
                        clashes(c).len()
                    );
                }
                for n in &p.notes {
                    println!("note: {n}");
                }
            }
            Ok(())
        }
        Some(("eval", m)) => {
            let list = |k: &str| -> Vec<PathBuf> {
                m.get_many::<PathBuf>(k)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default()
            };
            let generated = chains_of(&structure_files(&list("generated"))?)?;
            let mut train = chains_of(&structure_files(&list("reference"))?)?;
            let held = if m.contains_id("test") {
                chains_of(&structure_files(&list("test"))?)?
            } else {
                // a seeded tenth of the reference, at least one chain (as the domain holds out)
                anyhow::ensure!(
                    train.len() >= 2,
                    "with no --test, the reference needs at least two chains to hold one out"
                );
                let seed = *m.get_one::<u64>("seed").expect("defaulted");
                let (kept, held) = hold_out(std::mem::take(&mut train), 0.1, seed);
                train = kept;
                held
            };
            let figures = crate::evaluate::evaluate(&generated, &train, &held)?;
            println!(
                "{} generated, {} training, {} held-out chains",
                generated.len(),
                train.len(),
                held.len()
            );
            let width = figures.iter().map(|f| f.0.len()).max().unwrap_or(0);
            for (k, v) in &figures {
                println!("{k:<width$}  {v:.6}");
            }
            if let Some(dir) = m.get_one::<PathBuf>("out") {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                sugarcube_core::run::write_evaluation(
                    dir,
                    &sugarcube_core::domain::Evaluation::of(figures),
                )?;
                println!("wrote {}", dir.join("eval.json").display());
            }
            Ok(())
        }
        Some(("extract", m)) => {
            let inputs: Vec<PathBuf> = m
                .get_many::<PathBuf>("inputs")
                .expect("required")
                .cloned()
                .collect();
            let out = m.get_one::<PathBuf>("out").expect("required");
            let min = *m.get_one::<usize>("min-length").expect("defaulted");
            let (chains, notes, copies) = read_chains(&structure_files(&inputs)?, min)?;
            for n in &notes {
                eprintln!("note: {n}");
            }
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let ext = if m.get_flag("gz") { "pdb.gz" } else { "pdb" };
            for c in &chains {
                let name = file_name_of(&c.id);
                write_pdb(&out.join(format!("{name}.{ext}")), c)?;
            }
            println!(
                "wrote {} chains of at least {min} residues to {} ({copies} copies of earlier chains left out)",
                chains.len(),
                out.display()
            );
            Ok(())
        }
        Some(("angles", m)) => {
            let chain = chain_of(m)?;
            println!("residue,name,{}", NAMES.join(","));
            for (r, row) in chain.residues.iter().zip(angles(&chain)) {
                let deg: Vec<String> = row
                    .iter()
                    .map(|a| format!("{:.2}", a.to_degrees()))
                    .collect();
                println!("{},{},{}", r.number, r.name, deg.join(","));
            }
            Ok(())
        }
        Some(("rebuild", m)) => {
            let chain = chain_of(m)?;
            let lengths = match m.get_one::<String>("lengths").expect("defaulted").as_str() {
                "engh-huber" => BondLengths::ENGH_HUBER,
                "foldingdiff" => BondLengths::FOLDINGDIFF,
                other => anyhow::bail!("--lengths `{other}`: expected engh-huber or foldingdiff"),
            };
            let atoms = build(&angles(&chain), lengths);
            let mut rebuilt = Backbone::from_atoms(format!("{} rebuilt by NeRF", chain.id), &atoms);
            for (new, old) in rebuilt.residues.iter_mut().zip(&chain.residues) {
                new.name.clone_from(&old.name);
                new.number.clone_from(&old.number);
            }
            let out = m.get_one::<PathBuf>("out").expect("required");
            write_pdb(out, &rebuilt)?;
            println!(
                "wrote {} ({} residues; backbone RMSD to the original {:.3} Å)",
                out.display(),
                rebuilt.len(),
                rmsd(&chain.atoms(), &rebuilt.atoms())
            );
            Ok(())
        }
        _ => unreachable!("subcommand_required"),
    }
}
