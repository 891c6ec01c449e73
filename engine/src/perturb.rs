//! Perturbation operators: realistic near-misses of a correct action.
//!
//! Each operator claims one ErrorType and says in words what it changed. It returns `None`
//! when it does not apply to the action (no argument of the right kind, nothing to drop…).
//! The judge later checks the claim against what executing the near-miss actually gave.
//!
//! | operator | ErrorType | change |
//! | --- | --- | --- |
//! | `arg.typo` | ArgInvalid | a character dropped or swapped in a file name or enum value |
//! | `arg.wrong_type` | ArgInvalid | a value of the wrong JSON type |
//! | `arg.drop_required` | ArgInvalid | a required argument left out |
//! | `arg.unknown` | ArgInvalid | an argument passed under a wrong name |
//! | `arg.out_of_range` | ArgInvalid | a number or box beyond its allowed range |
//! | `arg.bad_format` | ArgInvalid | a box with three numbers, a value outside an enum |
//! | `tool.swap` | ToolMismatch | a plausible but unsuitable tool |
//! | `grounding.shift_bbox` | GroundingDrift | a box moved off its target |
//! | `grounding.wrong_column` | GroundingDrift | a neighbouring column of the same table |
//! | `grounding.neighbour_row` | GroundingDrift | a neighbouring key value (row, entity) |
//! | `grounding.wrong_file` | GroundingDrift | another file of the same kind |
//! | `info.drop_constraint` | InfoInsufficient | a WHERE clause, keyword or factor dropped |
//! | `code.sql_syntax` | CodeError | a misspelled SQL keyword |
//! | `code.expr_syntax` | CodeError | an unbalanced or dangling expression |
//! | `noncommit.no_final_answer` | NonCommit | the answer printed instead of submitted |

use std::path::Path;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use regrpo_schemas::action::{Action, ArgValue, Surface};
use regrpo_schemas::{Call, ErrorType};
use serde_json::{Value, json};

use crate::tool::ToolSpec;

/// A near-miss and what made it.
#[derive(Debug, Clone)]
pub struct Perturbed {
    pub action: Action,
    pub operator: &'static str,
    pub error_type: ErrorType,
    /// What changed, in words (`file_path 'bill.txt' → 'bil.txt'`).
    pub change: String,
}

/// What an operator may look at.
pub struct PerturbContext<'a> {
    /// The spec of the original tool, when known.
    pub spec: Option<&'a ToolSpec>,
    /// The tools the trajectory declared, i.e. the ones the agent had (empty when it declared
    /// none): a tool mismatch picks among these, never a name the task did not offer.
    pub alternatives: &'a [ToolSpec],
    /// The task's folder, when it has one.
    pub sandbox: Option<&'a Path>,
    /// Whether the action is the final step.
    pub is_final: bool,
}

impl PerturbContext<'_> {
    fn files(&self) -> Vec<String> {
        let Some(dir) = self.sandbox else { return vec![] };
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Header and rows of `<table>.csv` in the sandbox.
    fn csv(&self, table: &str) -> Option<(Vec<String>, Vec<Vec<String>>)> {
        let text = std::fs::read_to_string(self.sandbox?.join(format!("{table}.csv"))).ok()?;
        let mut lines = text.lines();
        let header = lines.next()?.split(',').map(str::to_string).collect();
        Some((header, lines.map(|l| l.split(',').map(str::to_string).collect()).collect()))
    }

    fn param_schema(&self, arg: &str) -> Option<&Value> {
        self.spec?.parameters.get("properties")?.get(arg)
    }
}

/// An operator.
pub trait Perturbation: Send + Sync {
    fn name(&self) -> &'static str;
    fn error_type(&self) -> ErrorType;
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed>;
}

/// Every operator, in a fixed order.
pub fn all() -> Vec<Box<dyn Perturbation>> {
    vec![
        Box::new(Typo),
        Box::new(WrongType),
        Box::new(DropRequired),
        Box::new(UnknownArg),
        Box::new(OutOfRange),
        Box::new(BadFormat),
        Box::new(ToolSwap),
        Box::new(ShiftBox),
        Box::new(WrongColumn),
        Box::new(NeighbourRow),
        Box::new(WrongFile),
        Box::new(DropConstraint),
        Box::new(SqlSyntax),
        Box::new(ExprSyntax),
        Box::new(NoFinalAnswer),
    ]
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("'{s}'"),
        v => v.to_string(),
    };
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s }
}

