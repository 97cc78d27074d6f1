//! Three-state secondary structure by DSSP's H-bond rules against DSSP itself: the reference
//! files are mkdssp 4.2.2's output for ubiquitin (1UBI) and the protein chain of HhaI
//! methyltransferase (3MHT, chain A, 327 residues), made with `mkdssp --output-format dssp`.

use std::collections::HashMap;
use sugarcube_protein::dssp::{secondary_structure, Ss};
use sugarcube_protein::structure::read_structure;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// (chain, residue number) -> DSSP letter.
fn reference(file: &str) -> HashMap<(String, String), char> {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    let body = text.split("  #  RESIDUE").nth(1).unwrap();
    body.lines()
        .skip(1)
        .filter(|l| l.len() > 16 && &l[13..14] != "!")
        .map(|l| {
            let number = format!("{}{}", l[5..10].trim(), l[10..11].trim());
            (
                (l[11..12].to_string(), number),
                l[16..17].chars().next().unwrap(),
            )
        })
        .collect()
}

#[test]
fn agrees_with_dssp() {
    for (pdb, dssp, chain) in [
        ("1ubi.pdb", "1ubi.dssp", "A"),
        ("3mht.pdb", "3mht.dssp", "A"),
    ] {
        let want = reference(dssp);
        let parsed = read_structure(&fixture(pdb)).unwrap();
        let (mut same, mut total) = (0, 0);
        let (mut ours, mut theirs) = (String::new(), String::new());
        for c in parsed.chains.iter().filter(|c| {
            c.id.ends_with(&format!(":{chain}")) || c.id.contains(&format!(":{chain}/"))
        }) {
            let ss = secondary_structure(c, None);
            for (r, s) in c.residues.iter().zip(ss) {
                let Some(&letter) = want.get(&(chain.to_string(), r.number.clone())) else {
                    continue;
                };
                let t = Ss::of_dssp(letter);
                total += 1;
                same += (t == s) as usize;
                ours.push(s.letter());
                theirs.push(t.letter());
            }
        }
        let agreement = same as f64 / total as f64;
        eprintln!("{pdb}: {same}/{total} = {agreement:.3}\nours   {ours}\nmkdssp {theirs}");
        assert!(total > 70);
        assert!(agreement >= 0.9, "{pdb}: three-state agreement {agreement}");
    }
}
