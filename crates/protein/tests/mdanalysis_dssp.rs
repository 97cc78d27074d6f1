//! Three-state secondary structure against the reference assignments shipped with the
//! MDAnalysis test chains (51 single chains, `MDAnalysisTests/data/dssp/*.pdb.gz` with one
//! `.pdb.dssp` line per chain: a string of H, E and - and the file's name), fetched by `datasets/protein/fetch.sh` into
//! `datasets/protein/mdanalysis-dssp/` (MDAnalysis' test data is GPL-family licensed, so it is
//! fetched, not committed). Skipped with a printed reason when the folder is absent.

use sugarcube_protein::dssp::{secondary_structure, Ss};
use sugarcube_protein::structure::read_structure;

#[test]
fn agrees_with_mdanalysis_references() {
    let dir = std::env::var_os("SUGARCUBE_MDANALYSIS_DSSP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../datasets/protein/mdanalysis-dssp")
        });
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipping: {} is absent (sh datasets/protein/fetch.sh fetches it)",
            dir.display()
        );
        return;
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pdb.gz"))
        .collect();
    files.sort();
    let (mut same, mut total, mut chains) = (0usize, 0usize, 0usize);
    let mut worst = (1.0f64, String::new());
    for pdb in files {
        // each reference is one line: the per-residue string, then the file's name
        let Ok(reference) =
            std::fs::read_to_string(pdb.to_string_lossy().replace(".pdb.gz", ".pdb.dssp"))
        else {
            continue;
        };
        let want: Vec<char> = reference
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .collect();
        let parsed = read_structure(&pdb).unwrap();
        let ours: Vec<Ss> = parsed
            .chains
            .iter()
            .flat_map(|c| secondary_structure(c, None))
            .collect();
        if ours.len() != want.len() {
            eprintln!(
                "{}: {} residues here, {} in the reference; skipped",
                pdb.display(),
                ours.len(),
                want.len()
            );
            continue;
        }
        let agree = ours
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.letter() == Ss::of_dssp(**b).letter())
            .count();
        let frac = agree as f64 / want.len() as f64;
        if frac < worst.0 {
            worst = (frac, pdb.display().to_string());
        }
        same += agree;
        total += want.len();
        chains += 1;
    }
    let rate = same as f64 / total.max(1) as f64;
    eprintln!(
        "{chains} chains, {total} residues: three-state agreement {rate:.4}; worst {:.3} ({})",
        worst.0, worst.1
    );
    assert!(chains >= 40, "only {chains} chains compared");
    assert!(rate >= 0.9, "three-state agreement {rate}");
}
