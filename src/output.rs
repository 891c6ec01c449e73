//! Writing query results: to a file given with `--out`, else to stdout.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use regrpo_queries::OutputFormat;
use regrpo_queries::output::{write_batches, write_parquet};

/// Writes batches to `out` or stdout.
pub fn emit(batches: &[RecordBatch], format: OutputFormat, out: Option<&Path>) -> Result<()> {
    match out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            if format == OutputFormat::Parquet {
                write_parquet(batches, file)?;
            } else {
                let mut w = std::io::BufWriter::new(file);
                write_batches(batches, format, &mut w)?;
                w.flush()?;
            }
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("wrote {rows} rows to {}", path.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write_batches(batches, format, &mut lock)?;
            lock.flush()?;
        }
    }
    Ok(())
}
