//! Berkeley Function Calling Leaderboard records (JSON Lines): `{id, question: [[{role,
//! content}]], function: [specs]}`, with a side file of answers `{id, ground_truth: [{name:
//! {arg: [accepted values…]}}]}`. Each record becomes a one-step trajectory whose action uses
//! the first accepted value of every argument (`""` first means "omitted"); the accepted-value
//! lists are kept as `gt_answer` and the specs, mapped to JSON Schema, as `tool_specs`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use regrpo_schemas::action::{Action, Arg, Call, Surface};
use regrpo_schemas::{ActionRecord, Step};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Content, Converted, FormatReader, RawRecord};
use regrpo_schemas::IoContext;

use crate::error::{Error, Result};
use crate::jsonscan::Layout;

#[derive(Debug, Deserialize)]
struct Msg {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct Question {
    id: String,
    question: Vec<Vec<Msg>>,
    function: Vec<Value>,
}

pub(crate) struct BfclReader {
    explicit: Option<PathBuf>,
    answers: HashMap<String, Value>,
    answers_path: PathBuf,
}

impl BfclReader {
    pub fn new(explicit: Option<PathBuf>) -> Self {
        BfclReader { explicit, answers: HashMap::new(), answers_path: PathBuf::new() }
    }
}

/// Where the answers of a questions file are: beside it as `<stem>.answers.json`, or in a
/// `possible_answer/` folder beside it under the same name (the BFCL repository layout).
fn find_answers(questions: &Path) -> Vec<PathBuf> {
    let dir = questions.parent().unwrap_or(Path::new("."));
    let stem = questions.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = questions.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    vec![dir.join(format!("{stem}.answers.json")), dir.join("possible_answer").join(name)]
}

/// BFCL's type names mapped to JSON Schema, recursively.
pub(crate) fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                if k == "type" {
                    match val.as_str() {
                        Some("dict") => out.insert(k.clone(), "object".into()),
                        Some("float") => out.insert(k.clone(), "number".into()),
                        Some("tuple") => out.insert(k.clone(), "array".into()),
                        Some("any") => None,
                        _ => out.insert(k.clone(), val.clone()),
                    };
                } else if k == "properties" {
                    let props =
                        val.as_object().map(|p| p.iter().map(|(n, s)| (n.clone(), to_json_schema(s))).collect());
                    out.insert(k.clone(), props.map(Value::Object).unwrap_or_else(|| val.clone()));
                } else if k == "items" {
                    out.insert(k.clone(), to_json_schema(val));
                } else {
                    out.insert(k.clone(), val.clone());
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The first accepted value, recursing into dicts whose fields are lists of accepted values.
/// `None` means the argument may be omitted and its first choice is to omit it.
fn first_accepted(alternatives: &Value) -> Option<Value> {
    let first = match alternatives {
        Value::Array(alts) => alts.first()?,
        other => other,
    };
    if first.as_str() == Some("") {
        return None;
    }
    Some(normalize(first))
}

fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.values().all(Value::is_array) => {
            Value::Object(m.iter().filter_map(|(k, alts)| first_accepted(alts).map(|x| (k.clone(), x))).collect())
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            Value::Array(items.iter().map(normalize).collect())
        }
        other => other.clone(),
    }
}

impl FormatReader for BfclReader {
    fn layout(&self) -> Layout {
        Layout::Lines
    }

