//! Integration tests of the trainer: parity with transformers, checkpoints, tokenizer, SFT.

mod decoding;
mod formulas;
mod gguf;
mod lora;
mod parity;
mod streaming;
mod training;

/// A split that puts every trajectory in `train`: these tests train on a handful of rows.
pub fn every_row_trains() -> regrpo_schemas::SplitSpec {
    regrpo_schemas::SplitSpec::new([1.0, 0.0, 0.0], 0).unwrap()
}
