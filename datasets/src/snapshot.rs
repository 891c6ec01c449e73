//! Snapshots: named, immutable sets of table versions.
//!
//! A snapshot records, for every table, the Delta version, the row count, and the path, size
//! and sha256 of every data file of that version, plus its parent (the snapshot taken before
//! it) and a note. The manifest is written once, atomically and without replacing an existing
//! one; `verify` re-lists and re-hashes the files; `gc` never deletes a file a snapshot names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use regrpo_schemas::{Split, SplitSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DeltaContext, Error, Result, StoreContext};
use crate::repo::{Repository, active_files};
use crate::store::object_path;

/// One data file of a table version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the table folder.
    pub path: String,
    pub size: i64,
    pub sha256: String,
}

/// A table as a snapshot pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub version: i64,
    pub rows: i64,
    pub files: Vec<FileEntry>,
}

/// A snapshot manifest (`snapshots/<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    /// Creation order within the repository, from 1.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub note: Option<String>,
    pub parent: Option<String>,
    pub tables: BTreeMap<String, TableSnapshot>,
    /// How the snapshot's trajectories divide into train, validation and test: every job that
    /// reads the snapshot (SFT, ReGRPO, eval, publish) uses this one split. Snapshots written
    /// before splits were recorded read as the default.
    #[serde(default)]
    pub split: SplitSpec,
}

impl Snapshot {
    /// `{table: version}`, what a run records that it read.
    pub fn versions(&self) -> BTreeMap<String, i64> {
        self.tables.iter().map(|(k, t)| (k.clone(), t.version)).collect()
    }

    /// The split of one of the snapshot's trajectories.
    pub fn split_of(&self, trajectory_id: &str) -> Split {
        self.split.of(trajectory_id)
    }
}

/// The split a job reading `snapshot` (or the latest tables, `None`) uses.
pub async fn split_spec(repo: &Repository, snapshot: Option<&str>) -> Result<SplitSpec> {
    Ok(match snapshot {
        Some(name) => get(repo, name).await?.split,
        None => SplitSpec::default(),
    })
}

const SNAPSHOTS: &str = "snapshots";

/// The key of a snapshot's manifest below the repository.
fn snapshot_key(name: &str) -> String {
    format!("{SNAPSHOTS}/{name}.json")
}

/// Where a snapshot's manifest is, for messages.
fn snapshot_path(repo: &Repository, name: &str) -> PathBuf {
    repo.display_path(&snapshot_key(name))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(Error::BadSnapshotName { name: name.to_string() }) }
}

/// The sha256 of a table's data file (`rel` as Delta names it, percent-encoded).
async fn hash_file(repo: &Repository, table: &str, rel: &str) -> Result<String> {
    let key = file_key(table, rel);
    let mut stream = repo.store().get(&object_path(&key)?).await.at_key(&key)?.into_stream();
    let mut h = Sha256::new();
    while let Some(chunk) = stream.try_next().await.at_key(&key)? {
        h.update(&chunk);
    }
    Ok(hex::encode(h.finalize()))
}

/// The key below the repository of a table's data file, decoding the percent-encoding Delta
/// uses in file paths.
fn file_key(table: &str, rel: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(rel).decode_utf8_lossy();
    format!("tables/{table}/{decoded}")
}

/// Takes a snapshot of every table at its latest version, with the default split.
pub async fn create(repo: &Repository, name: &str, note: Option<&str>) -> Result<Snapshot> {
    create_with_split(repo, name, note, SplitSpec::default()).await
}