/// The literal arguments of the first call: `(key, value)`.
fn literal_args(call: &Call) -> Vec<(String, Value)> {
    call.arguments().into_iter().filter(|(_, v)| v.get(regrpo_schemas::action::EXPR_KEY).is_none()).collect()
}

/// Copies the action and edits its first call.
fn edit(action: &Action, f: impl FnOnce(&mut Call)) -> Action {
    let mut a = action.clone();
    if let Some(c) = a.calls.first_mut() {
        f(c);
    }
    a
}

fn done(action: Action, operator: &'static str, error_type: ErrorType, change: String) -> Option<Perturbed> {
    Some(Perturbed { action, operator, error_type, change })
}

fn has_extension(s: &str) -> bool {
    s.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && (2..=5).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

struct Typo;
impl Perturbation for Typo {
    fn name(&self) -> &'static str {
        "arg.typo"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ArgInvalid
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        // File names, and values of enum-constrained arguments: a typo there is an error.
        let candidates: Vec<(String, String)> = literal_args(call)
            .into_iter()
            .filter_map(|(k, v)| {
                let s = v.as_str()?.to_string();
                let is_enum = ctx.param_schema(&k).and_then(|p| p.get("enum")).is_some();
                (has_extension(&s) || is_enum).then_some((k, s))
            })
            .collect();
        let (key, value) = candidates.choose(rng)?.clone();
        let stem_len = value.rfind('.').filter(|_| has_extension(&value)).unwrap_or(value.len());
        let chars: Vec<char> = value.chars().collect();
        let stem_chars = value[..stem_len].chars().count();
        if stem_chars < 2 {
            return None;
        }
        let i = rng.random_range(0..stem_chars - 1);
        let mut typo = chars.clone();
        if rng.random_bool(0.5) {
            typo.remove(i);
        } else {
            typo.swap(i, i + 1);
        }
        let typo: String = typo.into_iter().collect();
        if typo == value {
            return None;
        }
        let a = edit(action, |c| c.set_arg(&key, json!(typo)));
        done(a, self.name(), self.error_type(), format!("{key} {} → {}", short(&json!(value)), short(&json!(typo))))
    }
}

struct WrongType;
impl Perturbation for WrongType {
    fn name(&self) -> &'static str {
        "arg.wrong_type"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ArgInvalid
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let typed: Vec<(String, Value)> = literal_args(call)
            .into_iter()
            .filter(|(k, _)| ctx.param_schema(k).and_then(|p| p.get("type")).is_some())
            .collect();
        let (key, value) = typed.choose(rng)?.clone();
        let wrong = match &value {
            Value::String(s) => json!(s.chars().count() as i64),
            Value::Number(n) => json!(n.to_string()),
            Value::Bool(b) => json!(if *b { "yes" } else { "no" }),
            Value::Array(items) => json!(items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")),
            Value::Object(_) => json!(value.to_string()),
            Value::Null => return None,
        };
        let a = edit(action, |c| c.set_arg(&key, wrong.clone()));
        done(a, self.name(), self.error_type(), format!("{key} {} → {} (wrong type)", short(&value), short(&wrong)))
    }
}

struct DropRequired;
impl Perturbation for DropRequired {
    fn name(&self) -> &'static str {
        "arg.drop_required"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ArgInvalid
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let required = ctx.spec?.required();
        let present: Vec<String> = call.arguments().keys().filter(|k| required.contains(k)).cloned().collect();
        let key = present.choose(rng)?.clone();
        let a = edit(action, |c| {
            c.remove_arg(&key);
        });
        done(a, self.name(), self.error_type(), format!("required argument {key} left out"))
    }
}

