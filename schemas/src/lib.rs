//! `regrpo-schemas`: the vocabulary every other crate speaks.
//!
//! It owns the typed records of a dataset repository ([`records`]), their Arrow schemas and the
//! conversion records ⇄ `RecordBatch` ([`table`]), the [`ErrorType`] taxonomy, actions in both
//! surface forms ([`action`], [`pycode`]), the ReAct chat layout ([`react`]) and content ids
//! ([`id`]). It depends on arrow and serde only, so everything above it can share these types.
//!
//! ```text
//!  text (JSON call | Python code) ──parse──▶ Action ──record──▶ ActionRecord ─┐
//!                                                                           ├─▶ RecordBatch ⇄ Delta
//!  Trajectory / NearMiss / Rot / Reject / Run / Metric / Rollout ───────────┘
//! ```

pub mod action;
pub mod equivalence;
pub mod error;
pub mod error_type;
pub mod evidence;
pub mod id;
pub mod io;
pub mod mixture;
pub mod pycode;
pub mod react;
pub mod records;
pub mod split;
pub mod status;
pub mod table;
pub mod verdict;

#[cfg(test)]
mod fuzz_tests;

pub use action::{Action, Arg, ArgValue, Call, Surface};
pub use equivalence::ActionMatch;
pub use error::{Error, Result};
pub use error_type::ErrorType;
pub use io::{IoContext, IoError, pause_point, write_folder};
pub use records::*;
pub use split::{Split, SplitSpec};
pub use status::ExecStatus;
pub use table::{Record, from_batch, to_batch};
pub use verdict::Verdict;
