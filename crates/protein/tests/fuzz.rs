//! The PDB and mmCIF readers fed random and mutated real files: errors that name the file,
//! never panics.

use sugarcube_core::rng::Rng;
use sugarcube_protein::structure::parse_structure;

#[test]
fn parsers_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let files: Vec<Vec<u8>> = ["1ubi.pdb", "1ejg.pdb", "6zu5-LBB.cif"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let mut rng = Rng::named(0, "protein-fuzz");
    for round in 0..600 {
        let random: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
        let e = parse_structure(&random, "random.pdb").expect_err("random bytes are no structure");
        assert!(format!("{e:#}").contains("random.pdb"), "{e:#}");
        let mut b = files[round % files.len()].clone();
        for _ in 0..1 + rng.below(20) {
            let i = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[i] = b" -.0123456789ACNOTMEHEL\n\"'"[rng.below(26) as usize],
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, rng.next_u64() as u8),
            }
        }
        if rng.below(4) == 0 {
            let n = rng.below(b.len() as u64) as usize;
            b.truncate(n);
        }
        if let Err(e) = parse_structure(&b, "mutated.pdb") {
            assert!(
                format!("{e:#}").contains("mutated.pdb"),
                "an error that does not name the file: {e:#}"
            );
        }
    }
}
