//! `sugarcube protein ...`: backbones from structure files.

use crate::angles::{angles, NAMES};
use crate::dssp::{secondary_structure, Ss};
use crate::metrics::{clashes, radius_of_gyration};
use crate::nerf::{build, BondLengths};
use crate::pdb::write_pdb;
use crate::structure::{read_structure, Backbone, Residue};
use crate::superpose::rmsd;
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
            let rebuilt = Backbone {
                id: format!("{} rebuilt by NeRF", chain.id),
                residues: chain
                    .residues
                    .iter()
                    .zip(atoms.chunks(3))
                    .map(|(r, a)| Residue {
                        name: r.name.clone(),
                        number: r.number.clone(),
                        n: a[0],
                        ca: a[1],
                        c: a[2],
                    })
                    .collect(),
            };
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
