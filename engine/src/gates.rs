//! The quality gates a RoT row passes before it is written, cheapest first. Each gate has a
//! name (stored in the row's `gates` column) and a reason when it fails (stored on the
//! near-miss): the corrected action validates against the tool's schema, the evidence quotes
//! the failed observation, the failed and corrected actions differ, a ToolMismatch changes the
//! tool, the reflection's ErrorType is the judge's, the failed action does not already carry
//! the corrected value, and the texts have sane lengths.

use regrpo_schemas::ErrorType;
use serde_json::Value;

use crate::reflect::{Failure, Reflected};

/// Runs the quality gates; returns the names of those passed, or the first failure.
pub fn check(f: &Failure<'_>, r: &Reflected) -> Result<Vec<String>, String> {
    let mut passed = Vec::new();
    if let Some(e) = f.corrected_schema_error {
        return Err(format!("gate corrected_valid: the corrected action does not validate against its schema: {e}"));
    }
    passed.push("corrected_valid".into());
    let ev = &r.reflection.evidence;
    match r.evidence_span {
        Some((a, b)) if b > a && f.failed_observation.get(a..b).is_some_and(|q| ev.contains(q)) => {
            passed.push("evidence_quote".into())
        }
        _ => return Err("gate evidence_quote: the evidence quotes nothing of the observation".into()),
    }
    if f.failed.to_text() == f.original.to_text() {
        return Err("gate failed_ne_corrected: the failed and corrected actions are identical".into());
    }
    passed.push("failed_ne_corrected".into());
    if f.error_type == ErrorType::ToolMismatch {
        if f.failed.tool() == f.original.tool() {
            return Err("gate tool_changed: a ToolMismatch that keeps the tool".into());
        }
        passed.push("tool_changed".into());
    }
    if r.reflection.error_type != f.error_type.as_str() {
        return Err(format!(
            "gate error_type: the reflection says {} but the judge found {}",
            r.reflection.error_type, f.error_type
        ));
    }
    passed.push("error_type".into());
    // No leak: the failed action must not already carry the value the correction puts back.
    let (oa, fa) = (f.original.arguments(), f.failed.arguments());
    for (k, ov) in &oa {
        if let (Some(Value::String(o)), Some(Value::String(fv))) = (Some(ov), fa.get(k))
            && o != fv
            && o.len() >= 3
            && fv.contains(o.as_str())
        {
            return Err(format!("gate no_leak: the failed {k} still contains the corrected value"));
        }
    }
    passed.push("no_leak".into());
    let (le, lf) = (ev.chars().count(), r.reflection.fix_plan.chars().count());
    if !(20..=400).contains(&le) || !(10..=400).contains(&lf) {
        return Err(format!("gate length: evidence {le} and fix plan {lf} characters (bounds 20–400, 10–400)"));
    }
    passed.push("length".into());
    Ok(passed)
}
