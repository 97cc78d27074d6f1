//! FASTA files, gzipped or not, read and written.
//!
//! A record is a header line `>ID [DESCRIPTION...] [labels=L1+L2+...]` followed by any number
//! of sequence lines. Labels are read from the header's `labels=` word (see [`LabelSource`]):
//! its value is one or several labels joined by `+`; a header without it has no labels. The
//! word may stand anywhere after the id; the other words form the description.
//!
//! Reading: lower-case (soft-masked) bases become upper case, CRLF line ends, trailing spaces
//! and empty lines are accepted, and any other character is handled by an [`InvalidPolicy`].
//! Writing puts the labels back in the same convention, 80 bases a line.

use crate::sequence::{clean_base, invalid_hint, show_byte, Cleaned};
use crate::shuffle::SplitMix64 as SplitMix;
use crate::{read_maybe_gz, write_atomic, InvalidPolicy, Loaded, SeqRecord, PAD};
use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;

/// The header word that carries a record's labels: `labels=HepG2+K562`.
pub const LABELS_KEY: &str = "labels=";
/// The separator between several labels in a `labels=` word.
pub const LABEL_SEPARATOR: char = '+';
/// Bases per sequence line in written files.
pub const LINE_WIDTH: usize = 80;

/// Where a FASTA reader takes the records' labels from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LabelSource {
    /// The header's `labels=` word; records without one have no labels (the default).
    #[default]
    Header,
    /// The whole file is one class: every record gets this one label, and `labels=` words
    /// in the headers are ignored.
    File(String),
    /// No labels: `labels=` words are ignored.
    None,
}

/// How a FASTA file is read.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FastaOptions {
    /// Where labels come from.
    pub labels: LabelSource,
    /// What to do with characters other than A, C, G, T.
    pub invalid: InvalidPolicy,
}

/// Reads a FASTA file (gzipped or not, told by its magic bytes).
pub fn read_fasta(path: &Path, options: &FastaOptions) -> anyhow::Result<Loaded> {
    let bytes = read_maybe_gz(path)?;
    parse_fasta(&bytes, &path.display().to_string(), options)
}

/// Checks one label: non-empty, printable, without white space or [`LABEL_SEPARATOR`].
pub fn check_label(label: &str) -> anyhow::Result<()> {
    if label.is_empty() {
        bail!("empty label");
    }
    if let Some(c) = label
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || c == LABEL_SEPARATOR)
    {
        bail!("label {label:?} holds {c:?}: labels cannot hold white space, control characters or '{LABEL_SEPARATOR}'");
    }
    Ok(())
}

/// Splits a `labels=` value into labels, checking each and refusing duplicates.
fn parse_labels(value: &str) -> anyhow::Result<Vec<String>> {
    let mut labels: Vec<String> = Vec::new();
    for label in value.split(LABEL_SEPARATOR) {
        check_label(label).with_context(|| format!("in {LABELS_KEY}{value}"))?;
        if labels.iter().any(|l| l == label) {
            bail!("label {label:?} appears twice in {LABELS_KEY}{value}");
        }
        labels.push(label.to_string());
    }
    Ok(labels)
}

/// A record being read.
struct Open {
    record: SeqRecord,
    line: usize,
    drop: bool,
}

