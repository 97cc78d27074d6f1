//! Backbones from PDB and mmCIF files.
//!
//! Each chain of the first model becomes one or more [`Backbone`]s: standard amino-acid
//! residues in file order with their N, CA and C atoms (the first alternate location seen for
//! each atom). A chain is split where the peptide bond is broken (C to next N longer than
//! [`MAX_PEPTIDE_BOND`] Å) and at residues that lack a backbone atom, and each split is recorded
//! in [`Parsed::notes`] with the file and line; nothing is guessed.

use crate::geometry::distance;
use crate::Vec3;
use anyhow::{bail, Context};
use std::path::Path;
use sugarcube_core::files::read_maybe_gz;

/// The longest C-N distance still taken as a peptide bond, Å.
pub const MAX_PEPTIDE_BOND: f64 = 2.0;

/// The twenty standard amino acids' three-letter codes.
pub const STANDARD: [&str; 20] = [
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET",
    "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
];

/// One residue's backbone.
#[derive(Clone, Debug, PartialEq)]
pub struct Residue {
    /// Three-letter code.
    pub name: String,
    /// Residue number and insertion code as the file gives them (`42`, `42A`).
    pub number: String,
    /// Amide nitrogen.
    pub n: Vec3,
    /// Alpha carbon.
    pub ca: Vec3,
    /// Carbonyl carbon.
    pub c: Vec3,
}

/// A continuous backbone.
#[derive(Clone, Debug, PartialEq)]
pub struct Backbone {
    /// `FILE:CHAIN` (with `/2`, `/3`, ... for the pieces after a break).
    pub id: String,
    /// Its residues, N to C terminus.
    pub residues: Vec<Residue>,
}

impl Backbone {
    /// A backbone from N, CA, C atoms in order (as [`Backbone::atoms`] gives them and
    /// [`crate::nerf::build`] makes them), its residues glycines numbered from 1.
    pub fn from_atoms(id: impl Into<String>, atoms: &[Vec3]) -> Self {
        Self {
            id: id.into(),
            residues: atoms
                .chunks_exact(3)
                .enumerate()
                .map(|(i, a)| Residue {
                    name: "GLY".into(),
                    number: (i + 1).to_string(),
                    n: a[0],
                    ca: a[1],
                    c: a[2],
                })
                .collect(),
        }
    }

    /// Residues.
    pub fn len(&self) -> usize {
        self.residues.len()
    }

    /// True when it has no residues.
    pub fn is_empty(&self) -> bool {
        self.residues.is_empty()
    }

    /// The atoms in order N, CA, C, N, CA, C, ...
    pub fn atoms(&self) -> Vec<Vec3> {
        self.residues
            .iter()
            .flat_map(|r| [r.n, r.ca, r.c])
            .collect()
    }

    /// The CA atoms.
    pub fn ca(&self) -> Vec<Vec3> {
        self.residues.iter().map(|r| r.ca).collect()
    }
}

/// What a file held.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// The backbones, in file order.
    pub chains: Vec<Backbone>,
    /// Breaks and missing atoms, each naming the file and line.
    pub notes: Vec<String>,
}

/// One atom record, whatever the format.
struct AtomRecord {
    line: usize,
    model: String,
    chain: String,
    residue: String,
    number: String,
    atom: String,
    altloc: String,
    xyz: Vec3,
}

/// Reads a PDB or mmCIF file (told by its content), gzipped or not.
pub fn read_structure(path: &Path) -> anyhow::Result<Parsed> {
    let bytes = read_maybe_gz(path)?;
    parse_structure(&bytes, &path.display().to_string())
}

/// Parses PDB or mmCIF bytes; `source` names them in errors and notes.
pub fn parse_structure(bytes: &[u8], source: &str) -> anyhow::Result<Parsed> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{source}: not a text file (invalid UTF-8)"))?;
    let is_cif = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("data_"));
    let records = if is_cif {
        cif_atoms(text, source)?
    } else {
        pdb_atoms(text, source)?
    };
    if records.is_empty() {
        bail!("{source}: no atom records");
    }
    Ok(assemble(records, source))
}

fn number(field: &str, source: &str, line: usize, what: &str) -> anyhow::Result<f64> {
    let v: f64 = field.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "{source} line {line}: {what} `{}` is not a number",
            field.trim()
        )
    })?;
    anyhow::ensure!(v.is_finite(), "{source} line {line}: {what} is not finite");
    Ok(v)
}

