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
    rots.iter().filter_map(|r| failure_state(r, trajectories.get(&r.trajectory_id)?, root)).collect()
}

/// The failure state of a RoT row of trajectory `t` (`None` when the row has no reflection turn
/// or its corrected action does not parse).
fn failure_state(r: &Rot, t: &Trajectory, root: &Path) -> Option<State> {
    let at = reflection_turn(&r.conversation)?;
    let gt_action = r.corrected_action.parse().ok()?;
    let step = r.step_index as usize;
    let gt_observation =
        t.steps.get(step).and_then(|s| s.observation.as_ref()).map(|o| o.text.clone()).unwrap_or_default();
    Some(State {
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
    })
}

/// Clean states: every step of every trajectory that has an action and an observation.
pub fn clean_states(trajectories: &[Trajectory], root: &Path) -> Vec<State> {
    let mut out = Vec::new();
    for t in trajectories {
        let messages = trajectory_messages(t);
        for (k, i) in assistant_turns(&messages).into_iter().enumerate() {
            out.extend(clean_state(t, &messages, i, k, root));
        }
    }
    out
}

/// The index of each assistant message, in order (the `k`-th is step `k`'s turn).
fn assistant_turns(messages: &[Message]) -> Vec<usize> {
    messages.iter().enumerate().filter(|(_, m)| m.role == "assistant").map(|(i, _)| i).collect()
}

/// The clean state at step `k` of `t`, whose turn is `messages[i]` (`None` when the step has no
/// action that parses).
fn clean_state(t: &Trajectory, messages: &[Message], i: usize, k: usize, root: &Path) -> Option<State> {
    let step = t.steps.get(k)?;
    let gt_action = step.action.as_ref().and_then(|a| a.parse().ok())?;
    let gt_observation = step.observation.as_ref().map(|o| o.text.clone()).unwrap_or_default();
    Some(State {
        state_id: format!("c-{}-{k}", t.trajectory_id),
        kind: StateKind::Clean,
        trajectory_id: t.trajectory_id.clone(),
        step_index: k,
        messages: messages[..i].to_vec(),
        gt_action,
        gt_observation,
        error_type: None,
        failed_observation: None,
        gold: messages[i].content.clone(),
        derivable: None,
        sandbox: toolworld::sandbox_of(root, t),
        specs: declared_specs(t),
        is_final: k + 1 == t.steps.len(),
    })
}

/// The states of a training split, built when drawn: a run draws a few hundred of the tens of
/// thousands a split holds, and building one (its chat, its tools' specs) costs more than
/// sampling from it. A state that cannot be built (no reflection turn, an action that does not
/// parse) is `None`, and a run draws again.
pub struct StatePool {
    root: PathBuf,
    rots: Vec<Rot>,
    trajectories: Vec<Trajectory>,
    /// Failure candidates: RoT rows (by index) whose trajectory is known, with its index.
    failures: Vec<(usize, usize)>,
    /// Clean candidates: (trajectory, step) of every step with an action.
    cleans: Vec<(usize, usize)>,
}

impl StatePool {
    pub fn new(rots: Vec<Rot>, trajectories: Vec<Trajectory>, root: &Path) -> StatePool {
        let by_id: HashMap<&str, usize> =
            trajectories.iter().enumerate().map(|(i, t)| (t.trajectory_id.as_str(), i)).collect();
        let failures =
            rots.iter().enumerate().filter_map(|(r, rot)| Some((r, *by_id.get(rot.trajectory_id.as_str())?))).collect();
        let cleans = trajectories
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.steps.iter().enumerate().filter(|(_, s)| s.action.is_some()).map(move |(k, _)| (i, k)))
            .collect();
        StatePool { root: root.to_path_buf(), rots, trajectories, failures, cleans }
    }

    /// Failure candidates and clean candidates.
    pub fn len(&self) -> (usize, usize) {
        (self.failures.len(), self.cleans.len())
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.cleans.is_empty()
    }

    /// Whether failure candidate `i`'s fix is derivable from its prompt (`None`: not known).
    pub fn derivable(&self, i: usize) -> Option<bool> {
        self.rots[self.failures[i].0].derivable
    }

    /// Keeps only the failure candidates whose fix the failure observation lets a policy
    /// derive, where there are any (otherwise keeps all).
    pub fn keep_derivable(&mut self) {
        let rots = &self.rots;
        if self.failures.iter().any(|(r, _)| rots[*r].derivable == Some(true)) {
            self.failures.retain(|(r, _)| rots[*r].derivable == Some(true));
        }
    }

    /// Keeps at most `n` failure and `n` clean candidates, spread over each list.
    pub fn keep_spread(&mut self, n: usize) {
        self.failures = spread_list(std::mem::take(&mut self.failures), n);
        self.cleans = spread_list(std::mem::take(&mut self.cleans), n);
    }

    /// Builds a candidate state.
    pub fn state(&self, kind: StateKind, i: usize) -> Option<State> {
        match kind {
            StateKind::Failure => {
                let (r, t) = self.failures[i];
                failure_state(&self.rots[r], &self.trajectories[t], &self.root)
            }
            StateKind::Clean => {
                let (t, k) = self.cleans[i];
                let t = &self.trajectories[t];
                let messages = trajectory_messages(t);
                let i = *assistant_turns(&messages).get(k)?;
                clean_state(t, &messages, i, k, &self.root)
            }
        }
    }
}

/// Up to `n` items spread over the list (every k-th), so a cap does not take one family only.
pub(crate) fn spread_list<T>(mut v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() <= n {
        return v;
    }
    let step = v.len() as f64 / n as f64;
    let keep: Vec<usize> = (0..n).map(|i| (i as f64 * step) as usize).collect();
    let mut i = 0;
    v.retain(|_| {
        let k = keep.binary_search(&i).is_ok();
        i += 1;
        k
    });
    v
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

/// The self-check of one state: its own [`SelfCheck`] tally (one state, kept or not).
pub async fn check_state(s: &State, suite: &ToolSuite) -> SelfCheck {
    let mut c = SelfCheck { states: 1, ..Default::default() };
    let gold = score(&s.gold, s, suite).await.success;
    c.gold_success = usize::from(gold);
    let mut repeat = false;
    if s.kind == StateKind::Failure {
        c.failure_states = 1;
        let failed = s.messages.iter().rev().find(|m| m.role == "assistant").map(|m| m.content.clone());
        repeat = match failed {
            Some(text) => score(&text, s, suite).await.success,
            None => false,
        };
        c.repeat_success = usize::from(repeat);
    }
    c.kept = usize::from(gold && !repeat);
    c
}

/// Runs the self-check and keeps the states that pass it (a state without a sandbox or an
/// executor for its tool can never succeed, and teaches or measures nothing).
pub async fn self_check(states: States, suite: &ToolSuite) -> (States, SelfCheck) {
    let mut c = SelfCheck::default();
    let mut out = States::default();
    for (list, failure) in [(states.failures, true), (states.cleans, false)] {
        let mut kept = Vec::with_capacity(list.len());
        for s in list {
            let one = check_state(&s, suite).await;
            c.add(&one);
            if one.kept == 1 {
                kept.push(s);
            }
        }
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
