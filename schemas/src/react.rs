//! The ReAct chat layout the reference trains on: assistant turns with an optional
//! `Reflection:` block, a `Thought:` and a fenced action, and observation turns.
//!
//! ````text
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
//! ````

use crate::action::{Action, Surface};
use crate::records::{Message, Trajectory};

/// The word that opens a reflection; written here and nowhere else in the workspace.
macro_rules! marker {
    () => {
        "Reflection:"
    };
}

/// The first line of a reflection block.
pub const REFLECTION_START: &str = concat!(marker!(), "\n");
/// What a reflection block opens with, up to its ErrorType's value.
pub const REFLECTION_OPEN: &str = concat!(marker!(), "\n- ErrorType: ");
/// Between the ErrorType and the Evidence.
pub const EVIDENCE_OPEN: &str = "\n- Evidence: ";
/// Between the Evidence and the FixPlan.
pub const FIX_PLAN_OPEN: &str = "\n- FixPlan: ";
/// What opens a thought.
pub const THOUGHT_OPEN: &str = "Thought: ";
/// What closes a thought, before the action.
pub const THOUGHT_END: &str = "\n\n";

/// What opens an action in its surface form: the marker line and the fence.
pub fn action_open(surface: Surface) -> &'static str {
    match surface {
        Surface::Python => "Code:\n```py\n",
        Surface::Json => "Action:\n```json\n",
    }
}

/// What closes an action's fence.
pub const ACTION_CLOSE: &str = "\n```";

/// Whether an assistant turn opens with a reflection block.
pub fn opens_with_reflection(text: &str) -> bool {
    text.trim_start().starts_with(marker!())
}

/// The index of the first assistant turn of `messages` that opens with a reflection.
pub fn reflection_turn(messages: &[Message]) -> Option<usize> {
    messages.iter().position(|m| m.role == "assistant" && opens_with_reflection(&m.content))
}

