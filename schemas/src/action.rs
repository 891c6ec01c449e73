//! Actions: what an agent asks a tool to do, in the surface form it was written in.
//!
//! Two surface forms parse to the same [`Action`]:
//! - JSON calls, `{"name": "crop", "arguments": {"image": "a.png", "box": [0, 0, 9, 9]}}`
//!   (a JSON array of such objects for several calls);
//! - Python-call code, `result = crop(image="a.png", box=[0, 0, 9, 9])\nprint(result)`.
//!
//! [`Action::to_text`] prints an action back in the form it came in. A parsed Python block that
//! was not edited prints back byte for byte; an edited call is re-rendered in place and the rest
//! of the block is left as written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::pycode::{self, py_literal};
pub use crate::pycode::{Arg, ArgValue};

/// The tool name given to a Python block that calls no tool: the code itself is the action.
pub const PYTHON_TOOL: &str = "python";

/// Key under which an unresolved argument's expression is stored in an arguments JSON object.
pub const EXPR_KEY: &str = "$expr";

/// How an action is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Surface {
    /// `{"name": …, "arguments": {…}}`.
    Json,
    /// A Python code block calling tools as functions.
    Python,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Json => "json",
            Surface::Python => "python",
        }
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Surface {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(Surface::Json),
            "python" => Ok(Surface::Python),
            other => Err(Error::JsonCall { reason: format!("unknown surface form `{other}`") }),
        }
    }
}

/// One tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
    /// The variable a Python block assigns the result to.
    pub assign: Option<String>,
    /// Where the call sits in the Python source, while it is unedited.
    span: Option<pycode::Span>,
    /// The span the call had when parsed, kept so an edited call can be spliced back.
    origin: Option<pycode::Span>,
}

impl Call {
    /// A call built in code, with named arguments in the given order.
    pub fn new(name: impl Into<String>, args: Vec<Arg>) -> Call {
        Call { name: name.into(), args, assign: None, span: None, origin: None }
    }

    /// The arguments as a JSON object: keywords by name, positionals as `$0`, `$1`, …, and an
    /// unresolved expression as `{"$expr": "<text>"}`.
    pub fn arguments(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut positional = 0;
        for arg in &self.args {
            let key = match &arg.name {
                Some(k) => k.clone(),
                None => {
                    positional += 1;
                    format!("${}", positional - 1)
                }
            };
            let v = match &arg.value {
                ArgValue::Literal(v) | ArgValue::Expr { resolved: Some(v), .. } => v.clone(),
                ArgValue::Expr { text, resolved: None } => {
                    Value::Object(Map::from_iter([(EXPR_KEY.to_string(), Value::String(text.clone()))]))
                }
            };
            map.insert(key, v);
        }
        map
    }

    /// The arguments with positionals named by `names` (a tool's parameters in declaration
    /// order); a positional past the end keeps its `$i` key. An argument whose value is an
    /// expression the code did not bind has no literal value: that is an [`Unresolved`].
    pub fn named_arguments(&self, names: &[String]) -> std::result::Result<Map<String, Value>, Unresolved> {
        let mut out = Map::new();
        for (key, value) in self.arguments() {
            if let Some(text) = value.get(EXPR_KEY).and_then(Value::as_str) {
                return Err(Unresolved { argument: key, expression: text.to_string() });
            }
            let name = match key.strip_prefix('$').and_then(|i| i.parse::<usize>().ok()) {
                Some(i) => names.get(i).cloned().unwrap_or(key),
                None => key,
            };
            out.insert(name, value);
        }
        Ok(out)
    }

    /// The argument with this keyword, or positional index written as `$i`.
    pub fn arg(&self, key: &str) -> Option<&Arg> {
        self.arg_index(key).map(|i| &self.args[i])
    }

    fn arg_index(&self, key: &str) -> Option<usize> {
        if let Some(i) = key.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            return self.args.iter().enumerate().filter(|(_, a)| a.name.is_none()).nth(i).map(|(j, _)| j);
        }
        self.args.iter().position(|a| a.name.as_deref() == Some(key))
    }

    /// Replaces the value of an argument (keyword or `$i`), adding a keyword if absent.
    pub fn set_arg(&mut self, key: &str, value: Value) {
        self.touch();
        match self.arg_index(key) {
            Some(i) => {
                self.args[i].value = ArgValue::Literal(value);
                self.args[i].span = None;
            }
            None => self.args.push(Arg::keyword(key, value)),
        }
    }

    /// Removes an argument (keyword or `$i`); returns whether it was there.
    pub fn remove_arg(&mut self, key: &str) -> bool {
        match self.arg_index(key) {
            Some(i) => {
                self.touch();
                self.args.remove(i);
                true
            }
            None => false,
        }
    }

    /// Renames the called tool.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.touch();
        self.name = name.into();
    }

    /// Marks the call edited, so it is re-rendered when printed.
    pub fn touch(&mut self) {
        self.span = None;
    }

    /// Whether every argument's value is known.
    pub fn is_resolved(&self) -> bool {
        self.args.iter().all(|a| a.value.is_resolved())
    }

    fn to_python(&self, source: Option<&str>) -> String {
        let mut s = format!("{}(", self.name);
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            match (arg.span, source) {
                (Some((a, b)), Some(src)) => s.push_str(&src[a..b]),
                _ => {
                    if let Some(k) = &arg.name {
                        s.push_str(k);
                        s.push('=');
                    }
                    match &arg.value {
                        ArgValue::Literal(v) => s.push_str(&py_literal(v)),
                        ArgValue::Expr { text, .. } => s.push_str(text),
                    }
                }
            }
        }
        s.push(')');
        s
    }

    fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("arguments".into(), Value::Object(self.arguments()));
        Value::Object(obj)
    }
}

