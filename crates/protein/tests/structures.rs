//! Real chains: ubiquitin (1UBI) and crambin (1EJG, with alternate locations and two residues
//! of mixed identity) as PDB files and one ribosomal protein chain (LBB) of 6ZU5 as mmCIF,
//! from Debian's python3-prody-tests (PDB entries are CC0). Backbones are read, turned into FoldingDiff's angles and rebuilt by NeRF;
//! written PDB files read back.

use sugarcube_protein::angles::{angles, defined, wrap};
use sugarcube_protein::nerf::{build, BondLengths};
use sugarcube_protein::pdb::pdb_text;
use sugarcube_protein::structure::{parse_structure, read_structure, Backbone};
use sugarcube_protein::superpose::rmsd;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn reads_backbones() {
    let ubi = read_structure(&fixture("1ubi.pdb")).unwrap();
    assert_eq!(ubi.chains.len(), 1, "{:?}", ubi.notes);
    assert_eq!(ubi.chains[0].len(), 76);
    assert_eq!(ubi.chains[0].residues[0].name, "MET");
    assert_eq!(ubi.chains[0].residues[0].ca, [26.381, 25.361, 2.894]);
    let crambin = read_structure(&fixture("1ejg.pdb")).unwrap();
    assert_eq!(crambin.chains.len(), 1, "{:?}", crambin.notes);
    assert_eq!(
        crambin.chains[0].len(),
        46,
        "alternate locations are not extra residues"
    );
    let cif = read_structure(&fixture("6zu5-LBB.cif")).unwrap();
    assert_eq!(cif.chains.len(), 1, "{:?}", cif.notes);
    assert!(cif.chains[0].id.ends_with(":LBB"));
    assert_eq!(cif.chains[0].len(), 63);
    // CA-CA spacing of a real chain
    for c in [&ubi.chains[0], &crambin.chains[0], &cif.chains[0]] {
        let ca = c.ca();
        for w in ca.windows(2) {
            let d = ((w[0][0] - w[1][0]).powi(2)
                + (w[0][1] - w[1][1]).powi(2)
                + (w[0][2] - w[1][2]).powi(2))
            .sqrt();
            assert!(
                (3.6..4.0).contains(&d) || (2.7..3.1).contains(&d),
                "CA-CA {d}"
            );
        }
    }
}

#[test]
fn coordinates_to_angles_to_coordinates() {
    for file in ["1ubi.pdb", "1ejg.pdb"] {
        let chain = read_structure(&fixture(file)).unwrap().chains.remove(0);
        let rows = angles(&chain);
        // ideal bond lengths only: the rebuilt chain differs by the lengths' spread
        let atoms = build(&rows, BondLengths::ENGH_HUBER);
        assert_eq!(atoms.len(), 3 * chain.len());
        let r = rmsd(&chain.atoms(), &atoms);
        eprintln!("{file}: backbone RMSD after NeRF with Engh-Huber lengths {r:.3} Å");
        assert!(r < 0.25, "{file}: {r} Å");
        // and the rebuilt chain has the same angles
        let rebuilt = Backbone::from_atoms("rebuilt", &atoms);
        let again = angles(&rebuilt);
        for (i, (a, b)) in rows.iter().zip(&again).enumerate() {
            for k in 0..6 {
                if defined(i, k, rows.len()) && !(i == 0 && k == 3) {
                    assert!(
                        wrap(a[k] - b[k]).abs() < 1e-6,
                        "{file} row {i} column {k}: {} vs {}",
                        a[k],
                        b[k]
                    );
                }
            }
        }
    }
}

#[test]
fn written_pdb_reads_back() {
    let chain = read_structure(&fixture("1ubi.pdb"))
        .unwrap()
        .chains
        .remove(0);
    let text = pdb_text(&chain, 'A').unwrap();
    assert!(text.lines().all(|l| l.len() <= 80));
    let back = parse_structure(text.as_bytes(), "written").unwrap();
    assert_eq!(back.chains.len(), 1);
    assert!(rmsd(&chain.atoms(), &back.chains[0].atoms()) < 1e-3);
    // O atoms: 1.231 Å from C, in every residue
    assert_eq!(text.matches(" O   ").count(), 76);
}

#[test]
fn breaks_and_missing_atoms_split_chains() {
    let text = std::fs::read_to_string(fixture("1ubi.pdb")).unwrap();
    // drop residue 30's CA
    let cut: String = text
        .lines()
        .filter(|l| !(l.starts_with("ATOM") && &l[12..16] == " CA " && l[22..26].trim() == "30"))
        .map(|l| format!("{l}\n"))
        .collect();
    let p = parse_structure(cut.as_bytes(), "cut.pdb").unwrap();
    assert_eq!(
        p.chains.iter().map(|c| c.len()).collect::<Vec<_>>(),
        vec![29, 46]
    );
    assert!(
        p.notes[0].contains("cut.pdb line") && p.notes[0].contains("lacks CA"),
        "{:?}",
        p.notes
    );
}

#[test]
fn real_chains_pass_the_local_checks() {
    use sugarcube_protein::metrics::{
        clashes, kl_divergence, phi_psi, radius_of_gyration, ramachandran_histogram,
    };
    let ubi = read_structure(&fixture("1ubi.pdb"))
        .unwrap()
        .chains
        .remove(0);
    let crambin = read_structure(&fixture("1ejg.pdb"))
        .unwrap()
        .chains
        .remove(0);
    for c in [&ubi, &crambin] {
        assert!(clashes(c).is_empty(), "{}: {:?}", c.id, clashes(c));
    }
    // compact globules: Rg about 2.2 N^0.38 Å
    let rg = radius_of_gyration(&ubi);
    assert!((11.0..13.0).contains(&rg), "ubiquitin Rg {rg}");
    // a chain folded onto itself clashes
    let mut squashed = ubi.clone();
    let ca0 = squashed.residues[0].ca;
    squashed.residues[40].n = [ca0[0] + 0.5, ca0[1], ca0[2]];
    assert!(clashes(&squashed)
        .iter()
        .any(|&(a, b, _)| a == 0 && b == 40));
    // the two proteins' Ramachandran histograms are closer to each other than to uniform
    let (a, b) = (
        ramachandran_histogram(&phi_psi(&ubi), 18),
        ramachandran_histogram(&phi_psi(&crambin), 18),
    );
    let uniform = vec![1.0 / 324.0; 324];
    assert!(kl_divergence(&a, &b, 0.01) < kl_divergence(&a, &uniform, 0.01));
}