/// Takes a snapshot of every table at its latest version, recording how its trajectories split.
pub async fn create_with_split(
    repo: &Repository,
    name: &str,
    note: Option<&str>,
    split: SplitSpec,
) -> Result<Snapshot> {
    check_name(name)?;
    if repo.exists(&snapshot_key(name)).await? {
        return Err(Error::SnapshotExists { name: name.to_string() });
    }
    let existing = list(repo).await?;
    let mut tables = BTreeMap::new();
    for table_name in repo.present_tables().await? {
        let table = repo.load(table_name, None).await?;
        let mut files = Vec::new();
        let mut rows = 0;
        for (rel, size, n) in active_files(&table)? {
            rows += n;
            let sha256 = hash_file(repo, table_name, &rel).await?;
            files.push(FileEntry { path: rel, size, sha256 });
        }
        let version = table.version().unwrap_or(0) as i64;
        tables.insert(table_name.to_string(), TableSnapshot { version, rows, files });
    }
    let snap = Snapshot {
        name: name.to_string(),
        seq: existing.last().map_or(1, |s| s.seq + 1),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        note: note.map(str::to_string),
        parent: existing.last().map(|s| s.name.clone()),
        tables,
        split,
    };
    write_new(repo, &snap).await?;
    Ok(snap)
}

/// Writes the manifest with put-if-absent, which fails rather than replace a snapshot another
/// process wrote meanwhile.
async fn write_new(repo: &Repository, snap: &Snapshot) -> Result<()> {
    let text = serde_json::to_string_pretty(snap).map_err(|e| Error::Internal(e.to_string()))? + "\n";
    match repo.put_new(&snapshot_key(&snap.name), text.into_bytes()).await {
        Err(Error::Store { source, .. }) if matches!(*source, object_store::Error::AlreadyExists { .. }) => {
            Err(Error::SnapshotExists { name: snap.name.clone() })
        }
        other => other,
    }
}

/// Reads one snapshot.
pub async fn get(repo: &Repository, name: &str) -> Result<Snapshot> {
    check_name(name)?;
    let Some(bytes) = repo.get_if_present(&snapshot_key(name)).await? else {
        return Err(Error::NoSuchSnapshot { name: name.to_string() });
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadSnapshot { path: snapshot_path(repo, name), reason: e.to_string() })
}