/// The reflection block of a completion, if it opens with one: everything before its
/// `Thought:`, its `Code:` or its first fence.
pub fn reflection_block(text: &str) -> Option<&str> {
    let t = text.trim_start();
    if !opens_with_reflection(t) {
        return None;
    }
    let end = t.find("Thought:").or_else(|| t.find("Code:")).or_else(|| t.find("```")).unwrap_or(t.len());
    Some(&t[..end])
}

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
            "{REFLECTION_OPEN}{}{EVIDENCE_OPEN}{}{FIX_PLAN_OPEN}{}\n",
            self.error_type,
            one_line(&self.evidence),
            one_line(&self.fix_plan)
        )
    }

    /// Reads a reflection block's `- Key: value` lines, with or without the opening line
    /// (a teacher model may answer with the lines alone).
    pub fn parse_block(text: &str) -> Option<Reflection> {
        let t = text.trim_start();
        parse_reflection_lines(split_reflection(t.strip_prefix(marker!()).unwrap_or(t)).0)
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
    if let Some(rest) = body.trim_start().strip_prefix(marker!()) {
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

/// Finds the action's fenced block: `(start of fence, surface, inner text, end of fence)`.
///
/// The action is the fence that follows a `Code:` / `Action:` line (the last such one): a
/// Thought may quote code of its own in fences before it. Without such a line, the last fence
/// whose language is an action surface is taken.
fn find_fence(text: &str) -> Option<(usize, Surface, String, usize)> {
    let mut marked = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t == "Code:" || t == "Action:" {
            let after = offset + line.len();
            let gap = text[after..].len() - text[after..].trim_start().len();
            if text[after + gap..].starts_with("```") {
                marked = Some(after + gap);
            }
        }
        offset += line.len();
    }
    if let Some(start) = marked {
        let (end, lang, inner) = fence_at(text, start)?;
        return Some((start, surface_of(lang)?, inner.to_string(), end));
    }
    // Fences pair up in order (opening, closing), whatever their language.
    let mut last = None;
    let mut from = 0;
    while let Some(at) = text[from..].find("```").map(|i| from + i) {
        let Some((end, lang, inner)) = fence_at(text, at) else { break };
        if let Some(surface) = surface_of(lang) {
            last = Some((at, surface, inner.to_string(), end));
        }
        from = end;
    }
    last
}

/// The closed fenced block that opens at `start` (where ``` begins): its end, its language
/// tag and its inner text.
fn fence_at(text: &str, start: usize) -> Option<(usize, &str, &str)> {
    let after = &text[start + 3..];
    let nl = after.find('\n')?;
    let inner_start = start + 3 + nl + 1;
    let close = text[inner_start..].find("```")?;
    let inner = &text[inner_start..inner_start + close];
    Some((inner_start + close + 3, after[..nl].trim(), inner.strip_suffix('\n').unwrap_or(inner)))
}

/// The action surface a fence's language tag stands for.
fn surface_of(lang: &str) -> Option<Surface> {
    match lang {
        "json" => Some(Surface::Json),
        "" | "py" | "python" => Some(Surface::Python),
        _ => None,
    }
}

/// An assistant turn without its leading `Reflection:` block: the thought and action that
/// follow it (the turn itself when it has no reflection).
pub fn strip_reflection(text: &str) -> &str {
    match text.trim_start().strip_prefix(marker!()) {
        Some(rest) => split_reflection(rest).1.trim_start(),
        None => text,
    }
}

/// Writes an assistant turn in the reference layout.
pub fn format_assistant(reflection: Option<&Reflection>, thought: Option<&str>, action: &Action) -> String {
    let mut s = String::new();
    if let Some(r) = reflection {
        s.push_str(&r.to_text());
    }
    if let Some(t) = thought {
        s.push_str(THOUGHT_OPEN);
        s.push_str(t.trim());
        s.push_str(THOUGHT_END);
    }
    s.push_str(&format_action(action));
    s
}

/// The fenced action alone: `Code:\n```py\n…\n```` or `Action:\n```json\n…\n````.
pub fn format_action(action: &Action) -> String {
    format!("{}{}{ACTION_CLOSE}", action_open(action.surface), action.to_text())
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
    let msg = |role: &str, content: String| Message { role: role.into(), content };
    let mut out = vec![msg("system", system_message(t)), msg("user", format!("Task: {}", t.task))];
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
    out.extend(final_answer_turn(t));
    out
}

/// The system turn of a trajectory's chat: the source's system prompt, or one that asks for
/// the action syntax the trajectory's steps use; followed by the declared tools, compactly
/// (see [`render_tools`]), when the prompt does not already name every one of them. Without
/// the tools a function-calling task cannot be solved from its prompt: sources keep them
/// in a `tools` field that a chat template renders, and ours is the same for every policy.
pub fn system_message(t: &Trajectory) -> String {
    let surface = t
        .steps
        .iter()
        .filter_map(|s| s.action.as_ref().and_then(|a| a.parse().ok()))
        .map(|a: Action| a.surface)
        .next()
        .unwrap_or(Surface::Python);
    let base = t.system_prompt.clone().unwrap_or_else(|| default_system_prompt(surface).to_string());
    let decls = declarations(&t.tool_specs);
    let named =
        |f: &serde_json::Value| f.get("name").and_then(serde_json::Value::as_str).is_some_and(|n| base.contains(n));
    match rendered(&decls) {
        Some(tools) if !decls.iter().all(named) => format!("{base}\n{tools}"),
        _ => base,
    }
}

/// The system prompt of a trajectory that has none, in the syntax of its actions.
pub fn default_system_prompt(surface: Surface) -> &'static str {
    match surface {
        Surface::Python => "You are a tool-using agent. Each step write a Thought then a Code block calling one tool.",
        Surface::Json => {
            "You are a tool-using agent. Each step write a Thought, then Action: and a ```json block {\"name\": tool, \"arguments\": {…}} calling one tool."
        }
    }
}

/// The function declarations of a `tool_specs` JSON array: OpenAI's
/// `{"type": "function", "function": {…}}` or the bare `{name, description, parameters}`.
fn declarations(tool_specs: &str) -> Vec<serde_json::Value> {
    let Ok(serde_json::Value::Array(specs)) = serde_json::from_str::<serde_json::Value>(tool_specs) else {
        return vec![];
    };
    specs
        .into_iter()
        .map(|s| match s.get("function") {
            Some(f) if f.is_object() => f.clone(),
            _ => s,
        })
        .filter(|f| f.get("name").and_then(serde_json::Value::as_str).is_some())
        .collect()
}

/// Longest tool description kept in a rendering, in characters.
const TOOL_DESCRIPTION_CHARS: usize = 120;

/// The declared tools, one line each: `- name(param: type, optional?: type): description`.
/// Types come from each parameter's JSON Schema (an `enum` lists its values); a description
/// keeps its first sentence, at most 120 characters. The trainer's context window budgets the
/// system turn as a whole (and counts a cut). `None` when nothing is declared.
pub fn render_tools(tool_specs: &str) -> Option<String> {
    rendered(&declarations(tool_specs))
}

