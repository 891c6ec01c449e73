//! MM-Traj (MAT) records: ShareGPT `conversations[{from, value}]` with Python-call code blocks,
//! `[OUTPUT OF STEP k] Observation:` turns and a final `final_answer(...)`. The tools offered
//! are read from the system prompt's `- name: description / Takes inputs: {…}` list.

use regrpo_schemas::pycode::literal_from_text;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::common::{answer_text, steps_from_chat};
use super::regrpo::{ChatMessage, split_chat};
use super::{Content, Converted, FormatReader, RawRecord};
use crate::jsonscan::Layout;

#[derive(Debug, Deserialize)]
struct MatRecord {
    id: String,
    #[serde(default)]
    image: Value,
    #[serde(default)]
    answer: Option<Value>,
    #[serde(default)]
    correct: Option<Value>,
    #[serde(default)]
    traj_verification: Option<Value>,
    conversations: Vec<ChatMessage>,
}

/// Maps a smolagents input type to JSON Schema.
fn json_type(t: &str) -> Option<&'static str> {
    Some(match t {
        "text" | "string" | "image" | "audio" => "string",
        "number" | "float" => "number",
        "integer" | "int" => "integer",
        "boolean" | "bool" => "boolean",
        "list" | "array" => "array",
        "dict" | "object" => "object",
        _ => return None,
    })
}

/// The tool list of a smolagents system prompt as OpenAI function specs.
pub(crate) fn tools_from_system_prompt(system: &str) -> Vec<Value> {
    let Some(start) = system.find("You only have access to those tools:") else { return vec![] };
    let mut specs = Vec::new();
    let mut lines = system[start..].lines().peekable();
    while let Some(line) = lines.next() {
        let Some(entry) = line.strip_prefix("- ") else { continue };
        let Some((name, desc)) = entry.split_once(':') else { continue };
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut description = desc.trim().to_string();
        let mut inputs = None;
        while let Some(next) = lines.peek() {
            if let Some(lit) = next.trim_start().strip_prefix("Takes inputs:") {
                inputs = literal_from_text(lit.trim());
                lines.next();
                break;
            }
            if next.starts_with("- ") || next.trim().is_empty() {
                break;
            }
            description.push('\n');
            description.push_str(next.trim());
            lines.next();
        }
        let mut properties = Map::new();
        let mut required = Vec::new();
        if let Some(Value::Object(inputs)) = inputs {
            for (arg, spec) in inputs {
                let mut p = Map::new();
                if let Some(t) = spec.get("type").and_then(Value::as_str).and_then(json_type) {
                    p.insert("type".into(), t.into());
                }
                let d = spec.get("description").and_then(Value::as_str).unwrap_or("");
                if !d.contains("[Optional]") {
                    required.push(Value::String(arg.clone()));
                }
                p.insert("description".into(), d.into());
                properties.insert(arg, Value::Object(p));
            }
        }
        specs.push(json!({
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required},
            }
        }));
    }
    specs
}

pub(crate) struct MatReader;

impl FormatReader for MatReader {
    fn layout(&self) -> Layout {
        Layout::Array
    }

    fn convert(&mut self, rec: &RawRecord<'_>) -> Result<Converted, String> {
        let r: MatRecord = rec.parse()?;
        let (system, task, turns) = split_chat(&r.conversations)?;
        let chat = steps_from_chat(turns.iter().map(|m| (m.role.as_str(), m.content.as_str())))?;
        let tools = system.as_deref().map(tools_from_system_prompt).unwrap_or_default();
        let mut meta = Map::new();
        for (k, v) in [
            ("image", &r.image),
            ("correct", &r.correct.clone().unwrap_or(Value::Null)),
            ("traj_verification", &r.traj_verification.clone().unwrap_or(Value::Null)),
        ] {
            if !v.is_null() {
                meta.insert(k.into(), v.clone());
            }
        }
        let t = rec.trajectory(
            "mat",
            r.id,
            Content {
                task,
                system_prompt: system,
                files: vec![],
                tool_specs: Value::Array(tools).to_string(),
                steps: chat.steps,
                final_answer: chat.final_answer,
                gt_answer: r.answer.as_ref().map(|a| Value::String(answer_text(a)).to_string()),
                meta: Some(Value::Object(meta).to_string()),
            },
        );
        Ok(Converted { trajectories: vec![t], rots: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompt_tools_become_function_specs() {
        let sys = "intro\nYou only have access to those tools:\n\n\n- visualizer: A tool that answers.\n    Takes inputs: {'question': {'description': 'the question', 'type': 'text'}, 'image_path': {'description': '[Optional]: path', 'type': 'text'}}\n\n- final_answer: Provides a final answer.\n    Takes inputs: {'answer': {'type': 'any', 'description': 'the answer'}}\n\nNow Begin!";
        let specs = tools_from_system_prompt(sys);
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0]["function"]["name"], "visualizer");
        assert_eq!(specs[0]["function"]["parameters"]["required"], json!(["question"]));
        assert_eq!(specs[1]["function"]["parameters"]["properties"]["answer"].get("type"), None);
    }
}
