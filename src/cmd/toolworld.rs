//! `regrpo toolworld generate`: the embedded task world.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use regrpo_datasets::Repository;

use crate::progress;

/// Generate toolworld tasks (files + question + executed ground-truth trajectory).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate N tasks with seed S into the repository DIR.
    Generate {
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

pub async fn run(c: Command, quiet: bool) -> Result<()> {
    let Command::Generate { dir, tasks, seed, concurrency } = c;
    let repo = Repository::open(&dir).await?;
    let b = progress::steps(quiet, tasks as u64, "toolworld");
    let (added, skipped) =
        regrpo_engine::toolworld::generate_into(&repo, tasks, seed, concurrency, || b.inc(1)).await?;
    b.finish_and_clear();
    println!(
        "toolworld seed {seed}: {tasks} tasks, {added} trajectories added, {skipped} already there; sandboxes under {}",
        repo.display_path("sandboxes").display()
    );
    Ok(())
}
