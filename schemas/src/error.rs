//! Errors of the schemas crate: malformed actions and record/Arrow conversion failures.

/// What went wrong while parsing an action or converting records.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON tool call did not have the `{"name": …, "arguments": {…}}` shape.
    #[error("invalid JSON tool call: {reason}")]
    JsonCall { reason: String },

    /// Python-call code could not be tokenized or a call could not be delimited.
    #[error("invalid Python-call code at byte {offset}: {reason}")]
    PyCode { offset: usize, reason: String },

    /// An ErrorType name that is not one of the six of the taxonomy.
    #[error(
        "unknown ErrorType `{0}` (expected one of GroundingDrift, ToolMismatch, ArgInvalid, InfoInsufficient, CodeError, NonCommit)"
    )]
    UnknownErrorType(String),

    /// Records could not be converted to or from Arrow.
    #[error("Arrow conversion of `{table}` records failed: {source}")]
    Arrow {
        table: &'static str,
        #[source]
        source: serde_arrow::Error,
    },

    /// A batch read back from a table lacks one of the table's columns.
    #[error("column `{column}` is missing from the batch read back")]
    MissingColumn { column: String },

    /// An Arrow kernel (a cast while reading a batch back) failed.
    #[error("Arrow: {0}")]
    Compute(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
