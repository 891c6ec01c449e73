//! Errors of the trainer.

use std::path::PathBuf;

/// What went wrong loading a model, reading data or training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] regrpo_schemas::IoError),

    #[error("{path}: {reason}")]
    BadModel { path: PathBuf, reason: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error(transparent)]
    Query(#[from] regrpo_queries::Error),

    #[error(transparent)]
    Dataset(#[from] regrpo_datasets::Error),

    /// Writing a picture (training curves).
    #[error(transparent)]
    Format(#[from] regrpo_formats::Error),

    #[error(transparent)]
    Engine(#[from] regrpo_engine::Error),

    #[error(transparent)]
    Schema(#[from] regrpo_schemas::Error),

    #[error("no training data: {0}")]
    NoData(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    /// A job asked for CUDA from a build without it.
    #[error("this build has no CUDA backend: build with `--features cuda`")]
    NoCuda,

    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error("internal error (a bug in regrpo): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) use regrpo_schemas::IoContext;
