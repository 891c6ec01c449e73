//! `regrpo-queries`: SQL over a dataset repository.
//!
//! [`Session`] opens a DataFusion context with every table of a repository registered at a
//! pinned version (a snapshot, or the latest), read-only. Everything that reads data — the
//! CLI's `sql` and `query`, the Flight SQL server, the trainer's data loader — goes through
//! it. Depends on `regrpo-schemas`, `regrpo-datasets`, datafusion and arrow.
//!
//! ```text
//!  Repository + snapshot ──Session::open──▶ SessionContext (tables @ versions, UDFs)
//!                                              │ sql (read-only)
//!                                              ▼
//!                                   RecordBatches → table | csv | json | parquet
//! ```

pub mod cluster;
pub mod error;
pub mod flight;
pub mod library;
pub mod output;
pub mod pinned;
pub mod run_count;
pub mod session;
pub mod text_index;
pub mod udf;

pub use datafusion::execution::SendableRecordBatchStream as BatchStream;
pub use error::{Error, Result};
pub use output::OutputFormat;
pub use session::{At, Session};
pub use text_index::TextIndex;
