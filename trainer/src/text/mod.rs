//! Text into tokens: the tokenizer and chat template ([`tokenizer`]), and the context window that
//! lays a chat out into a prompt and a target ([`window`]).

pub mod tokenizer;
pub mod window;