    fn open_file(&mut self, path: &Path) -> Result<()> {
        let candidates = match &self.explicit {
            Some(p) => vec![p.clone()],
            None => find_answers(path),
        };
        let Some(answers) = candidates.iter().find(|p| p.is_file()) else {
            return Err(Error::NoAnswers { questions: path.to_path_buf(), looked_for: candidates });
        };
        self.answers.clear();
        self.answers_path = answers.clone();
        let f = std::fs::File::open(answers).at(answers)?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.at(answers)?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| Error::BadAnswers {
                path: answers.clone(),
                line: n + 1,
                reason: e.to_string(),
            })?;
            let (Some(id), Some(gt)) = (v.get("id").and_then(Value::as_str), v.get("ground_truth")) else {
                return Err(Error::BadAnswers {
                    path: answers.clone(),
                    line: n + 1,
                    reason: "expected {\"id\": …, \"ground_truth\": […]}".into(),
                });
            };
            self.answers.insert(id.to_string(), gt.clone());
        }
        // The answers of another questions file match no question: one clear error, not one
        // reject per record. (The first questions decide; a partial answers file is fine.)
        let f = std::fs::File::open(path).at(path)?;
        let ids: Vec<String> = std::io::BufReader::new(f)
            .lines()
            .map_while(std::result::Result::ok)
            .filter(|l| !l.trim().is_empty())
            .take(20)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok()?.get("id")?.as_str().map(str::to_string))
            .collect();
        if !ids.is_empty() && !ids.iter().any(|id| self.answers.contains_key(id)) {
            return Err(Error::AnswersMismatch {
                questions: path.to_path_buf(),
                answers: answers.clone(),
                first_ids: ids.into_iter().take(3).collect(),
            });
        }
        Ok(())
    }

    fn convert(&mut self, rec: &RawRecord<'_>) -> std::result::Result<Converted, String> {
        let q: Question = rec.parse()?;
        let gt = self
            .answers
            .get(&q.id)
            .ok_or_else(|| format!("no ground-truth answer for `{}` in {}", q.id, self.answers_path.display()))?;
        let calls = gt
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("answer of `{}` is not a list of calls", q.id))?;
        let mut built = Vec::new();
        for c in calls {
            let (name, args) = c
                .as_object()
                .and_then(|m| m.iter().next())
                .ok_or_else(|| format!("answer of `{}`: expected {{name: {{arg: [values]}}}}", q.id))?;
            let args = args
                .as_object()
                .ok_or_else(|| format!("answer of `{}`: arguments of `{name}` are not an object", q.id))?;
            let args =
                args.iter().filter_map(|(k, alts)| first_accepted(alts).map(|v| Arg::keyword(k.clone(), v))).collect();
            built.push(Call::new(name.clone(), args));
        }
        let mut action = Action::single(Surface::Json, built.remove(0));
        action.calls.extend(built);
        let mut system = None;
        let mut task = Vec::new();
        for m in q.question.iter().flatten() {
            match m.role.as_str() {
                "system" => system = Some(m.content.clone()),
                _ => task.push(m.content.clone()),
            }
        }
        let specs: Vec<Value> = q
            .function
            .iter()
            .map(|f| {
                json!({
                    "type": "function",
                    "function": {
                        "name": f.get("name").cloned().unwrap_or(Value::Null),
                        "description": f.get("description").cloned().unwrap_or(Value::Null),
                        "parameters": to_json_schema(f.get("parameters").unwrap_or(&json!({"type": "object"}))),
                    }
                })
            })
            .collect();
        let t = rec.trajectory(
            "bfcl",
            q.id,
            Content {
                task: task.join("\n"),
                system_prompt: system,
                files: vec![],
                tool_specs: Value::Array(specs).to_string(),
                steps: vec![Step {
                    index: 0,
                    thought: None,
                    action: Some(ActionRecord::from(&action)),
                    observation: None,
                }],
                final_answer: None,
                gt_answer: Some(gt.to_string()),
                meta: None,
            },
        );
        Ok(Converted { trajectories: vec![t], rots: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_accepted_values_recurse_and_skip_omitted() {
        assert_eq!(first_accepted(&json!(["units", ""])), Some(json!("units")));
        assert_eq!(first_accepted(&json!(["", 0])), None);
        assert_eq!(
            first_accepted(&json!([{"department": ["Science"], "school": ["A", "B"], "x": [""]}])),
            Some(json!({"department": "Science", "school": "A"}))
        );
        assert_eq!(
            first_accepted(&json!([[{"field": ["age"]}, {"field": ["job"]}]])),
            Some(json!([{"field": "age"}, {"field": "job"}]))
        );
    }

    #[test]
    fn bfcl_types_map_to_json_schema() {
        let s = to_json_schema(
            &json!({"type": "dict", "properties": {"a": {"type": "float"}, "b": {"type": "tuple", "items": {"type": "dict"}}, "c": {"type": "any"}}}),
        );
        assert_eq!(
            s,
            json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "array", "items": {"type": "object"}}, "c": {}}})
        );
    }
}
