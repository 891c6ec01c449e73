//! `regrpo ingest DIR --format F FILES…`: agent data into the repository.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use regrpo_datasets::Repository;
use regrpo_formats::ingest::{self, Format, IngestOptions};

use crate::progress::BytesBar;

/// Read agent data files into the repository (re-running adds nothing twice).
///
/// Formats: regrpo (ReGRPO reference JSON), mat (MM-Traj ShareGPT JSON), bfcl (BFCL JSON
/// Lines + answers), gta (GTA dataset.json), openai (chat JSONL with tool_calls).
/// Records that cannot be read go to the `rejects` table with the reason.
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
    #[arg(long, short, value_enum)]
    format: Format,
    /// BFCL only: the answers file (default: <questions>.answers.json or possible_answer/<name>).
    #[arg(long)]
    answers: Option<PathBuf>,
    /// Rows per Delta commit.
    #[arg(long)]
    chunk_rows: Option<usize>,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub async fn run(a: Args, quiet: bool) -> Result<()> {
    let repo = Repository::open(&a.dir).await?;
    if a.paths.is_empty() {
        bail!("no input files given");
    }
    let bar = BytesBar::new(quiet, &format!("ingest {}", a.format));
    let opts = IngestOptions {
        chunk_rows: a.chunk_rows,
        answers: a.answers,
        progress: Some(bar.clone() as Arc<dyn ingest::Progress>),
    };
    let result = ingest::ingest(&repo, a.format, &a.paths, &opts).await;
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
        repo.location()
    );
    if s.rejected > 0 {
        println!(
            "see why: regrpo sql {} \"SELECT file, byte_offset, line, reason FROM rejects WHERE ingest_batch = '{}'\"",
            a.dir.display(),
            s.ingest_batch
        );
    }
    Ok(())
}
