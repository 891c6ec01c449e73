//! `regrpo gc DIR`: delete data files nothing references any more.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use regrpo_datasets::{Repository, snapshot};

/// Delete data files that no snapshot and no latest table version references.
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
    /// Keep unreferenced files younger than this many seconds (a writer may be committing them).
    #[arg(long, default_value_t = 3600)]
    min_age: u64,
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(a: Args) -> Result<()> {
    let repo = Repository::open(&a.dir).await?;
    let r = snapshot::gc(&repo, Duration::from_secs(a.min_age), a.dry_run).await?;
    println!(
        "gc{}: {} unreferenced file(s) removed ({} bytes), {} kept (latest versions and snapshots), {} too young to remove (< {}s)",
        if a.dry_run { " (dry run)" } else { "" },
        r.files_removed,
        r.bytes_removed,
        r.files_kept,
        r.files_too_young,
        a.min_age
    );
    Ok(())
}
