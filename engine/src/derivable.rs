//! Whether a correction can be derived from what the agent saw.
//!
//! A RoT row teaches a policy to write the corrected action after a failure. That is only
//! learnable when the correction's arguments are there to be read: every argument value must
//! appear in the context the policy is given at that point (the system prompt, the task, the
//! earlier turns, the failed action and its observation), or be a literal of the tool's spec
//! (an `enum` value or a `default`). Strings must appear verbatim, numbers as whole numbers
//! (`32` is not found inside `320`), and lists and objects item by item. Booleans and null are
//! literals of the call syntax.

use regrpo_schemas::Action;
use serde_json::Value;

use crate::tool::ToolSpec;

/// Whether every argument of `action` can be read from `context` or the tool's spec.
pub fn is_derivable(action: &Action, spec: Option<&ToolSpec>, context: &str) -> bool {
    let literals = spec.map(spec_literals).unwrap_or_default();
    action.calls.iter().all(|c| c.arguments().values().all(|v| present(v, context, &literals)))
}

/// The `enum` values and `default`s anywhere in a spec's parameter schema.
fn spec_literals(spec: &ToolSpec) -> Vec<Value> {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("enum", Value::Array(items)) => out.extend(items.iter().cloned()),
                        ("default", x) => out.push(x.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&spec.parameters, &mut out);
    out
}

fn present(v: &Value, context: &str, literals: &[Value]) -> bool {
    if literals.contains(v) {
        return true;
    }
    match v {
        Value::Null | Value::Bool(_) => true,
        Value::String(s) => s.trim().is_empty() || context.contains(s.as_str()),
        Value::Number(n) => {
            let text = n.to_string();
            let whole = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| format!("{}", f as i64));
            has_number(context, &text) || whole.is_some_and(|w| has_number(context, &w))
        }
        Value::Array(items) => items.iter().all(|x| present(x, context, literals)),
        Value::Object(m) => m.values().all(|x| present(x, context, literals)),
    }
}

/// Whether `number` occurs in `text` as a whole number (no digit or decimal part around it).
fn has_number(text: &str, number: &str) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(number) {
        let (a, b) = (from + i, from + i + number.len());
        let before = a.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(b).copied();
        let digit_after_point = after == Some(b'.') && bytes.get(b + 1).is_some_and(u8::is_ascii_digit);
        if !before.is_some_and(|c| c.is_ascii_digit() || c == b'.')
            && !after.is_some_and(|c| c.is_ascii_digit())
            && !digit_after_point
        {
            return true;
        }
        from = a + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolSuite;

    fn derivable(code: &str, context: &str) -> bool {
        let a = Action::parse_python(code).unwrap();
        let suite = ToolSuite::builtin();
        is_derivable(&a, suite.get(a.tool()).map(|t| t.spec()), context)
    }

    #[test]
    fn arguments_must_be_read_from_the_context() {
        let ctx = "Error: file not found: regstry.json. The task folder has: archive.json, registry.json.";
        assert!(derivable("inspect_file_as_text(file_path=\"registry.json\")", ctx));
        assert!(!derivable("inspect_file_as_text(file_path=\"notes.md\")", ctx));
        let crop = "cropped [0, 0, 32, 32] of shapes.png: colors: red 40%, white 60%; shape at [4, 6, 26, 28]";
        assert!(derivable("draw_box(image_path=\"shapes.png\", box=[4, 6, 26, 28], color=\"black\")", crop));
        assert!(derivable("add_text(image_path=\"shapes.png\", text=\"60%\", position=[4, 6])", crop));
        assert!(!derivable("draw_box(image_path=\"shapes.png\", box=[4, 6, 26, 2])", "shapes.png [4, 6, 26, 28]"));
        assert!(!derivable("crop(image_path=\"shapes.png\", box=[0, 0, 3, 3])", "shapes.png 32.5 0"));
        assert!(!derivable("crop(image_path=\"shapes.png\", box=[0, 0, 2, 2])", "shapes.png 0 2.5"));
    }

    #[test]
    fn enum_values_are_literals_of_the_spec() {
        assert!(derivable("draw_box(image_path=\"a.png\", box=[1, 2, 3, 4], color=\"purple\")", "a.png 1 2 3 4"));
    }
}
