//! One module per command, each with its arguments type next to its handler.

pub mod cluster;
pub mod demo;
pub mod engine;
pub mod eval;
pub mod gc;
pub mod ingest;
pub mod init;
pub mod model;
pub mod optimize;
pub mod publish;
pub mod query;
pub mod serve;
pub mod snapshot;
pub mod sql;
pub mod toolworld;
pub mod train;
pub mod ui;
