//! Decoding a policy: seeded sampling over shared prompts ([`sampling`]), the grammar of an
//! assistant turn that constrains it ([`grammar`]), and the prompt-and-decode of one turn at a
//! state that evaluation, rollouts and the agent loop share ([`turn`]).

pub mod grammar;
pub mod sampling;
pub mod turn;

pub use turn::{Generated, Turn, TurnDecoder, TurnGrammar};
