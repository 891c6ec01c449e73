//! The judge: did the near-miss fail, and how?
//!
//! Its verdict comes from the execution and the structural difference of the two actions,
//! independently of the operator that made the near-miss; the engine keeps an example only
//! when the two agree.
//!
//! Failure: an error status, an empty result, or an output that differs from the original
//! action's output (every step of a task feeds its answer). Classification, first match wins:
//!
//! 1. a different tool → `ToolMismatch`
//! 2. no tool called where the answer had to be submitted → `NonCommit`
//! 3. arguments rejected by the schema → `ArgInvalid`
//! 4. a syntax, math or runtime error of a code tool, a timeout or a trap → `CodeError`
//! 5. an argument that only lost content (words, a clause, a factor) → `InfoInsufficient`
//! 6. another tool error (file not found, out of bounds, unknown column) → `ArgInvalid`
//! 7. a valid call that read something else → `GroundingDrift`

use regrpo_schemas::{Action, ErrorType, ExecStatus, Execution};
use serde_json::Value;

/// The judge's verdict on one near-miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub is_failure: bool,
    pub error_type: Option<ErrorType>,
    /// Why it is not usable, when it is not.
    pub reason: Option<String>,
}

const CODE_ERRORS: &[&str] =
    &["sql_syntax_error", "parse_error", "math_error", "type_error", "name_error", "sql_not_supported", "exit"];

fn words(s: &str) -> Vec<String> {
    let mut w: Vec<String> = s
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    w.sort();
    w
}

/// Whether `failed` keeps only part of `original`: a strict sub-multiset of its words.
fn only_lost_content(original: &Value, failed: &Value) -> bool {
    match (original, failed) {
        (Value::String(o), Value::String(f)) => {
            let (o, f) = (words(o), words(f));
            if f.len() >= o.len() {
                return false;
            }
            let mut rest = o.clone();
            f.iter().all(|w| rest.iter().position(|x| x == w).map(|i| rest.remove(i)).is_some())
        }
        _ => false,
    }
}

/// Judges a near-miss against the original action and its output.
pub fn judge(original: &Action, original_exec: &Execution, failed: &Action, failed_exec: &Execution) -> Verdict {
    let reject = |r: String| Verdict { is_failure: false, error_type: None, reason: Some(r) };
    if failed.to_text() == original.to_text() {
        return reject("the near-miss is identical to the original action".into());
    }
    if failed_exec.status == ExecStatus::NoExecutor {
        return reject(format!("not executed: {}", failed_exec.text));
    }
    let same_output = failed_exec.status == original_exec.status && failed_exec.text == original_exec.text;
    if same_output && failed_exec.status.is_ok() {
        return reject("not a failure: the near-miss still succeeds with the same output".into());
    }
    let fail = |t: ErrorType| Verdict { is_failure: true, error_type: Some(t), reason: None };
    if failed.calls.is_empty() {
        return if original.tool() == "final_answer" { fail(ErrorType::NonCommit) } else { fail(ErrorType::CodeError) };
    }
    if failed.tool() != original.tool() {
        return fail(ErrorType::ToolMismatch);
    }
    if failed_exec.status == ExecStatus::SchemaError {
        return fail(ErrorType::ArgInvalid);
    }
    let code = failed_exec.error_code.as_deref().unwrap_or("");
    if failed_exec.status.is_limit() || CODE_ERRORS.contains(&code) {
        return fail(ErrorType::CodeError);
    }
    let (oa, fa) = (original.arguments(), failed.arguments());
    let changed: Vec<&String> = oa.keys().filter(|k| fa.get(*k) != oa.get(*k)).collect();
    if !changed.is_empty() && changed.iter().all(|k| fa.get(*k).is_some_and(|f| only_lost_content(&oa[*k], f))) {
        return fail(ErrorType::InfoInsufficient);
    }
    if failed_exec.status == ExecStatus::ToolError {
        return fail(ErrorType::ArgInvalid);
    }
    fail(ErrorType::GroundingDrift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(status: ExecStatus, text: &str, code: Option<&str>) -> Execution {
        Execution {
            status,
            text: text.into(),
            error_code: code.map(str::to_string),
            duration_us: 0,
            tool_version: "t".into(),
        }
    }

    fn py(s: &str) -> Action {
        Action::parse_python(s).unwrap()
    }

    #[test]
    fn classifies_by_what_happened() {
        let orig = py("sql_query(query=\"SELECT sum(revenue) FROM sales WHERE region = 'north'\")");
        let ok = exec(ExecStatus::Ok, "total\n10", None);
        let dropped = py("sql_query(query=\"SELECT sum(revenue) FROM sales\")");
        assert_eq!(
            judge(&orig, &ok, &dropped, &exec(ExecStatus::Ok, "total\n99", None)).error_type,
            Some(ErrorType::InfoInsufficient)
        );
        let drift = py("sql_query(query=\"SELECT sum(units) FROM sales WHERE region = 'north'\")");
        assert_eq!(
            judge(&orig, &ok, &drift, &exec(ExecStatus::Ok, "total\n4", None)).error_type,
            Some(ErrorType::GroundingDrift)
        );
        let syntax = py("sql_query(query=\"SELECT sum(revenue) FORM sales WHERE region = 'north'\")");
        assert_eq!(
            judge(&orig, &ok, &syntax, &exec(ExecStatus::ToolError, "Error: ParserError", Some("sql_syntax_error")))
                .error_type,
            Some(ErrorType::CodeError)
        );
        let swapped = py("search_text(query=\"SELECT sum(revenue) FROM sales WHERE region = 'north'\")");
        assert_eq!(
            judge(&orig, &ok, &swapped, &exec(ExecStatus::Empty, "No passages", Some("no_match"))).error_type,
            Some(ErrorType::ToolMismatch)
        );
    }

    #[test]
    fn a_near_miss_that_still_works_is_rejected() {
        let orig = py("inspect_file_as_text(file_path=\"a.txt\")");
        let same = py("inspect_file_as_text(file_path=\"./a.txt\")");
        let v = judge(&orig, &exec(ExecStatus::Ok, "hello", None), &same, &exec(ExecStatus::Ok, "hello", None));
        assert!(!v.is_failure);
        assert!(v.reason.unwrap().contains("still succeeds"));
    }
}
