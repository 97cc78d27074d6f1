//! Experiment files are user input: random bytes and mutated copies of every shipped experiment
//! must give an error (naming the origin) or a parsed experiment, never a panic.

use std::path::Path;
use sugarcube_audio::AudioNotes;
use sugarcube_core::config::ExperimentOf;
use sugarcube_core::rng::Rng;
use sugarcube_dna::Dna;
use sugarcube_image::Image;
use sugarcube_protein::Protein;
use sugarcube_toy::Toy;

fn parse_all(text: &str) {
    let toy =
        std::panic::catch_unwind(|| ExperimentOf::<Toy>::parse(text, "fuzz.toml").map(|_| ()));
    let image =
        std::panic::catch_unwind(|| ExperimentOf::<Image>::parse(text, "fuzz.toml").map(|_| ()));
    let dna =
        std::panic::catch_unwind(|| ExperimentOf::<Dna>::parse(text, "fuzz.toml").map(|_| ()));
    let protein =
        std::panic::catch_unwind(|| ExperimentOf::<Protein>::parse(text, "fuzz.toml").map(|_| ()));
    let audio = std::panic::catch_unwind(|| {
        ExperimentOf::<AudioNotes>::parse(text, "fuzz.toml").map(|_| ())
    });
    for r in [toy, image, dna, protein, audio] {
        match r {
            Err(_) => panic!("the parser panicked on:\n{text}"),
            Ok(Err(e)) => assert!(
                e.to_string().contains("fuzz.toml"),
                "the error does not name the file: {e}"
            ),
            Ok(Ok(())) => {}
        }
    }
}

/// Every shipped experiment parses under its own domain.
#[test]
fn shipped_experiments_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    for e in std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
    {
        let path = e.path();
        let parsed = match sugarcube_core::config::domain_of(&path).unwrap().as_str() {
            "toy" => ExperimentOf::<Toy>::load(&path).map(|_| ()),
            "image" => ExperimentOf::<Image>::load(&path).map(|_| ()),
            "dna" => ExperimentOf::<Dna>::load(&path).map(|_| ()),
            "protein" => ExperimentOf::<Protein>::load(&path).map(|_| ()),
            "audio" => ExperimentOf::<AudioNotes>::load(&path).map(|_| ()),
            other => panic!(
                "{}: a domain this test does not know: {other}",
                path.display()
            ),
        };
        parsed.unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
}

#[test]
fn random_and_mutated_experiment_files_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let mut originals: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    originals.sort();
    assert!(originals.len() >= 5);
    let mut rng = Rng::new(17);
    for _ in 0..200 {
        let n = rng.below(400) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        parse_all(&String::from_utf8_lossy(&bytes));
    }
    let pieces = [
        "=",
        "[",
        "]",
        "\"",
        "\n",
        "kind = \"masked\"",
        "kind = \"edm\"",
        "steps = -1",
        "1e400",
        "[process]",
        "nan",
        "{",
        "'",
    ];
    for original in &originals {
        for _ in 0..60 {
            let mut b = original.as_bytes().to_vec();
            match rng.below(4) {
                0 => b.truncate(rng.below(b.len() as u64 + 1) as usize),
                1 => {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.below(256) as u8;
                }
                2 => {
                    let i = rng.below(b.len() as u64 + 1) as usize;
                    let p = pieces[rng.below(pieces.len() as u64) as usize];
                    b.splice(i..i, p.bytes());
                }
                _ => {
                    let (i, j) = (
                        rng.below(b.len() as u64) as usize,
                        rng.below(b.len() as u64) as usize,
                    );
                    b.swap(i, j);
                }
            }
            parse_all(&String::from_utf8_lossy(&b));
        }
    }
}
