//! Berkeley Function Calling Leaderboard records (JSON Lines): `{id, question: [[{role,
//! content}]], function: [specs]}`, with a side file of answers `{id, ground_truth: [{name:
//! {arg: [accepted values…]}}]}`. Each record becomes a one-step trajectory whose action takes,
//! for every argument, the first accepted value that the function's declared schema allows
//! (`""` means "omitted", allowed for an optional argument; an argument the function does not
//! declare can only be omitted); the accepted-value lists are kept as `gt_answer` and the
//! specs, mapped to JSON Schema, as `tool_specs`.

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
    /// The lines of the answers file that could not be read, with why.
    unreadable: Vec<String>,
}

impl BfclReader {
    pub fn new(explicit: Option<PathBuf>) -> Self {
        BfclReader { explicit, answers: HashMap::new(), answers_path: PathBuf::new(), unreadable: Vec::new() }
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

/// The arguments of one answer call: for each, the first of its accepted values that the
/// declared `parameters` (JSON Schema) allow. BFCL lists an optional argument's accepted
/// values with `""` ("omit it") among them, in any order, and some answers name an argument
/// the function does not declare; taking the first value blindly gave calls that their own
/// schema refuses. An argument with no allowed value keeps its first one (the engine's
/// `corrected_valid` gate then keeps the call out of RoT rows, with the reason).
fn choose_args(args: &Map<String, Value>, parameters: Option<&Value>) -> Vec<Arg> {
    let props = parameters.and_then(|p| p.get("properties")).and_then(Value::as_object);
    let required: Vec<&str> = parameters
        .and_then(|p| p.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (k, alts) in args {
        let options: &[Value] = match alts {
            Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        let allowed = |v: &Value| match props {
            None => true,
            Some(p) => p.get(k).is_some_and(|schema| {
                jsonschema::validator_for(schema).map_or(true, |validator| validator.is_valid(v))
            }),
        };
        let chosen = options.iter().find_map(|o| {
            if o.as_str() == Some("") {
                // Omitting is allowed unless the schema requires the argument.
                (!required.contains(&k.as_str())).then_some(None)
            } else {
                let v = normalize(o);
                allowed(&v).then_some(Some(v))
            }
        });
        let value = match chosen {
            Some(v) => v,
            None => first_accepted(alts),
        };
        out.extend(value.map(|v| Arg::keyword(k.clone(), v)));
    }
    out
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
        // A bad answers line costs only its own question (rejected below, naming the line),
        // never the file.
        self.unreadable.clear();
        let mut lines = std::io::BufReader::new(std::fs::File::open(answers).at(answers)?);
        let mut line = Vec::new();
        for n in 1.. {
            line.clear();
            if lines.read_until(b'\n', &mut line).at(answers)? == 0 {
                break;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.unreadable.push(format!("line {n}: {e}"));
                    continue;
                }
            };
            match (v.get("id").and_then(Value::as_str), v.get("ground_truth")) {
                (Some(id), Some(gt)) => {
                    self.answers.insert(id.to_string(), gt.clone());
                }
                _ => self.unreadable.push(format!("line {n}: expected {{\"id\": …, \"ground_truth\": […]}}")),
            }
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
        rec.expect_object("a question object `{\"id\": …, \"question\": …, \"function\": …}`")?;
        let q: Question = rec.parse()?;
        let gt = self.answers.get(&q.id).ok_or_else(|| {
            let mut reason = format!("no ground-truth answer for `{}` in {}", q.id, self.answers_path.display());
            if let Some(first) = self.unreadable.first() {
                let n = self.unreadable.len();
                reason.push_str(&format!(" ({n} of its lines could not be read, the first at {first})"));
            }
            reason
        })?;
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
            let parameters = q
                .function
                .iter()
                .find(|f| f.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|f| f.get("parameters"))
                .map(to_json_schema);
            built.push(Call::new(name.clone(), choose_args(args, parameters.as_ref())));
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
    fn chosen_arguments_are_ones_the_schema_allows() {
        let params = to_json_schema(&json!({
            "type": "dict",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string"}},
            "required": ["city", "days"]
        }));
        let answer = json!({
            // Required, `""` first: the value, not the omission.
            "city": ["", "Paris"],
            // A value of the wrong type first: the next one that validates.
            "days": ["3", 3],
            // Optional: the benchmark's order (its first choice is a value).
            "unit": ["celsius", ""],
            // Not declared: it can only be omitted.
            "country": ["France", ""]
        });
        let args = choose_args(answer.as_object().unwrap(), Some(&params));
        assert_eq!(
            args,
            [
                Arg::keyword("city", json!("Paris")),
                Arg::keyword("days", json!(3)),
                Arg::keyword("unit", json!("celsius"))
            ]
        );
        // Nothing allowed: the first value stays, for the engine's gate to refuse with a reason.
        let args = choose_args(json!({"country": ["France"]}).as_object().unwrap(), Some(&params));
        assert_eq!(args.len(), 1);
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
