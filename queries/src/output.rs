//! Writing query results: a text table, CSV, JSON lines or Parquet.

use std::io::Write;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;

use crate::error::{Error, Result};

/// Output formats of `regrpo sql` and `regrpo query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
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
                let flat = batches.iter().map(nested_as_json).collect::<Result<Vec<_>>>()?;
                writeln!(out, "{}", pretty_format_batches(&flat)?).map_err(io)?;
            }
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(&nested_as_json(b)?)?;
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
            return Err(Error::ParquetNeedsFile);
        }
    }
    Ok(())
}

/// The batch with every nested column (struct, list, map) as a text column holding each
/// value's JSON, so text formats show nested values as JSON in the cell (CSV cannot hold them
/// otherwise).
fn nested_as_json(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch.schema().fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        // One JSON object per row, `{"v": value}`, written by arrow's own JSON writer.
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", field.data_type().clone(), true)])),
            vec![Arc::clone(column)],
        )?;
        let mut buf = Vec::new();
        {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
            w.write(&one)?;
            w.finish()?;
        }
        let text = String::from_utf8(buf).map_err(|e| Error::Usage(format!("JSON of `{}`: {e}", field.name())))?;
        // Each line is `{"v":…}`: the value's JSON is what lies between, in arrow's field order.
        let values = text
            .lines()
            .map(|line| match line.strip_prefix("{\"v\":").and_then(|l| l.strip_suffix('}')) {
                Some("null") => Ok(None),
                Some(v) => Ok(Some(v.to_string())),
                None => Err(Error::Usage(format!("JSON of `{}`: unexpected line {line}", field.name()))),
            })
            .collect::<Result<Vec<Option<String>>>>()?;
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(StringArray::from(values)));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
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

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, ListArray, StructArray};
    use arrow::datatypes::Int64Type;

    use super::*;

    #[test]
    fn nested_values_are_json_text_in_csv_and_table_cells() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)]), None]);
        let role: ArrayRef = Arc::new(StringArray::from(vec!["user", "tool"]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let st = StructArray::from(vec![
            (Arc::new(Field::new("role", DataType::Utf8, false)), role),
            (Arc::new(Field::new("n", DataType::Int64, false)), n),
        ]);
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
            ("xs", Arc::new(list) as ArrayRef),
            ("m", Arc::new(st) as ArrayRef),
        ])
        .unwrap();
        let mut csv = Vec::new();
        write_batches(std::slice::from_ref(&batch), OutputFormat::Csv, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("id,xs,m"));
        assert_eq!(lines.next(), Some(r#"a,"[1,2]","{""role"":""user"",""n"":1}""#));
        assert_eq!(lines.next(), Some(r#"b,,"{""role"":""tool"",""n"":2}""#));
        let mut table = Vec::new();
        write_batches(&[batch], OutputFormat::Table, &mut table).unwrap();
        assert!(String::from_utf8(table).unwrap().contains(r#"{"role":"user","n":1}"#));
    }
}
