//! Snapshots: named, immutable sets of table versions.
//!
//! A snapshot records, for every table, the Delta version, the row count, and the path, size
//! and sha256 of every data file of that version, plus its parent (the snapshot taken before
//! it) and a note. The manifest is written once, atomically and without replacing an existing
//! one; `verify` re-lists and re-hashes the files; `gc` never deletes a file a snapshot names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use regrpo_schemas::{Split, SplitSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::repo::{Repository, active_files};

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
pub fn split_spec(repo: &Repository, snapshot: Option<&str>) -> Result<SplitSpec> {
    Ok(match snapshot {
        Some(name) => get(repo, name)?.split,
        None => SplitSpec::default(),
    })
}

fn snapshot_dir(repo: &Repository) -> PathBuf {
    repo.root().join("snapshots")
}

fn snapshot_path(repo: &Repository, name: &str) -> PathBuf {
    snapshot_dir(repo).join(format!("{name}.json"))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(Error::BadSnapshotName { name: name.to_string() }) }
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Decodes the percent-encoding Delta uses in file paths.
fn local_path(repo: &Repository, table: &str, rel: &str) -> PathBuf {
    let decoded = percent_encoding::percent_decode_str(rel).decode_utf8_lossy();
    repo.table_path(table).join(decoded.as_ref())
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
    let path = snapshot_path(repo, name);
    if path.exists() {
        return Err(Error::SnapshotExists { name: name.to_string() });
    }
    let existing = list(repo)?;
    let mut tables = BTreeMap::new();
    for table_name in repo.present_tables() {
        let table = repo.load(table_name, None).await?;
        let mut files = Vec::new();
        let mut rows = 0;
        for (rel, size, n) in active_files(&table)? {
            rows += n;
            let sha256 = hash_file(&local_path(repo, table_name, &rel))?;
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
    write_new(&path, &snap)?;
    Ok(snap)
}

/// Writes the manifest to a temporary file and links it into place, which fails rather than
/// replace a snapshot another process wrote meanwhile.
fn write_new(path: &Path, snap: &Snapshot) -> Result<()> {
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let text = serde_json::to_string_pretty(snap).map_err(|e| Error::Internal(e.to_string()))? + "\n";
    std::fs::write(&tmp, text).at(&tmp)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::SnapshotExists { name: snap.name.clone() })
        }
        Err(e) => Err(Error::Io(regrpo_schemas::IoError { path: path.into(), source: e })),
    }
}

/// Reads one snapshot.
pub fn get(repo: &Repository, name: &str) -> Result<Snapshot> {
    check_name(name)?;
    let path = snapshot_path(repo, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSuchSnapshot { name: name.to_string() });
        }
        Err(e) => return Err(Error::Io(regrpo_schemas::IoError { path, source: e })),
    };
    serde_json::from_str(&text).map_err(|e| Error::BadSnapshot { path, reason: e.to_string() })
}

/// The version of `table` a snapshot pins; a snapshot file without that table (damaged, or
/// hand-edited) is an error naming the file.
pub fn table_version(repo: &Repository, name: &str, table: &str) -> Result<i64> {
    let snap = get(repo, name)?;
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
pub fn list(repo: &Repository) -> Result<Vec<Snapshot>> {
    let dir = snapshot_dir(repo);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).at(&dir)? {
        let path = entry.at(&dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        out.push(get(repo, name)?);
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
    let snap = get(repo, name)?;
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
            let path = local_path(repo, table_name, &f.path);
            if !listed.contains(&f.path) {
                v.problems.push(format!(
                    "{table_name}@{}: snapshot file {} is not in the table version",
                    pinned.version, f.path
                ));
            }
            match hash_file(&path) {
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
pub fn diff(repo: &Repository, a: &str, b: &str) -> Result<Vec<TableDiff>> {
    let (sa, sb) = (get(repo, a)?, get(repo, b)?);
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
/// references. Files younger than `min_age` are kept. Delta log files are never touched.
pub async fn gc(repo: &Repository, min_age: std::time::Duration, dry_run: bool) -> Result<GcReport> {
    let snaps = list(repo)?;
    let mut report = GcReport::default();
    for table_name in repo.present_tables() {
        let latest = repo.load(table_name, None).await?;
        let mut keep: BTreeSet<PathBuf> =
            active_files(&latest)?.into_iter().map(|(p, _, _)| local_path(repo, table_name, &p)).collect();
        for s in &snaps {
            if let Some(t) = s.tables.get(table_name) {
                keep.extend(t.files.iter().map(|f| local_path(repo, table_name, &f.path)));
            }
        }
        let root = repo.table_path(table_name);
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).at(&dir)? {
                let entry = entry.at(&dir)?;
                let path = entry.path();
                let meta = entry.metadata().at(&path)?;
                if meta.is_dir() {
                    if path.file_name().is_some_and(|n| n != "_delta_log") {
                        stack.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "parquet") {
                    continue;
                }
                if keep.contains(&path) {
                    report.files_kept += 1;
                    continue;
                }
                let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
                if age < min_age {
                    report.files_too_young += 1;
                    continue;
                }
                if !dry_run {
                    std::fs::remove_file(&path).at(&path)?;
                }
                report.files_removed += 1;
                report.bytes_removed += meta.len();
            }
        }
    }
    Ok(report)
}
