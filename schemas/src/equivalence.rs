//! When two actions are the same action: the rule ReGRPO's reward, the evaluation and the
//! engine's checks share.
//!
//! [`ActionMatch::FullArguments`] (ours, the default) wants the same tool and every argument
//! equivalent after normalisation (positionals named by the tool's parameters, numbers by value,
//! strings trimmed and without a leading `./`), so a shifted box or a neighbouring column is a
//! different action. [`ActionMatch::ReferenceFirstArgument`] is the ReGRPO reference's rule —
//! same tool and same first argument — kept by name for reproducing its numbers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::action::Action;

/// How two actions are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionMatch {
    /// Same tool, every argument equivalent (same keys after naming positionals).
    #[default]
    FullArguments,
    /// The reference's rule: same tool and an equivalent first argument; the rest is ignored.
    ReferenceFirstArgument,
}

impl ActionMatch {
    /// Whether `a` is the same action as `b`. `parameters` names positionals (the tool's
    /// parameters in declaration order), when the tool is known.
    pub fn same(self, a: &Action, b: &Action, parameters: Option<&[String]>) -> bool {
        if a.tool() != b.tool() {
            return false;
        }
        match self {
            ActionMatch::FullArguments => match (named(a, parameters), named(b, parameters)) {
                (Some(x), Some(y)) => same_arguments(&x, &y),
                _ => false,
            },
            ActionMatch::ReferenceFirstArgument => {
                let first = |x: &Action| x.calls.first().and_then(|c| c.arguments().into_iter().next().map(|(_, v)| v));
                match (first(a), first(b)) {
                    (Some(x), Some(y)) => equivalent(&x, &y),
                    (None, None) => true,
                    _ => false,
                }
            }
        }
    }
}

/// The first call's arguments with positionals named; `None` when the action has no call or
/// an argument has no literal value.
fn named(action: &Action, parameters: Option<&[String]>) -> Option<Map<String, Value>> {
    let call = action.calls.first()?;
    match parameters {
        Some(names) => call.named_arguments(names).ok(),
        None => Some(call.arguments()),
    }
}

/// Whether two JSON values mean the same argument: numbers by value (1 == 1.0), strings
/// trimmed and without a leading `./`, containers element by element.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap_or(f64::NAN) - y.as_f64().unwrap_or(f64::NAN)).abs() <= 1e-9
        }
        (Value::String(x), Value::String(y)) => x.trim().trim_start_matches("./") == y.trim().trim_start_matches("./"),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equivalent(p, q)),
        (Value::Object(x), Value::Object(y)) => same_arguments(x, y),
        _ => a == b,
    }
}

/// Whether two argument objects have the same keys with equivalent values.
pub fn same_arguments(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| equivalent(v, w)))
}

/// Share of `gt`'s arguments (first call, positionals named) that `a` gives equivalently: 1
/// when `gt` has none, 0 when either action cannot be compared.
pub fn argument_share(a: &Action, gt: &Action, parameters: Option<&[String]>) -> f64 {
    match (named(a, parameters), named(gt, parameters)) {
        (Some(x), Some(y)) if !y.is_empty() => {
            y.iter().filter(|(k, v)| x.get(*k).is_some_and(|w| equivalent(v, w))).count() as f64 / y.len() as f64
        }
        (Some(_), Some(_)) => 1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equivalence_normalises_numbers_paths_and_containers() {
        assert!(equivalent(&json!(1), &json!(1.0)));
        assert!(equivalent(&json!("./a.png "), &json!("a.png")));
        assert!(equivalent(&json!([0, 0, 32, 32]), &json!([0.0, 0, 32, 32])));
        assert!(!equivalent(&json!([0, 0, 32, 32]), &json!([0, 16, 32, 48])));
        assert!(!equivalent(&json!("1"), &json!(1)));
    }

    #[test]
    fn a_later_argument_decides_under_full_arguments_but_not_under_the_reference_rule() {
        let names = ["image_path".to_string(), "box".to_string()];
        let right = Action::parse_python("crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])").unwrap();
        let positional = Action::parse_python("crop(\"shapes.png\", [0, 0, 32, 32])").unwrap();
        let shifted = Action::parse_python("crop(image_path=\"shapes.png\", box=[0, 16, 32, 48])").unwrap();
        let full = ActionMatch::FullArguments;
        assert!(full.same(&positional, &right, Some(&names)));
        assert!(!full.same(&shifted, &right, Some(&names)));
        assert!(ActionMatch::ReferenceFirstArgument.same(&shifted, &right, Some(&names)));
        let other_tool = Action::parse_python("image_info(image_path=\"shapes.png\")").unwrap();
        assert!(!ActionMatch::ReferenceFirstArgument.same(&other_tool, &right, Some(&names)));
        assert_eq!(argument_share(&shifted, &right, Some(&names)), 0.5);
    }
}