/// Parses FASTA text already in memory; `source` names it in error messages.
pub fn parse_fasta(bytes: &[u8], source: &str, options: &FastaOptions) -> anyhow::Result<Loaded> {
    if let LabelSource::File(label) = &options.labels {
        check_label(label).with_context(|| format!("{source}: the file's label"))?;
    }
    let mut out = Loaded::default();
    let mut open: Option<Open> = None;
    let mut rng = SplitMix::for_record(0, 0);
    let mut count = 0usize;
    let close = |open: Option<Open>, out: &mut Loaded| -> anyhow::Result<()> {
        let Some(o) = open else { return Ok(()) };
        if o.drop {
            out.dropped.push(o.record.id);
        } else if o.record.bases.is_empty() {
            bail!(
                "{source} line {}: record {:?} has no bases",
                o.line,
                o.record.id
            );
        } else {
            out.records.push(o.record);
        }
        Ok(())
    };
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let end = raw
            .iter()
            .rposition(|&b| !matches!(b, b'\r' | b' ' | b'\t'))
            .map_or(0, |p| p + 1);
        let line = &raw[..end];
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix(b">") {
            close(open.take(), &mut out)?;
            let header = std::str::from_utf8(header).map_err(|_| {
                anyhow::anyhow!("{source} line {number}: the header is not UTF-8 text")
            })?;
            let record = parse_header(header, &options.labels)
                .with_context(|| format!("{source} line {number}"))?;
            if let crate::InvalidPolicy::Replace { seed } = options.invalid {
                rng = SplitMix::for_record(seed, count as u64);
            }
            count += 1;
            open = Some(Open {
                record,
                line: number,
                drop: false,
            });
            continue;
        }
        let Some(o) = open.as_mut() else {
            bail!("{source} line {number}: sequence before the first '>' header (is this a FASTA file?)");
        };
        if o.drop {
            continue;
        }
        o.record.bases.reserve(line.len());
        for (j, &b) in line.iter().enumerate() {
            match clean_base(b, options.invalid, &mut rng) {
                Cleaned::Base(base, replaced) => {
                    o.record.bases.push(base);
                    out.replaced += replaced as usize;
                }
                Cleaned::Invalid if options.invalid == crate::InvalidPolicy::Drop => {
                    o.drop = true;
                    break;
                }
                Cleaned::Invalid => bail!(
                    "{source} line {number} column {}: invalid character {} in record {:?}{}",
                    j + 1,
                    show_byte(b),
                    o.record.id,
                    invalid_hint(options.invalid)
                ),
            }
        }
    }
    close(open.take(), &mut out)?;
    if out.records.is_empty() {
        if out.dropped.is_empty() {
            bail!("{source} holds no FASTA records");
        }
        bail!(
            "{source}: all {} records hold characters other than A, C, G, T and were dropped (invalid = \"drop\")",
            out.dropped.len()
        );
    }
    Ok(out)
}

/// Splits a header (without its '>') into id, description and labels.
fn parse_header(header: &str, source: &LabelSource) -> anyhow::Result<SeqRecord> {
    let mut words = header.split_whitespace();
    let Some(id) = words.next() else {
        bail!("empty header: a record needs an id after '>'");
    };
    let mut description = Vec::new();
    let mut labels = None;
    for word in words {
        match word.strip_prefix(LABELS_KEY) {
            Some(value) => {
                if labels.is_some() {
                    bail!("record {id:?} has two {LABELS_KEY} words");
                }
                labels = Some(value);
            }
            None => description.push(word),
        }
    }
    let labels = match source {
        LabelSource::Header => match labels {
            Some(value) => parse_labels(value).with_context(|| format!("record {id:?}"))?,
            None => vec![],
        },
        LabelSource::File(label) => vec![label.clone()],
        LabelSource::None => vec![],
    };
    Ok(SeqRecord {
        id: id.to_string(),
        description: description.join(" "),
        bases: Vec::new(),
        labels,
    })
}