/// Plausible wrong names for common parameters.
fn wrong_name(key: &str) -> String {
    match key {
        "file_path" => "filepath".into(),
        "image_path" => "image".into(),
        "query" => "q".into(),
        "expression" => "expr".into(),
        "box" => "bbox".into(),
        "answer" => "final".into(),
        "top_k" => "k".into(),
        "position" => "pos".into(),
        k if k.contains('_') => k.replace('_', ""),
        k => format!("{k}_value"),
    }
}

struct UnknownArg;
impl Perturbation for UnknownArg {
    fn name(&self) -> &'static str {
        "arg.unknown"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ArgInvalid
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let params = ctx.spec?.parameter_names();
        let args: Vec<(String, Value)> = literal_args(call).into_iter().filter(|(k, _)| params.contains(k)).collect();
        let (key, value) = args.choose(rng)?.clone();
        let bad = wrong_name(&key);
        if params.contains(&bad) {
            return None;
        }
        let a = edit(action, |c| {
            c.remove_arg(&key);
            c.set_arg(&bad, value.clone());
        });
        done(a, self.name(), self.error_type(), format!("argument {key} passed as {bad}"))
    }
}

struct OutOfRange;
impl Perturbation for OutOfRange {
    fn name(&self) -> &'static str {
        "arg.out_of_range"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ArgInvalid
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        for (key, value) in literal_args(call) {
            let schema = ctx.param_schema(&key);
            if let (Some(n), Some(max)) =
                (value.as_i64(), schema.and_then(|p| p.get("maximum")).and_then(Value::as_i64))
            {
                let bad = if rng.random_bool(0.5) {
                    max + rng.random_range(1..50)
                } else {
                    schema.and_then(|p| p.get("minimum")).and_then(Value::as_i64).unwrap_or(0) - 1
                };
                if bad != n {
                    let a = edit(action, |c| c.set_arg(&key, json!(bad)));
                    return done(
                        a,
                        self.name(),
                        self.error_type(),
                        format!("{key} {n} → {bad} (outside its allowed range)"),
                    );
                }
            }
            if key == "box" {
                let b: Vec<i64> = value.as_array()?.iter().filter_map(Value::as_i64).collect();
                if b.len() == 4 {
                    // Past the right or bottom edge of a 64-pixel image.
                    let mut nb = b.clone();
                    let i = if rng.random_bool(0.5) { 2 } else { 3 };
                    nb[i] = 64 + rng.random_range(8..40);
                    let a = edit(action, |c| c.set_arg(&key, json!(nb)));
                    return done(
                        a,
                        self.name(),
                        self.error_type(),
                        format!("box {b:?} → {nb:?} (past the image edge)"),
                    );
                }
            }
        }
        None
    }
}

struct BadFormat;
impl Perturbation for BadFormat {
    fn name(&self) -> &'static str {
        "arg.bad_format"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ArgInvalid
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let mut options = Vec::new();
        for (key, value) in literal_args(call) {
            let schema = ctx.param_schema(&key);
            if let Some(items) = value.as_array()
                && schema
                    .and_then(|p| p.get("minItems"))
                    .and_then(Value::as_u64)
                    .is_some_and(|m| m as usize == items.len())
            {
                let mut short_list = items.clone();
                short_list.pop();
                options.push((
                    key.clone(),
                    json!(short_list),
                    format!("{key} {} → {} (too few numbers)", short(&value), json!(short_list)),
                ));
            }
            if let (Some(s), Some(enumv)) =
                (value.as_str(), schema.and_then(|p| p.get("enum")).and_then(Value::as_array))
            {
                let bad = format!("{s}ish");
                if !enumv.iter().any(|e| e.as_str() == Some(&bad)) {
                    options.push((
                        key.clone(),
                        json!(bad),
                        format!("{key} '{s}' → '{bad}' (not one of the allowed values)"),
                    ));
                }
            }
        }
        let (key, bad, change) = options.choose(rng)?.clone();
        let a = edit(action, |c| c.set_arg(&key, bad));
        done(a, self.name(), self.error_type(), change)
    }
}

