//! Chains as training data: structure files found in folders, distinct chains kept once, long
//! chains cut into overlapping windows, held-out chains split off by a seeded draw, and the six
//! angles per residue centred by their circular means over the training residues (FoldingDiff's
//! `zero_center`).

use crate::angles::{angles, defined, wrap};
use crate::structure::{read_structure, Backbone};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Whether a file name is a structure file (`.pdb`, `.ent`, `.cif`, `.mmcif`, any of them
/// `.gz`).
pub fn is_structure_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name).to_string();
    [".pdb", ".ent", ".cif", ".mmcif"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// Structure files named directly or found in folders (searched recursively), in name order;
/// a folder without any is an error.
pub fn structure_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                walk(&e, out)?;
            } else if e.is_file() && is_structure_file(&e) {
                out.push(e);
            }
        }
        Ok(())
    }
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            anyhow::ensure!(
                out.len() > before,
                "{} holds no PDB or mmCIF files (.pdb, .ent, .cif, .mmcif, gzipped or not)",
                p.display()
            );
        } else {
            anyhow::ensure!(p.is_file(), "{} does not exist", p.display());
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The chains of `files` with at least `min_length` residues, each distinct chain once (a chain
/// whose backbone coordinates, rounded to 0.01 Å, equal an earlier one's is a copy and is left
/// out); with the parser's notes (breaks, missing atoms) and how many copies were dropped.
pub fn read_chains(
    files: &[PathBuf],
    min_length: usize,
) -> anyhow::Result<(Vec<Backbone>, Vec<String>, usize)> {
    let mut seen = std::collections::HashSet::new();
    let (mut chains, mut notes, mut copies) = (vec![], vec![], 0);
    for f in files {
        let parsed = read_structure(f)?;
        notes.extend(parsed.notes);
        for c in parsed.chains {
            if c.len() < min_length.max(3) {
                continue;
            }
            let key: Vec<i64> = c
                .atoms()
                .iter()
                .flat_map(|a| a.map(|x| (x * 100.0).round() as i64))
                .collect();
            if seen.insert(key) {
                chains.push(c);
            } else {
                copies += 1;
            }
        }
    }
    Ok((chains, notes, copies))
}

/// A chain cut into windows of `len` residues starting every `stride` residues, the last
/// window ending at the chain's end; a chain no longer than `len` is one window.
pub fn windows(chain: &Backbone, len: usize, stride: usize) -> Vec<Backbone> {
    let n = chain.len();
    if n <= len {
        return vec![chain.clone()];
    }
    let mut starts: Vec<usize> = (0..=n - len).step_by(stride.max(1)).collect();
    if *starts.last().expect("n > len") != n - len {
        starts.push(n - len);
    }
    starts
        .into_iter()
        .map(|s| Backbone {
            id: format!("{}[{}..{}]", chain.id, s + 1, s + len),
            residues: chain.residues[s..s + len].to_vec(),
        })
        .collect()
}

/// Splits `chains` into (kept, held out): `fraction` of them (at least one when there are two
/// or more and the fraction is positive) drawn by a generator seeded with `seed`, each part in
/// its original order.
pub fn hold_out(chains: Vec<Backbone>, fraction: f64, seed: u64) -> (Vec<Backbone>, Vec<Backbone>) {
    let n = chains.len();
    let k = if fraction > 0.0 && n >= 2 {
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    let mut idx: Vec<usize> = (0..n).collect();
    sugarcube_core::rng::Rng::named(seed, "protein-heldout").shuffle(&mut idx);
    let held: std::collections::HashSet<usize> = idx[..k].iter().copied().collect();
    let (mut kept, mut out) = (vec![], vec![]);
    for (i, c) in chains.into_iter().enumerate() {
        if held.contains(&i) {
            out.push(c);
        } else {
            kept.push(c);
        }
    }
    (kept, out)
}

/// The circular mean of each of the six angles over the defined angles of `chains` (atan2 of
/// the mean sine and cosine; FoldingDiff's `wrapped_mean`).
pub fn circular_means(chains: &[Backbone]) -> [f64; 6] {
    let rows: Vec<Vec<[f64; 6]>> = chains.iter().map(angles).collect();
    std::array::from_fn(|j| {
        circular_mean(rows.iter().flat_map(|r| {
            let l = r.len();
            r.iter()
                .enumerate()
                .filter(move |(i, _)| defined(*i, j, l))
                .map(move |(_, row)| row[j])
        }))
    })
}

/// The circular mean of angles: atan2 of their mean sine and mean cosine.
pub fn circular_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (s, c) = values.fold((0.0, 0.0), |(s, c), a| (s + a.sin(), c + a.cos()));
    s.atan2(c)
}

/// A chain's angle rows shifted by `means` and wrapped to [-pi, pi), undefined angles (the
/// first residue's phi, the last one's others) set to 0, as FoldingDiff feeds its model.
pub fn centred_angles(chain: &Backbone, means: &[f64; 6]) -> Vec<[f32; 6]> {
    let rows = angles(chain);
    let l = rows.len();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut out = [0f32; 6];
            for j in 0..6 {
                if defined(i, j, l) {
                    out[j] = wrap(row[j] - means[j]) as f32;
                }
            }
            out
        })
        .collect()
}

