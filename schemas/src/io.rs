//! An I/O error that names the file it happened on, the one helper that attaches the path, and
//! [`write_folder`], which makes a folder of outputs appear whole or not at all.
//!
//! Every crate's `Error` has an `Io(#[from] IoError)` variant, so `std::fs::read(p).at(p)?`
//! works the same everywhere.

use std::path::{Path, PathBuf};

/// An I/O error on a named path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying error's kind (`NotFound`, `PermissionDenied`, …).
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }
}

/// Attaches a path to an I/O result.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, IoError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, IoError> {
        self.map_err(|source| IoError { path: path.into(), source })
    }
}

/// Writes a folder whole or not at all (a checkpoint, an exported model, a published dataset):
/// `fill` writes into a temporary folder beside it (`.NAME.tmp`), whose files are synced
/// before it is renamed to `dir`. A process killed while writing leaves only the temporary
/// folder, which the next write of `dir` replaces and no reader looks at. An existing `dir` is
/// replaced whole (callers that must not replace one check first).
pub fn write_folder<T, E: From<IoError>>(dir: &Path, fill: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    let out = fill(&tmp)?;
    sync_tree(&tmp)?;
    pause_point(&format!("write_folder:{name}"));
    if dir.exists() {
        // Set aside, not deleted first: a crash in between leaves the old folder whole.
        let old = parent.join(format!(".{name}.old"));
        if old.exists() {
            std::fs::remove_dir_all(&old).at(&old)?;
        }
        std::fs::rename(dir, &old).at(dir)?;
        std::fs::rename(&tmp, dir).at(dir)?;
        std::fs::remove_dir_all(&old).at(&old)?;
    } else {
        std::fs::rename(&tmp, dir).at(dir)?;
    }
    std::fs::File::open(parent).and_then(|f| f.sync_all()).at(parent)?;
    Ok(out)
}

/// A named point where a test can stop a writer: when the environment variable
/// `REGRPO_PAUSE_AT` holds `name`, the process writes `regrpo: paused at NAME` to stderr and
/// waits there until a line (or the end of input) arrives on its stdin. A crash test SIGKILLs
/// it there; a concurrency test lets another writer run meanwhile and then sends the line. Tests
/// stop at exact points of a write (a folder filled but not renamed, one file of many deleted,
/// an append about to commit) instead of guessing with sleeps. Unset, it costs one environment
/// lookup.
pub fn pause_point(name: &str) {
    if std::env::var_os("REGRPO_PAUSE_AT").is_some_and(|v| v == name) {
        eprintln!("regrpo: paused at {name}");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// Syncs every file under `dir`, and the folders themselves.
fn sync_tree(dir: &Path) -> Result<(), IoError> {
    for e in std::fs::read_dir(dir).at(dir)? {
        let path = e.at(dir)?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
        }
    }
    std::fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_appears_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        // A writer that fails halfway leaves nothing at `dir`.
        let failed: Result<(), IoError> = write_folder(&dir, |tmp| {
            std::fs::write(tmp.join("a"), b"1").at(tmp)?;
            Err::<(), _>(std::io::Error::other("killed")).at(tmp)
        });
        assert!(failed.is_err() && !dir.exists());
        // The next write replaces the leftover temporary folder and lands whole.
        write_folder::<_, IoError>(&dir, |tmp| std::fs::write(tmp.join("b"), b"2").at(tmp)).unwrap();
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["out"]);
        assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"2");
    }
}
