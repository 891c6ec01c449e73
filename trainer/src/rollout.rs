//! States to act from, and completions executed and scored for real.
//!
//! - *Failure states*: a local trajectory up to and including a failed observation (from the
//!   snapshot's RoT rows); the right completion reflects and corrects.
//! - *Clean states*: a prefix at a step that did not fail; the right completion acts without
//!   reflecting (this is what the reflection cost teaches).
//!
//! A completion is parsed into reflection + action; the action runs through the engine's tool
//! suite in the task's sandbox. `success` requires the ground-truth tool, a successful
//! execution, and every argument equivalent after normalisation **or** the same observation as
//! the ground truth. A shifted box or a neighbouring column is a failure, unlike the
//! reference's "same tool and first argument". Unparseable completions fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regrpo_engine::executor::{declared_specs, execute_action};
use regrpo_engine::{CallContext, ToolSpec, ToolSuite, toolworld};
use regrpo_schemas::equivalence::argument_share;
use regrpo_schemas::evidence::quote_span;
use regrpo_schemas::react::{Reflection, parse_assistant, reflection_block, reflection_turn, trajectory_messages};
use regrpo_schemas::{Action, ActionMatch, ErrorType, ExecStatus, Execution, Message, Rot, Trajectory};
use serde::{Deserialize, Serialize};

/// Why the policy is asked to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Failure,
    Clean,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Failure => "failure",
            StateKind::Clean => "clean",
        }
    }
}

/// A state and its ground truth.
#[derive(Debug, Clone)]
pub struct State {
    pub state_id: String,
    pub kind: StateKind,
    pub trajectory_id: String,
    pub step_index: usize,
    /// The chat so far; the completion is the next assistant turn.
    pub messages: Vec<Message>,
    pub gt_action: Action,
    pub gt_observation: String,
    /// The ErrorType of the failure (failure states).
    pub error_type: Option<ErrorType>,
    pub failed_observation: Option<String>,
    /// The turn a perfect policy writes here (reflection and corrected action, or the step).
    pub gold: String,
    /// Whether the engine found the fix derivable from the prompt (failure states).
    pub derivable: Option<bool>,
    pub sandbox: Option<PathBuf>,
    pub specs: Vec<ToolSpec>,
    pub is_final: bool,
}

/// The states a policy is trained or evaluated on.
#[derive(Debug, Clone, Default)]
pub struct States {
    pub failures: Vec<State>,
    pub cleans: Vec<State>,
}

impl States {
    /// Failure states of `rots` and clean states of `trajectories`.
    pub fn of(rots: &[Rot], trajectories: &[Trajectory], root: &Path) -> States {
        let by_id: HashMap<String, Trajectory> =
            trajectories.iter().map(|t| (t.trajectory_id.clone(), t.clone())).collect();
        States { failures: failure_states(rots, &by_id, root), cleans: clean_states(trajectories, root) }
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.cleans.is_empty()
    }
}

/// Failure states from RoT rows whose trajectory is known.
pub fn failure_states(rots: &[Rot], trajectories: &HashMap<String, Trajectory>, root: &Path) -> Vec<State> {
    let mut out = Vec::new();
    for r in rots {
        let Some(t) = trajectories.get(&r.trajectory_id) else { continue };
        let Some(at) = reflection_turn(&r.conversation) else { continue };
        let Ok(gt_action) = r.corrected_action.parse() else { continue };
        let step = r.step_index as usize;
        let gt_observation =
            t.steps.get(step).and_then(|s| s.observation.as_ref()).map(|o| o.text.clone()).unwrap_or_default();
        out.push(State {
            state_id: format!("f-{}", r.rot_id),
            kind: StateKind::Failure,
            trajectory_id: r.trajectory_id.clone(),
            step_index: step,
            messages: r.conversation[..at].to_vec(),
            gt_action,
            gt_observation,
            error_type: r.error_type.parse().ok(),
            failed_observation: Some(r.failed_observation.clone()),
            gold: r.conversation[at].content.clone(),
            derivable: r.derivable,
            sandbox: toolworld::sandbox_of(root, t),
            specs: declared_specs(t),
            is_final: step + 1 == t.steps.len(),
        });
    }
    out
}

/// Clean states: every step of every trajectory that has an action and an observation.
pub fn clean_states(trajectories: &[Trajectory], root: &Path) -> Vec<State> {
    let mut out = Vec::new();
    for t in trajectories {
        let messages = trajectory_messages(t);
        let mut assistant_seen = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let k = assistant_seen;
            assistant_seen += 1;
            let Some(step) = t.steps.get(k) else { continue };
            let Some(gt_action) = step.action.as_ref().and_then(|a| a.parse().ok()) else { continue };
            let gt_observation = step.observation.as_ref().map(|o| o.text.clone()).unwrap_or_default();
            out.push(State {
                state_id: format!("c-{}-{k}", t.trajectory_id),
                kind: StateKind::Clean,
                trajectory_id: t.trajectory_id.clone(),
                step_index: k,
                messages: messages[..i].to_vec(),
                gt_action,
                gt_observation,
                error_type: None,
                failed_observation: None,
                gold: m.content.clone(),
                derivable: None,
                sandbox: toolworld::sandbox_of(root, t),
                specs: declared_specs(t),
                is_final: k + 1 == t.steps.len(),
            });
        }
    }
    out
}

