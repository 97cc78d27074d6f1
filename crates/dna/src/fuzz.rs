//! Fuzz and property tests: random bytes and mutations of real files, fed to every parser,
//! never panic; what a parser accepts holds only valid records, and FASTA that parses writes
//! and reads back to the same records.

use crate::testutil::{fixture, temp_dir, Gen};
use crate::*;

/// Bytes that matter to the parsers, inserted more often than chance would.
const SPECIAL: &[u8] = b">\n\r\t ,;+=\"NnacgtACGTRY-\x00\xff\xc3";
/// Text fragments that matter to the parsers.
const WORDS: &[&[u8]] = &[
    b"labels=",
    b"labels=a+b",
    b"\n>",
    b"\r\n",
    b"++",
    b"\"\"",
    b"sequence",
    b"1",
    b"0",
    b"true",
];

/// One random mutation of `data`: byte flips, insertions, deletions, duplications, truncations.
fn mutate(g: &mut Gen, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + g.below(4) {
        let at = g.below(d.len() + 1);
        match g.below(7) {
            0 if !d.is_empty() => {
                let i = g.below(d.len());
                d[i] = g.byte();
            }
            1 => d.insert(at, SPECIAL[g.below(SPECIAL.len())]),
            2 => {
                let end = (at + g.below(40)).min(d.len());
                d.drain(at..end);
            }
            3 => {
                let end = (at + g.below(60)).min(d.len());
                let piece = d[at..end].to_vec();
                let to = g.below(d.len() + 1);
                d.splice(to..to, piece);
            }
            4 => d.truncate(at),
            5 => {
                let w = WORDS[g.below(WORDS.len())];
                d.splice(at..at, w.iter().copied());
            }
            _ if !d.is_empty() => {
                let i = g.below(d.len());
                d[i] = SPECIAL[g.below(SPECIAL.len())];
            }
            _ => {}
        }
    }
    d
}

/// Random bytes, biased towards the parsers' special characters half the time.
fn random_bytes(g: &mut Gen) -> Vec<u8> {
    let n = g.below(300);
    let special = g.below(2) == 0;
    (0..n)
        .map(|_| {
            if special && g.below(2) == 0 {
                SPECIAL[g.below(SPECIAL.len())]
            } else {
                g.byte()
            }
        })
        .collect()
}

/// Checks what a parser accepted: non-empty records of A, C, G, T with valid labels.
fn check_loaded(loaded: &Loaded) {
    assert!(!loaded.records.is_empty());
    for r in &loaded.records {
        assert!(
            !r.bases.is_empty() && r.bases.iter().all(|b| b"ACGT".contains(b)),
            "{r:?}"
        );
        assert!(!r.id.is_empty());
        for (k, l) in r.labels.iter().enumerate() {
            crate::fasta::check_label(l).unwrap();
            assert!(!r.labels[..k].contains(l));
        }
        let x = one_hot(&r.bases).unwrap();
        assert_eq!(decode_one_hot(&x, r.len()).unwrap(), r.bases);
    }
}

/// Every FASTA option set the fuzz tests try.
fn fasta_options() -> Vec<FastaOptions> {
    let mut all = vec![];
    for labels in [
        LabelSource::Header,
        LabelSource::File("Oct4".into()),
        LabelSource::None,
    ] {
        for invalid in [
            InvalidPolicy::Error,
            InvalidPolicy::Drop,
            InvalidPolicy::Replace { seed: 9 },
        ] {
            all.push(FastaOptions {
                labels: labels.clone(),
                invalid,
            });
        }
    }
    all
}

/// Every table option set the fuzz tests try.
fn table_options() -> Vec<TableOptions> {
    let column = TableLabels::Column {
        name: "labels".into(),
        separator: "+".into(),
    };
    let indicators = TableLabels::Indicators(vec!["HepG2".into(), "K562".into()]);
    let mut all = vec![];
    for labels in [TableLabels::None, column, indicators] {
        for invalid in [InvalidPolicy::Error, InvalidPolicy::Drop] {
            all.push(TableOptions {
                labels: labels.clone(),
                invalid,
                id_column: Some("id".into()),
                ..Default::default()
            });
        }
    }
    all.push(TableOptions {
        invalid: InvalidPolicy::Replace { seed: 9 },
        ..Default::default()
    });
    all
}

/// Parses FASTA bytes under every option set; what parses under `labels=` headers must
/// write and read back to the same records.
fn fuzz_fasta(bytes: &[u8], options: &[FastaOptions]) -> usize {
    let mut accepted = 0;
    for o in options {
        if let Ok(loaded) = parse_fasta(bytes, "fuzz.fa", o) {
            check_loaded(&loaded);
            accepted += 1;
            if o.labels == LabelSource::Header {
                let text = format_fasta(&loaded.records).expect("parsed records must be writable");
                let back = parse_fasta(&text, "back.fa", &FastaOptions::default()).unwrap();
                assert_eq!(back.records, loaded.records);
            }
        }
    }
    accepted
}

/// Parses table bytes as CSV and as TSV under every option set.
fn fuzz_table(bytes: &[u8], options: &[TableOptions]) -> usize {
    let mut accepted = 0;
    for o in options {
        for delimiter in [b',', b'\t'] {
            if let Ok(loaded) = parse_delimited(bytes, "fuzz.csv", delimiter, o) {
                check_loaded(&loaded);
                accepted += 1;
            }
        }
    }
    accepted
}