/// For a builtin tool: plausible but unsuitable stand-ins and how its main argument maps.
fn swaps(tool: &str) -> &'static [(&'static str, &'static str)] {
    match tool {
        "sql_query" => &[("search_text", "query"), ("calculator", "expression")],
        "search_text" => &[("sql_query", "query"), ("inspect_file_as_text", "file_path")],
        "inspect_file_as_text" => &[("search_text", "query"), ("image_info", "image_path")],
        "calculator" => &[("sql_query", "query"), ("search_text", "query")],
        "crop" => &[("image_info", "image_path")],
        "image_info" => &[("inspect_file_as_text", "file_path")],
        "draw_box" => &[("crop", "image_path")],
        "add_text" => &[("draw_box", "image_path")],
        _ => &[],
    }
}

struct ToolSwap;
impl Perturbation for ToolSwap {
    fn name(&self) -> &'static str {
        "tool.swap"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::ToolMismatch
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        if call.name == "final_answer" {
            return None;
        }
        let args = literal_args(call);
        let offered = |name: &str| ctx.alternatives.is_empty() || ctx.alternatives.iter().any(|s| s.name == name);
        let mapped: Vec<&(&str, &str)> = swaps(&call.name).iter().filter(|(to, _)| offered(to)).collect();
        if let Some((to, param)) = mapped.choose(rng).copied() {
            // Carry the main value over: the string argument, or the image/file path.
            let main = args
                .iter()
                .find(|(k, v)| k.contains("path") && v.is_string())
                .or_else(|| args.iter().find(|(_, v)| v.is_string()))?
                .1
                .clone();
            let mut new_args = vec![regrpo_schemas::Arg::keyword(*param, main)];
            if *to == "crop" {
                new_args.push(regrpo_schemas::Arg::keyword("box", args.iter().find(|(k, _)| k == "box")?.1.clone()));
            }
            if *to == "draw_box" {
                new_args.push(regrpo_schemas::Arg::keyword("box", json!([0, 0, 8, 8])));
            }
            let a = edit(action, |c| {
                c.set_name(*to);
                c.args = new_args;
            });
            return done(a, self.name(), self.error_type(), format!("called {to} instead of {}", call.name));
        }
        // A spec-only tool: another function the trajectory declared, the one sharing the most
        // argument names. A task that offered one function has no realistic mismatch.
        let own: Vec<String> = args.iter().map(|(k, _)| k.clone()).collect();
        let best = ctx.alternatives.iter().filter(|s| s.name != call.name).max_by_key(|s| {
            (s.parameter_names().iter().filter(|p| own.contains(p)).count(), std::cmp::Reverse(s.name.clone()))
        })?;
        let a = edit(action, |c| c.set_name(best.name.clone()));
        done(a, self.name(), self.error_type(), format!("called {} instead of {}", best.name, call.name))
    }
}

struct ShiftBox;
impl Perturbation for ShiftBox {
    fn name(&self) -> &'static str {
        "grounding.shift_bbox"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::GroundingDrift
    }
    fn apply(&self, action: &Action, _ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let (key, value) = literal_args(call).into_iter().find(|(k, _)| k == "box" || k == "bbox")?;
        let b: Vec<i64> = value.as_array()?.iter().filter_map(Value::as_i64).collect();
        if b.len() != 4 {
            return None;
        }
        // Move the box by 10–24 pixels along one axis, staying inside a 64-pixel image.
        for _ in 0..8 {
            let d = rng.random_range(10..25) * if rng.random_bool(0.5) { 1 } else { -1 };
            let (i, j) = if rng.random_bool(0.5) { (0, 2) } else { (1, 3) };
            let (lo, hi) = (b[i] + d, b[j] + d);
            if lo >= 0 && hi <= 64 {
                let mut nb = b.clone();
                nb[i] = lo;
                nb[j] = hi;
                let a = edit(action, |c| c.set_arg(&key, json!(nb)));
                return done(
                    a,
                    self.name(),
                    self.error_type(),
                    format!("{key} {b:?} → {nb:?} (shifted off the target)"),
                );
            }
        }
        None
    }
}

/// The table a simple `… FROM t …` query reads.
fn sql_table(q: &str) -> Option<String> {
    let lower = q.to_ascii_lowercase();
    let at = lower.find(" from ")? + 6;
    Some(q[at..].split(|c: char| !(c.is_alphanumeric() || c == '_')).next()?.to_string())
}

