//! Errors of the query layer.

/// What went wrong opening a session or running a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataset(#[from] regrpo_datasets::Error),

    #[error("query refused: {reason} (regrpo serves data read-only: DDL, DML and COPY are refused)")]
    ReadOnly { reason: String },

    #[error("SQL: {0}")]
    DataFusion(Box<datafusion::error::DataFusionError>),

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}
