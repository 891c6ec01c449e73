//! `regrpo-trainer`: the policy and how it learns.
//!
//! A decoder of the Qwen2 / Llama / Qwen3 family in Burn ([`CausalLm`]) that loads and saves
//! Hugging Face checkpoints, trained by SFT and then ReGRPO, generic over the backend (Flex on
//! CPU by default, CUDA with `--features cuda`). Depends on `regrpo-schemas`, `regrpo-queries`
//! (the only way it reads data), `regrpo-engine` (its executor runs rollouts and agent steps),
//! `regrpo-formats` (curves as PNG) and burn.
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
//!
//! The rooms, lowest first (a room uses only those above it in this list, [`error`] and
//! [`json`]):
//!
//! | room | holds |
//! | --- | --- |
//! | [`model`] | the decoder ([`CausalLm`]), its config, projections and LoRA adapters, the backend choice |
//! | [`checkpoint`] | Hugging Face folders, PEFT adapter folders, GGUF import |
//! | [`text`] | the tokenizer and chat template, the context window |
//! | [`data`] | snapshot rows → chat samples → token batches, in memory or streamed |
//! | [`decode`] | sampling, the action grammar, prompting and decoding a turn at a state |
//! | [`sft`] | the supervised loop: loss, clipping, checkpoints, exact resume |
//! | [`regrpo`] | the objective, rollouts executed by the engine, the ReGRPO loop |
//! | [`eval`] | held-out evaluation, the agent loop, published scorers, paired statistics |
//! | [`jobs`] | whole jobs the CLI and the demo run, and what a run leaves behind |

pub mod checkpoint;
pub mod data;
pub mod decode;
pub mod error;
pub mod eval;
pub mod jobs;
pub mod json;
pub mod model;
pub mod regrpo;
pub mod sft;
pub mod text;

pub use error::{Error, Result};
pub use model::{CausalLm, CausalLmConfig, KvCache, RopeScaling};
