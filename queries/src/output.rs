//! Writing query results: a text table, CSV, JSON lines or Parquet.

use std::io::Write;
use std::str::FromStr;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use crate::error::{Error, Result};

/// Output formats of `regrpo sql` and `regrpo query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            "parquet" => Ok(OutputFormat::Parquet),
            other => Err(format!("unknown output format `{other}` (table, csv, json, parquet)")),
        }
    }
}

/// Writes batches in a format. Parquet needs a seekable file, so it is refused on a terminal.
pub fn write_batches(batches: &[RecordBatch], format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { what: "writing results".into(), source: e };
    match format {
        OutputFormat::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let cols = batches
                    .first()
                    .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", "));
                writeln!(out, "(0 rows{})", cols.map(|c| format!("; columns: {c}")).unwrap_or_default()).map_err(io)?;
            } else {
                writeln!(out, "{}", pretty_format_batches(batches)?).map_err(io)?;
            }
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => {
            return Err(Error::Usage("parquet output needs --out FILE".into()));
        }
    }
    Ok(())
}

/// Writes batches to a Parquet file.
pub fn write_parquet(batches: &[RecordBatch], file: std::fs::File) -> Result<()> {
    let Some(first) = batches.first() else {
        return Err(Error::Usage("the query returned no batches; nothing to write".into()));
    };
    let mut w = parquet::arrow::ArrowWriter::try_new(file, first.schema(), None)
        .map_err(|e| Error::Usage(format!("parquet: {e}")))?;
    for b in batches {
        w.write(b).map_err(|e| Error::Usage(format!("parquet: {e}")))?;
    }
    w.close().map_err(|e| Error::Usage(format!("parquet: {e}")))?;
    Ok(())
}
