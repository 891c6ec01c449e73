//! Reflect: turn a judged failure into a Reflection-of-Thought, gate it, lay out the chat.
//!
//! - `Evidence` is an exact quote from the failed observation (its byte span is kept) plus one
//!   sentence of explanation.
//! - `FixPlan` comes from the structured difference between the failed and the corrected
//!   action: which tool or argument, from what to what.
//! - The corrected action is the original one.
//!
//! Two writers: the deterministic template (`template-v1`) and an optional teacher model
//! behind an OpenAI-compatible chat-completions endpoint; both pass the same gates.

use std::time::Duration;

use regrpo_schemas::evidence::quote_span;
use regrpo_schemas::react::{Reflection, format_assistant, format_observation};
use regrpo_schemas::{Action, ErrorType, Message, Trajectory};
use serde_json::{Map, Value, json};

/// A judged failure, with what the reflection may draw on.
pub struct Failure<'a> {
    pub trajectory: &'a Trajectory,
    /// The trajectory's system turn ([`regrpo_schemas::react::system_message`]), rendered once
    /// for all its failures.
    pub system: &'a str,
    pub step_index: usize,
    pub original: &'a Action,
    pub failed: &'a Action,
    pub failed_observation: &'a str,
    pub failed_error_code: Option<&'a str>,
    /// What the corrected action returned: the source's own observation, or ours when it ran;
    /// `None` when neither exists (a function-calling source ships schemas, not executors).
    pub original_observation: Option<&'a str>,
    /// The validator's message when the corrected action does not validate against the tool's
    /// schema (a source's answer that names an undeclared argument or misses a required one).
    pub corrected_schema_error: Option<&'a str>,
    pub error_type: ErrorType,
}

/// A reflection and where its quote sits in the failed observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflected {
    pub reflection: Reflection,
    pub evidence_span: Option<(usize, usize)>,
    pub generator: String,
}

const MAX_QUOTE: usize = 120;

/// The most telling line of the failed observation: the first error line, else the first line
/// the original observation does not have, else the first line. A line longer than 120
/// characters is cut at its last sentence or clause boundary within them (`.`, `;`, `:`, `,`,
/// `!` or `?` before a space, or a space before `(`), so that a quote never ends mid-clause;
/// only a line with no such boundary past its first 30 characters is cut at a space.
pub fn pick_quote(failed: &str, original: &str) -> Option<(usize, usize)> {
    let mut lines = Vec::new();
    let mut at = 0;
    for line in failed.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let lead = body.len() - body.trim_start().len();
        let t = body.trim();
        if !t.is_empty() {
            lines.push((at + lead, t));
        }
        at += line.len();
    }
    let original_lines: Vec<&str> = original.lines().map(str::trim).collect();
    let (start, text) = lines
        .iter()
        .find(|(_, l)| l.starts_with("Error") || l.contains("rror:"))
        .or_else(|| lines.iter().find(|(_, l)| !original_lines.contains(l)))
        .or_else(|| lines.first())
        .copied()?;
    Some((start, start + clause_end(text, MAX_QUOTE)))
}

/// The byte length of the longest prefix of `text` of at most `max` characters that ends at a
/// sentence or clause boundary (see [`pick_quote`]); a sentence's closing `.`, `!` or `?` is
/// kept, a `;`, `:` or `,` is not.
fn clause_end(text: &str, max: usize) -> usize {
    if text.chars().count() <= max {
        return text.len();
    }
    let limit = text.char_indices().nth(max).map_or(text.len(), |(i, _)| i);
    let min = text.char_indices().nth(30).map_or(0, |(i, _)| i);
    let bytes = text.as_bytes();
    let mut best = None;
    for (i, &b) in bytes[..limit].iter().enumerate() {
        let next_is_space = bytes.get(i + 1).is_some_and(u8::is_ascii_whitespace);
        let end = match b {
            b'.' | b'!' | b'?' if next_is_space => i + 1,
            b';' | b':' | b',' if next_is_space => i,
            b' ' if bytes.get(i + 1) == Some(&b'(') => i,
            _ => continue,
        };
        if end >= min {
            best = Some(end);
        }
    }
    best.or_else(|| text[..limit].rfind(' ').filter(|s| *s > max / 2)).unwrap_or(limit)
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("'{s}'"),
        v => v.to_string(),
    };
    if s.chars().count() > 80 { format!("{}…'", s.chars().take(79).collect::<String>()) } else { s }
}

