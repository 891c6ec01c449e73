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

    /// No library query has this name.
    #[error("no query named `{name}` (regrpo query --list shows them: {})", known.join(", "))]
    UnknownQuery { name: String, known: Vec<String> },

    /// A parameter the query does not declare.
    #[error("query `{query}` has no parameter `{param}` (its parameters: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownParam { query: String, param: String, known: Vec<String> },

    /// A parameter without a default that was not given.
    #[error("query `{query}` needs --param {param}=<{ty}> ({help})")]
    MissingParam { query: String, param: String, ty: String, help: String },

    /// A parameter value of the wrong type.
    #[error("--param {param}={value}: query `{query}` expects {expected}")]
    BadParam { query: String, param: String, value: String, expected: String },

    /// Parquet output goes to a file.
    #[error("parquet output needs --out FILE")]
    ParquetNeedsFile,

    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}
