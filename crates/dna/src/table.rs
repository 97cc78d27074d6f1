//! Tables of sequences: CSV and TSV (gzipped or not), and Parquet with the `parquet` feature.
//!
//! The first row of a CSV/TSV file names the columns. One column holds the sequences; labels
//! come from one column holding one label or several joined by a separator (`HepG2+K562`,
//! `HepG2;K562`; an empty cell is no label), or from 0/1 indicator columns, one per label,
//! named after their label ([`TableLabels`]). Errors name the file, the line (the row, for
//! Parquet) and the column.

use crate::fasta::check_label;
use crate::sequence::{clean_base, invalid_hint, show_byte, Cleaned};
use crate::shuffle::SplitMix64 as SplitMix;
use crate::{read_maybe_gz, InvalidPolicy, Loaded, SeqRecord};
use anyhow::{bail, Context};
use std::path::Path;

/// Where a table's labels come from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TableLabels {
    /// No labels (the default).
    #[default]
    None,
    /// One column whose cells hold zero, one or several labels joined by `separator`.
    Column {
        /// The column's name.
        name: String,
        /// The separator between labels in a cell, for example `+` or `;`.
        separator: String,
    },
    /// The whole table is one class: every row gets this one label.
    File(String),
    /// One indicator column per label, named after it: a row has the label where its cell is
    /// `1` (also `1.0`, `true`) and not where it is `0` (`0.0`, `false`).
    Indicators(Vec<String>),
}

/// How a table is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// The column holding the sequences (default `sequence`).
    pub sequence_column: String,
    /// The column holding the records' ids; without one, row `N` (from 1) is named `row<N>`.
    pub id_column: Option<String>,
    /// Where labels come from.
    pub labels: TableLabels,
    /// What to do with characters other than A, C, G, T.
    pub invalid: InvalidPolicy,
    /// The field delimiter of CSV/TSV files; None takes a tab for `.tsv` and `.tab` files
    /// (gzipped or not) and a comma for the others.
    pub delimiter: Option<u8>,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            sequence_column: "sequence".into(),
            id_column: None,
            labels: TableLabels::None,
            invalid: InvalidPolicy::Error,
            delimiter: None,
        }
    }
}

/// The file name less a trailing `.gz`, lower case.
fn stem_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.strip_suffix(".gz").map(str::to_string).unwrap_or(name)
}

/// Whether a path names a Parquet file (`.parquet` or `.pq`).
pub fn is_parquet(path: &Path) -> bool {
    let name = stem_name(path);
    name.ends_with(".parquet") || name.ends_with(".pq")
}

/// Reads a table: Parquet for `.parquet` / `.pq` files (with the `parquet` feature), CSV or
/// TSV otherwise (gzipped or not, told by the magic bytes).
pub fn read_table(path: &Path, options: &TableOptions) -> anyhow::Result<Loaded> {
    if is_parquet(path) {
        #[cfg(feature = "parquet")]
        return crate::parquet::read_parquet(path, options);
        #[cfg(not(feature = "parquet"))]
        bail!(
            "cannot read {}: this build of sugarcube-dna has no Parquet support (build it with the `parquet` feature)",
            path.display()
        );
    }
    let delimiter = options.delimiter.unwrap_or_else(|| {
        let name = stem_name(path);
        if name.ends_with(".tsv") || name.ends_with(".tab") {
            b'\t'
        } else {
            b','
        }
    });
    let bytes = read_maybe_gz(path)?;
    parse_delimited(&bytes, &path.display().to_string(), delimiter, options)
}

/// The positions of the columns a table's options name.
pub(crate) struct Columns {
    sequence: usize,
    id: Option<usize>,
    labels: Vec<usize>,
}