fn explanation(f: &Failure<'_>) -> String {
    let tool = f.failed.tool();
    match f.error_type {
        ErrorType::ArgInvalid => match f.failed_error_code.unwrap_or("") {
            "file_not_found" => "so the file the call names does not exist".into(),
            "invalid_arguments" => format!("so the arguments of {tool} do not match its schema"),
            "out_of_bounds" | "empty_box" => "so the box or position lies outside the image".into(),
            "sql_unknown_name" => "so the query names something the table does not have".into(),
            _ => format!("so an argument of {tool} is invalid"),
        },
        ErrorType::ToolMismatch => {
            format!("so {tool} is the wrong tool for this step, which needs {}", f.original.tool())
        }
        ErrorType::GroundingDrift => {
            "so the call looked at the wrong target and its result does not answer the task".into()
        }
        ErrorType::InfoInsufficient => "so the call left out information the task gives".into(),
        ErrorType::CodeError => format!("so the code passed to {tool} does not run"),
        ErrorType::NonCommit => "so the task ended without the answer being submitted".into(),
    }
}

/// What the corrected action changes, in words.
pub fn fix_steps(original: &Action, failed: &Action) -> Vec<String> {
    if failed.calls.is_empty() {
        let answer = original.arguments().values().next().map(short).unwrap_or_default();
        return vec![format!("submit the answer with final_answer(answer={answer}) instead of printing it")];
    }
    let (oa, fa): (Map<String, Value>, Map<String, Value>) = (original.arguments(), failed.arguments());
    let mut steps = Vec::new();
    if original.tool() != failed.tool() {
        let args: Vec<String> = oa.iter().map(|(k, v)| format!("{k}={}", short(v))).collect();
        steps.push(format!("call {} instead of {} with {}", original.tool(), failed.tool(), args.join(", ")));
        return steps;
    }
    for (k, v) in &fa {
        if oa.contains_key(k) {
            continue;
        }
        match oa.iter().find(|(ok, ov)| *ov == v && !fa.contains_key(*ok)) {
            Some((ok, _)) => steps.push(format!("pass the argument as {ok} instead of {k}")),
            None => steps.push(format!("remove the argument {k}, which {} does not take", original.tool())),
        }
    }
    for (k, v) in &oa {
        match fa.get(k) {
            None if !steps.iter().any(|s| s.contains(&format!("as {k} "))) => {
                steps.push(format!("add the required argument {k}={}", short(v)))
            }
            Some(fv) if fv != v => steps.push(format!("set {k} to {} instead of {}", short(v), short(fv))),
            _ => {}
        }
    }
    steps
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().collect::<String>() + c.as_str())
}

/// The deterministic template reflection.
pub fn template(f: &Failure<'_>) -> Reflected {
    let span = pick_quote(f.failed_observation, f.original_observation.unwrap_or(""));
    let quote = span.map_or("", |(a, b)| &f.failed_observation[a..b]);
    let evidence = format!("The observation says '{quote}', {}.", explanation(f));
    // The plan says what to change; the evidence already quotes why.
    let steps = fix_steps(f.original, f.failed);
    let fix_plan = format!("{}.", capitalize(&steps.join("; ")));
    Reflected {
        reflection: Reflection { error_type: f.error_type.as_str().into(), evidence, fix_plan },
        evidence_span: span,
        generator: "template-v1".into(),
    }
}

