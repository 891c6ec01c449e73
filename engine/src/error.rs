//! Errors of the engine.

/// What went wrong configuring or running the engine. A failing *tool call* is not an error:
/// it is an observation (see `tool::ToolOutput`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataset(#[from] regrpo_datasets::Error),

    #[error(transparent)]
    Schema(#[from] regrpo_schemas::Error),

    #[error(transparent)]
    Io(#[from] regrpo_schemas::IoError),

    #[error("tool `{tool}`: {reason}")]
    ToolSetup { tool: String, reason: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("wasm: {0}")]
    Wasm(String),

    #[error("HTTP: {0}")]
    Http(String),

    #[error("internal error (a bug in regrpo): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) use regrpo_schemas::IoContext;
