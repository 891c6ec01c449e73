//! `openai-jsonl`: `{split}.jsonl`, one `{"messages": […]}` chat per line, with `"tools"` (the
//! declarations, in OpenAI's shape) when its trajectory declares any, where a chat template
//! renders them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use regrpo_schemas::IoContext;
use serde_json::{Value, json};

use super::Publication;
use crate::error::Result;

/// Writes one JSONL file per non-empty split.
pub(crate) fn write(out: &Path, p: &Publication<'_>) -> Result<Vec<PathBuf>> {
    let tools: HashMap<&str, Value> = p
        .trajectories
        .iter()
        .filter_map(|t| match serde_json::from_str::<Value>(&t.tool_specs) {
            Ok(Value::Array(a)) if !a.is_empty() => Some((t.trajectory_id.as_str(), openai_tools(a))),
            _ => None,
        })
        .collect();
    let mut files = Vec::new();
    for (split, examples) in p.non_empty() {
        let path = out.join(format!("{split}.jsonl"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).at(&path)?);
        for e in examples {
            let mut line = json!({"messages": e.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>()});
            if let Some(t) = tools.get(e.source_trajectory_id.as_str()) {
                line["tools"] = t.clone();
            }
            writeln!(w, "{line}").at(&path)?;
        }
        w.flush().at(&path)?;
        files.push(path);
    }
    Ok(files)
}

/// Tool declarations in OpenAI's `{"type": "function", "function": {…}}` shape, whichever of
/// it or the bare `{name, description, parameters}` a source used.
fn openai_tools(specs: Vec<Value>) -> Value {
    Value::Array(
        specs
            .into_iter()
            .map(|s| if s.get("function").is_some() { s } else { json!({"type": "function", "function": s}) })
            .collect(),
    )
}