/// Replaces whole-word occurrences of `from` with `to`.
fn replace_word(text: &str, from: &str, to: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    let mut hit = false;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().last();
        let after = rest[i + from.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        out.push_str(&rest[..i]);
        if boundary(before) && boundary(after) {
            out.push_str(to);
            hit = true;
        } else {
            out.push_str(from);
        }
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    hit.then_some(out)
}

fn string_arg(call: &Call, key: &str) -> Option<String> {
    match &call.arg(key)?.value {
        ArgValue::Literal(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

struct WrongColumn;
impl Perturbation for WrongColumn {
    fn name(&self) -> &'static str {
        "grounding.wrong_column"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::GroundingDrift
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let q = string_arg(call, "query").filter(|_| call.name == "sql_query")?;
        let (header, rows) = ctx.csv(&sql_table(&q)?)?;
        // Numeric columns only: a neighbouring measure, not a neighbouring type error.
        let numeric: Vec<&String> = header
            .iter()
            .enumerate()
            .filter(|(i, _)| rows.first().is_some_and(|r| r.get(*i).is_some_and(|v| v.parse::<f64>().is_ok())))
            .map(|(_, h)| h)
            .collect();
        let used: Vec<&&String> = numeric.iter().filter(|c| replace_word(&q, c, "x").is_some()).collect();
        let from = used.choose(rng)?.to_string();
        let to = numeric.iter().filter(|c| ***c != from).collect::<Vec<_>>().choose(rng).map(|c| (**c).clone())?;
        // Inside an aggregate when there is one, so aliases keep their names.
        let nq = if q.contains(&format!("({from})")) {
            q.replacen(&format!("({from})"), &format!("({to})"), 1)
        } else {
            replace_word(&q, &from, &to)?
        };
        let a = edit(action, |c| c.set_arg("query", json!(nq)));
        done(a, self.name(), self.error_type(), format!("column {from} → {to}"))
    }
}

struct NeighbourRow;
impl Perturbation for NeighbourRow {
    fn name(&self) -> &'static str {
        "grounding.neighbour_row"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::GroundingDrift
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let q = string_arg(call, "query")?;
        if call.name == "sql_query" {
            // WHERE col = 'value' → another value of that column.
            let (header, rows) = ctx.csv(&sql_table(&q)?)?;
            let start = q.find('\'')? + 1;
            let value = &q[start..start + q[start..].find('\'')?];
            let col = header.iter().position(|h| {
                rows.iter().any(|r| r.get(header.iter().position(|x| x == h).unwrap_or(0)).is_some_and(|v| v == value))
            })?;
            let mut others: Vec<String> =
                rows.iter().filter_map(|r| r.get(col).cloned()).filter(|v| v != value).collect();
            others.sort();
            others.dedup();
            let to = others.choose(rng)?.clone();
            let nq = q.replacen(&format!("'{value}'"), &format!("'{to}'"), 1);
            let a = edit(action, |c| c.set_arg("query", json!(nq)));
            return done(a, self.name(), self.error_type(), format!("{} '{value}' → '{to}'", header[col]));
        }
        if call.name == "search_text" {
            // The entity searched for → another entity of the same documents.
            let first = q.split_whitespace().next()?.to_string();
            let docs: String = ctx
                .files()
                .iter()
                .filter(|f| f.ends_with(".txt") || f.ends_with(".md"))
                .filter_map(|f| std::fs::read_to_string(ctx.sandbox?.join(f)).ok())
                .collect();
            let mut names: Vec<String> = docs
                .split("\n\n")
                .filter_map(|p| p.split_whitespace().next().map(str::to_string))
                .filter(|w| w != &first && w.chars().next().is_some_and(char::is_uppercase) && w != "#")
                .collect();
            names.sort();
            names.dedup();
            let to = names.choose(rng)?.clone();
            let nq = replace_word(&q, &first, &to)?;
            let a = edit(action, |c| c.set_arg("query", json!(nq)));
            return done(a, self.name(), self.error_type(), format!("query entity {first} → {to}"));
        }
        None
    }
}

struct WrongFile;
impl Perturbation for WrongFile {
    fn name(&self) -> &'static str {
        "grounding.wrong_file"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::GroundingDrift
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let (key, value) = literal_args(call)
            .into_iter()
            .find(|(k, v)| k.contains("path") && v.as_str().is_some_and(has_extension))?;
        let current = value.as_str()?.to_string();
        let ext = current.rsplit('.').next()?.to_string();
        let others: Vec<String> =
            ctx.files().into_iter().filter(|f| *f != current && f.ends_with(&format!(".{ext}"))).collect();
        let to = others.choose(rng)?.clone();
        let a = edit(action, |c| c.set_arg(&key, json!(to)));
        done(a, self.name(), self.error_type(), format!("{key} '{current}' → '{to}' (a neighbouring file)"))
    }
}

struct DropConstraint;
impl Perturbation for DropConstraint {
    fn name(&self) -> &'static str {
        "info.drop_constraint"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::InfoInsufficient
    }
    fn apply(&self, action: &Action, _ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        match call.name.as_str() {
            "sql_query" => {
                let q = string_arg(call, "query")?;
                let at = q.to_ascii_lowercase().find(" where ")?;
                let nq = q[..at].to_string();
                let dropped = q[at + 1..].to_string();
                let a = edit(action, |c| c.set_arg("query", json!(nq)));
                done(a, self.name(), self.error_type(), format!("condition `{dropped}` dropped from the query"))
            }
            "search_text" => {
                // Drop the distinguishing keyword: the first word (the entity), keep the rest.
                let q = string_arg(call, "query")?;
                let words: Vec<&str> = q.split_whitespace().collect();
                if words.len() < 2 {
                    return None;
                }
                let nq = words[1..].join(" ");
                let a = edit(action, |c| c.set_arg("query", json!(nq)));
                done(a, self.name(), self.error_type(), format!("keyword '{}' dropped from the query", words[0]))
            }
            "calculator" => {
                // Drop the last multiplicative factor: `a * b * (c)` → `a * b`.
                let e = string_arg(call, "expression")?;
                let at = e.rfind(" * ")?;
                let ne = e[..at].to_string();
                if ne.matches('(').count() != ne.matches(')').count() || ne.trim().is_empty() {
                    return None;
                }
                let dropped = e[at + 3..].to_string();
                let a = edit(action, |c| c.set_arg("expression", json!(ne)));
                let _ = rng;
                done(a, self.name(), self.error_type(), format!("factor `{dropped}` dropped from the expression"))
            }
            _ => None,
        }
    }
}

