//! `regrpo-trainer`: the policy and how it learns.
//!
//! A Qwen2 / Llama decoder in Burn ([`model`]) that loads and saves Hugging Face checkpoints
//! ([`hf`]), generic over the backend ([`backend`]: Flex on CPU by default, CUDA with `--features cuda`).
//! Depends on `regrpo-schemas`, `regrpo-queries` (the only way it reads data), `regrpo-engine`
//! (to execute rollouts) and burn.
//!
//! ```text
//!  snapshot ─SQL (queries::Session)─▶ chat samples ─tokenizer + template─▶ masked batches
//!                                                                           │ background thread
//!                                                                           ▼
//!                                         Qwen2 (Burn) ── SFT ──▶ checkpoints, runs, metrics
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
pub mod regrpo;
pub mod rl;
pub mod rollout;
pub mod runlog;
pub mod sampling;
pub mod sft;
pub mod stats;
pub mod tokenizer;
pub mod window;

pub use config::{Qwen2Config, RopeScaling};
pub use error::{Error, Result};
pub use model::{KvCache, Qwen2};
