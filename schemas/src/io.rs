//! An I/O error that names the file it happened on, and the one helper that attaches the path.
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