impl Columns {
    /// Finds the named columns in a header row; `source` names the file in errors.
    pub(crate) fn find(
        header: &[String],
        options: &TableOptions,
        source: &str,
    ) -> anyhow::Result<Self> {
        let find = |name: &str| -> anyhow::Result<usize> {
            let mut at = header
                .iter()
                .enumerate()
                .filter(|(_, h)| h.as_str() == name)
                .map(|(i, _)| i);
            match (at.next(), at.next()) {
                (Some(i), None) => Ok(i),
                (Some(_), Some(_)) => bail!("{source}: two columns are named {name:?}"),
                (None, _) => bail!(
                    "{source}: no column named {name:?} (columns: {})",
                    quoted(header)
                ),
            }
        };
        let labels = match &options.labels {
            TableLabels::None => vec![],
            TableLabels::File(label) => {
                check_label(label).with_context(|| format!("{source}: the file's label"))?;
                vec![]
            }
            TableLabels::Column { name, separator } => {
                if separator.is_empty() {
                    bail!("{source}: the label separator of column {name:?} is empty");
                }
                vec![find(name)?]
            }
            TableLabels::Indicators(names) => {
                if names.is_empty() {
                    bail!("{source}: no indicator columns given");
                }
                for name in names {
                    check_label(name)
                        .with_context(|| format!("{source}: indicator column {name:?}"))?;
                }
                names
                    .iter()
                    .map(|n| find(n))
                    .collect::<anyhow::Result<_>>()?
            }
        };
        Ok(Self {
            sequence: find(&options.sequence_column)?,
            id: options.id_column.as_deref().map(find).transpose()?,
            labels,
        })
    }

    /// Whether column `c` is one of those named.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn uses(&self, c: usize) -> bool {
        c == self.sequence || self.id == Some(c) || self.labels.contains(&c)
    }

    /// The largest column index used.
    pub(crate) fn max(&self) -> usize {
        self.labels
            .iter()
            .copied()
            .chain(self.id)
            .fold(self.sequence, usize::max)
    }
}

/// Column names for an error message.
fn quoted(header: &[String]) -> String {
    let mut s = header
        .iter()
        .take(20)
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if header.len() > 20 {
        s.push_str(&format!(", ... ({} in all)", header.len()));
    }
    s
}

/// Builds the records of a table row by row, shared by the CSV/TSV and Parquet readers.
pub(crate) struct RowReader<'a> {
    options: &'a TableOptions,
    columns: Columns,
    header: Vec<String>,
    source: &'a str,
    /// The loaded records so far.
    pub(crate) out: Loaded,
    rows: usize,
}

impl<'a> RowReader<'a> {
    /// A reader for a table with this header row.
    pub(crate) fn new(
        header: Vec<String>,
        options: &'a TableOptions,
        source: &'a str,
    ) -> anyhow::Result<Self> {
        let columns = Columns::find(&header, options, source)?;
        Ok(Self {
            options,
            columns,
            header,
            source,
            out: Loaded::default(),
            rows: 0,
        })
    }

    /// The column positions.
    pub(crate) fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Names column `c` for an error message.
    fn column(&self, c: usize) -> String {
        format!("column {:?} ({})", self.header[c], c + 1)
    }

