//! The executor: runs an action's calls through the tool suite, in order, and reports one
//! [`Execution`]. The engine's near-misses, the trainer's rollouts and evaluation and the agent
//! loop all execute here.
//!
//! ```text
//!  Action ─▶ no calls? ── yes ──▶ tool_error `no_action` (the episode's own observation)
//!    │ no
//!    ▼
//!  call 1 ─▶ ToolSuite::execute ─▶ ok ─▶ call 2 ─▶ … ─▶ texts joined, durations summed
//!                                  │ failed
//!                                  ▼
//!                          the run stops at the first failing call
//! ```

use regrpo_schemas::{Action, ExecStatus, Execution, Trajectory};

use crate::tool::{CallContext, ToolSpec, ToolSuite};

/// The episode's own observation when a step calls no tool: nothing ran and, at the last step,
/// no answer was submitted. The agent loop reports the same.
pub fn no_action_observation(is_final: bool) -> Execution {
    let text = if is_final {
        "Error: no tool was called, so the task ended without final_answer(...); the answer was not submitted."
    } else {
        "Error: no tool was called in this step; write one tool call in a code block."
    };
    Execution {
        status: ExecStatus::ToolError,
        text: text.into(),
        error_code: Some("no_action".into()),
        duration_us: 0,
        tool_version: "episode/1".into(),
    }
}

/// Executes every call of an action in order; the first failing call ends it.
pub async fn execute_action(
    suite: &ToolSuite,
    action: &Action,
    declared: &[ToolSpec],
    ctx: &CallContext,
    is_final: bool,
) -> Execution {
    if action.calls.is_empty() {
        return no_action_observation(is_final);
    }
    let mut texts = Vec::new();
    let mut last = None;
    let mut duration = 0;
    for call in &action.calls {
        let e = suite.execute(call, declared, ctx).await;
        duration += e.duration_us;
        texts.push(e.text.clone());
        let failed = !e.status.is_ok();
        last = Some(e);
        if failed {
            break;
        }
    }
    let mut e = last.expect("at least one call");
    e.text = texts.join("\n");
    e.duration_us = duration;
    e
}

/// Tool specs a trajectory declared (OpenAI shape).
pub fn declared_specs(t: &Trajectory) -> Vec<ToolSpec> {
    serde_json::from_str::<Vec<serde_json::Value>>(&t.tool_specs)
        .unwrap_or_default()
        .iter()
        .filter_map(ToolSpec::from_openai)
        .collect()
}
