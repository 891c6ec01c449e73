//! OpenAI chat fine-tuning JSONL: `{messages: [...], tools?: [...]}` per line, assistant turns
//! with `tool_calls`, `role: "tool"` results, and a final assistant answer.
//!
//! ShareGPT-style lines read too (common in agent SFT data): `conversations` for `messages`,
//! `from` / `value` for `role` / `content`, the roles `human` and `gpt`, and `function_call` /
//! `observation` turns for a tool call (its value a JSON call) and its result.

use regrpo_schemas::action::Action;
use regrpo_schemas::{ActionRecord, Step};
use serde::Deserialize;
use serde_json::{Value, json};

use std::path::Path;

use super::common::observation;
use super::{Content, Converted, FormatReader, RawRecord};
use regrpo_schemas::IoContext;

use crate::error::Error;
use crate::jsonscan::Layout;

#[derive(Debug, Deserialize)]
struct ChatRecord {
    #[serde(default)]
    id: Option<Value>,
    #[serde(alias = "conversations")]
    messages: Vec<ChatMsg>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct ChatMsg {
    #[serde(alias = "from")]
    role: String,
    #[serde(default, alias = "value")]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

/// Text of a message content: a string, or the `text` parts of a list.
fn text_of(content: &Option<Value>) -> Option<String> {
    match content.as_ref()? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"))
        }
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Whether the file is one JSON document spread over lines rather than JSON Lines: its first
/// non-blank line opens an array or object that does not close on that line but does close
/// further on. Then one clear error beats one reject per line. A first line that is a whole
/// value (an array on one line), or that is no JSON at all (invalid UTF-8, a record cut short),
/// is one bad record: it becomes a reject and the lines after it are read.
fn spans_lines(path: &Path) -> crate::error::Result<bool> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    const SNIFF: u64 = 1 << 20;
    let file = std::fs::File::open(path).at(path)?;
    let mut reader = std::io::BufReader::new(file);
    let (mut line, mut start) = (Vec::new(), 0u64);
    loop {
        line.clear();
        let n = (&mut reader).take(SNIFF).read_until(b'\n', &mut line).at(path)?;
        if n == 0 {
            return Ok(false);
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        start += n as u64;
    }
    if line.len() as u64 == SNIFF && !line.ends_with(b"\n") {
        return Ok(false); // A very long first line: a record, not the head of a document.
    }
    const BOM: &[u8] = "\u{feff}".as_bytes();
    if line.starts_with(BOM) {
        start += BOM.len() as u64;
    }
    let t = line.strip_prefix(BOM).unwrap_or(&line).trim_ascii();
    if !t.starts_with(b"[") && !t.starts_with(b"{") {
        return Ok(false);
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(t) {
        Err(e) if e.is_eof() => {}
        _ => return Ok(false),
    }
    reader.seek(SeekFrom::Start(start)).at(path)?;
    let mut values = serde_json::Deserializer::from_reader(reader).into_iter::<serde::de::IgnoredAny>();
    Ok(matches!(values.next(), Some(Ok(_))))
}

pub(crate) struct OpenaiReader;

impl FormatReader for OpenaiReader {
    fn layout(&self) -> Layout {
        Layout::Lines
    }

    fn open_file(&mut self, path: &Path) -> crate::error::Result<()> {
        if spans_lines(path)? {
            return Err(Error::WrongLayout {
                path: path.to_path_buf(),
                reason: "this is a JSON document, not JSON Lines (one chat object per line); convert it with \
                         `jq -c '.[]' FILE > FILE.jsonl` (an array) or `jq -c . FILE` (one object)"
                    .into(),
            });
        }
        Ok(())
    }

    fn convert(&mut self, rec: &RawRecord<'_>) -> Result<Converted, String> {
        rec.expect_object("a chat object `{\"messages\": [...]}`")?;
        let r: ChatRecord = rec.parse()?;
        let mut system = None;
        let mut task: Option<String> = None;
        let mut steps: Vec<Step> = Vec::new();
        let mut final_answer = None;
        let mut extra_user_turns = 0;
        for (n, m) in r.messages.iter().enumerate() {
            match m.role.as_str() {
                "system" | "developer" => system = text_of(&m.content),
                // ShareGPT's tool call: the value is a JSON call `{"name": …, "arguments": …}`.
                "function_call" => {
                    let text = text_of(&m.content).unwrap_or_default();
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|e| format!("field `messages[{n}].value`: a function_call is not JSON: {e}"))?;
                    let action =
                        Action::from_json_value(&value).map_err(|e| format!("field `messages[{n}].value`: {e}"))?;
                    steps.push(Step {
                        index: steps.len() as i32,
                        thought: None,
                        action: Some(ActionRecord::from(&action)),
                        observation: None,
                    });
                }
                "user" | "human" => {
                    if task.is_none() {
                        task = Some(text_of(&m.content).unwrap_or_default());
                    } else {
                        extra_user_turns += 1;
                    }
                }
                "assistant" | "gpt" => match &m.tool_calls {
                    Some(calls) if !calls.is_empty() => {
                        let action = Action::from_json_value(&Value::Array(calls.clone()))
                            .map_err(|e| format!("field `messages[{n}].tool_calls`: {e}"))?;
                        steps.push(Step {
                            index: steps.len() as i32,
                            thought: text_of(&m.content).filter(|t| !t.trim().is_empty()),
                            action: Some(ActionRecord::from(&action)),
                            observation: None,
                        });
                    }
                    _ => final_answer = text_of(&m.content),
                },
                "tool" | "function" | "observation" => {
                    let text = text_of(&m.content).unwrap_or_default();
                    let step = steps
                        .last_mut()
                        .ok_or_else(|| format!("field `messages[{n}]`: a tool result before any tool call"))?;
                    match &mut step.observation {
                        // Several parallel calls: their results in order.
                        Some(o) => {
                            o.text.push('\n');
                            o.text.push_str(&text);
                        }
                        None => step.observation = Some(observation(false, text)),
                    }
                }
                other => {
                    return Err(format!(
                        "field `messages[{n}].role`: unknown role `{other}` (known: system, developer, user, \
                         assistant, tool, function, and ShareGPT's human, gpt, function_call, observation)"
                    ));
                }
            }
        }
        let task = task.ok_or("field `messages`: no user message")?;
        let source_id = match &r.id {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => format!("line-{}", rec.line.unwrap_or(0)),
        };
        let t = rec.trajectory(
            "openai",
            source_id,
            Content {
                task,
                system_prompt: system,
                files: vec![],
                tool_specs: Value::Array(r.tools.unwrap_or_default()).to_string(),
                steps,
                final_answer,
                gt_answer: None,
                meta: (extra_user_turns > 0).then(|| json!({"extra_user_turns": extra_user_turns}).to_string()),
            },
        );
        Ok(Converted { trajectories: vec![t], rots: vec![] })
    }
}
