//! Parquet tables through polars (the `parquet` feature): the same columns and options as
//! CSV/TSV ([`TableOptions`]); cells of any type are read as text (a boolean indicator reads
//! as `true` / `false`, an integer one as `0` / `1`). Errors name the file, the row (from 1)
//! and the column.

use crate::table::RowReader;
use crate::{Loaded, TableOptions};
use anyhow::Context;
use polars::prelude::{DataFrame, DataType, ParquetReader, SerReader};
use std::path::Path;

/// Reads a Parquet file.
pub fn read_parquet(path: &Path, options: &TableOptions) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_parquet(&bytes, &path.display().to_string(), options)
}

/// Parses a Parquet file already in memory; `source` names it in error messages. A panic
/// inside polars on malformed input is turned into an error.
pub fn parse_parquet(bytes: &[u8], source: &str, options: &TableOptions) -> anyhow::Result<Loaded> {
    let frame =
        std::panic::catch_unwind(|| ParquetReader::new(std::io::Cursor::new(bytes)).finish())
            .map_err(|_| {
                anyhow::anyhow!("{source} is not a readable Parquet file (the reader failed)")
            })?
            .map_err(|e| anyhow::anyhow!("{source} is not a readable Parquet file: {e}"))?;
    records(&frame, source, options)
}

/// The records of a data frame, row by row.
fn records(frame: &DataFrame, source: &str, options: &TableOptions) -> anyhow::Result<Loaded> {
    let header: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut rows = RowReader::new(header.clone(), options, source)?;
    let columns = rows.columns();
    let wanted: Vec<usize> = (0..header.len()).filter(|&c| columns.uses(c)).collect();
    let mut text = vec![None; header.len()];
    for &c in &wanted {
        let column = frame
            .column(&header[c])
            .and_then(|col| col.cast(&DataType::String))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{source}, column {:?} ({}): cannot be read as text: {e}",
                    header[c],
                    c + 1
                )
            })?;
        text[c] = Some(column);
    }
    for row in 0..frame.height() {
        let at = format!("row {}", row + 1);
        rows.push(&at, |c| {
            let column = text.get(c)?.as_ref()?;
            column.str().ok()?.get(row).map(str::to_string)
        })?;
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_dir;
    use crate::{read_table, SeqRecord, TableLabels};
    use polars::prelude::{Column, ParquetCompression, ParquetWriter};

    /// Writes a data frame as an uncompressed Parquet file.
    fn write(path: &Path, columns: Vec<Column>) -> anyhow::Result<()> {
        let mut frame = DataFrame::new_infer_height(columns)?;
        let mut file = std::fs::File::create(path)?;
        ParquetWriter::new(&mut file)
            .with_compression(ParquetCompression::Uncompressed)
            .finish(&mut frame)?;
        Ok(())
    }

    #[test]
    fn parquet_with_label_and_indicator_columns() -> anyhow::Result<()> {
        let dir = temp_dir("parquet");
        let path = dir.join("x.parquet");
        write(
            &path,
            vec![
                Column::new("id".into(), ["a", "b", "c"]),
                Column::new("sequence".into(), ["ACgt", "GGNN", "TTTT"]),
                Column::new("cell".into(), [Some("HepG2;K562"), None, Some("K562")]),
                Column::new("HepG2".into(), [1i64, 0, 0]),
                Column::new("K562".into(), [true, false, true]),
            ],
        )?;
        let column = TableOptions {
            id_column: Some("id".into()),
            labels: TableLabels::Column {
                name: "cell".into(),
                separator: ";".into(),
            },
            invalid: crate::InvalidPolicy::Drop,
            ..Default::default()
        };
        let got = read_table(&path, &column)?;
        assert_eq!(got.dropped, ["b"]);
        assert_eq!(
            got.records[0],
            SeqRecord::new("a", b"ACGT".to_vec(), vec!["HepG2".into(), "K562".into()])
        );
        assert_eq!(got.records[1].labels, ["K562"]);
        let ind = TableOptions {
            labels: TableLabels::Indicators(vec!["HepG2".into(), "K562".into()]),
            ..column
        };
        let got = read_table(&path, &ind)?;
        assert_eq!(got.records[0].labels, ["HepG2", "K562"]);
        assert_eq!(got.records[1].labels, ["K562"]);

        let e = format!(
            "{:#}",
            read_table(&path, &TableOptions::default()).unwrap_err()
        );
        assert!(
            e.contains(
                "x.parquet row 2, column \"sequence\" (2), position 3: invalid character 'N'"
            ),
            "{e}"
        );
        let e = format!(
            "{:#}",
            read_table(
                &path,
                &TableOptions {
                    sequence_column: "seq".into(),
                    ..Default::default()
                }
            )
            .unwrap_err()
        );
        assert!(e.contains("x.parquet: no column named \"seq\""), "{e}");
        let bad = TableOptions {
            labels: TableLabels::Indicators(vec!["id".into()]),
            invalid: crate::InvalidPolicy::Drop,
            ..Default::default()
        };
        let e = format!("{:#}", read_table(&path, &bad).unwrap_err());
        assert!(
            e.contains("x.parquet row 1, column \"id\" (1): \"a\" is not an indicator"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse_parquet(b"PAR1 not really", "y.parquet", &TableOptions::default()).unwrap_err()
        );
        assert!(
            e.contains("y.parquet is not a readable Parquet file"),
            "{e}"
        );

        let nulls = dir.join("nulls.parquet");
        write(
            &nulls,
            vec![Column::new("sequence".into(), [Some("AC"), None])],
        )?;
        let e = format!(
            "{:#}",
            read_table(&nulls, &TableOptions::default()).unwrap_err()
        );
        assert!(
            e.contains("nulls.parquet row 2, column \"sequence\" (1): missing sequence"),
            "{e}"
        );
        Ok(())
    }
}
