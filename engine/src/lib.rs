//! `regrpo-engine`: the Structured Reflective Data Engine.
//!
//! It takes successful trajectories, builds near-miss actions, **executes** them with a real
//! tool suite, judges and classifies the failures, and writes grounded Reflection-of-Thought
//! rows. Depends on `regrpo-schemas`, `regrpo-datasets`, tokio, wasmtime and datafusion (for
//! the `sql_query` tool).
//!
//! ```text
//!  trajectories ─▶ planner ─▶ perturb ─▶ executor (tool suite) ─▶ judge ─▶ reflect ─▶ gates ─▶ verify
//!                 (step, type)  (operator)   builtin | wasm | remote   (failure?   (template |  (quote,   (re-run the
//!                                                                      which type)  teacher)     leak…)    correction)
//!                                                                                      ▼
//!                                                         near_misses + rot (Delta, one commit per batch)
//! ```
//!
//! [`toolworld`] generates tasks the builtin tools solve, so all of this runs offline.

pub mod derivable;
pub mod error;
pub mod executor;
pub mod gates;
pub mod judge;
pub mod perturb;
pub mod planner;
pub mod reflect;
pub mod run;
pub mod tool;
pub mod toolworld;
pub mod verify;

pub use error::{Error, Result};
pub use planner::Mix;
pub use run::{EngineConfig, EngineProgress, EngineReport, Shard};
pub use tool::{CallContext, Tool, ToolOutput, ToolSpec, ToolSuite};