    /// Adds one row; `cell(c)` gives column `c`'s text (None for a missing value) and `at`
    /// the row's place in the file (`line 5`, `row 4`).
    pub(crate) fn push(
        &mut self,
        at: &str,
        cell: impl Fn(usize) -> Option<String>,
    ) -> anyhow::Result<()> {
        self.rows += 1;
        let (source, c) = (self.source, &self.columns);
        let id = match c.id {
            Some(i) => match cell(i).map(|s| s.trim().to_string()) {
                Some(id) if !id.is_empty() => id,
                _ => bail!("{source} {at}, {}: empty id", self.column(i)),
            },
            None => format!("row{}", self.rows),
        };
        let mut labels: Vec<String> = Vec::new();
        match &self.options.labels {
            TableLabels::None => {}
            TableLabels::File(label) => labels.push(label.clone()),
            TableLabels::Column { separator, .. } => {
                let text = cell(c.labels[0]).unwrap_or_default();
                for label in text
                    .split(separator.as_str())
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                {
                    check_label(label)
                        .with_context(|| format!("{source} {at}, {}", self.column(c.labels[0])))?;
                    if labels.iter().any(|l| l == label) {
                        bail!(
                            "{source} {at}, {}: label {label:?} appears twice",
                            self.column(c.labels[0])
                        );
                    }
                    labels.push(label.to_string());
                }
            }
            TableLabels::Indicators(names) => {
                for (name, &i) in names.iter().zip(&c.labels) {
                    let text = cell(i);
                    match text.as_deref().map(str::trim) {
                        Some("1" | "1.0" | "true" | "True" | "TRUE") => labels.push(name.clone()),
                        Some("0" | "0.0" | "false" | "False" | "FALSE") => {}
                        other => bail!(
                            "{source} {at}, {}: {} is not an indicator (0 or 1)",
                            self.column(i),
                            other.map_or("a missing value".to_string(), |v| format!("{v:?}"))
                        ),
                    }
                }
            }
        }
        let Some(text) = cell(c.sequence) else {
            bail!(
                "{source} {at}, {}: missing sequence",
                self.column(c.sequence)
            );
        };
        let text = text.trim();
        if text.is_empty() {
            bail!("{source} {at}, {}: empty sequence", self.column(c.sequence));
        }
        let seed = match self.options.invalid {
            InvalidPolicy::Replace { seed } => seed,
            _ => 0,
        };
        let mut rng = SplitMix::for_record(seed, self.rows as u64 - 1);
        let mut bases = Vec::with_capacity(text.len());
        let mut replaced = 0;
        for (j, &b) in text.as_bytes().iter().enumerate() {
            match clean_base(b, self.options.invalid, &mut rng) {
                Cleaned::Base(base, r) => {
                    bases.push(base);
                    replaced += r as usize;
                }
                Cleaned::Invalid if self.options.invalid == InvalidPolicy::Drop => {
                    self.out.dropped.push(id);
                    return Ok(());
                }
                Cleaned::Invalid => bail!(
                    "{source} {at}, {}, position {}: invalid character {} in record {id:?}{}",
                    self.column(c.sequence),
                    j + 1,
                    show_byte(b),
                    invalid_hint(self.options.invalid)
                ),
            }
        }
        self.out.replaced += replaced;
        self.out.records.push(SeqRecord {
            id,
            description: String::new(),
            bases,
            labels,
        });
        Ok(())
    }

    /// The records, or an error when the table had none (or all were dropped).
    pub(crate) fn finish(self) -> anyhow::Result<Loaded> {
        let source = self.source;
        if self.out.records.is_empty() {
            if self.out.dropped.is_empty() {
                bail!("{source} holds no rows");
            }
            bail!(
                "{source}: all {} rows hold characters other than A, C, G, T and were dropped (invalid = \"drop\")",
                self.out.dropped.len()
            );
        }
        Ok(self.out)
    }
}

