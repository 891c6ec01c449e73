//! The GTA benchmark's `dataset.json`: an object keyed by query id, each `{tools, files,
//! dialogs, gt_answer}`. Dialogs are OpenAI-style: assistant turns with `tool_calls` (and a
//! `thought`), `tool` turns with `content: {type, content}`, and a final assistant answer.

use regrpo_schemas::action::Action;
use regrpo_schemas::{ActionRecord, FileRef, Step};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::common::observation;
use super::{Content, Converted, FormatReader, RawRecord};
use crate::jsonscan::Layout;

#[derive(Debug, Deserialize)]
struct GtaTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    inputs: Vec<GtaInput>,
}

#[derive(Debug, Deserialize)]
struct GtaInput {
    name: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    default: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GtaFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    path: String,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GtaQuery {
    #[serde(default)]
    tools: Vec<GtaTool>,
    #[serde(default)]
    files: Vec<GtaFile>,
    dialogs: Vec<Value>,
    #[serde(default)]
    gt_answer: Value,
}

fn spec_of(t: &GtaTool) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for i in &t.inputs {
        let mut p = Map::new();
        let ty = match i.kind.as_deref() {
            Some("number" | "float") => Some("number"),
            Some("int" | "integer") => Some("integer"),
            Some("bool" | "boolean") => Some("boolean"),
            Some("list" | "array") => Some("array"),
            Some(_) => Some("string"), // text, image, audio, file: paths and text are strings
            None => None,
        };
        if let Some(ty) = ty {
            p.insert("type".into(), ty.into());
        }
        if let Some(d) = &i.description {
            p.insert("description".into(), d.clone().into());
        }
        if let Some(d) = &i.default
            && !d.is_null()
        {
            p.insert("default".into(), d.clone());
        }
        if !i.optional {
            required.push(Value::String(i.name.clone()));
        }
        props.insert(i.name.clone(), Value::Object(p));
    }
    json!({
        "type": "function",
        "function": {
            "name": t.name,
            "description": t.description.clone().unwrap_or_default(),
            "parameters": {"type": "object", "properties": props, "required": required},
        }
    })
}

fn tool_content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => content.to_string(),
        },
        other => other.to_string(),
    }
}

pub(crate) struct GtaReader;

impl FormatReader for GtaReader {
    fn layout(&self) -> Layout {
        Layout::Object
    }

    fn convert(&mut self, rec: &RawRecord<'_>) -> Result<Converted, String> {
        let q: GtaQuery = rec.parse()?;
        let id = rec.key.unwrap_or_default().to_string();
        let mut task = None;
        let mut steps: Vec<Step> = Vec::new();
        let mut final_answer = None;
        for (n, d) in q.dialogs.iter().enumerate() {
            let role =
                d.get("role").and_then(Value::as_str).ok_or_else(|| format!("field `dialogs[{n}].role`: missing"))?;
            match role {
                "user" if task.is_none() => task = Some(tool_content_text(d.get("content").unwrap_or(&Value::Null))),
                "assistant" => match d.get("tool_calls").and_then(Value::as_array) {
                    Some(calls) if !calls.is_empty() => {
                        let action = Action::from_json_value(&Value::Array(calls.clone()))
                            .map_err(|e| format!("field `dialogs[{n}].tool_calls`: {e}"))?;
                        let thought = d.get("thought").and_then(Value::as_str).map(str::to_string);
                        steps.push(Step {
                            index: steps.len() as i32,
                            thought,
                            action: Some(ActionRecord::from(&action)),
                            observation: None,
                        });
                    }
                    _ => final_answer = d.get("content").and_then(Value::as_str).map(str::to_string),
                },
                "tool" => {
                    let text = tool_content_text(d.get("content").unwrap_or(&Value::Null));
                    let step = steps
                        .last_mut()
                        .ok_or_else(|| format!("field `dialogs[{n}]`: a tool result before any tool call"))?;
                    step.observation = Some(observation(false, text));
                }
                _ => {}
            }
        }
        let task = task.ok_or("field `dialogs`: no user turn with the query")?;
        let files = q
            .files
            .iter()
            .map(|f| FileRef {
                name: f.path.rsplit('/').next().unwrap_or(&f.path).to_string(),
                path: f.url.clone().filter(|_| f.path.is_empty()).unwrap_or_else(|| f.path.clone()),
                sha256: None,
            })
            .collect();
        let kinds: Vec<Value> = q.files.iter().map(|f| f.kind.clone().map_or(Value::Null, Value::String)).collect();
        let t = rec.trajectory(
            "gta",
            id,
            Content {
                task,
                system_prompt: None,
                files,
                tool_specs: Value::Array(q.tools.iter().map(spec_of).collect()).to_string(),
                steps,
                final_answer,
                gt_answer: (!q.gt_answer.is_null()).then(|| q.gt_answer.to_string()),
                meta: Some(json!({"file_types": kinds}).to_string()),
            },
        );
        Ok(Converted { trajectories: vec![t], rots: vec![] })
    }
}
