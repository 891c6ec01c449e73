//! `regrpo-datasets`: the store — a dataset repository of versioned Delta tables.
//!
//! A repository is a folder of Delta tables (one per record kind of `regrpo-schemas`) with
//! named, immutable snapshots. This crate creates and opens repositories ([`repo`]), appends
//! idempotently by content id (one append, one Delta commit), lays the Parquet files out for
//! the queries curators run (`optimize`), and takes, verifies and diffs snapshots and collects
//! garbage ([`snapshot`]). It stores and nothing else: the formats data arrives in and leaves
//! in live in `regrpo-formats`, above it. It depends on `regrpo-schemas` and deltalake.
//!
//! ```text
//!  records ──append (content ids)──▶ tables/<table> (Delta: Parquet + _delta_log)
//!                                        │ snapshot create
//!                                        ▼
//!                    snapshots/<name>.json {table → version, files + sha256, split}
//! ```

pub mod error;
pub mod repo;
pub mod reviews;
pub mod snapshot;
pub mod store;

pub use error::{Error, Result};
pub use repo::{AppTransaction, Appended, Appender, Repository};
pub use reviews::Verdicts;
pub use snapshot::Snapshot;
pub use store::Location;
