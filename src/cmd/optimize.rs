//! `regrpo optimize DIR`: compact small files and cluster the tables curators filter.

use std::path::PathBuf;

use anyhow::Result;
use regrpo_datasets::Repository;

/// Compact small files into large ones and cluster near_misses/rot by error_type and tool
/// (Z-order), as a new version of each table; snapshots keep reading their own files.
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
    /// Only these tables (default: all).
    #[arg(long = "table", value_parser = clap::builder::PossibleValuesParser::new(Repository::table_names()))]
    tables: Vec<String>,
}

pub async fn run(a: Args) -> Result<()> {
    let repo = Repository::open(&a.dir).await?;
    let names: Vec<String> =
        if a.tables.is_empty() { Repository::table_names().iter().map(|t| t.to_string()).collect() } else { a.tables };
    for name in &names {
        let o = repo.optimize(name).await?;
        regrpo_schemas::pause_point(&format!("optimize:{name}"));
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