struct SqlSyntax;
impl Perturbation for SqlSyntax {
    fn name(&self) -> &'static str {
        "code.sql_syntax"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::CodeError
    }
    fn apply(&self, action: &Action, _ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let q = string_arg(call, "query").filter(|_| call.name == "sql_query")?;
        let options: Vec<(&str, &str)> = [("FROM", "FORM"), ("SELECT", "SELCT"), ("WHERE", "WHRE"), (")", "")]
            .into_iter()
            .filter(|(k, _)| q.contains(k))
            .collect();
        let (from, to) = *options.choose(rng)?;
        let nq = q.replacen(from, to, 1);
        let a = edit(action, |c| c.set_arg("query", json!(nq)));
        done(
            a,
            self.name(),
            self.error_type(),
            if to.is_empty() {
                "a closing parenthesis dropped from the query".into()
            } else {
                format!("{from} misspelled as {to}")
            },
        )
    }
}

struct ExprSyntax;
impl Perturbation for ExprSyntax {
    fn name(&self) -> &'static str {
        "code.expr_syntax"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::CodeError
    }
    fn apply(&self, action: &Action, _ctx: &PerturbContext<'_>, rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        let e = string_arg(call, "expression").filter(|_| call.name == "calculator")?;
        // Break it inside, so the failed text does not still contain the correct one.
        let (ne, what) = if e.contains(')') && rng.random_bool(0.5) {
            (e.replacen(')', "", 1), "a closing parenthesis dropped")
        } else {
            let op = [" * ", " + ", " - ", " / "].into_iter().find(|op| e.contains(op))?;
            (e.replacen(op, &format!("{}/ ", op), 1), "a stray operator inserted")
        };
        let a = edit(action, |c| c.set_arg("expression", json!(ne)));
        done(a, self.name(), self.error_type(), what.to_string())
    }
}

