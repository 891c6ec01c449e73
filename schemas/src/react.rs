//! The ReAct chat layout the reference trains on: assistant turns with an optional
//! `Reflection:` block, a `Thought:` and a fenced action, and observation turns.
//!
//! ```text
//! Reflection:
//! - ErrorType: ArgInvalid
//! - Evidence: the observation says 'File not found: reciept.pdf' …
//! - FixPlan: use the existing file invoice.pdf …
//! Thought: I will read the correct file.
//!
//! Code:
//! ```py
//! inspect_file_as_text("invoice.pdf")
//! ```
//! ```

use crate::action::{Action, Surface};
use crate::records::{Message, Trajectory};

/// The triplet of a Reflection-of-Thought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflection {
    pub error_type: String,
    pub evidence: String,
    pub fix_plan: String,
}

impl Reflection {
    /// The `Reflection:` block, ending with a newline.
    pub fn to_text(&self) -> String {
        format!(
            "Reflection:\n- ErrorType: {}\n- Evidence: {}\n- FixPlan: {}\n",
            self.error_type,
            one_line(&self.evidence),
            one_line(&self.fix_plan)
        )
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// An assistant turn taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssistantTurn {
    pub reflection: Option<Reflection>,
    pub thought: Option<String>,
    /// The fenced action: its surface (from the fence language) and the text inside the fence.
    pub action: Option<(Surface, String)>,
}

/// Reads an assistant message. Fences tagged `py`/`python` (or untagged) hold Python-call code,
/// `json` a JSON call. Text without a fence has no action.
pub fn parse_assistant(text: &str) -> AssistantTurn {
    let mut turn = AssistantTurn::default();
    let mut body = text;
    if let Some(rest) = body.trim_start().strip_prefix("Reflection:") {
        let (block, after) = split_reflection(rest);
        turn.reflection = parse_reflection_lines(block);
        body = after;
    }
    let (before, action) = match find_fence(body) {
        Some((start, surface, code, _end)) => (&body[..start], Some((surface, code))),
        None => (body, None),
    };
    let mut thought = before.trim();
    if let Some(t) = thought.strip_suffix("Code:").or_else(|| thought.strip_suffix("Action:")) {
        thought = t.trim_end();
    }
    let thought = thought.strip_prefix("Thought:").unwrap_or(thought).trim();
    if !thought.is_empty() {
        turn.thought = Some(thought.to_string());
    }
    turn.action = action;
    turn
}

/// Splits the reflection block (the `- Key: value` lines) from what follows it.
fn split_reflection(rest: &str) -> (&str, &str) {
    let mut end = 0;
    for line in rest.split_inclusive('\n') {
        let t = line.trim();
        if t.is_empty() && end == 0 || t.starts_with('-') {
            end += line.len();
        } else {
            break;
        }
    }
    (&rest[..end], &rest[end..])
}

fn parse_reflection_lines(block: &str) -> Option<Reflection> {
    let mut r = Reflection { error_type: String::new(), evidence: String::new(), fix_plan: String::new() };
    for line in block.lines() {
        let line = line.trim().trim_start_matches('-').trim();
        if let Some(v) = line.strip_prefix("ErrorType:") {
            r.error_type = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("Evidence:") {
            r.evidence = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("FixPlan:") {
            r.fix_plan = v.trim().to_string();
        }
    }
    (!r.error_type.is_empty()).then_some(r)
}

/// Finds the first fenced block: `(start of fence, surface, inner text, end of fence)`.
fn find_fence(text: &str) -> Option<(usize, Surface, String, usize)> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    let nl = after.find('\n')?;
    let lang = after[..nl].trim();
    let surface = match lang {
        "json" => Surface::Json,
        "" | "py" | "python" => Surface::Python,
        _ => return None,
    };
    let inner_start = start + 3 + nl + 1;
    let close = text[inner_start..].find("```")?;
    let mut inner = &text[inner_start..inner_start + close];
    inner = inner.strip_suffix('\n').unwrap_or(inner);
    Some((start, surface, inner.to_string(), inner_start + close + 3))
}

/// Writes an assistant turn in the reference layout.
pub fn format_assistant(reflection: Option<&Reflection>, thought: Option<&str>, action: &Action) -> String {
    let mut s = String::new();
    if let Some(r) = reflection {
        s.push_str(&r.to_text());
    }
    if let Some(t) = thought {
        s.push_str("Thought: ");
        s.push_str(t.trim());
        s.push_str("\n\n");
    }
    s.push_str(&format_action(action));
    s
}

/// The fenced action alone: `Code:\n```py\n…\n```` or `Action:\n```json\n…\n````.
pub fn format_action(action: &Action) -> String {
    match action.surface {
        Surface::Python => format!("Code:\n```py\n{}\n```", action.to_text()),
        Surface::Json => format!("Action:\n```json\n{}\n```", action.to_text()),
    }
}

/// The observation turn the reference writes after step `step` (0-based).
pub fn format_observation(step: usize, text: &str) -> String {
    format!("[OUTPUT OF STEP {step}] -> Observation:\n{text}")
}

/// Reads an observation turn: `[OUTPUT OF STEP k] -> Observation:\n…`, the MAT spelling without
/// the arrow, or `[OUTPUT OF STEP k] Error: …`. Returns `(is_error, text)`.
pub fn parse_observation(text: &str) -> Option<(bool, String)> {
    let rest = text.strip_prefix("[OUTPUT OF STEP ")?;
    let close = rest.find(']')?;
    rest[..close].trim().parse::<usize>().ok()?;
    let rest = rest[close + 1..].trim_start();
    let rest = rest.strip_prefix("->").map_or(rest, str::trim_start);
    if let Some(obs) = rest.strip_prefix("Observation:") {
        let obs = obs.strip_prefix('\n').unwrap_or(obs.trim_start_matches(' '));
        return Some((false, obs.to_string()));
    }
    Some((true, rest.to_string()))
}

/// A trajectory as a ReAct chat: system, the task, then each step's assistant turn and its
/// observation (none after the final `final_answer`).
pub fn trajectory_messages(t: &Trajectory) -> Vec<Message> {
    const DEFAULT_SYSTEM: &str =
        "You are a tool-using agent. Each step write a Thought then a Code block calling one tool.";
    let msg = |role: &str, content: String| Message { role: role.into(), content };
    let mut out = vec![
        msg("system", t.system_prompt.clone().unwrap_or_else(|| DEFAULT_SYSTEM.into())),
        msg("user", format!("Task: {}", t.task)),
    ];
    let last = t.steps.len().saturating_sub(1);
    for (i, step) in t.steps.iter().enumerate() {
        let action = step.action.as_ref().and_then(|a| a.parse().ok());
        let content = match &action {
            Some(a) => format_assistant(None, step.thought.as_deref(), a),
            None => step.thought.clone().unwrap_or_default(),
        };
        out.push(msg("assistant", content));
        let is_final = i == last && action.as_ref().is_some_and(|a| a.tool() == "final_answer");
        if let (Some(o), false) = (&step.observation, is_final) {
            out.push(msg("user", format_observation(i, &o.text)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROT_TURN: &str = "Reflection:\n- ErrorType: ArgInvalid\n- Evidence: The observation says 'File not found: reciept.pdf'.\n- FixPlan: Use invoice.pdf.\nThought: I will read the correct file.\n\nCode:\n```py\ninspect_file_as_text(\"invoice.pdf\")\n```";

    #[test]
    fn reference_rot_turn_parses() {
        let t = parse_assistant(ROT_TURN);
        let r = t.reflection.unwrap();
        assert_eq!(r.error_type, "ArgInvalid");
        assert_eq!(r.fix_plan, "Use invoice.pdf.");
        assert_eq!(t.thought.as_deref(), Some("I will read the correct file."));
        assert_eq!(t.action, Some((Surface::Python, "inspect_file_as_text(\"invoice.pdf\")".into())));
    }

    #[test]
    fn formatting_matches_the_reference_layout() {
        let t = parse_assistant(ROT_TURN);
        let action = Action::parse_python(&t.action.as_ref().unwrap().1).unwrap();
        assert_eq!(format_assistant(t.reflection.as_ref(), t.thought.as_deref(), &action), ROT_TURN);
    }

    #[test]
    fn message_without_fence_has_no_action() {
        let t = parse_assistant("Final Answer: it is 3.");
        assert_eq!(t.action, None);
        assert_eq!(t.thought.as_deref(), Some("Final Answer: it is 3."));
    }

    #[test]
    fn observations_in_both_spellings() {
        assert_eq!(parse_observation("[OUTPUT OF STEP 0] -> Observation:\nok"), Some((false, "ok".into())));
        assert_eq!(parse_observation("[OUTPUT OF STEP 3] Observation:\nx\ny"), Some((false, "x\ny".into())));
        assert_eq!(
            parse_observation("[OUTPUT OF STEP 1] Error: Error in code parsing: boom"),
            Some((true, "Error: Error in code parsing: boom".into()))
        );
        assert_eq!(parse_observation("Task: hi"), None);
    }
}
