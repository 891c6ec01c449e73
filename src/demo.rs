//! `regrpo demo`: the whole pipeline on the embedded default, in a fresh folder.
//!
//! Today: ingest the embedded fixtures (every input format), snapshot, and show failures by
//! ErrorType through SQL.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use regrpo_datasets::ingest::{self, Format, IngestOptions};
use regrpo_datasets::{Repository, snapshot};
use regrpo_queries::{At, OutputFormat, Session};

/// The fixtures compiled into the binary: (format, file name, contents).
const FIXTURES: &[(Format, &str, &str)] = &[
    (Format::Regrpo, "regrpo/rot_sample.json", include_str!("../fixtures/regrpo/rot_sample.json")),
    (Format::Regrpo, "regrpo/clean_sample.json", include_str!("../fixtures/regrpo/clean_sample.json")),
    (Format::Mat, "mat/trajectories.json", include_str!("../fixtures/mat/trajectories.json")),
    (Format::Bfcl, "bfcl/questions.json", include_str!("../fixtures/bfcl/questions.json")),
    (Format::Bfcl, "bfcl/questions.answers.json", include_str!("../fixtures/bfcl/questions.answers.json")),
    (Format::Gta, "gta/dataset.json", include_str!("../fixtures/gta/dataset.json")),
    (Format::Openai, "openai/chat.jsonl", include_str!("../fixtures/openai/chat.jsonl")),
];

pub async fn run(dir: &Path, quiet: bool) -> Result<()> {
    if dir.join("regrpo.json").exists() || dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
        bail!("{} is not empty; the demo starts from a fresh folder (pass --dir NEW_DIR)", dir.display());
    }
    let repo_dir = dir.join("repo");
    let inputs = dir.join("inputs");
    let repo = Repository::init(&repo_dir).await?;
    say(quiet, &format!("[1/3] dataset repository at {}", repo.root().display()));

    for (_, name, text) in FIXTURES {
        let path = inputs.join(name);
        std::fs::create_dir_all(path.parent().expect("fixture paths have a folder"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    for format in Format::ALL {
        let paths: Vec<PathBuf> = FIXTURES
            .iter()
            .filter(|(f, name, _)| *f == format && !name.ends_with(".answers.json"))
            .map(|(_, name, _)| inputs.join(name))
            .collect();
        let s = ingest::ingest(&repo, format, &paths, &IngestOptions::default()).await?;
        say(
            quiet,
            &format!(
                "      ingest {format:<7} {} records → {} trajectories, {} RoT rows, {} rejected",
                s.records_read, s.trajectories_added, s.rot_added, s.rejected
            ),
        );
    }
    let snap = snapshot::create(&repo, "demo-v1", Some("regrpo demo: embedded fixtures")).await?;
    say(quiet, &format!("[2/3] snapshot `{}` pins {} tables", snap.name, snap.tables.len()));

    let session = Session::open(&repo, At::Snapshot(snap.name.clone())).await?;
    let sql = "SELECT error_type, count(*) AS rows FROM rot GROUP BY error_type ORDER BY rows DESC, error_type";
    say(
        quiet,
        &format!(
            "[3/3] failures by ErrorType at `{}`:  regrpo sql {} -s {} \"{sql}\"",
            snap.name,
            repo_dir.display(),
            snap.name
        ),
    );
    let batches = session.query(sql).await?;
    crate::data::emit(&batches, OutputFormat::Table, None)?;
    println!("everything is under {}", dir.display());
    Ok(())
}

fn say(quiet: bool, line: &str) {
    if !quiet {
        println!("{line}");
    }
}
