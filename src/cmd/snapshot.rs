//! `regrpo snapshot {create,list,show,diff,verify}`: named, immutable sets of table versions.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;
use regrpo_datasets::{Repository, snapshot};
use regrpo_schemas::SplitSpec;

/// Named, immutable snapshots of every table's version.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pin every table's current version under NAME.
    Create {
        dir: PathBuf,
        name: String,
        #[arg(long)]
        note: Option<String>,
        /// train,validation,test fractions of the trajectories: the split every job reading the
        /// snapshot uses (SFT, ReGRPO, eval, publish).
        #[arg(long, default_value = "0.8,0.1,0.1", value_parser = parse_fractions)]
        split: [f64; 3],
        /// Seeds the split's hash.
        #[arg(long, default_value_t = 0)]
        split_seed: u64,
    },
    /// List snapshots, oldest first.
    List { dir: PathBuf },
    /// Show the versions, rows, files and split a snapshot pins.
    Show { dir: PathBuf, name: String },
    /// Compare two snapshots table by table.
    Diff { dir: PathBuf, a: String, b: String },
    /// Re-open pinned versions and re-hash every file.
    Verify { dir: PathBuf, name: String },
}

fn parse_fractions(s: &str) -> Result<[f64; 3], String> {
    SplitSpec::parse_fractions(s, 0).map(|spec| spec.fractions)
}

pub async fn run(c: Command) -> Result<()> {
    match c {
        Command::Create { dir, name, note, split, split_seed } => {
            let repo = Repository::open(&dir).await?;
            let spec = SplitSpec::new(split, split_seed).map_err(anyhow::Error::msg)?;
            let s = snapshot::create_with_split(&repo, &name, note.as_deref(), spec).await?;
            let rows: i64 = s.tables.values().map(|t| t.rows).sum();
            let files: usize = s.tables.values().map(|t| t.files.len()).sum();
            println!(
                "snapshot `{}` (parent: {}) pins {} tables, {rows} rows in {files} files, split {:?} seed {}: {}",
                s.name,
                s.parent.as_deref().unwrap_or("none"),
                s.tables.len(),
                s.split.fractions,
                s.split.seed,
                repo.display_path(&format!("snapshots/{name}.json")).display()
            );
        }
        Command::List { dir } => {
            let repo = Repository::open(&dir).await?;
            let snaps = snapshot::list(&repo).await?;
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
        }
        Command::Show { dir, name } => {
            let repo = Repository::open(&dir).await?;
            let s = snapshot::get(&repo, &name).await?;
            println!(
                "snapshot {} (#{}, {}), parent {}",
                s.name,
                s.seq,
                s.created_at,
                s.parent.as_deref().unwrap_or("none")
            );
            if let Some(n) = &s.note {
                println!("note: {n}");
            }
            println!("split: train/validation/test {:?}, seed {}", s.split.fractions, s.split.seed);
            println!("{:<14} {:>8} {:>10} {:>6}", "table", "version", "rows", "files");
            for (t, p) in &s.tables {
                println!("{t:<14} {:>8} {:>10} {:>6}", p.version, p.rows, p.files.len());
            }
        }
        Command::Diff { dir, a, b } => {
            let repo = Repository::open(&dir).await?;
            println!("{:<14} {:>15} {:>21} {:>12}", "table", "version", "rows", "files +/-");
            for d in snapshot::diff(&repo, &a, &b).await? {
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
        }
        Command::Verify { dir, name } => {
            let repo = Repository::open(&dir).await?;
            let v = snapshot::verify(&repo, &name).await?;
            if !v.is_ok() {
                for p in &v.problems {
                    eprintln!("  {p}");
                }
                bail!("snapshot `{name}` failed verification: {} problem(s)", v.problems.len())
            }
            println!(
                "snapshot `{name}` verified: {} files, {} bytes re-hashed, all match",
                v.files_checked, v.bytes_checked
            );
        }
    }
    Ok(())
}