/// The start of Biostrings' dm3 upstream file, when it is installed.
fn dm3_head() -> Option<Vec<u8>> {
    let path =
        std::path::Path::new("/usr/lib/R/site-library/Biostrings/extdata/dm3_upstream2000.fa.gz");
    let mut bytes = read_maybe_gz(path).ok()?;
    bytes.truncate(4_000);
    Some(bytes)
}

#[test]
fn fasta_parser_never_panics() {
    let options = fasta_options();
    let mut seeds = vec![std::fs::read(fixture("small.fa")).unwrap()];
    seeds.extend(dm3_head());
    let mut g = Gen::new(1);
    let mut accepted = 0;
    for case in 0..2000 {
        let bytes = if case % 3 == 0 {
            random_bytes(&mut g)
        } else {
            mutate(&mut g, &seeds[case % seeds.len()])
        };
        accepted += fuzz_fasta(&bytes, &options);
    }
    // the mutations leave many files readable: the checks on accepted records did run
    assert!(accepted > 1000, "{accepted}");
}

#[test]
fn table_parser_never_panics() {
    let options = table_options();
    let tsv = read_maybe_gz(&fixture("small.tsv.gz")).unwrap();
    let seeds = [std::fs::read(fixture("small.csv")).unwrap(), tsv];
    let mut g = Gen::new(2);
    let mut accepted = 0;
    for case in 0..1500 {
        let bytes = if case % 4 == 0 {
            random_bytes(&mut g)
        } else {
            mutate(&mut g, &seeds[case % 2])
        };
        accepted += fuzz_table(&bytes, &options);
    }
    assert!(accepted > 1000, "{accepted}");
}

/// Mutated gzip files go through the file readers: a corrupt stream is an error naming the
/// file, never a panic.
#[test]
fn gzipped_inputs_never_panic() {
    let dir = temp_dir("fuzz-gz");
    let fa = std::fs::read(fixture("small.fa.gz")).unwrap();
    let tsv = std::fs::read(fixture("small.tsv.gz")).unwrap();
    let mut g = Gen::new(3);
    for case in 0..300 {
        let (seed, name) = if case % 2 == 0 {
            (&fa, "x.fa.gz")
        } else {
            (&tsv, "x.tsv.gz")
        };
        let path = dir.join(name);
        std::fs::write(&path, mutate(&mut g, seed)).unwrap();
        let result = if case % 2 == 0 {
            read_fasta(&path, &FastaOptions::default())
        } else {
            read_table(
                &path,
                &TableOptions {
                    id_column: Some("id".into()),
                    ..Default::default()
                },
            )
        };
        match result {
            Ok(loaded) => check_loaded(&loaded),
            Err(e) => assert!(format!("{e:#}").contains(name), "{e:#}"),
        }
    }
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_parser_never_panics() {
    use polars::prelude::{Column, DataFrame, ParquetCompression, ParquetWriter};
    let csv = parse_delimited(
        &std::fs::read(fixture("small.csv")).unwrap(),
        "s",
        b',',
        &table_options()[2],
    )
    .unwrap();
    let seqs: Vec<String> = csv
        .records
        .iter()
        .map(|r| String::from_utf8(r.bases.clone()).unwrap())
        .collect();
    let mut frame = DataFrame::new_infer_height(vec![
        Column::new("id".into(), ["a", "b", "c", "d"]),
        Column::new("sequence".into(), seqs),
        Column::new("labels".into(), ["HepG2+K562", "HepG2", "K562", ""]),
        Column::new("HepG2".into(), [1i32, 1, 0, 0]),
        Column::new("K562".into(), [1i32, 0, 1, 0]),
    ])
    .unwrap();
    let mut seed = Vec::new();
    ParquetWriter::new(&mut seed)
        .with_compression(ParquetCompression::Uncompressed)
        .finish(&mut frame)
        .unwrap();
    let options = table_options();
    // the unmutated file reads as the CSV fixture does (ids aside)
    let indicators = &options[4];
    assert!(matches!(indicators.labels, TableLabels::Indicators(_)));
    let parsed = parse_parquet(&seed, "seed.parquet", indicators).unwrap();
    let ids = |rs: &[SeqRecord]| {
        rs.iter()
            .map(|r| (r.bases.clone(), r.labels.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&parsed.records), ids(&csv.records));
    let mut g = Gen::new(4);
    let mut accepted = 0;
    for case in 0..400 {
        let bytes = match case % 4 {
            0 => random_bytes(&mut g),
            1 => {
                // keep the magic bytes at both ends so the reader goes further
                let mut b = b"PAR1".to_vec();
                b.extend(random_bytes(&mut g));
                b.extend(b"PAR1");
                b
            }
            _ => mutate(&mut g, &seed),
        };
        for o in &options {
            if let Ok(loaded) = parse_parquet(&bytes, "fuzz.parquet", o) {
                check_loaded(&loaded);
                accepted += 1;
            }
        }
    }
    assert!(accepted > 0);
    eprintln!("{accepted} of 2800 parses accepted");
}