/// An argument whose value is an expression with no literal value (a variable the code did
/// not bind), so the call cannot be executed or compared as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub argument: String,
    pub expression: String,
}

/// An action: one or more tool calls in a surface form.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub surface: Surface,
    pub calls: Vec<Call>,
    /// The Python source the calls were parsed from; printing splices edits into it.
    source: Option<String>,
}

impl Action {
    /// An action with one call, e.g. for a generated trajectory.
    pub fn single(surface: Surface, call: Call) -> Action {
        Action { surface, calls: vec![call], source: None }
    }

    /// Parses text in the given surface form.
    pub fn parse(surface: Surface, text: &str) -> Result<Action> {
        match surface {
            Surface::Json => Action::parse_json(text),
            Surface::Python => Action::parse_python(text),
        }
    }

    /// Parses `{"name": …, "arguments": {…}}` or an array of them. `arguments` may also be a
    /// string holding a JSON object, as OpenAI's `tool_calls` write it.
    pub fn parse_json(text: &str) -> Result<Action> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::JsonCall { reason: e.to_string() })?;
        Action::from_json_value(&value)
    }

    /// Like [`Action::parse_json`], from an already parsed value.
    pub fn from_json_value(value: &Value) -> Result<Action> {
        let items: Vec<&Value> = match value {
            Value::Array(items) if !items.is_empty() => items.iter().collect(),
            Value::Array(_) => return Err(Error::JsonCall { reason: "empty list of calls".into() }),
            v => vec![v],
        };
        let calls = items.into_iter().map(json_call).collect::<Result<Vec<_>>>()?;
        Ok(Action { surface: Surface::Json, calls, source: None })
    }

    /// Parses a Python code block (the text inside the fence).
    pub fn parse_python(code: &str) -> Result<Action> {
        let calls = pycode::parse_calls(code)?
            .into_iter()
            .map(|c| Call { name: c.name, args: c.args, assign: c.assign, span: Some(c.span), origin: Some(c.span) })
            .collect();
        Ok(Action { surface: Surface::Python, calls, source: Some(code.to_string()) })
    }

    /// The primary tool: the first call's name, or [`PYTHON_TOOL`] for code calling no tool.
    pub fn tool(&self) -> &str {
        self.calls.first().map_or(PYTHON_TOOL, |c| c.name.as_str())
    }

    /// The primary call's arguments as a JSON object (empty for plain code).
    pub fn arguments(&self) -> Map<String, Value> {
        self.calls.first().map(Call::arguments).unwrap_or_default()
    }

    /// The Python source this action was parsed from.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Whether every argument of every call is known.
    pub fn is_resolved(&self) -> bool {
        self.calls.iter().all(Call::is_resolved)
    }

    /// Prints the action in its own surface form.
    pub fn to_text(&self) -> String {
        match self.surface {
            Surface::Json => self.to_json_text(),
            Surface::Python => self.to_python_text(),
        }
    }

    /// The JSON form: one object for one call, an array for several.
    pub fn to_json_text(&self) -> String {
        let v = match self.calls.as_slice() {
            [one] => one.to_json(),
            many => Value::Array(many.iter().map(Call::to_json).collect()),
        };
        v.to_string()
    }

    /// The Python form. With a source, unedited calls keep their text and edited ones are
    /// re-rendered in place; without one, one statement per call.
    pub fn to_python_text(&self) -> String {
        let Some(src) = &self.source else {
            return self
                .calls
                .iter()
                .map(|c| match &c.assign {
                    Some(v) => format!("{v} = {}", c.to_python(None)),
                    None => c.to_python(None),
                })
                .collect::<Vec<_>>()
                .join("\n");
        };
        let mut out = String::with_capacity(src.len());
        let mut at = 0;
        for call in &self.calls {
            if call.span.is_some() {
                continue;
            }
            // Only calls that came from this source can be spliced back into it.
            let Some((a, b)) = call.origin else { continue };
            if a < at {
                continue; // nested inside an already re-rendered call
            }
            out.push_str(&src[at..a]);
            out.push_str(&call.to_python(Some(src)));
            at = b;
        }
        out.push_str(&src[at..]);
        out
    }
}