/// ATOM and HETATM records of a PDB file (fixed columns), with their MODEL numbers.
fn pdb_atoms(text: &str, source: &str) -> anyhow::Result<Vec<AtomRecord>> {
    let mut out = vec![];
    let mut model = "1".to_string();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        if let Some(rest) = line.strip_prefix("MODEL") {
            model = rest.trim().to_string();
            continue;
        }
        if !(line.starts_with("ATOM  ") || line.starts_with("HETATM")) {
            continue;
        }
        let col = |a: usize, b: usize| line.get(a..b.min(line.len())).unwrap_or("");
        if line.len() < 54 || !line.is_char_boundary(54) {
            bail!("{source} line {ln}: an atom record shorter than the 54 columns that hold its coordinates");
        }
        out.push(AtomRecord {
            line: ln,
            model: model.clone(),
            atom: col(12, 16).trim().to_string(),
            altloc: col(16, 17).trim().to_string(),
            residue: col(17, 20).trim().to_string(),
            chain: col(21, 22).trim().to_string(),
            number: col(22, 27).trim().to_string(),
            xyz: [
                number(col(30, 38), source, ln, "x")?,
                number(col(38, 46), source, ln, "y")?,
                number(col(46, 54), source, ln, "z")?,
            ],
        });
    }
    Ok(out)
}

/// Splits a CIF data line into values (quotes respected).
fn cif_tokens(line: &str) -> Vec<&str> {
    let mut out = vec![];
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'\'' || b[i] == b'"' {
            let q = b[i];
            let start = i + 1;
            let mut j = start;
            // a closing quote is one followed by white space or the end
            while j < b.len()
                && !(b[j] == q && (j + 1 == b.len() || b[j + 1].is_ascii_whitespace()))
            {
                j += 1;
            }
            out.push(&line[start..j.min(b.len())]);
            i = j + 1;
        } else {
            let start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(&line[start..i]);
        }
    }
    out
}

/// The `_atom_site` loop of an mmCIF file (author chain ids and numbers, as PDB files have).
fn cif_atoms(text: &str, source: &str) -> anyhow::Result<Vec<AtomRecord>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "loop_"
            && lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().starts_with("_atom_site."))
        {
            break;
        }
        i += 1;
    }
    if i >= lines.len() {
        bail!("{source}: an mmCIF file without an _atom_site loop");
    }
    i += 1;
    let mut names = vec![];
    while i < lines.len() && lines[i].trim_start().starts_with("_atom_site.") {
        names.push(
            lines[i]
                .trim()
                .trim_start_matches("_atom_site.")
                .to_string(),
        );
        i += 1;
    }
    let col = |name: &str| names.iter().position(|n| n == name);
    let need = |name: &str| {
        col(name).with_context(|| format!("{source}: the _atom_site loop lacks {name}"))
    };
    let (group, x, y, z) = (
        need("group_PDB")?,
        need("Cartn_x")?,
        need("Cartn_y")?,
        need("Cartn_z")?,
    );
    let atom = col("auth_atom_id")
        .or(col("label_atom_id"))
        .context("no atom names")?;
    let residue = col("auth_comp_id")
        .or(col("label_comp_id"))
        .context("no residue names")?;
    let chain = col("auth_asym_id")
        .or(col("label_asym_id"))
        .context("no chain ids")?;
    let seq = col("auth_seq_id")
        .or(col("label_seq_id"))
        .context("no residue numbers")?;
    let (alt, ins, model) = (
        col("label_alt_id"),
        col("pdbx_PDB_ins_code"),
        col("pdbx_PDB_model_num"),
    );
    let mut out = vec![];
    while i < lines.len() {
        let line = lines[i];
        let ln = i + 1;
        i += 1;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('#')
            || t.starts_with("loop_")
            || t.starts_with('_')
            || t.starts_with("data_")
        {
            break;
        }
        let v = cif_tokens(line);
        if v.len() != names.len() {
            bail!(
                "{source} line {ln}: {} values for the {} _atom_site columns (values split over lines are not supported)",
                v.len(),
                names.len()
            );
        }
        if v[group] != "ATOM" && v[group] != "HETATM" {
            continue;
        }
        let blank = |s: &str| {
            if s == "." || s == "?" {
                String::new()
            } else {
                s.to_string()
            }
        };
        out.push(AtomRecord {
            line: ln,
            model: model
                .map(|m| v[m].to_string())
                .unwrap_or_else(|| "1".into()),
            atom: v[atom].trim_matches('"').to_string(),
            altloc: alt.map(|a| blank(v[a])).unwrap_or_default(),
            residue: v[residue].to_string(),
            chain: v[chain].to_string(),
            number: format!("{}{}", v[seq], ins.map(|k| blank(v[k])).unwrap_or_default()),
            xyz: [
                number(v[x], source, ln, "Cartn_x")?,
                number(v[y], source, ln, "Cartn_y")?,
                number(v[z], source, ln, "Cartn_z")?,
            ],
        });
    }
    Ok(out)
}

