//! The typed records of a dataset repository, one struct per table row.
//!
//! Their Arrow schemas live next to them in [`crate::table`]; these structs are what the rest of
//! the workspace reads and writes. JSON-valued columns (`arguments`, `tool_specs`, `gt_answer`,
//! `config`…) are stored as JSON text so that SQL reaches into them with the JSON UDFs.

use serde::{Deserialize, Serialize};

use crate::action::{Action, Surface};
use crate::error::Result;
use crate::status::ExecStatus;

/// A file a task refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The name the agent uses for it (`invoice.pdf`).
    pub name: String,
    /// Where it lives (relative to the repository, or a URL).
    pub path: String,
    /// The sha256 of its bytes when we have them.
    pub sha256: Option<String>,
}

/// An action as stored: the primary tool and its arguments for SQL, and the raw text that
/// parses back to the full [`Action`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub tool: String,
    /// JSON object of the primary call's arguments (see [`crate::action::Call::arguments`]).
    pub arguments: String,
    /// `json` or `python`.
    pub surface: String,
    /// The action in its surface form.
    pub raw: String,
}

impl ActionRecord {
    /// Parses the stored text back into an [`Action`].
    pub fn parse(&self) -> Result<Action> {
        Action::parse(self.surface.parse::<Surface>()?, &self.raw)
    }
}

impl From<&Action> for ActionRecord {
    fn from(a: &Action) -> Self {
        ActionRecord {
            tool: a.tool().to_string(),
            arguments: serde_json::Value::Object(a.arguments()).to_string(),
            surface: a.surface.as_str().to_string(),
            raw: a.to_text(),
        }
    }
}

/// What a tool answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Stored as `ok`, `tool_error`, `empty`, … (see [`ExecStatus`]).
    pub status: ExecStatus,
    pub text: String,
}

/// One step of a trajectory: a thought, an action, what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub index: i32,
    pub thought: Option<String>,
    /// `None` when the agent wrote no action at all (a message without a code block).
    pub action: Option<ActionRecord>,
    pub observation: Option<Observation>,
}

/// A complete agent trajectory on one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trajectory {
    pub trajectory_id: String,
    /// The format it came from: `mat`, `regrpo`, `bfcl`, `gta`, `openai`, `toolworld`.
    pub source: String,
    /// The id the source gave it.
    pub source_id: String,
    pub source_file: String,
    /// Byte offset of the record in its file.
    pub source_offset: i64,
    /// 1-based line of the record, for line-oriented formats.
    pub source_line: Option<i64>,
    pub task: String,
    pub system_prompt: Option<String>,
    pub files: Vec<FileRef>,
    /// JSON array of tool specs in the OpenAI function-calling shape.
    pub tool_specs: String,
    pub steps: Vec<Step>,
    pub final_answer: Option<String>,
    /// JSON: the ground truth as the source states it.
    pub gt_answer: Option<String>,
    /// JSON object of source fields that have no column of their own.
    pub meta: Option<String>,
    pub ingest_batch: String,
}

/// How an execution went, as the engine or the trainer recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// Stored as `ok`, `tool_error`, `schema_error`, … (see [`ExecStatus`]).
    pub status: ExecStatus,
    pub text: String,
    pub error_code: Option<String>,
    pub duration_us: i64,
    pub tool_version: String,
}

/// A perturbed (or policy-generated) action and what executing it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearMiss {
    pub near_miss_id: String,
    pub trajectory_id: String,
    pub step_index: i32,
    pub error_type: String,
    /// The tool of the original action, for grouping and clustering.
    pub tool: String,
    /// `arg.typo`, `tool.swap`, …; `policy` for a model's own failures.
    pub operator: String,
    /// What the operator changed, in words.
    pub change: String,
    /// `engine` or `policy`.
    pub source: String,
    pub original_action: ActionRecord,
    pub failed_action: ActionRecord,
    pub execution: Execution,
    pub is_failure: bool,
    /// `accepted` or `rejected`.
    pub verdict: String,
    /// Why the judge or a gate rejected it.
    pub reason: Option<String>,
    pub engine_run_id: String,
    pub seed: i64,
}

/// One chat message of a training conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A Reflection-of-Thought example: the failure, its triplet, the fix, and the chat sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rot {
    pub rot_id: String,
    pub near_miss_id: Option<String>,
    pub trajectory_id: String,
    pub step_index: i32,
    pub error_type: String,
    pub tool: String,
    pub evidence: String,
    /// Byte offsets of the quoted part of `evidence` in `failed_observation`.
    pub evidence_start: Option<i32>,
    pub evidence_end: Option<i32>,
    pub fix_plan: String,
    pub failed_action: ActionRecord,
    pub failed_observation: String,
    pub corrected_action: ActionRecord,
    pub corrected_observation: Option<String>,
    pub verified: bool,
    /// Every argument of the corrected action can be read from what the agent saw before the
    /// reflection (prompt, observations) or is a literal of the tool's spec; `None` when not
    /// assessed (ingested rows).
    #[serde(default)]
    pub derivable: Option<bool>,
    pub conversation: Vec<Message>,
    /// The quality gates this row passed.
    pub gates: Vec<String>,
    /// `template-v1`, `teacher:<model>`, or `reference` for ingested rows.
    pub generator: String,
    pub engine_run_id: String,
}

/// Input that could not be read, kept with what a person needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub reject_id: String,
    /// The format the reader expected.
    pub format: String,
    pub file: String,
    pub line: Option<i64>,
    pub byte_offset: i64,
    pub reason: String,
    /// The first bytes of the record, lossily decoded.
    pub excerpt: String,
    pub ingest_batch: String,
}

/// A curator's verdict on one generated row (`regrpo ui`). Reviews are only ever appended:
/// the latest review of a row (by `reviewed_at`, then `review_id`) is its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub review_id: String,
    /// The table of the reviewed row: `rot` or `near_misses`.
    pub row_table: String,
    /// The reviewed row's id (`rot_id` or `near_miss_id`).
    pub row_id: String,
    /// `accept`, `reject`, `flag`, or `clear` (back to unreviewed); see [`Verdict`](crate::Verdict).
    pub verdict: String,
    /// Why (a reject's reason, a flag's note).
    pub reason: Option<String>,
    pub reviewer: String,
    /// Microseconds since the Unix epoch, UTC.
    pub reviewed_at: i64,
    /// The snapshot the reviewer was reading, if any.
    pub snapshot: Option<String>,
}

/// A training, evaluation or engine run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    /// `engine`, `sft`, `regrpo`, `eval`.
    pub kind: String,
    pub snapshot: Option<String>,
    /// JSON object `{table: version}` the run read.
    pub table_versions: String,
    /// JSON of the full configuration.
    pub config: String,
    pub git_commit: Option<String>,
    /// Microseconds since the Unix epoch, UTC.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: String,
    /// JSON of the run's closing figures.
    pub summary: Option<String>,
}

/// One scalar a run logged at a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub run_id: String,
    pub step: i64,
    pub name: String,
    pub value: f64,
    /// `train`, `eval`, `test`, … or none.
    pub split: Option<String>,
}

/// One sampled completion of ReGRPO and what executing it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub rollout_id: String,
    pub run_id: String,
    pub step: i64,
    pub state_id: String,
    /// `failure` or `clean`.
    pub state_kind: String,
    pub group_index: i32,
    pub completion: String,
    pub reflection_tokens: i32,
    pub parsed_action: Option<ActionRecord>,
    pub error_type: Option<String>,
    pub exec_status: ExecStatus,
    pub success: bool,
    pub reward: f64,
    pub advantage: f64,
}
