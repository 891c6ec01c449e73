//! Model files on disk: Hugging Face folders ([`hf`]), PEFT adapter folders ([`peft`]) and
//! llama.cpp's GGUF files, converted into a Hugging Face folder ([`gguf`]); and the training
//! loops' own checkpoints, from which a killed run resumes ([`training`]).

pub mod gguf;
pub mod hf;
pub mod peft;
pub mod training;