/// Residues of the first model grouped into backbones.
fn assemble(records: Vec<AtomRecord>, source: &str) -> Parsed {
    let first_model = records[0].model.clone();
    let mut parsed = Parsed::default();
    // residues in file order: (chain, number, name) -> atoms
    struct Building {
        chain: String,
        number: String,
        name: String,
        line: usize,
        n: Option<Vec3>,
        ca: Option<Vec3>,
        c: Option<Vec3>,
        altloc: Option<String>,
    }
    let mut residues: Vec<Building> = vec![];
    for r in records.into_iter().filter(|r| r.model == first_model) {
        if !STANDARD.contains(&r.residue.as_str()) {
            continue;
        }
        // one residue per chain and number: a different residue name there is an alternate
        // (microheterogeneity, 1EJG's PRO/SER 22), dropped with its alternate location below
        let same = residues
            .last()
            .is_some_and(|b| b.chain == r.chain && b.number == r.number);
        if !same {
            residues.push(Building {
                chain: r.chain.clone(),
                number: r.number.clone(),
                name: r.residue.clone(),
                line: r.line,
                n: None,
                ca: None,
                c: None,
                altloc: None,
            });
        }
        let b = residues.last_mut().expect("pushed above");
        if b.name != r.residue && (r.altloc.is_empty() || b.altloc.is_none()) {
            continue;
        }
        // the first alternate location seen in the residue wins
        if !r.altloc.is_empty() {
            match &b.altloc {
                None => b.altloc = Some(r.altloc.clone()),
                Some(a) if *a != r.altloc => continue,
                _ => {}
            }
        }
        let slot = match r.atom.as_str() {
            "N" => &mut b.n,
            "CA" => &mut b.ca,
            "C" => &mut b.c,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(r.xyz);
        }
    }
    let mut current: Option<Backbone> = None;
    let mut pieces: std::collections::HashMap<String, usize> = Default::default();
    let finish = |c: Option<Backbone>, parsed: &mut Parsed| {
        if let Some(c) = c.filter(|c| !c.is_empty()) {
            parsed.chains.push(c);
        }
    };
    let mut last_chain = String::new();
    for b in residues {
        let (Some(n), Some(ca), Some(c)) = (b.n, b.ca, b.c) else {
            let missing: Vec<&str> = [("N", b.n), ("CA", b.ca), ("C", b.c)]
                .iter()
                .filter(|x| x.1.is_none())
                .map(|x| x.0)
                .collect();
            parsed.notes.push(format!(
                "{source} line {}: {} {} of chain {} lacks {}; the chain is split there",
                b.line,
                b.name,
                b.number,
                b.chain,
                missing.join(", ")
            ));
            finish(current.take(), &mut parsed);
            continue;
        };
        let res = Residue {
            name: b.name.clone(),
            number: b.number.clone(),
            n,
            ca,
            c,
        };
        let broken = match &current {
            Some(cur) if b.chain == last_chain => {
                let prev = cur.residues.last().expect("non-empty");
                let d = distance(prev.c, n);
                if d > MAX_PEPTIDE_BOND {
                    parsed.notes.push(format!(
                        "{source} line {}: chain {} breaks before {} {} (C-N {:.2} Å); split there",
                        b.line, b.chain, b.name, b.number, d
                    ));
                    true
                } else {
                    false
                }
            }
            _ => true,
        };
        if broken {
            finish(current.take(), &mut parsed);
            let k = pieces.entry(b.chain.clone()).or_insert(0);
            *k += 1;
            let id = if *k == 1 {
                format!("{source}:{}", b.chain)
            } else {
                format!("{source}:{}/{}", b.chain, k)
            };
            current = Some(Backbone {
                id,
                residues: vec![],
            });
        }
        current.as_mut().expect("set above").residues.push(res);
        last_chain = b.chain;
    }
    finish(current.take(), &mut parsed);
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cif_values_split_with_quotes() {
        assert_eq!(
            cif_tokens("ATOM 1 N \"O5'\" 'a b' ."),
            vec!["ATOM", "1", "N", "O5'", "a b", "."]
        );
    }

    #[test]
    fn short_and_bad_records_are_errors() {
        let e = parse_structure(b"ATOM      1  N   MET A   1      27.343  24.294", "x.pdb")
            .unwrap_err();
        assert!(format!("{e:#}").contains("x.pdb line 1"), "{e:#}");
        let e = parse_structure(
            b"ATOM      1  N   MET A   1      27.343  2a.294   2.683  1.00",
            "y.pdb",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("y.pdb line 1: y"), "{e:#}");
        assert!(parse_structure(b"HEADER nothing\n", "z.pdb").is_err());
    }
}