/// Parses a CSV/TSV table already in memory (`delimiter` b',' or b'\t'); `source` names it
/// in error messages.
pub fn parse_delimited(
    bytes: &[u8],
    source: &str,
    delimiter: u8,
    options: &TableOptions,
) -> anyhow::Result<Loaded> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .byte_headers()
        .map_err(|e| anyhow::anyhow!("{source} line 1: cannot read the header row: {e}"))?
        .clone();
    let header: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| match std::str::from_utf8(h) {
            Ok(h) => Ok(h.trim().to_string()),
            Err(_) => bail!(
                "{source} line 1, column {}: the column name is not UTF-8 text",
                i + 1
            ),
        })
        .collect::<anyhow::Result<_>>()?;
    if header.iter().all(String::is_empty) {
        bail!("{source} holds no header row (the first line names the columns)");
    }
    let mut rows = RowReader::new(header, options, source)?;
    let needed = rows.columns().max() + 1;
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e
                    .position()
                    .map_or(String::new(), |p| format!(" line {}", p.line()));
                let what = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        format!("{len} fields, but the header row has {expected_len}")
                    }
                    _ => e.to_string(),
                };
                bail!("{source}{line}: {what}");
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let at = format!("line {line}");
        if record.len() < needed {
            bail!(
                "{source} {at}: {} fields, expected at least {needed}",
                record.len()
            );
        }
        for (i, field) in record.iter().enumerate() {
            if std::str::from_utf8(field).is_err() {
                bail!("{source} {at}, column {}: not UTF-8 text", i + 1);
            }
        }
        rows.push(&at, |c| {
            record
                .get(c)
                .map(|f| String::from_utf8_lossy(f).into_owned())
        })?;
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixture, temp_dir};

    fn opts(labels: TableLabels) -> TableOptions {
        TableOptions {
            labels,
            ..Default::default()
        }
    }

    fn err(text: &str, options: &TableOptions) -> String {
        format!(
            "{:#}",
            parse_delimited(text.as_bytes(), "t.csv", b',', options).unwrap_err()
        )
    }

    #[test]
    fn label_column_with_separators() -> anyhow::Result<()> {
        let text = "name,sequence,cell\nr1,ACgt,HepG2+K562\nr2, TTAA ,\nr3,GGGG,K562\n";
        let o = TableOptions {
            id_column: Some("name".into()),
            ..opts(TableLabels::Column {
                name: "cell".into(),
                separator: "+".into(),
            })
        };
        let got = parse_delimited(text.as_bytes(), "t.csv", b',', &o)?.records;
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            SeqRecord::new("r1", b"ACGT".to_vec(), vec!["HepG2".into(), "K562".into()])
        );
        assert_eq!(got[1].bases, b"TTAA");
        assert!(got[1].labels.is_empty());
        let semi = text.replace('+', ";");
        let o2 = TableOptions {
            labels: TableLabels::Column {
                name: "cell".into(),
                separator: ";".into(),
            },
            ..o
        };
        assert_eq!(
            parse_delimited(semi.as_bytes(), "t.csv", b',', &o2)?.records,
            got
        );
        Ok(())
    }

    #[test]
    fn whole_table_label() -> anyhow::Result<()> {
        let o = opts(TableLabels::File("Oct4".into()));
        let got = parse_delimited(b"sequence\nACGT\nTT\n", "t.csv", b',', &o)?.records;
        assert!(got.iter().all(|r| r.labels == ["Oct4"]));
        let e = err("sequence\nAC\n", &opts(TableLabels::File(String::new())));
        assert!(e.contains("t.csv: the file's label: empty label"), "{e}");
        Ok(())
    }

    #[test]
    fn indicator_columns_and_tsv() -> anyhow::Result<()> {
        let dir = temp_dir("table-tsv");
        let path = dir.join("x.tsv");
        std::fs::write(&path, "sequence\tHepG2\tK562\textra\r\nACGT\t1\t0\tz\r\n\r\nCCCC\t1.0\ttrue\tz\r\nGGGG\t0\t0\tz\r\n")?;
        let o = opts(TableLabels::Indicators(vec!["K562".into(), "HepG2".into()]));
        let got = read_table(&path, &o)?.records;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id, "row1");
        assert_eq!(got[0].labels, ["HepG2"]);
        assert_eq!(got[1].labels, ["K562", "HepG2"]);
        assert!(got[2].labels.is_empty());
        Ok(())
    }

    #[test]
    fn committed_fixtures_read() -> anyhow::Result<()> {
        let column = opts(TableLabels::Column {
            name: "labels".into(),
            separator: "+".into(),
        });
        let csv = read_table(
            &fixture("small.csv"),
            &TableOptions {
                id_column: Some("id".into()),
                ..column
            },
        )?;
        let ind = opts(TableLabels::Indicators(vec!["HepG2".into(), "K562".into()]));
        let tsv = read_table(
            &fixture("small.tsv.gz"),
            &TableOptions {
                id_column: Some("id".into()),
                ..ind
            },
        )?;
        assert_eq!(csv.records, tsv.records);
        let fasta = crate::read_fasta(&fixture("small.fa"), &Default::default())?.records;
        let strip = |rs: Vec<SeqRecord>| {
            rs.into_iter()
                .map(|r| SeqRecord {
                    description: String::new(),
                    ..r
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(fasta), csv.records);
        Ok(())
    }

    #[test]
    fn policies_apply_to_tables() -> anyhow::Result<()> {
        let text = "sequence\nACNN\nACGT\n";
        let drop = TableOptions {
            invalid: InvalidPolicy::Drop,
            ..Default::default()
        };
        let got = parse_delimited(text.as_bytes(), "t.csv", b',', &drop)?;
        assert_eq!(
            (got.records.len(), got.dropped.clone()),
            (1, vec!["row1".to_string()])
        );
        let rep = TableOptions {
            invalid: InvalidPolicy::Replace { seed: 2 },
            ..Default::default()
        };
        let got = parse_delimited(text.as_bytes(), "t.csv", b',', &rep)?;
        assert_eq!((got.records.len(), got.replaced), (2, 2));
        assert_eq!(got, parse_delimited(text.as_bytes(), "t.csv", b',', &rep)?);
        Ok(())
    }

    #[test]
    fn every_error_names_file_line_and_column() {
        let d = TableOptions::default();
        let col = opts(TableLabels::Column {
            name: "y".into(),
            separator: "+".into(),
        });
        let ind = opts(TableLabels::Indicators(vec!["a".into(), "b".into()]));
        let cases: Vec<(&str, &TableOptions, &str)> = vec![
            ("sequence\nACGT\nACXT\n", &d, "t.csv line 3, column \"sequence\" (1), position 3: invalid character 'X' in record \"row2\""),
            ("id,sequence\nq,ACGT\nr,AC T\n", &d, "t.csv line 3, column \"sequence\" (2), position 3: invalid character ' ' (space)"),
            ("seq\nACGT\n", &d, "t.csv: no column named \"sequence\" (columns: \"seq\")"),
            ("sequence,sequence\nA,C\n", &d, "t.csv: two columns are named \"sequence\""),
            ("sequence\n", &d, "t.csv holds no rows"),
            ("", &d, "t.csv holds no header row"),
            ("sequence,x\nACGT,1\nACGT\n", &d, "t.csv line 3: 1 fields, but the header row has 2"),
            ("sequence\n\"\"\n", &d, "t.csv line 2, column \"sequence\" (1): empty sequence"),
            ("sequence,y\nAC,a+a\n", &col, "t.csv line 2, column \"y\" (2): label \"a\" appears twice"),
            ("sequence,y\nAC,a b\n", &col, "t.csv line 2, column \"y\" (2): label \"a b\" holds ' '"),
            ("sequence,y\nAC,\n", &ind, "t.csv: no column named \"a\""),
            ("sequence,a,b\nAC,1,0\nAC,1,2\n", &ind, "t.csv line 3, column \"b\" (3): \"2\" is not an indicator (0 or 1)"),
        ];
        for (text, o, want) in cases {
            let got = err(text, o);
            assert!(got.contains(want), "{text:?}: {got}");
        }
        let with_id = TableOptions {
            id_column: Some("id".into()),
            ..Default::default()
        };
        assert!(err("id,sequence\n ,AC\n", &with_id)
            .contains("t.csv line 2, column \"id\" (1): empty id"));
        let e = format!(
            "{:#}",
            parse_delimited(b"sequence\nAC\xff\n", "t.csv", b',', &d).unwrap_err()
        );
        assert!(e.contains("t.csv line 2, column 1: not UTF-8"), "{e}");
        let no_sep = opts(TableLabels::Column {
            name: "y".into(),
            separator: String::new(),
        });
        assert!(err("sequence,y\nA,b\n", &no_sep).contains("separator"));
        let bad_name = opts(TableLabels::Indicators(vec!["a b".into()]));
        assert!(err("sequence,a b\nA,1\n", &bad_name).contains("indicator column \"a b\""));
    }

    #[test]
    fn parquet_paths_are_recognised() {
        assert!(is_parquet(Path::new("x/y.parquet")) && is_parquet(Path::new("Y.PQ")));
        assert!(!is_parquet(Path::new("y.csv.gz")));
        #[cfg(not(feature = "parquet"))]
        {
            let e = read_table(Path::new("y.parquet"), &TableOptions::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("y.parquet") && e.contains("`parquet` feature"),
                "{e}"
            );
        }
    }
}