/// An OpenAI-compatible chat-completions endpoint that writes reflections.
#[derive(Debug, Clone)]
pub struct TeacherConfig {
    /// Base URL, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended).
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl TeacherConfig {
    /// From a URL, with model and key from `REGRPO_TEACHER_MODEL` / `OPENAI_API_KEY`.
    pub fn from_env(url: &str) -> Self {
        TeacherConfig {
            url: url.trim_end_matches('/').to_string(),
            model: std::env::var("REGRPO_TEACHER_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into()),
            api_key: std::env::var("OPENAI_API_KEY").ok(),
            timeout: Duration::from_secs(60),
        }
    }
}

const TEACHER_PROMPT: &str = "You write Reflection-of-Thought triplets for a tool-using agent's failed step. Answer with exactly three lines:\n- ErrorType: <one of GroundingDrift, ToolMismatch, ArgInvalid, InfoInsufficient, CodeError, NonCommit>\n- Evidence: <quote the observation verbatim inside single quotes, then one sentence>\n- FixPlan: <what to change, from what to what, and why>";

/// Asks the teacher for a reflection. The answer still has to pass the gates.
pub async fn teacher(client: &reqwest::Client, cfg: &TeacherConfig, f: &Failure<'_>) -> Result<Reflected, String> {
    let user = format!(
        "Task: {}\nFailed action:\n{}\nObservation:\n{}\nCorrect action:\n{}\nThe judged ErrorType is {}.",
        f.trajectory.task,
        f.failed.to_text(),
        f.failed_observation,
        f.original.to_text(),
        f.error_type
    );
    let body = json!({
        "model": cfg.model,
        "temperature": 0,
        "messages": [{"role": "system", "content": TEACHER_PROMPT}, {"role": "user", "content": user}],
    });
    let mut req = client.post(format!("{}/chat/completions", cfg.url)).timeout(cfg.timeout).json(&body);
    if let Some(k) = &cfg.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.map_err(|e| format!("teacher request failed: {e}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| format!("teacher answered HTTP {status} with no JSON: {e}"))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("teacher answered HTTP {status} without choices[0].message.content"))?;
    let r = Reflection::parse_block(content).ok_or("teacher answer has no ErrorType/Evidence/FixPlan lines")?;
    let span = quote_span(&r.evidence, f.failed_observation);
    Ok(Reflected { reflection: r, evidence_span: span, generator: format!("teacher:{}", cfg.model) })
}

/// The ready-to-train chat: steps before the failure, the failed action and its observation,
/// the reflection with the corrected action, then the rest of the trajectory and its final
/// answer. When the corrected action has no observation (nothing executed it and the source
/// recorded none), the chat ends at the corrected action: no engine message stands in for one.
pub fn conversation(f: &Failure<'_>, r: &Reflection) -> Vec<Message> {
    let t = f.trajectory;
    let msg = |role: &str, content: String| Message { role: role.into(), content };
    let mut out = vec![msg("system", f.system.to_string()), msg("user", format!("Task: {}", t.task))];
    let last = t.steps.len().saturating_sub(1);
    for (i, step) in t.steps.iter().enumerate() {
        let Some(action) = step.action.as_ref().and_then(|a| a.parse().ok()) else { continue };
        let obs = step.observation.as_ref().map(|o| o.text.clone()).unwrap_or_default();
        if i == f.step_index {
            out.push(msg("assistant", format_assistant(None, step.thought.as_deref(), f.failed)));
            out.push(msg("user", format_observation(i, f.failed_observation)));
            out.push(msg("assistant", format_assistant(Some(r), step.thought.as_deref(), f.original)));
        } else {
            out.push(msg("assistant", format_assistant(None, step.thought.as_deref(), &action)));
        }
        if i == f.step_index && f.original_observation.is_none() {
            return out;
        }
        if i != last || action.tool() != "final_answer" {
            let shown = if i == f.step_index { f.original_observation.unwrap_or_default() } else { &obs };
            out.push(msg("user", format_observation(i, shown)));
        }
    }
    out.extend(regrpo_schemas::react::final_answer_turn(t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_prefers_the_error_line_and_stays_a_substring() {
        let obs = "Schema ok\nError: file not found: bil.txt\nmore";
        let (a, b) = pick_quote(obs, "").unwrap();
        assert_eq!(&obs[a..b], "Error: file not found: bil.txt");
        let obs = "total\n999";
        let (a, b) = pick_quote(obs, "total\n1234").unwrap();
        assert_eq!(&obs[a..b], "999");
        let long = "x ".repeat(200);
        let (a, b) = pick_quote(&long, "").unwrap();
        assert!(b - a <= 120 && long.contains(&long[a..b]));
    }

    #[test]
    fn a_long_quote_ends_at_a_clause_not_mid_clause() {
        // BFCL's validator messages, joined by `; `: the cut used to leave `… "appointment_time" is a`.
        let obs = "Error: invalid arguments for book: \"date\" is a required property; \"doctor\" is not of \
                   type \"string\"; \"appointment_time\" is a required property. book takes: date, doctor";
        let (a, b) = pick_quote(obs, "").unwrap();
        assert_eq!(
            &obs[a..b],
            "Error: invalid arguments for book: \"date\" is a required property; \"doctor\" is not of type \"string\""
        );
        let obs = format!("First sentence is long enough to count here. {}", "word ".repeat(40));
        let (a, b) = pick_quote(&obs, "").unwrap();
        assert_eq!(&obs[a..b], "First sentence is long enough to count here.");
        // No boundary at all: a space, as before.
        let obs = "w".repeat(10) + &" abcdefgh".repeat(30);
        let (a, b) = pick_quote(&obs, "").unwrap();
        assert!(b - a <= 120 && obs[..b].ends_with("abcdefgh"));
    }

    #[test]
    fn fix_plan_names_the_change() {
        let o = Action::parse_python("inspect_file_as_text(file_path=\"bill.txt\")").unwrap();
        let f = Action::parse_python("inspect_file_as_text(file_path=\"bil.txt\")").unwrap();
        assert_eq!(fix_steps(&o, &f), ["set file_path to 'bill.txt' instead of 'bil.txt'"]);
        let f = Action::parse_python("inspect_file_as_text(filepath=\"bill.txt\")").unwrap();
        assert_eq!(fix_steps(&o, &f), ["pass the argument as file_path instead of filepath"]);
        let f = Action::parse_python("search_text(query=\"bill.txt\")").unwrap();
        assert_eq!(fix_steps(&o, &f), ["call inspect_file_as_text instead of search_text with file_path='bill.txt'"]);
    }
}
