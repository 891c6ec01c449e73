//! Errors of the dataset repository.

use std::path::PathBuf;

/// What went wrong in the repository. Input problems carry the path, table or snapshot they
/// concern; [`Error::Internal`] marks our own bugs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] regrpo_schemas::IoError),

    #[error("{path} is not a regrpo dataset repository (no regrpo.json): run `regrpo init {path}` first")]
    NotARepository { path: PathBuf },

    /// A repository written by a build whose layout this one does not read.
    #[error("{path}: repository format {found} is not supported (this build reads {supported})")]
    UnsupportedFormat { path: PathBuf, found: u32, supported: u32 },

    #[error("{path} already holds a dataset repository")]
    AlreadyExists { path: PathBuf },

    #[error("unknown table `{table}` (tables: {known})")]
    UnknownTable { table: String, known: String },

    #[error("Delta table `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    #[error("snapshot `{name}` does not exist")]
    NoSuchSnapshot { name: String },

    #[error("snapshot `{name}` already exists; snapshots are immutable, pick another name")]
    SnapshotExists { name: String },

    #[error("invalid snapshot name `{name}`: use letters, digits, `-`, `_` and `.`")]
    BadSnapshotName { name: String },

    #[error("snapshot file {path} is unreadable: {reason}")]
    BadSnapshot { path: PathBuf, reason: String },

    /// The repository manifest (`regrpo.json`) cannot be read as one.
    #[error("{path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },

    /// A location the CLI cannot read as a folder or an `s3://` URL, or a store it cannot open.
    #[error("repository location {location}: {reason}")]
    BadLocation { location: String, reason: String },

    /// An object store (S3, or the local folder through the same interface) failed.
    #[error("{key}: {source}")]
    Store {
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error(transparent)]
    Schema(#[from] regrpo_schemas::Error),

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("DataFusion: {0}")]
    DataFusion(Box<deltalake::datafusion::error::DataFusionError>),

    /// A bug in regrpo, not a problem with the input.
    #[error("internal error (a bug in regrpo): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) use regrpo_schemas::IoContext;

impl Error {
    /// Whether a commit lost a race with another append to its table (both carried the
    /// appenders' application transaction): the loser re-reads and commits again.
    pub(crate) fn is_concurrent_append(&self) -> bool {
        use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
        matches!(
            self,
            Error::Delta { source, .. } if matches!(
                source.as_ref(),
                deltalake::DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction)
                }
            )
        )
    }
}

/// Attaches a table name to a Delta error.
pub(crate) trait DeltaContext<T> {
    fn table(self, table: &str) -> Result<T>;
}

impl<T> DeltaContext<T> for std::result::Result<T, deltalake::DeltaTableError> {
    fn table(self, table: &str) -> Result<T> {
        self.map_err(|source| Error::Delta { table: table.to_string(), source: Box::new(source) })
    }
}

/// Attaches the key (path below the repository) an object store call was about.
pub(crate) trait StoreContext<T> {
    fn at_key(self, key: &str) -> Result<T>;
}

impl<T> StoreContext<T> for std::result::Result<T, object_store::Error> {
    fn at_key(self, key: &str) -> Result<T> {
        self.map_err(|source| Error::Store { key: key.to_string(), source: Box::new(source) })
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for Error {
    fn from(e: deltalake::datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}
