//! `regrpo sql DIR QUERY`: read-only SQL over the tables.

use std::path::PathBuf;

use anyhow::Result;
use regrpo_datasets::Repository;
use regrpo_queries::{At, OutputFormat, Session};

/// Run a read-only SQL query (tables: trajectories, near_misses, rot, rejects, runs, metrics, rollouts, reviews).
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
    /// Read the tables as this snapshot pinned them (default: latest).
    #[arg(long, short)]
    snapshot: Option<String>,
    query: String,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write to this file instead of stdout (required for parquet).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Run on a Ballista cluster (`regrpo cluster`) at df://HOST:PORT instead of in this process.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

pub async fn run(a: Args) -> Result<()> {
    let repo = Repository::open(&a.dir).await?;
    let at = At::from_option(a.snapshot.as_deref());
    let session = Session::open_on(&repo, at, a.cluster.as_deref()).await?;
    let batches = session.query(&a.query).await?;
    crate::output::emit(&batches, a.format, a.out.as_deref())
}
