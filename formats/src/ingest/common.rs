//! Pieces the format readers share: ReAct chat → steps, content ids, answers, quotes.

use regrpo_schemas::action::{Action, Surface};
use regrpo_schemas::react::{Reflection, parse_assistant, parse_observation};
use regrpo_schemas::{ActionRecord, ExecStatus, Observation, Step};
use serde_json::Value;

/// Steps read from a ReAct chat, plus the reflections it contained.
#[derive(Debug, Default)]
pub struct ChatSteps {
    pub steps: Vec<Step>,
    pub final_answer: Option<String>,
    /// For each reflection turn: the failed step it replaced and the reflection.
    pub reflections: Vec<(Step, Reflection)>,
}

/// Reads the turns after the task: assistant turns become steps, `[OUTPUT OF STEP k]` turns
/// their observations. An assistant turn that opens with a `Reflection:` replaces the step
/// before it (that step failed; the reflection corrects it), so the steps are the clean
/// trajectory and the failure is kept in `reflections`.
pub fn steps_from_chat<'a>(turns: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<ChatSteps, String> {
    let mut out = ChatSteps::default();
    for (n, (role, content)) in turns.into_iter().enumerate() {
        match role {
            "assistant" | "gpt" => {
                let turn = parse_assistant(content);
                let action = match &turn.action {
                    Some((surface, text)) => Some(parse_action(*surface, text).map_err(|e| format!("turn {n}: {e}"))?),
                    None => None,
                };
                if let Some(r) = turn.reflection {
                    let failed =
                        out.steps.pop().ok_or_else(|| format!("turn {n}: a reflection with no step before it"))?;
                    out.reflections.push((failed, r));
                }
                out.steps.push(Step {
                    index: out.steps.len() as i32,
                    thought: turn.thought,
                    action,
                    observation: None,
                });
            }
            "user" | "human" | "tool" | "observation" => {
                let Some((is_error, text)) = parse_observation(content) else { continue };
                if let Some(last) = out.steps.last_mut()
                    && last.observation.is_none()
                {
                    last.observation = Some(observation(is_error, text));
                }
            }
            _ => {}
        }
    }
    out.final_answer = out.steps.iter().rev().find_map(|s| s.action.as_ref().and_then(final_answer_of));
    Ok(out)
}

/// Parses an action and turns it into its stored form.
pub fn parse_action(surface: Surface, text: &str) -> Result<ActionRecord, String> {
    let action = Action::parse(surface, text).map_err(|e| e.to_string())?;
    Ok(ActionRecord::from(&action))
}

/// The answer a `final_answer(...)` action commits, when its argument is known.
pub fn final_answer_of(a: &ActionRecord) -> Option<String> {
    if a.tool != "final_answer" {
        return None;
    }
    let args: serde_json::Map<String, Value> = serde_json::from_str(&a.arguments).ok()?;
    let v = args.get("answer").or_else(|| args.get("$0")).or_else(|| args.values().next())?;
    if v.get(regrpo_schemas::action::EXPR_KEY).is_some() {
        return None;
    }
    Some(answer_text(v))
}

/// An observation from a chat turn: `tool_error` when the turn reports an error, `empty` when
/// there is no text.
pub fn observation(is_error: bool, text: String) -> Observation {
    let status = if is_error || text.trim_start().starts_with("Error") {
        ExecStatus::ToolError
    } else if text.trim().is_empty() {
        ExecStatus::Empty
    } else {
        ExecStatus::Ok
    };
    Observation { status, text }
}

/// A JSON answer as text: strings as they are, anything else as JSON.
pub fn answer_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_turn_replaces_the_failed_step() {
        let turns = [
            ("assistant", "Thought: a\n\nCode:\n```py\ntool(\"x\")\n```"),
            ("user", "[OUTPUT OF STEP 0] -> Observation:\nError: nope"),
            (
                "assistant",
                "Reflection:\n- ErrorType: ArgInvalid\n- Evidence: 'nope'\n- FixPlan: use y\nThought: b\n\nCode:\n```py\ntool(\"y\")\n```",
            ),
            ("user", "[OUTPUT OF STEP 0] -> Observation:\nfine"),
            ("assistant", "Thought: c\n\nCode:\n```py\nfinal_answer(\"42\")\n```"),
        ];
        let cs = steps_from_chat(turns).unwrap();
        assert_eq!(cs.steps.len(), 2);
        assert_eq!(cs.steps[0].action.as_ref().unwrap().arguments, r#"{"$0":"y"}"#);
        assert_eq!(cs.steps[0].observation.as_ref().unwrap().text, "fine");
        assert_eq!(cs.reflections[0].0.observation.as_ref().unwrap().status, ExecStatus::ToolError);
        assert_eq!(cs.final_answer.as_deref(), Some("42"));
    }
}