/// Angle rows back from the model's centred ones: `means` added back and wrapped.
pub fn uncentred(rows: &[[f32; 6]], means: &[f64; 6]) -> Vec<[f64; 6]> {
    rows.iter()
        .map(|r| std::array::from_fn(|j| wrap(r[j] as f64 + means[j])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Backbone {
        let atoms: Vec<[f64; 3]> = (0..3 * n)
            .map(|i| {
                let t = i as f64 * 0.9;
                [2.3 * t.cos(), 2.3 * t.sin(), 0.5 * t]
            })
            .collect();
        Backbone::from_atoms("A", &atoms)
    }

    #[test]
    fn windows_cover_the_chain_and_end_at_its_end() {
        let c = chain(10);
        let w = windows(&c, 4, 3);
        let starts: Vec<String> = w.iter().map(|b| b.residues[0].number.clone()).collect();
        assert_eq!(starts, ["1", "4", "7"]);
        assert!(w.iter().all(|b| b.len() == 4));
        assert_eq!(w.last().unwrap().residues[3], c.residues[9]);
        assert_eq!(windows(&c, 10, 3).len(), 1);
    }

    #[test]
    fn centring_round_trips_and_means_are_circular() {
        let c = chain(12);
        let means = circular_means(std::slice::from_ref(&c));
        let raw = angles(&c);
        let back = uncentred(&centred_angles(&c, &means), &means);
        for i in 1..11 {
            for j in 0..6 {
                assert!(wrap(back[i][j] - raw[i][j]).abs() < 1e-5, "{i} {j}");
            }
        }
        // angles just either side of pi average to pi, not to 0
        let m = circular_mean([3.1f64, -3.1, 3.0, -3.0].into_iter());
        assert!((m.abs() - std::f64::consts::PI).abs() < 1e-9, "{m}");
        assert!((circular_mean([0.1f64, 0.3].into_iter()) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn hold_out_is_seeded_and_disjoint() {
        let chains: Vec<Backbone> = (0..20)
            .map(|i| {
                let mut c = chain(5);
                c.id = format!("c{i}");
                c
            })
            .collect();
        let (a, b) = hold_out(chains.clone(), 0.1, 7);
        let (a2, b2) = hold_out(chains, 0.1, 7);
        assert_eq!((a.len(), b.len()), (18, 2));
        assert_eq!(b, b2);
        assert_eq!(a, a2);
        assert!(b.iter().all(|h| a.iter().all(|k| k.id != h.id)));
    }
}
