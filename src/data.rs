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
use regrpo_schemas::SplitSpec;

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

pub async fn snapshot_create(dir: &Path, name: &str, note: Option<&str>, split: SplitSpec) -> Result<()> {
    let repo = Repository::open(dir)?;
    let s = snapshot::create_with_split(&repo, name, note, split).await?;
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

pub async fn optimize(dir: &Path, tables: &[String]) -> Result<()> {
    let repo = Repository::open(dir)?;
    let names: Vec<String> = if tables.is_empty() {
        Repository::table_names().iter().map(|t| t.to_string()).collect()
    } else {
        tables.to_vec()
    };
    for name in &names {
        let o = repo.optimize(name).await?;
        let clustered = if o.clustered_by.is_empty() {
            String::new()
        } else {
            format!(", clustered by {}", o.clustered_by.join(", "))
        };
        if o.version_after == o.version_before {
            println!("{name:<13} v{}: nothing to rewrite ({} file(s))", o.version_before, o.files_before);
        } else {
            println!(
                "{name:<13} v{} → v{}: {} file(s) rewritten into {}{clustered}",
                o.version_before, o.version_after, o.files_removed, o.files_added
            );
        }
    }
    println!("snapshots still read the files they pinned; `regrpo gc` removes files nothing references any more");
    Ok(())
}

/// Options of `regrpo publish` from its flags.
#[allow(clippy::too_many_arguments)]
pub fn publish_options(
    format: regrpo_datasets::publish::PublishFormat,
    seed: u64,
    rot_fraction: Option<f64>,
    error_mix: Option<&str>,
    include_unverified: bool,
    license: String,
    source_licenses: &[String],
    pretty_name: String,
) -> Result<regrpo_datasets::publish::PublishOptions> {
    let source_licenses = source_licenses
        .iter()
        .map(|spec| {
            let (k, v) = spec
                .split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                .with_context(|| format!("--source-license: `{spec}` is not SOURCE=LICENSE"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
    if let Some(f) = rot_fraction
        && !(0.0..=1.0).contains(&f)
    {
        bail!("--rot-fraction {f} is outside [0, 1]");
    }
    let error_mix = match error_mix {
        None => None,
        Some(spec) => {
            let mut m = std::collections::BTreeMap::new();
            for part in spec.split(',') {
                let (k, v) =
                    part.split_once('=').with_context(|| format!("--error-mix: `{part}` is not TYPE=SHARE"))?;
                let t: regrpo_schemas::ErrorType = k.trim().parse().map_err(|e| anyhow::anyhow!("--error-mix: {e}"))?;
                let v: f64 = v.trim().parse().with_context(|| format!("--error-mix: `{v}` is not a number"))?;
                m.insert(t, v);
            }
            Some(m)
        }
    };
    Ok(regrpo_datasets::publish::PublishOptions {
        format,
        seed,
        verified_only: !include_unverified,
        rot_fraction,
        error_mix,
        license,
        source_licenses,
        pretty_name,
        ..Default::default()
    })
}

pub async fn publish(
    dir: &Path,
    snapshot: &str,
    out: &Path,
    opts: &regrpo_datasets::publish::PublishOptions,
) -> Result<()> {
    let repo = Repository::open(dir)?;
    let p = regrpo_datasets::publish::publish(&repo, snapshot, out, opts).await?;
    let rows: Vec<String> = p.rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "published snapshot `{}` ({}) to {}: {}; {} files (provenance.json names the table versions)",
        p.snapshot,
        p.table_versions.iter().map(|(t, v)| format!("{t}@{v}")).collect::<Vec<_>>().join(" "),
        p.out.display(),
        rows.join(", "),
        p.files.len()
    );
    if !p.empty_splits.is_empty() {
        println!(
            "empty splits left out (no file, no card or Croissant entry): {}; with this few source trajectories, \
             try other `snapshot create --split` fractions",
            p.empty_splits.join(", ")
        );
    }
    if !p.unlicensed_sources.is_empty() {
        println!(
            "no license given for the rows of {}: the card says `other` and asks readers to check the sources' terms; \
             name them with --source-license SOURCE=LICENSE",
            p.unlicensed_sources.join(", ")
        );
    }
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

/// `regrpo serve`: Flight SQL until Ctrl-C.
pub async fn serve(
    dir: &Path,
    snapshot: Option<&str>,
    addr: std::net::SocketAddr,
    token_file: &Path,
    memory_limit_mb: usize,
    timeout_s: u64,
) -> Result<()> {
    use regrpo_queries::flight::{FlightSqlServer, ServeConfig};
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the token file {}", token_file.display()))?
        .trim()
        .to_string();
    if token.len() < 8 {
        bail!("{}: the token must be at least 8 characters", token_file.display());
    }
    let repo = Repository::open(dir)?;
    let session = Session::open(&repo, At::from_option(snapshot)).await?;
    let versions: Vec<String> = session.versions().iter().map(|(t, v)| format!("{t}@{v}")).collect();
    let cfg = ServeConfig {
        memory_limit: memory_limit_mb << 20,
        timeout: Duration::from_secs(timeout_s),
        ..ServeConfig::new(token)
    };
    let (listener, local) = FlightSqlServer::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!(
        "serving {} ({}) over Flight SQL at grpc://{local}, read-only; {} MiB and {timeout_s}s per query; Ctrl-C stops",
        repo.root().display(),
        snapshot.map_or_else(|| format!("latest: {}", versions.join(" ")), |s| format!("snapshot {s}")),
        memory_limit_mb
    );
    FlightSqlServer::new(session, cfg)
        .serve(listener, async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}

/// `regrpo query --list`.
pub fn list_queries() {
    for q in regrpo_queries::library::library() {
        println!("{}\n    {}", q.name, q.description);
        for p in &q.params {
            let default = p.default.as_ref().map_or("required".to_string(), |d| format!("default {d}"));
            println!("    --param {}=<{}>  ({default}) {}", p.name, p.ty.as_str(), p.help);
        }
    }
}

/// `regrpo query DIR NAME [--param k=v]…`.
pub async fn query(
    dir: &Path,
    name: &str,
    params: &[String],
    snapshot: Option<&str>,
    show_sql: bool,
    format: OutputFormat,
    out: Option<&Path>,
) -> Result<()> {
    let q = regrpo_queries::library::find(name)?;
    let given = params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
            None => bail!("--param {p}: expected NAME=VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    if show_sql {
        q.bind(&given)?;
        println!("{}", q.sql);
        return Ok(());
    }
    let repo = Repository::open(dir)?;
    let (_, df) = regrpo_queries::library::plan(&repo, At::from_option(snapshot), q, &given).await?;
    emit(&df.collect().await.map_err(regrpo_queries::Error::from)?, format, out)
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