/// The version of `table` a snapshot pins; a snapshot file without that table (damaged, or
/// hand-edited) is an error naming the file.
pub async fn table_version(repo: &Repository, name: &str, table: &str) -> Result<i64> {
    let snap = get(repo, name).await?;
    match snap.tables.get(table) {
        Some(t) => Ok(t.version),
        None => Err(Error::BadSnapshot {
            path: snapshot_path(repo, name),
            reason: format!(
                "it pins no `{table}` table (it has: {})",
                snap.tables.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// All snapshots, oldest first.
pub async fn list(repo: &Repository) -> Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    for meta in repo.list(SNAPSHOTS).await? {
        let key = meta.location.as_ref();
        let Some(name) =
            key.strip_prefix(SNAPSHOTS).and_then(|k| k.strip_prefix('/')).and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if name.contains('/') || check_name(name).is_err() {
            continue;
        }
        out.push(get(repo, name).await?);
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub files_checked: usize,
    pub bytes_checked: i64,
    /// One line per problem; empty means the snapshot is intact.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-opens every table at its pinned version, checks that it lists exactly the recorded
/// files, and re-hashes them.
pub async fn verify(repo: &Repository, name: &str) -> Result<Verification> {
    let snap = get(repo, name).await?;
    let mut v = Verification::default();
    for (table_name, pinned) in &snap.tables {
        let table = match repo.load(table_name, Some(pinned.version)).await {
            Ok(t) => t,
            Err(e) => {
                v.problems.push(format!("{table_name}: version {} cannot be opened: {e}", pinned.version));
                continue;
            }
        };
        let listed: BTreeSet<String> = active_files(&table)?.into_iter().map(|(p, _, _)| p).collect();
        let recorded: BTreeSet<String> = pinned.files.iter().map(|f| f.path.clone()).collect();
        for extra in listed.difference(&recorded) {
            v.problems
                .push(format!("{table_name}@{}: file {extra} is in the table but not in the snapshot", pinned.version));
        }
        for f in &pinned.files {
            if !listed.contains(&f.path) {
                v.problems.push(format!(
                    "{table_name}@{}: snapshot file {} is not in the table version",
                    pinned.version, f.path
                ));
            }
            match hash_file(repo, table_name, &f.path).await {
                Ok(h) if h == f.sha256 => {}
                Ok(h) => v
                    .problems
                    .push(format!("{table_name}: {} has sha256 {h}, the snapshot recorded {}", f.path, f.sha256)),
                Err(e) => v.problems.push(format!("{table_name}: {e}")),
            }
            v.files_checked += 1;
            v.bytes_checked += f.size;
        }
    }
    Ok(v)
}

/// How two snapshots differ, table by table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDiff {
    pub table: String,
    pub version_a: i64,
    pub version_b: i64,
    pub rows_a: i64,
    pub rows_b: i64,
    pub files_added: usize,
    pub files_removed: usize,
}

/// Compares two snapshots by versions, row counts and files.
pub async fn diff(repo: &Repository, a: &str, b: &str) -> Result<Vec<TableDiff>> {
    let (sa, sb) = (get(repo, a).await?, get(repo, b).await?);
    let names: BTreeSet<&String> = sa.tables.keys().chain(sb.tables.keys()).collect();
    let empty = TableSnapshot { version: -1, rows: 0, files: vec![] };
    Ok(names
        .into_iter()
        .map(|n| {
            let ta = sa.tables.get(n).unwrap_or(&empty);
            let tb = sb.tables.get(n).unwrap_or(&empty);
            let fa: BTreeSet<_> = ta.files.iter().map(|f| &f.path).collect();
            let fb: BTreeSet<_> = tb.files.iter().map(|f| &f.path).collect();
            TableDiff {
                table: n.clone(),
                version_a: ta.version,
                version_b: tb.version,
                rows_a: ta.rows,
                rows_b: tb.rows,
                files_added: fb.difference(&fa).count(),
                files_removed: fa.difference(&fb).count(),
            }
        })
        .collect())
}

/// What `gc` removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub files_removed: usize,
    pub bytes_removed: u64,
    pub files_kept: usize,
    /// Unreferenced files left alone because they are younger than the minimum age (a
    /// concurrent writer may be about to commit them).
    pub files_too_young: usize,
}

/// Deletes data files that neither the latest version of their table nor any snapshot
/// references. Files written, or removed from their table, less than `min_age` ago are kept: a
/// writer may be committing the first, a reader that opened an earlier version may still be
/// reading the second (a file written long ago and compacted away by `optimize` a second ago is
/// not free yet). Delta log files are never touched.
pub async fn gc(repo: &Repository, min_age: std::time::Duration, dry_run: bool) -> Result<GcReport> {
    let snaps = list(repo).await?;
    let mut report = GcReport::default();
    let now = chrono::Utc::now();
    for table_name in repo.present_tables().await? {
        let latest = repo.load(table_name, None).await?;
        let mut keep: BTreeSet<String> =
            active_files(&latest)?.into_iter().map(|(p, _, _)| file_key(table_name, &p)).collect();
        let removed_after = chrono::Duration::from_std(min_age)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .map_or(i64::MIN, |t| t.timestamp_millis());
        let log_store = latest.log_store();
        let state = latest.snapshot().table(table_name)?;
        let mut tombstones = state.all_tombstones(log_store.as_ref());
        while let Some(t) = tombstones.try_next().await.table(table_name)? {
            if t.deletion_timestamp().is_none_or(|at| at > removed_after) {
                keep.insert(file_key(table_name, &t.path()));
            }
        }
        for s in &snaps {
            if let Some(t) = s.tables.get(table_name) {
                keep.extend(t.files.iter().map(|f| file_key(table_name, &f.path)));
            }
        }
        let log = format!("tables/{table_name}/_delta_log/");
        for meta in repo.list(&format!("tables/{table_name}")).await? {
            let key = percent_encoding::percent_decode_str(meta.location.as_ref()).decode_utf8_lossy().into_owned();
            if key.starts_with(&log) || !key.ends_with(".parquet") {
                continue;
            }
            if keep.contains(&key) {
                report.files_kept += 1;
                continue;
            }
            let age = (now - meta.last_modified).to_std().unwrap_or_default();
            if age < min_age {
                report.files_too_young += 1;
                continue;
            }
            if !dry_run {
                repo.store().delete(&meta.location).await.at_key(&key)?;
                regrpo_schemas::pause_point("gc:deleted");
            }
            report.files_removed += 1;
            report.bytes_removed += meta.size;
        }
    }
    Ok(report)
}