/// [`render_tools`] of parsed declarations.
fn rendered(decls: &[serde_json::Value]) -> Option<String> {
    if decls.is_empty() {
        return None;
    }
    let mut out = String::from("Tools:");
    for f in decls {
        let name = f.get("name").and_then(serde_json::Value::as_str).unwrap_or_default();
        let params = f.get("parameters");
        let required: Vec<&str> = params
            .and_then(|p| p.get("required"))
            .and_then(serde_json::Value::as_array)
            .map(|r| r.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let args: Vec<String> = params
            .and_then(|p| p.get("properties"))
            .and_then(serde_json::Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(k, v)| {
                        let opt = if required.contains(&k.as_str()) { "" } else { "?" };
                        format!("{k}{opt}: {}", schema_type(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!("\n- {name}({})", args.join(", ")));
        let description = f.get("description").and_then(serde_json::Value::as_str).map(first_sentence);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            out.push_str(": ");
            out.push_str(&d);
        }
    }
    Some(out)
}

/// A parameter's type, compactly: `string`, `integer`, `array<number>`, `"a"|"b"`, `any`.
fn schema_type(v: &serde_json::Value) -> String {
    if let Some(values) = v.get("enum").and_then(serde_json::Value::as_array) {
        return values.iter().map(serde_json::Value::to_string).collect::<Vec<_>>().join("|");
    }
    match v.get("type") {
        Some(serde_json::Value::String(t)) if t == "array" => match v.get("items") {
            Some(items) => format!("array<{}>", schema_type(items)),
            None => "array".into(),
        },
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(serde_json::Value::Array(ts)) => {
            ts.iter().filter_map(serde_json::Value::as_str).collect::<Vec<_>>().join("|")
        }
        _ => "any".into(),
    }
}

fn first_sentence(d: &str) -> String {
    let d = one_line(d.trim());
    let end = d.find(". ").map_or(d.len(), |i| i + 1);
    let s = &d[..end];
    if s.chars().count() <= TOOL_DESCRIPTION_CHARS {
        return s.to_string();
    }
    let cut: String = s.chars().take(TOOL_DESCRIPTION_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// The assistant's closing answer, when the trajectory has one and its last step did not
/// already give it (a `final_answer` call): chat sources keep the answer as plain text after
/// the last tool result, and a conversation that stops at that result never shows answering.
pub fn final_answer_turn(t: &Trajectory) -> Option<Message> {
    let answer = t.final_answer.as_ref().filter(|a| !a.trim().is_empty())?;
    let answered = t
        .steps
        .last()
        .and_then(|s| s.action.as_ref())
        .and_then(|a| a.parse().ok())
        .is_some_and(|a: Action| a.tool() == "final_answer");
    (!answered).then(|| Message { role: "assistant".into(), content: answer.clone() })
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

    #[test]
    fn the_action_is_the_fence_after_code_or_action_not_a_fence_in_the_thought() {
        // The Thought quotes library code in a fence of its own, before the tool call.
        let turn = "Thought: pandas would do it:\n```py\nimport pandas as pd\npd.read_csv('x.csv')\n```\nbut the tool is simpler.\n\nCode:\n```py\ninspect_file_as_text(\"x.csv\")\n```";
        let t = parse_assistant(turn);
        assert_eq!(t.action, Some((Surface::Python, "inspect_file_as_text(\"x.csv\")".into())));
        assert!(t.thought.as_deref().unwrap().contains("pd.read_csv"), "the quoted code stays in the thought");
        // A JSON action after a Thought that quotes a shell command.
        let turn = "Thought: not `ls`, i.e.\n```bash\nls -la\n```\nAction:\n```json\n{\"name\": \"search\", \"arguments\": {\"q\": \"a\"}}\n```";
        let (surface, code) = parse_assistant(turn).action.unwrap();
        assert_eq!(surface, Surface::Json);
        assert!(code.starts_with("{\"name\": \"search\""));
        // Without a marker line, fences pair up: a closing fence never opens an action.
        let turn = "Thought: run\n```bash\nls\n```\nthen\n```json\n{\"name\": \"f\", \"arguments\": {}}\n```";
        assert_eq!(parse_assistant(turn).action.unwrap().0, Surface::Json);
        assert_eq!(parse_assistant("Thought: only\n```bash\nls\n```").action, None);
    }

    #[test]
    fn stripping_the_reflection_leaves_thought_and_action() {
        assert_eq!(
            strip_reflection(ROT_TURN),
            "Thought: I will read the correct file.\n\nCode:\n```py\ninspect_file_as_text(\"invoice.pdf\")\n```"
        );
        // A JSON-call turn with no Thought: the action alone remains.
        let turn = "Reflection:\n- ErrorType: ArgInvalid\n- Evidence: e\n- FixPlan: f\nAction:\n```json\n{}\n```";
        assert_eq!(strip_reflection(turn), "Action:\n```json\n{}\n```");
        assert_eq!(strip_reflection("Code:\n```py\nf()\n```"), "Code:\n```py\nf()\n```");
    }

    /// A one-task trajectory asking for Oslo's weather, with these steps and tools.
    fn weather_task(steps: Vec<crate::records::Step>, tool_specs: &str) -> Trajectory {
        Trajectory {
            trajectory_id: "t".into(),
            source: "openai".into(),
            source_id: "1".into(),
            source_file: "f".into(),
            source_offset: 0,
            source_line: None,
            task: "Weather in Oslo?".into(),
            system_prompt: None,
            files: vec![],
            tool_specs: tool_specs.into(),
            steps,
            final_answer: None,
            gt_answer: None,
            meta: None,
            ingest_batch: "b".into(),
        }
    }

    #[test]
    fn a_chat_ends_with_the_final_answer_the_source_gave() {
        let call = Action::parse_json(r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#).unwrap();
        let step = |action: &Action, obs: &str| crate::records::Step {
            index: 0,
            thought: None,
            action: Some(crate::records::ActionRecord::from(action)),
            observation: Some(crate::records::Observation { status: crate::ExecStatus::Ok, text: obs.into() }),
        };
        let mut t = Trajectory {
            final_answer: Some("It is 4 degrees.".into()),
            ..weather_task(vec![step(&call, "{\"temp_c\": 4}")], "[]")
        };
        let m = trajectory_messages(&t);
        assert_eq!((m[m.len() - 1].role.as_str(), m[m.len() - 1].content.as_str()), ("assistant", "It is 4 degrees."));
        assert!(m[m.len() - 2].content.contains("temp_c"));
        // A trajectory that answers with a final_answer call is not given the answer twice.
        let answer = Action::parse_python("final_answer(\"It is 4 degrees.\")").unwrap();
        t.steps.push(step(&answer, "It is 4 degrees."));
        let m = trajectory_messages(&t);
        assert_eq!(m.iter().filter(|m| m.content.contains("It is 4 degrees.")).count(), 1, "{m:?}");
    }

    #[test]
    fn the_system_turn_declares_the_tools_in_the_syntax_of_the_actions() {
        let call = Action::parse_json(r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#).unwrap();
        let specs = serde_json::json!([
            {"type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather of a city. Uses the national service.",
                "parameters": {"type": "object", "required": ["city"], "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "days": {"type": "array", "items": {"type": "integer"}}
                }}
            }},
            {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
        ]);
        let step = crate::records::Step {
            index: 0,
            thought: None,
            action: Some(crate::records::ActionRecord::from(&call)),
            observation: None,
        };
        let mut t = weather_task(vec![step], &specs.to_string());
        let system = &trajectory_messages(&t)[0].content;
        assert_eq!(
            system,
            &format!(
                "{}\nTools:\n- get_weather(city: string, unit?: \"c\"|\"f\", days?: array<integer>): Current weather of a city.\n- get_time()",
                default_system_prompt(Surface::Json)
            )
        );
        assert!(system.contains("Action:") && system.contains("```json"), "asks for the syntax the steps use");
        // A source prompt that names every tool already is kept as it is; one that does not
        // gets the declarations after it.
        t.system_prompt = Some("Use get_weather or get_time.".into());
        assert_eq!(system_message(&t), "Use get_weather or get_time.");
        t.system_prompt = Some("Be brief.".into());
        assert!(system_message(&t).starts_with("Be brief.\nTools:\n- get_weather("));
        t.tool_specs = "[]".into();
        assert_eq!(system_message(&t), "Be brief.");
        let long = "x".repeat(300);
        let one = serde_json::json!([{"name": "f", "description": long}]).to_string();
        assert_eq!(render_tools(&one).unwrap().chars().count(), "Tools:\n- f(): ".len() + 120);
    }
}
