//! `final_answer`: commits the answer and ends the task.

use std::sync::Arc;

use async_trait::async_trait;
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};

use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec};

pub struct FinalAnswer {
    spec: ToolSpec,
}

impl FinalAnswer {
    pub fn tool() -> Arc<dyn Tool> {
        Arc::new(FinalAnswer {
            spec: ToolSpec {
                name: "final_answer".into(),
                description: "Give the final answer and finish the task.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"answer": {"type": ["string", "number", "integer", "boolean"], "description": "The answer."}},
                    "required": ["answer"]
                }),
                category: "answer".into(),
                feasible: vec![ErrorType::NonCommit],
            },
        })
    }
}

/// The answer text of a `final_answer` call's arguments.
pub fn answer_text(args: &Map<String, Value>) -> String {
    match args.get("answer") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

#[async_trait]
impl Tool for FinalAnswer {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn version(&self) -> String {
        "builtin-final_answer/1".into()
    }
    async fn call(&self, args: &Map<String, Value>, _ctx: &CallContext) -> ToolOutput {
        ToolOutput::ok(format!("Final answer: {}", answer_text(args)))
    }
}
