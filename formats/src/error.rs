//! Errors of reading and writing external formats.

use std::path::PathBuf;

/// What went wrong reading an input file or writing a publication. A *record* that cannot be
/// read is not an error: it goes to the `rejects` table with its reason, and the run goes on.
/// These are the problems that stop a whole file or a whole run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] regrpo_schemas::IoError),

    /// The dataset repository (tables, snapshots).
    #[error(transparent)]
    Store(#[from] regrpo_datasets::Error),

    #[error(transparent)]
    Schema(#[from] regrpo_schemas::Error),

    /// An input path that is not a regular file.
    #[error("{path}: not a file")]
    NotAFile { path: PathBuf },

    /// A file whose layout is not the one its format reads (the message says how to convert it).
    #[error("{path}: {reason}")]
    WrongLayout { path: PathBuf, reason: String },

    /// A BFCL questions file whose answers file is nowhere to be found.
    #[error(
        "{questions}: no BFCL answers file found (looked for {}); pass --answers FILE",
        looked_for.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoAnswers { questions: PathBuf, looked_for: Vec<PathBuf> },

    /// An answers file that answers none of the questions' ids.
    #[error(
        "{questions}: the answers file {} has none of these questions' ids (the first are {}); is it the answers of another questions file?",
        answers.display(),
        first_ids.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
    )]
    AnswersMismatch { questions: PathBuf, answers: PathBuf, first_ids: Vec<String> },

    /// `publish` writes into a new or empty folder only.
    #[error("{path} is not empty; publish into a new folder")]
    OutputNotEmpty { path: PathBuf },

    /// A chart could not be drawn or encoded.
    #[error("{path}: drawing a chart: {reason}")]
    Plot { path: PathBuf, reason: String },

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),

    /// A bug in regrpo, not a problem with the input.
    #[error("internal error (a bug in regrpo): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
