//! `regrpo init DIR`: an empty dataset repository.

use std::path::PathBuf;

use anyhow::Result;
use regrpo_datasets::Repository;

/// Create an empty dataset repository in DIR.
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
}

pub async fn run(a: Args) -> Result<()> {
    let repo = Repository::init(&a.dir).await?;
    println!("created dataset repository {} with tables: {}", repo.location(), Repository::table_names().join(", "));
    Ok(())
}
