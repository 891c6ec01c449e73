//! Constrained decoding: the grammar of an assistant turn, built from the tool specs, so that
//! every sampled completion parses into an action the suite declares.
//!
//! ```text
//! turn       := [reflection] [thought] action <|im_end|>
//! reflection := REFLECTION_OPEN ERROR_TYPE EVIDENCE_OPEN LINE FIX_PLAN_OPEN LINE "\n"
//! thought    := THOUGHT_OPEN LINE THOUGHT_END
//! action     := action_open(py) TOOL "(" [arg {", " arg}] ")" ACTION_CLOSE                   (Python calls)
//!             | action_open(json) "{\"name\":\"" TOOL "\",\"arguments\":{" [jarg {"," jarg}] "}}" ACTION_CLOSE
//! arg        := PARAM "=" value            jarg := "\"" PARAM "\":" value
//! value      := by the parameter's JSON Schema: string (or one of its enum), integer, number,
//!               boolean, array (items, minItems, maxItems), object, or a union of these
//! ```
//!
//! The upper-case literals are the layout constants of [`regrpo_schemas::react`], the one place
//! the turn format is written. `ERROR_TYPE` is one of the six names; `TOOL` and `PARAM` come from
//! the specs; every required parameter appears before the call closes, none twice. The layout is exactly what
//! [`regrpo_schemas::react::format_assistant`] prints, so a policy trained on that text is
//! steered, never pushed off it. `LINE` is free text without a newline or a backtick.
//!
//! Decoding works on bytes: a [`Recognizer`] is a small copyable pushdown state; the allowed
//! tokens of a step are found by walking a byte trie of the vocabulary with it ([`TokenTrie`]),
//! pruning every branch the grammar refuses. A token is also refused when the shortest way to
//! finish the turn after it would not fit in the remaining token budget (every byte is a token
//! of a byte-level vocabulary, so a turn can always be closed byte by byte): every completion
//! ends inside its budget and parses.

use regrpo_engine::ToolSpec;
use regrpo_schemas::ErrorType;
use regrpo_schemas::action::Surface;
use regrpo_schemas::react::{
    ACTION_CLOSE, EVIDENCE_OPEN, FIX_PLAN_OPEN, REFLECTION_OPEN, THOUGHT_END, THOUGHT_OPEN, action_open,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod build;
mod recognize;
#[cfg(test)]
mod tests;
mod trie;

pub use build::Grammar;
use build::*;
pub use recognize::Recognizer;
use recognize::*;
pub use trie::{Accepted, Allowed, Masks, TokenTrie};