/// The scorer checked on a set of states before they are used: the gold completion must
/// score as a success, and at a failure state repeating the failed action must not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfCheck {
    pub states: usize,
    /// States whose gold completion scored as a success.
    pub gold_success: usize,
    pub failure_states: usize,
    /// Failure states where repeating the failed action scored as a success.
    pub repeat_success: usize,
    /// States kept: gold succeeds and (failure states) the repeat fails.
    pub kept: usize,
}

impl SelfCheck {
    pub fn add(&mut self, o: &SelfCheck) {
        self.states += o.states;
        self.gold_success += o.gold_success;
        self.failure_states += o.failure_states;
        self.repeat_success += o.repeat_success;
        self.kept += o.kept;
    }
}

/// Runs the self-check and keeps the states that pass it (a state without a sandbox or an
/// executor for its tool can never succeed, and teaches or measures nothing).
pub async fn self_check(states: States, suite: &ToolSuite) -> (States, SelfCheck) {
    let mut c = SelfCheck::default();
    let mut out = States::default();
    for (list, failure) in [(states.failures, true), (states.cleans, false)] {
        let mut kept = Vec::with_capacity(list.len());
        for s in list {
            c.states += 1;
            let gold = score(&s.gold, &s, suite).await.success;
            c.gold_success += usize::from(gold);
            let mut repeat = false;
            if failure {
                c.failure_states += 1;
                let failed = s.messages.iter().rev().find(|m| m.role == "assistant").map(|m| m.content.clone());
                repeat = match failed {
                    Some(text) => score(&text, &s, suite).await.success,
                    None => false,
                };
                c.repeat_success += usize::from(repeat);
            }
            if gold && !repeat {
                kept.push(s);
            }
        }
        c.kept += kept.len();
        if failure {
            out.failures = kept;
        } else {
            out.cleans = kept;
        }
    }
    (out, c)
}

/// A completion, taken apart, executed and scored.
#[derive(Debug, Clone)]
pub struct Scored {
    pub reflection: Option<Reflection>,
    /// Characters of the reflection block (tokens are counted by the caller).
    pub reflection_text: Option<String>,
    pub action: Option<Action>,
    pub exec: Option<Execution>,
    pub status: ExecStatus,
    pub success: bool,
    /// Share of the ground truth a failed action got right: half for the tool, half for the
    /// share of its arguments (for partial-credit shaping).
    pub partial: f64,
    /// Evidence quotes the failed observation (failure states).
    pub grounded: bool,
    /// The reflection names the failure's ErrorType (failure states).
    pub type_correct: bool,
}

/// Parses, executes and scores a completion's text for a state.
pub async fn score(text: &str, state: &State, suite: &ToolSuite) -> Scored {
    let turn = parse_assistant(text);
    let reflection_text = reflection_block(text).map(str::to_string);
    let grounded = match (&turn.reflection, &state.failed_observation) {
        (Some(r), Some(obs)) => quote_span(&r.evidence, obs).is_some(),
        _ => false,
    };
    let type_correct = match (&turn.reflection, state.error_type) {
        (Some(r), Some(t)) => r.error_type.trim() == t.as_str(),
        _ => false,
    };
    let action = turn.action.as_ref().and_then(|(surface, code)| Action::parse(*surface, code).ok());
    let Some(action) = action else {
        return Scored {
            reflection: turn.reflection,
            reflection_text,
            action: None,
            exec: None,
            status: ExecStatus::Unparseable,
            success: false,
            partial: 0.0,
            grounded,
            type_correct,
        };
    };
    let ctx = CallContext { sandbox: state.sandbox.clone(), timeout: std::time::Duration::from_secs(10) };
    let exec = execute_action(suite, &action, &state.specs, &ctx, state.is_final).await;
    let parameters = suite.spec_of(state.gt_action.tool(), &state.specs).map(ToolSpec::parameter_names);
    let parameters = parameters.as_deref();
    let same_tool = action.tool() == state.gt_action.tool();
    let success = exec.status.is_ok()
        && (ActionMatch::FullArguments.same(&action, &state.gt_action, parameters)
            || same_tool && exec.text == state.gt_observation);
    let partial = if same_tool { 0.5 + 0.5 * argument_share(&action, &state.gt_action, parameters) } else { 0.0 };
    Scored {
        partial,
        reflection: turn.reflection,
        reflection_text,
        status: exec.status,
        exec: Some(exec),
        action: Some(action),
        success,
        grounded,
        type_correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_argument_decides_success_under_the_suites_spec() {
        let suite = ToolSuite::builtin();
        let names = suite.get("crop").unwrap().spec().parameter_names();
        let right = Action::parse_python("crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])").unwrap();
        let positional = Action::parse_python("crop(\"shapes.png\", [0, 0, 32, 32])").unwrap();
        let shifted = Action::parse_python("crop(image_path=\"shapes.png\", box=[0, 16, 32, 48])").unwrap();
        assert!(ActionMatch::FullArguments.same(&positional, &right, Some(&names)));
        assert!(!ActionMatch::FullArguments.same(&shifted, &right, Some(&names)));
    }

    #[test]
    fn reflection_block_is_cut_before_the_thought() {
        let t =
            "Reflection:\n- ErrorType: ArgInvalid\n- Evidence: x\n- FixPlan: y\nThought: z\n\nCode:\n```py\nf()\n```";
        assert_eq!(reflection_block(t).unwrap(), "Reflection:\n- ErrorType: ArgInvalid\n- Evidence: x\n- FixPlan: y\n");
        assert_eq!(reflection_block("Thought: z"), None);
    }
}
