//! `regrpo-trainer`: the policy and how it learns.
//!
//! A Qwen2 / Llama decoder in Burn ([`model`]) that loads and saves Hugging Face checkpoints
//! ([`hf`]), generic over the backend ([`backend`]: Flex on CPU by default, CUDA with `--features cuda`).
//! Depends on `regrpo-schemas`, `regrpo-queries` (the only way it reads data), `regrpo-engine`
//! (its executor runs rollouts and agent steps), `regrpo-formats` (curves as PNG) and burn.
//!
//! ```text
//!  snapshot ─SQL (queries::Session)─▶ chat samples of the snapshot's train split
//!        │                              │ tokenizer + template + context window
//!        │                              ▼
//!        │                       masked batches (background thread) ── SFT ──▶ policy
//!        │                                                                      │
//!        └─ failure / clean states ─▶ sample G completions ─▶ engine executor ─▶ rewards ─▶ ReGRPO
//!                                       (grammar-constrained)                   │
//!                                                          rollouts, policy near-misses, runs, metrics
//! ```

pub mod agent;
pub mod backend;
pub mod config;
pub mod data;
pub mod decoder;
pub mod error;
pub mod eval;
pub mod gguf;
pub mod grammar;
pub mod hf;
pub mod job;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod proj;
pub mod regrpo;
pub mod rl;
pub mod rollout;
pub mod runlog;
pub mod sampling;
pub mod sft;
pub mod stats;
pub mod stream;
pub mod tokenizer;
pub mod window;

pub use config::{Qwen2Config, RopeScaling};
pub use error::{Error, Result};
pub use model::{KvCache, Qwen2};
