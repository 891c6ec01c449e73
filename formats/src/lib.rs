//! `regrpo-formats`: the formats regrpo reads and writes outside its own store.
//!
//! It reads agent data into a repository ([`ingest`], streaming with [`jsonscan`]), publishes a
//! snapshot as a dataset others train on ([`publish`]: Hugging Face Parquet with a card and
//! Croissant, the ReGRPO reference JSON, OpenAI chat JSONL) and draws the pictures people look
//! at ([`plot`]: training curves, ErrorType histograms). It sits above the store
//! (`regrpo-datasets`), which knows nothing of polars, plotters or image.
//!
//! ```text
//!  MAT / ReGRPO / BFCL / GTA / OpenAI files ──ingest──▶ trajectories, rot, rejects (the store)
//!                                                        │ snapshot
//!                                                        ▼
//!                      publish ──▶ hf (Parquet + card + Croissant) | regrpo-json | openai-jsonl
//! ```

pub mod error;
pub mod ingest;
pub mod jsonscan;
pub mod plot;
pub mod publish;

pub use error::{Error, Result};
