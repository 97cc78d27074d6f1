//! The evaluation tells a copied chain from random angles: ubiquitin rebuilt by NeRF scores a
//! TM-score near 1 to its own training copy and a Ramachandran histogram like the data's;
//! chains of uniformly random angles clash and leave the data's Ramachandran regions.

use sugarcube_core::rng::Rng;
use sugarcube_protein::angles::angles;
use sugarcube_protein::evaluate::evaluate;
use sugarcube_protein::nerf::{build, BondLengths};
use sugarcube_protein::structure::{read_structure, Backbone};

fn chain(name: &str) -> Backbone {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    read_structure(&p).unwrap().chains.remove(0)
}

fn from_rows(rows: &[[f64; 6]]) -> Backbone {
    Backbone::from_atoms("built", &build(rows, BondLengths::ENGH_HUBER))
}

#[test]
fn copies_and_noise_are_told_apart() {
    let ubi = chain("1ubi.pdb");
    let train = vec![ubi.clone(), chain("3mht.pdb")];
    let held = vec![chain("6zu5-LBB.cif")];
    let copy = from_rows(&angles(&ubi));
    let get = |m: &[(String, f64)], k: &str| m.iter().find(|x| x.0 == k).unwrap().1;
    let copied = evaluate(&[copy], &train, &held).unwrap();
    assert!(get(&copied, "max_tm_to_train_mean") > 0.95, "{copied:?}");
    assert_eq!(get(&copied, "clash_rate"), 0.0);
    assert_eq!(get(&copied, "ca_ca_valid"), 1.0);
    // random dihedrals with real bond angles
    let mut rng = Rng::named(0, "random-angles");
    let noise: Vec<Backbone> = (0..4)
        .map(|_| {
            let rows: Vec<[f64; 6]> = angles(&ubi)
                .iter()
                .map(|r| {
                    let mut r = *r;
                    for a in r.iter_mut().take(2) {
                        *a = (rng.uniform() * 2.0 - 1.0) * std::f64::consts::PI;
                    }
                    r
                })
                .collect();
            from_rows(&rows)
        })
        .collect();
    let random = evaluate(&noise, &train, &held).unwrap();
    eprintln!("copy {copied:?}\nrandom {random:?}");
    assert!(get(&random, "rama_kl") > 2.0 * get(&copied, "rama_kl"));
    assert!(get(&random, "max_tm_to_train_mean") < 0.5);
    assert!(get(&random, "helix_fraction") < get(&copied, "helix_fraction"));
}
