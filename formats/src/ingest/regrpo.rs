//! The ReGRPO reference format: `{id, image, answer, conversations: [{role, content}],
//! rot_meta?}`. A record with `rot_meta` becomes its clean trajectory plus one `rot` row; a
//! record without it, a trajectory.

use regrpo_schemas::id::content_id;
use regrpo_schemas::react::parse_assistant;
use regrpo_schemas::{ActionRecord, Message, Rot};
use serde::Deserialize;
use serde_json::Value;

use regrpo_schemas::evidence::quote_span;

use super::common::{answer_text, parse_action, steps_from_chat};
use super::{Content, Converted, FormatReader, RawRecord};
use crate::jsonscan::Layout;

#[derive(Debug, Deserialize)]
pub(super) struct ChatMessage {
    #[serde(alias = "from")]
    pub role: String,
    #[serde(alias = "value")]
    pub content: String,
}

#[derive(Debug, Deserialize)]
struct RefReflection {
    error_type: String,
    evidence: String,
    fix_plan: String,
}

#[derive(Debug, Deserialize)]
struct RotMeta {
    src_id: Option<String>,
    step_index: i32,
    error_type: String,
    failed_action: String,
    failed_observation: String,
    reflection: RefReflection,
    corrected_action: String,
    /// Our own export adds these; the reference has none of them.
    #[serde(default)]
    verified: Option<bool>,
    #[serde(default)]
    derivable: Option<bool>,
    #[serde(default)]
    gates: Option<Vec<String>>,
    #[serde(default)]
    generator: Option<String>,
    #[serde(default)]
    evidence_span: Option<(usize, usize)>,
}

#[derive(Debug, Deserialize)]
struct RefRecord {
    id: String,
    #[serde(default)]
    image: Value,
    #[serde(default)]
    answer: Option<Value>,
    conversations: Vec<ChatMessage>,
    #[serde(default)]
    rot_meta: Option<RotMeta>,
}

/// Splits a chat into system prompt, task and the turns after it.
pub(super) fn split_chat(conv: &[ChatMessage]) -> Result<(Option<String>, String, &[ChatMessage]), String> {
    let mut i = 0;
    let system = match conv.first() {
        Some(m) if m.role == "system" => {
            i = 1;
            Some(m.content.clone())
        }
        _ => None,
    };
    let task_msg = conv
        .get(i)
        .filter(|m| m.role == "user" || m.role == "human")
        .ok_or_else(|| format!("field `conversations[{i}]`: expected the user turn that states the task"))?;
    let task = task_msg.content.trim();
    let task = task.strip_prefix("Task:").unwrap_or(task).trim().to_string();
    Ok((system, task, &conv[i + 1..]))
}

fn action_of(text: &str, what: &str) -> Result<ActionRecord, String> {
    let turn = parse_assistant(text);
    let (surface, code) = turn.action.ok_or_else(|| format!("field `rot_meta.{what}`: no fenced action in it"))?;
    parse_action(surface, &code).map_err(|e| format!("field `rot_meta.{what}`: {e}"))
}

pub(crate) struct RegrpoReader;

impl FormatReader for RegrpoReader {
    fn layout(&self) -> Layout {
        Layout::Array
    }

    fn convert(&mut self, rec: &RawRecord<'_>) -> Result<Converted, String> {
        let r: RefRecord = rec.parse()?;
        let (system, task, turns) = split_chat(&r.conversations)?;
        let chat = steps_from_chat(turns.iter().map(|m| (m.role.as_str(), m.content.as_str())))?;
        let source_id = r.rot_meta.as_ref().and_then(|m| m.src_id.clone()).unwrap_or_else(|| r.id.clone());
        let mut meta = serde_json::Map::new();
        meta.insert("record_id".into(), Value::String(r.id.clone()));
        if !r.image.is_null() {
            meta.insert("image".into(), r.image.clone());
        }
        let t = rec.trajectory(
            "regrpo",
            source_id,
            Content {
                task,
                system_prompt: system,
                files: vec![],
                tool_specs: "[]".into(),
                steps: chat.steps,
                final_answer: chat.final_answer,
                gt_answer: r.answer.as_ref().map(|a| Value::String(answer_text(a)).to_string()),
                meta: Some(Value::Object(meta).to_string()),
            },
        );
        let mut out = Converted::default();
        if let Some(m) = &r.rot_meta {
            let failed_action = action_of(&m.failed_action, "failed_action")?;
            let corrected_action = action_of(&m.corrected_action, "corrected_action")?;
            if m.reflection.error_type != m.error_type {
                return Err(format!(
                    "rot_meta.error_type `{}` disagrees with rot_meta.reflection.error_type `{}`",
                    m.error_type, m.reflection.error_type
                ));
            }
            m.error_type
                .parse::<regrpo_schemas::ErrorType>()
                .map_err(|e| format!("field `rot_meta.error_type`: {e}"))?;
            let span = m
                .evidence_span
                .filter(|(a, b)| {
                    m.failed_observation.get(*a..*b).is_some_and(|q| !q.is_empty() && m.reflection.evidence.contains(q))
                })
                .or_else(|| quote_span(&m.reflection.evidence, &m.failed_observation));
            let corrected_observation =
                t.steps.get(m.step_index as usize).and_then(|s| s.observation.as_ref()).map(|o| o.text.clone());
            let conversation =
                r.conversations.iter().map(|c| Message { role: c.role.clone(), content: c.content.clone() }).collect();
            let rot_id = content_id([
                t.trajectory_id.as_bytes(),
                &m.step_index.to_le_bytes(),
                failed_action.raw.as_bytes(),
                m.failed_observation.as_bytes(),
                m.reflection.evidence.as_bytes(),
                m.reflection.fix_plan.as_bytes(),
            ]);
            out.rots.push(Rot {
                rot_id,
                near_miss_id: None,
                trajectory_id: t.trajectory_id.clone(),
                step_index: m.step_index,
                error_type: m.error_type.clone(),
                tool: corrected_action.tool.clone(),
                evidence: m.reflection.evidence.clone(),
                evidence_start: span.map(|s| s.0 as i32),
                evidence_end: span.map(|s| s.1 as i32),
                fix_plan: m.reflection.fix_plan.clone(),
                failed_action,
                failed_observation: m.failed_observation.clone(),
                corrected_action,
                corrected_observation,
                // Reference rows were never re-executed; our own exports say what they were.
                verified: m.verified.unwrap_or(false),
                derivable: m.derivable,
                conversation,
                gates: m.gates.clone().unwrap_or_default(),
                generator: m.generator.clone().unwrap_or_else(|| "reference".into()),
                engine_run_id: String::new(),
            });
        }
        out.trajectories.push(t);
        Ok(out)
    }
}
