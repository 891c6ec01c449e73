//! Commands on the dataset repository: init, ingest, snapshot, gc, sql.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use regrpo_datasets::ingest::{self, Format, IngestOptions};
use regrpo_datasets::{Repository, snapshot};
use regrpo_queries::output::{write_batches, write_parquet};
use regrpo_queries::{At, OutputFormat, Session};

use crate::progress::BytesBar;

pub async fn init(dir: &Path) -> Result<()> {
    let repo = Repository::init(dir).await?;
    println!(
        "created dataset repository {} with tables: {}",
        repo.root().display(),
        Repository::table_names().join(", ")
    );
    Ok(())
}

pub async fn ingest(
    dir: &Path,
    format: Format,
    paths: &[PathBuf],
    answers: Option<PathBuf>,
    chunk_rows: Option<usize>,
    quiet: bool,
) -> Result<()> {
    let repo = Repository::open(dir)?;
    if paths.is_empty() {
        bail!("no input files given");
    }
    let bar = BytesBar::new(quiet, &format!("ingest {format}"));
    let opts = IngestOptions { chunk_rows, answers, progress: Some(bar.clone() as Arc<dyn ingest::Progress>) };
    let result = ingest::ingest(&repo, format, paths, &opts).await;
    bar.finish();
    let s = result?;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "ingested {} file(s), {:.1} MB in {:.2}s ({:.1} MB/s, {:.0} records/s): {} records read, {} trajectories and {} RoT rows added, {} rejected, {} duplicates skipped; {} commit(s) to {}",
        s.files,
        s.bytes as f64 / 1e6,
        secs,
        s.bytes as f64 / 1e6 / secs,
        s.records_read as f64 / secs,
        s.records_read,
        s.trajectories_added,
        s.rot_added,
        s.rejected,
        s.duplicates,
        s.commits,
        repo.root().display()
    );
    if s.rejected > 0 {
        println!(
            "see why: regrpo sql {} \"SELECT file, byte_offset, line, reason FROM rejects WHERE ingest_batch = '{}'\"",
            dir.display(),
            s.ingest_batch
        );
    }
    Ok(())
}

pub async fn snapshot_create(dir: &Path, name: &str, note: Option<&str>) -> Result<()> {
    let repo = Repository::open(dir)?;
    let s = snapshot::create(&repo, name, note).await?;
    let rows: i64 = s.tables.values().map(|t| t.rows).sum();
    let files: usize = s.tables.values().map(|t| t.files.len()).sum();
    println!(
        "snapshot `{}` (parent: {}) pins {} tables, {rows} rows in {files} files: {}",
        s.name,
        s.parent.as_deref().unwrap_or("none"),
        s.tables.len(),
        repo.root().join("snapshots").join(format!("{name}.json")).display()
    );
    Ok(())
}

pub fn snapshot_list(dir: &Path) -> Result<()> {
    let repo = Repository::open(dir)?;
    let snaps = snapshot::list(&repo)?;
    if snaps.is_empty() {
        println!("no snapshots yet: regrpo snapshot create {} NAME", dir.display());
    }
    for s in snaps {
        let rows: i64 = s.tables.values().map(|t| t.rows).sum();
        println!(
            "{:<24} {}  {:>10} rows  parent={:<16} {}",
            s.name,
            s.created_at,
            rows,
            s.parent.as_deref().unwrap_or("-"),
            s.note.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub fn snapshot_show(dir: &Path, name: &str) -> Result<()> {
    let repo = Repository::open(dir)?;
    let s = snapshot::get(&repo, name)?;
    println!("snapshot {} (#{}, {}), parent {}", s.name, s.seq, s.created_at, s.parent.as_deref().unwrap_or("none"));
    if let Some(n) = &s.note {
        println!("note: {n}");
    }
    println!("{:<14} {:>8} {:>10} {:>6}", "table", "version", "rows", "files");
    for (t, p) in &s.tables {
        println!("{t:<14} {:>8} {:>10} {:>6}", p.version, p.rows, p.files.len());
    }
    Ok(())
}

pub fn snapshot_diff(dir: &Path, a: &str, b: &str) -> Result<()> {
    let repo = Repository::open(dir)?;
    println!("{:<14} {:>15} {:>21} {:>12}", "table", "version", "rows", "files +/-");
    for d in snapshot::diff(&repo, a, b)? {
        println!(
            "{:<14} {:>6} → {:<6} {:>8} → {:<8} (+{:<5}) {:>5}/{:<5}",
            d.table,
            d.version_a,
            d.version_b,
            d.rows_a,
            d.rows_b,
            d.rows_b - d.rows_a,
            d.files_added,
            d.files_removed
        );
    }
    Ok(())
}

pub async fn snapshot_verify(dir: &Path, name: &str) -> Result<()> {
    let repo = Repository::open(dir)?;
    let v = snapshot::verify(&repo, name).await?;
    if v.is_ok() {
        println!(
            "snapshot `{name}` verified: {} files, {} bytes re-hashed, all match",
            v.files_checked, v.bytes_checked
        );
        Ok(())
    } else {
        for p in &v.problems {
            eprintln!("  {p}");
        }
        bail!("snapshot `{name}` failed verification: {} problem(s)", v.problems.len())
    }
}

pub async fn gc(dir: &Path, min_age_secs: u64, dry_run: bool) -> Result<()> {
    let repo = Repository::open(dir)?;
    let r = snapshot::gc(&repo, Duration::from_secs(min_age_secs), dry_run).await?;
    println!(
        "gc{}: {} unreferenced file(s) removed ({} bytes), {} kept (latest versions and snapshots), {} too young to remove (< {min_age_secs}s)",
        if dry_run { " (dry run)" } else { "" },
        r.files_removed,
        r.bytes_removed,
        r.files_kept,
        r.files_too_young
    );
    Ok(())
}

pub async fn sql(
    dir: &Path,
    snapshot: Option<&str>,
    query: &str,
    format: OutputFormat,
    out: Option<&Path>,
) -> Result<()> {
    let repo = Repository::open(dir)?;
    let session = Session::open(&repo, At::from_option(snapshot)).await?;
    let batches = session.query(query).await?;
    emit(&batches, format, out)
}

/// Writes batches to `--out` or stdout.
pub fn emit(batches: &[arrow::array::RecordBatch], format: OutputFormat, out: Option<&Path>) -> Result<()> {
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

pub async fn export(dir: &Path, snapshot: Option<&str>, format: &str, out: &Path) -> Result<()> {
    if format != "regrpo-json" {
        bail!("unknown export format `{format}` (regrpo-json; see also `regrpo publish`)");
    }
    let repo = Repository::open(dir)?;
    let s = regrpo_datasets::export::export_regrpo_json(&repo, snapshot, out).await?;
    println!(
        "exported {} RoT records to {} and {} clean trajectories to {}",
        s.rot_records,
        s.rot_file.display(),
        s.clean_records,
        s.clean_file.display()
    );
    Ok(())
}
