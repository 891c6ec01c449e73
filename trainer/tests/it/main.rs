//! Integration tests of the trainer: parity with transformers, checkpoints, tokenizer, SFT.

mod decoding;
mod formulas;
mod gguf;
mod lora;
mod parity;
mod training;