struct NoFinalAnswer;
impl Perturbation for NoFinalAnswer {
    fn name(&self) -> &'static str {
        "noncommit.no_final_answer"
    }
    fn error_type(&self) -> ErrorType {
        ErrorType::NonCommit
    }
    fn apply(&self, action: &Action, ctx: &PerturbContext<'_>, _rng: &mut ChaCha8Rng) -> Option<Perturbed> {
        let call = action.calls.first()?;
        if call.name != "final_answer" || !ctx.is_final {
            return None;
        }
        let answer = call.arguments().values().next().cloned().unwrap_or(Value::Null);
        let a = match action.surface {
            Surface::Python => {
                Action::parse_python(&format!("print({})", regrpo_schemas::pycode::py_literal(&answer))).ok()?
            }
            Surface::Json => return None,
        };
        done(a, self.name(), self.error_type(), "the answer printed instead of passed to final_answer".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn apply(op: &dyn Perturbation, code: &str, spec: Option<&ToolSpec>) -> Option<Perturbed> {
        let a = Action::parse_python(code).unwrap();
        let ctx = PerturbContext { spec, alternatives: &[], sandbox: None, is_final: true };
        op.apply(&a, &ctx, &mut ChaCha8Rng::seed_from_u64(1))
    }

    fn builtin(name: &str) -> ToolSpec {
        crate::tool::ToolSuite::builtin().get(name).unwrap().spec().clone()
    }

    #[test]
    fn operators_change_what_they_say() {
        let spec = builtin("inspect_file_as_text");
        let p = apply(&Typo, "inspect_file_as_text(file_path=\"bill.txt\")", Some(&spec)).unwrap();
        assert_ne!(p.action.to_text(), "inspect_file_as_text(file_path=\"bill.txt\")");
        assert!(p.change.starts_with("file_path 'bill.txt' → '"));
        let p = apply(&UnknownArg, "inspect_file_as_text(file_path=\"bill.txt\")", Some(&spec)).unwrap();
        assert_eq!(p.action.to_text(), "inspect_file_as_text(filepath=\"bill.txt\")");
        let p = apply(&DropRequired, "inspect_file_as_text(file_path=\"bill.txt\")", Some(&spec)).unwrap();
        assert_eq!(p.action.to_text(), "inspect_file_as_text()");
    }

    #[test]
    fn sql_operators_edit_the_query() {
        let q = "sql_query(query=\"SELECT sum(revenue) AS total FROM sales WHERE region = 'north'\")";
        let p = apply(&DropConstraint, q, None).unwrap();
        assert_eq!(p.action.to_text(), "sql_query(query=\"SELECT sum(revenue) AS total FROM sales\")");
        let p = apply(&SqlSyntax, q, None).unwrap();
        assert!(p.action.to_text() != q);
        assert_eq!(replace_word("sum(units) AS units_x", "units", "revenue").unwrap(), "sum(revenue) AS units_x");
        assert_eq!(sql_table("SELECT a FROM sales WHERE x").as_deref(), Some("sales"));
    }

    #[test]
    fn noncommit_prints_instead_of_submitting() {
        let p = apply(&NoFinalAnswer, "final_answer(answer=\"42\")", None).unwrap();
        assert_eq!(p.action.to_text(), "print(\"42\")");
        assert!(p.action.calls.is_empty());
    }

    #[test]
    fn shift_box_stays_in_the_image() {
        let p = apply(&ShiftBox, "crop(image_path=\"a.png\", box=[0, 0, 32, 32])", None).unwrap();
        let b: Vec<i64> = serde_json::from_value(p.action.arguments()["box"].clone()).unwrap();
        assert!(b.iter().all(|v| (0..=64).contains(v)) && b != vec![0, 0, 32, 32]);
    }
}