fn json_call(v: &Value) -> Result<Call> {
    let obj = v.as_object().ok_or_else(|| Error::JsonCall { reason: format!("expected an object, got {v}") })?;
    // OpenAI nests the call: {"type": "function", "function": {"name", "arguments"}}.
    let obj = match obj.get("function").and_then(Value::as_object) {
        Some(inner) if !obj.contains_key("name") => inner,
        _ => obj,
    };
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::JsonCall { reason: "missing string field `name`".into() })?;
    let args = match obj.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(Error::JsonCall { reason: format!("`arguments` of `{name}` is not an object: {other}") });
            }
            Err(e) => return Err(Error::JsonCall { reason: format!("`arguments` of `{name}` is not JSON: {e}") }),
        },
        Some(other) => {
            return Err(Error::JsonCall { reason: format!("`arguments` of `{name}` is not an object: {other}") });
        }
    };
    let args = args
        .into_iter()
        .map(|(k, v)| {
            let value = match v.as_object().and_then(|o| o.get(EXPR_KEY)).and_then(Value::as_str) {
                Some(text) => ArgValue::Expr { text: text.to_string(), resolved: None },
                None => ArgValue::Literal(v),
            };
            Arg { name: Some(k), value, span: None }
        })
        .collect();
    Ok(Call { name: name.to_string(), args, assign: None, span: None, origin: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_call_prints_back_identically() {
        let text = r#"{"name":"crop","arguments":{"image":"a.png","box":[0,0,9,9]}}"#;
        let a = Action::parse_json(text).unwrap();
        assert_eq!(a.tool(), "crop");
        assert_eq!(a.to_text(), text);
        let many = format!("[{text},{text}]");
        assert_eq!(Action::parse_json(&many).unwrap().to_text(), many);
    }

    #[test]
    fn openai_string_arguments_are_parsed() {
        let a = Action::parse_json(r#"{"type":"function","function":{"name":"f","arguments":"{\"x\": 1}"}}"#).unwrap();
        assert_eq!(a.arguments(), json!({"x": 1}).as_object().unwrap().clone());
        assert!(Action::parse_json(r#"{"name":"f","arguments":"[1]"}"#).is_err());
        assert!(Action::parse_json(r#"{"arguments":{}}"#).is_err());
    }

    #[test]
    fn python_block_prints_back_byte_for_byte() {
        let code = "x = visualizer(question=\"What is it?\",  image_path='a.png')  # look\nprint(x)\n";
        let a = Action::parse_python(code).unwrap();
        assert_eq!(a.to_text(), code);
        assert_eq!(a.tool(), "visualizer");
        assert_eq!(
            a.arguments(),
            json!({"question": "What is it?", "image_path": "a.png"}).as_object().unwrap().clone()
        );
    }

    #[test]
    fn edited_call_is_rendered_in_place_and_the_rest_is_kept() {
        let code = "r = crop(\"a.png\", box=[1, 2, 3, 4])  # first\nprint(r)\n";
        let mut a = Action::parse_python(code).unwrap();
        a.calls[0].set_arg("box", json!([5, 2, 7, 4]));
        assert_eq!(a.to_text(), "r = crop(\"a.png\", box=[5, 2, 7, 4])  # first\nprint(r)\n");
        a.calls[0].set_name("image_info");
        a.calls[0].remove_arg("box");
        let printed = a.to_text();
        assert_eq!(printed, "r = image_info(\"a.png\")  # first\nprint(r)\n");
        // What we print parses back to what we meant.
        let back = Action::parse_python(&printed).unwrap();
        assert_eq!(back.tool(), "image_info");
        assert_eq!(back.arguments(), a.arguments());
    }

    #[test]
    fn unresolved_arguments_survive_json_round_trip_flagged() {
        let a = Action::parse_python("final_answer(total)").unwrap();
        assert!(!a.is_resolved());
        let j = a.to_json_text();
        assert_eq!(j, r#"{"name":"final_answer","arguments":{"$0":{"$expr":"total"}}}"#);
        assert!(!Action::parse_json(&j).unwrap().is_resolved());
    }

    #[test]
    fn built_python_action_reads_back() {
        let mut call = Call::new("sql_query", vec![Arg::keyword("query", json!("SELECT 1"))]);
        call.assign = Some("rows".into());
        let a = Action::single(Surface::Python, call);
        let text = a.to_text();
        assert_eq!(text, "rows = sql_query(query=\"SELECT 1\")");
        assert_eq!(Action::parse_python(&text).unwrap().arguments(), a.arguments());
    }
}