/// Formats records as FASTA text: `>ID DESCRIPTION labels=L1+L2` (the parts that are not
/// empty), then the real bases (padding is not written) 80 a line. Errors name the record
/// when its id, description, labels or bases cannot be read back as they are.
pub fn format_fasta(records: &[SeqRecord]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let at = || format!("record {} ({:?})", i + 1, r.id);
        if r.id.is_empty() || r.id.chars().any(char::is_whitespace) {
            bail!("{}: an id must be non-empty, without white space", at());
        }
        if r.description.contains(['\n', '\r'])
            || r.description
                .split_whitespace()
                .any(|w| w.starts_with(LABELS_KEY))
        {
            bail!(
                "{}: the description cannot hold line breaks or a {LABELS_KEY} word",
                at()
            );
        }
        for (k, label) in r.labels.iter().enumerate() {
            check_label(label).with_context(at)?;
            if r.labels[..k].contains(label) {
                bail!("{}: label {label:?} appears twice", at());
            }
        }
        let real = r.real_len();
        if real == 0 {
            bail!("{}: no bases to write", at());
        }
        if let Some(j) = r.bases[..real].iter().position(|b| !b"ACGT".contains(b)) {
            bail!(
                "{}: position {} holds {}, not A, C, G or T{}",
                at(),
                j + 1,
                show_byte(r.bases[j]),
                if r.bases[j] == PAD {
                    " (padding is only allowed at the end)"
                } else {
                    ""
                }
            );
        }
        out.push(b'>');
        out.extend_from_slice(r.id.as_bytes());
        let description = r
            .description
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !description.is_empty() {
            out.push(b' ');
            out.extend_from_slice(description.as_bytes());
        }
        if !r.labels.is_empty() {
            out.push(b' ');
            out.extend_from_slice(LABELS_KEY.as_bytes());
            out.extend_from_slice(r.labels.join(&LABEL_SEPARATOR.to_string()).as_bytes());
        }
        out.push(b'\n');
        for chunk in r.bases[..real].chunks(LINE_WIDTH) {
            out.extend_from_slice(chunk);
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Writes records as a FASTA file ([`format_fasta`]), gzipped when the path ends in `.gz`,
/// through a temporary file renamed into place: a failed write leaves no partial file.
pub fn write_fasta(path: &Path, records: &[SeqRecord]) -> anyhow::Result<()> {
    let text = format_fasta(records).with_context(|| format!("cannot write {}", path.display()))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let bytes = if gz {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&text)
            .and_then(|_| enc.finish())
            .with_context(|| format!("cannot compress {}", path.display()))?
    } else {
        text
    };
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixture, temp_dir};
    use crate::InvalidPolicy;

    fn parse(text: &str, options: &FastaOptions) -> anyhow::Result<Loaded> {
        parse_fasta(text.as_bytes(), "t.fa", options)
    }

    fn err(text: &str, options: &FastaOptions) -> String {
        format!("{:#}", parse(text, options).unwrap_err())
    }

    #[test]
    fn multi_line_soft_masked_crlf_and_empty_lines() -> anyhow::Result<()> {
        let text = "\r\n>a desc words labels=HepG2+K562\r\nACgt\r\n\r\nnnAC\n>b\n  \nTTTT  \n\n";
        let got = parse(
            text,
            &FastaOptions {
                invalid: InvalidPolicy::Drop,
                ..Default::default()
            },
        )?;
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.dropped, ["a"]);
        let got = parse(&text.replace("nn", ""), &FastaOptions::default())?.records;
        assert_eq!(got[0].id, "a");
        assert_eq!(got[0].description, "desc words");
        assert_eq!(got[0].labels, ["HepG2", "K562"]);
        assert_eq!(got[0].bases, b"ACGTAC");
        assert_eq!(got[1], SeqRecord::new("b", b"TTTT".to_vec(), vec![]));
        Ok(())
    }

    #[test]
    fn label_sources() -> anyhow::Result<()> {
        let text = ">x labels=A1 note\nAC\n>y\nGT\n";
        let whole = FastaOptions {
            labels: LabelSource::File("Oct4".into()),
            ..Default::default()
        };
        let got = parse(text, &whole)?.records;
        assert!(got.iter().all(|r| r.labels == ["Oct4"]));
        assert_eq!(got[0].description, "note");
        let bad = FastaOptions {
            labels: LabelSource::File("Oct 4".into()),
            ..Default::default()
        };
        assert!(err(text, &bad).contains("t.fa: the file's label: label \"Oct 4\" holds ' '"));
        let got = parse(
            text,
            &FastaOptions {
                labels: LabelSource::None,
                ..Default::default()
            },
        )?
        .records;
        assert!(got.iter().all(|r| r.labels.is_empty()));
        let got = parse(text, &FastaOptions::default())?.records;
        assert_eq!(got[0].labels, ["A1"]);
        assert!(got[1].labels.is_empty());
        Ok(())
    }

    #[test]
    fn replace_draws_bases_for_ambiguity_codes_reproducibly() -> anyhow::Result<()> {
        let text = ">a\nNNNNNNNNNNNNNNNNNNNNRY\n>b\nACGTn\n";
        let opts = FastaOptions {
            invalid: InvalidPolicy::Replace { seed: 5 },
            ..Default::default()
        };
        let one = parse(text, &opts)?;
        assert_eq!(one, parse(text, &opts)?);
        assert_eq!(one.replaced, 23);
        assert!(one
            .records
            .iter()
            .all(|r| r.bases.iter().all(|b| b"ACGT".contains(b))));
        assert!(
            b"AG".contains(&one.records[0].bases[20]) && b"CT".contains(&one.records[0].bases[21])
        );
        let other = parse(
            text,
            &FastaOptions {
                invalid: InvalidPolicy::Replace { seed: 6 },
                ..Default::default()
            },
        )?;
        assert_ne!(one.records[0].bases, other.records[0].bases);
        // a record's draws depend on its position, not on the records before it
        let after_other = parse(">z\nA\n>b\nACGTn\n", &opts)?;
        assert_eq!(after_other.records[1], one.records[1]);
        let e = err(">a\nAC-T\n", &opts);
        assert!(
            e.contains("t.fa line 2 column 3: invalid character '-'")
                && e.contains("only N and IUPAC"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn every_error_names_file_and_line() {
        let d = FastaOptions::default();
        let cases = [
            (
                ">a\nACGT\nACNT\n",
                "t.fa line 3 column 3: invalid character 'N' in record \"a\"",
            ),
            (
                ">a\nAC GT\n",
                "t.fa line 2 column 3: invalid character ' ' (space)",
            ),
            (
                ">a\nAC\x00T\n",
                "t.fa line 2 column 3: invalid character byte 0x00",
            ),
            (
                "ACGT\n>a\nAC\n",
                "t.fa line 1: sequence before the first '>' header",
            ),
            ("\n>\nACGT\n", "t.fa line 2: empty header"),
            (">a\n>b\nAC\n", "t.fa line 1: record \"a\" has no bases"),
            (">a\nAC\n>b\n", "t.fa line 3: record \"b\" has no bases"),
            (
                ">a labels=X+\nAC\n",
                "t.fa line 1: record \"a\": in labels=X+: empty label",
            ),
            (
                ">a labels=X+X\nAC\n",
                "t.fa line 1: record \"a\": label \"X\" appears twice",
            ),
            (
                ">a labels=X labels=Y\nAC\n",
                "t.fa line 1: record \"a\" has two labels= words",
            ),
            ("", "t.fa holds no FASTA records"),
            ("\r\n\n", "t.fa holds no FASTA records"),
        ];
        for (text, want) in cases {
            let got = err(text, &d);
            assert!(got.contains(want), "{text:?}: {got}");
        }
        let got = format!(
            "{:#}",
            parse_fasta(b">a\xff\nAC\n", "t.fa", &d).unwrap_err()
        );
        assert!(
            got.contains("t.fa line 1: the header is not UTF-8"),
            "{got}"
        );
        let drop = FastaOptions {
            invalid: InvalidPolicy::Drop,
            ..Default::default()
        };
        let got = err(">a\nNN\n>b\nAX\n", &drop);
        assert!(
            got.contains("t.fa: all 2 records") && got.contains("dropped"),
            "{got}"
        );
        assert!(err(">a\nAN\n", &d).contains("invalid = \"drop\""));
    }

    #[test]
    fn write_read_round_trip_with_labels_and_gzip() -> anyhow::Result<()> {
        let dir = temp_dir("fasta-round-trip");
        let mut long = SeqRecord::new(
            "long",
            b"ACGT".repeat(41),
            vec!["HepG2".into(), "K562".into()],
        );
        long.description = "chr1:1-164 strand=+".into();
        let records = vec![
            long,
            SeqRecord::new("short", b"A".to_vec(), vec![]),
            SeqRecord::new("one", b"GATTACA".to_vec(), vec!["Oct4".into()]),
        ];
        for name in ["x.fa", "x.fa.gz"] {
            let path = dir.join(name);
            write_fasta(&path, &records)?;
            assert!(!dir.join(format!("{name}.tmp")).exists());
            let back = read_fasta(&path, &FastaOptions::default())?;
            assert_eq!(back.records, records);
            assert_eq!(
                std::fs::read(&path)?.starts_with(&[0x1f, 0x8b]),
                name.ends_with(".gz")
            );
        }
        let text = String::from_utf8(format_fasta(&records)?)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], ">long chr1:1-164 strand=+ labels=HepG2+K562");
        assert_eq!(
            (lines[1].len(), lines[2].len(), lines[3].len()),
            (80, 80, 4)
        );
        assert_eq!(lines[4], ">short");
        // padding is not written
        let padded = crate::fit_length(records.clone(), 200, crate::LengthPolicy::Pad, "x")?;
        assert_eq!(format_fasta(&padded)?, format_fasta(&records)?);
        Ok(())
    }

    #[test]
    fn writer_refuses_what_it_could_not_read_back_and_leaves_no_file() {
        let dir = temp_dir("fasta-bad-write");
        let path = dir.join("bad.fa");
        let bad = [
            (
                SeqRecord::new("a b", b"AC".to_vec(), vec![]),
                "record 2 (\"a b\"): an id",
            ),
            (
                SeqRecord::new("", b"AC".to_vec(), vec![]),
                "an id must be non-empty",
            ),
            (
                SeqRecord::new("a", b"AN".to_vec(), vec![]),
                "position 2 holds 'N'",
            ),
            (
                SeqRecord::new("a", b"A-C".to_vec(), vec![]),
                "padding is only allowed at the end",
            ),
            (SeqRecord::new("a", b"".to_vec(), vec![]), "no bases"),
            (
                SeqRecord::new("a", b"AC".to_vec(), vec!["x y".into()]),
                "cannot hold white space",
            ),
            (
                SeqRecord::new("a", b"AC".to_vec(), vec!["x+y".into()]),
                "'+'",
            ),
            (
                SeqRecord::new("a", b"AC".to_vec(), vec!["x".into(), "x".into()]),
                "appears twice",
            ),
            (
                SeqRecord {
                    description: "labels=z".into(),
                    ..SeqRecord::new("a", b"AC".to_vec(), vec![])
                },
                "labels= word",
            ),
            (
                SeqRecord {
                    description: "two\nlines".into(),
                    ..SeqRecord::new("a", b"AC".to_vec(), vec![])
                },
                "line breaks",
            ),
        ];
        for (r, want) in bad {
            let got = format!(
                "{:#}",
                write_fasta(&path, &[SeqRecord::new("ok", b"A".to_vec(), vec![]), r]).unwrap_err()
            );
            assert!(
                got.contains(want) && got.contains("bad.fa"),
                "{want}: {got}"
            );
            assert!(!path.exists() && !dir.join("bad.fa.tmp").exists());
        }
        let missing = dir.join("no/such/dir/x.fa");
        let got = format!(
            "{:#}",
            write_fasta(&missing, &[SeqRecord::new("ok", b"A".to_vec(), vec![])]).unwrap_err()
        );
        assert!(got.contains("no/such/dir"), "{got}");
    }

    #[test]
    fn committed_fixture_reads() -> anyhow::Result<()> {
        let got = read_fasta(&fixture("small.fa"), &FastaOptions::default())?;
        assert_eq!(got.records.len(), 4);
        assert_eq!(got.records[0].labels, ["HepG2", "K562"]);
        assert_eq!(got.records[0].len(), 200);
        assert!(got.records[3].labels.is_empty());
        let gz = read_fasta(&fixture("small.fa.gz"), &FastaOptions::default())?;
        assert_eq!(gz, got);
        Ok(())
    }

    /// Biostrings' example file, when the package is installed (the test passes without it).
    #[test]
    fn biostrings_dm3_upstream_when_present() -> anyhow::Result<()> {
        let path = Path::new("/usr/lib/R/site-library/Biostrings/extdata/dm3_upstream2000.fa.gz");
        if !path.exists() {
            eprintln!("skipped: {} is not installed", path.display());
            return Ok(());
        }
        let bytes = read_maybe_gz(path)?;
        let name = path.display().to_string();
        let e = format!(
            "{:#}",
            parse_fasta(&bytes, &name, &FastaOptions::default()).unwrap_err()
        );
        assert!(
            e.contains("dm3_upstream2000.fa.gz line") && e.contains("invalid character 'n'"),
            "{e}"
        );
        let dropped = parse_fasta(
            &bytes,
            &name,
            &FastaOptions {
                invalid: InvalidPolicy::Drop,
                ..Default::default()
            },
        )?;
        assert_eq!(dropped.records.len() + dropped.dropped.len(), 26454);
        assert!(!dropped.dropped.is_empty());
        let replace = FastaOptions {
            invalid: InvalidPolicy::Replace { seed: 1 },
            ..Default::default()
        };
        let replaced = parse_fasta(&bytes, &name, &replace)?;
        assert_eq!(replaced.records.len(), 26454);
        assert_eq!(replaced.replaced, 29132);
        // two records near chromosome ends are shorter
        assert_eq!(
            replaced.records.iter().filter(|r| r.len() == 2000).count(),
            26452
        );
        let e = crate::fit_length(
            replaced.records.clone(),
            2000,
            crate::LengthPolicy::Error,
            &name,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has 353 bases, expected 2000"), "{e}");
        let padded = crate::fit_length(
            replaced.records.clone(),
            2000,
            crate::LengthPolicy::Pad,
            &name,
        )?;
        assert_eq!(padded.iter().filter(|r| r.real_len() == 353).count(), 2);
        assert_eq!(replaced.records[0].id, "NM_078863_up_2000_chr2L_16764737_f");
        assert_eq!(replaced.records[0].description, "chr2L:16764737-16766736");
        Ok(())
    }
}
