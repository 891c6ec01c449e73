//! `regrpo-datasets`: the dataset repository.
//!
//! A repository is a folder of Delta tables (one per record kind of `regrpo-schemas`) with
//! named, immutable snapshots. This crate creates and opens repositories ([`repo`]), appends
//! idempotently by content id, takes, verifies and diffs snapshots and collects garbage
//! ([`snapshot`]), and ingests external agent data ([`ingest`]) with a streaming reader
//! ([`jsonscan`]). It depends on `regrpo-schemas`, deltalake and parquet.
//!
//! ```text
//!  MAT / ReGRPO / BFCL / GTA / OpenAI files ──ingest──▶ trajectories, rot, rejects (Delta)
//!                                                        │ snapshot create
//!                                                        ▼
//!                                    snapshots/<name>.json {table → version, files, sha256}
//! ```

pub mod error;
pub mod export;
pub mod ingest;
pub mod jsonscan;
pub mod plot;
pub mod publish;
pub mod repo;
pub mod snapshot;

pub use error::{Error, Result};
pub use repo::{Appended, Appender, Repository};
pub use snapshot::Snapshot;
