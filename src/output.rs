//! What commands print: query results (to a file given with `--out`, else to stdout) and the
//! data engine's run summary (`regrpo engine run` and the demo).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use regrpo_engine::{EngineReport, Mix};
use regrpo_queries::OutputFormat;
use regrpo_queries::output::{write_batches, write_parquet};
use regrpo_schemas::ErrorType;

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

/// Prints an engine run's summary: RoT rows by ErrorType against the target mix, rejections
/// by reason, tools without an executor.
pub fn print_engine_report(r: &EngineReport, mix: &Mix, repo: &regrpo_datasets::Location) {
    let total = r.accepted_total();
    let main: usize = ErrorType::MAIN.iter().map(|t| r.accepted.get(t).copied().unwrap_or(0)).sum();
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let shard = r.shard.map(|s| format!(" shard {s}")).unwrap_or_default();
    if r.batches > 0 && r.batches_already_committed == r.batches {
        println!(
            "engine run {}{shard}: all {} batches of its {} trajectories were already committed; nothing to do",
            r.run_id, r.batches, r.trajectories
        );
        return;
    }
    if r.batches_already_committed > 0 {
        println!(
            "engine run {}{shard}: resuming; {} of {} batches were already committed (recomputed, not written again)",
            r.run_id, r.batches_already_committed, r.batches
        );
    }
    println!(
        "engine run {}{shard}: {} trajectories, {} near-misses planned, {} executions in {:.1}s ({:.0} RoT rows/s)",
        r.run_id,
        r.trajectories,
        r.planned,
        r.executions,
        secs,
        total as f64 / secs
    );
    println!("{:<18} {:>7} {:>12} {:>12}", "ErrorType", "RoT", "share(main)", "target");
    let main_target: f64 = ErrorType::MAIN.iter().map(|t| mix.share(*t)).sum();
    for t in ErrorType::ALL {
        let n = r.accepted.get(&t).copied().unwrap_or(0);
        let (share, target) = if ErrorType::MAIN.contains(&t) {
            (format!("{:.3}", n as f64 / main.max(1) as f64), format!("{:.3}", mix.share(t) / main_target.max(1e-12)))
        } else {
            ("-".into(), format!("{:.3} (all)", mix.share(t)))
        };
        println!("{:<18} {n:>7} {share:>12} {target:>12}", t.as_str());
    }
    println!(
        "{total} RoT rows ({} verified by re-execution), {} new RoT rows and {} new near-miss rows committed to {}",
        r.verified, r.rot_added, r.near_misses_added, repo
    );
    if !r.rejected.is_empty() {
        println!("rejected near-misses, by reason:");
        let mut reasons: Vec<_> = r.rejected.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (reason, n) in reasons {
            println!("  {n:>7}  {reason}");
        }
    }
    for (tool, n) in &r.missing_executors {
        println!("no executor for `{tool}` ({n} calls): configure a wasm module or a remote tool server");
    }
}
