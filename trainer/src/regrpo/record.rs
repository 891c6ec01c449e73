//! What a run learns about the states it draws, and what it writes: a `rollouts` row per
//! completion and a `near_misses` row (source = policy) per classifiable failure.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use regrpo_datasets::Repository;
use regrpo_engine::executor::execute_action;
use regrpo_engine::judge::judge;
use regrpo_engine::{CallContext, ToolSuite};
use regrpo_schemas::id::content_id;
use regrpo_schemas::{ActionRecord, Execution, NearMiss, Rollout};

use super::Sampled;
use crate::error::Result;
use crate::regrpo::rollout::{SelfCheck, State, check_state};

/// What a run learns about the states it draws: each is self-checked once, when first drawn
/// (instead of executing every state of the split before the first step), and its ground-truth
/// action's execution is kept for judging the failures sampled there.
pub(super) struct Seen<'a> {
    suite: &'a ToolSuite,
    /// Each drawn state's verdict, by id (ordered: a checkpoint writes it as it is).
    checked: BTreeMap<String, bool>,
    gold: HashMap<String, Execution>,
    pub(super) check: SelfCheck,
}

impl<'a> Seen<'a> {
    pub(super) fn new(suite: &'a ToolSuite) -> Self {
        Seen { suite, checked: BTreeMap::new(), gold: HashMap::new(), check: SelfCheck::default() }
    }

    /// Takes up where a checkpoint left off: the verdicts of the states drawn so far, and their
    /// tally.
    pub(super) fn resume(&mut self, checked: BTreeMap<String, bool>, check: SelfCheck) {
        self.checked = checked;
        self.check = check;
    }

    /// The verdicts of the states drawn so far, for a checkpoint.
    pub(super) fn checked(&self) -> &BTreeMap<String, bool> {
        &self.checked
    }

    pub(super) async fn passes(&mut self, state: &State) -> bool {
        if let Some(ok) = self.checked.get(&state.state_id) {
            return *ok;
        }
        let c = check_state(state, self.suite).await;
        self.check.add(&c);
        self.checked.insert(state.state_id.clone(), c.kept == 1);
        c.kept == 1
    }

    async fn gold(&mut self, state: &State) -> &Execution {
        if !self.gold.contains_key(&state.state_id) {
            let ctx = CallContext { sandbox: state.sandbox.clone(), timeout: Duration::from_secs(10) };
            let exec = execute_action(self.suite, &state.gt_action, &state.specs, &ctx, state.is_final).await;
            self.gold.insert(state.state_id.clone(), exec);
        }
        &self.gold[&state.state_id]
    }

    /// The `rollouts` row of a completion, and a `near_misses` row (source = policy) when it failed
    /// with an action the judge can classify.
    pub(super) async fn record(
        &mut self,
        run_id: &str,
        step: u64,
        state: &State,
        i: usize,
        s: &Sampled,
        advantage: f64,
    ) -> (Rollout, Option<NearMiss>) {
        let parsed = s.scored.action.as_ref().map(ActionRecord::from);
        let rollout_id = content_id([
            run_id.as_bytes(),
            &step.to_le_bytes(),
            state.state_id.as_bytes(),
            &(i as u64).to_le_bytes(),
            s.text.as_bytes(),
        ]);
        let mut error_type = None;
        let mut near = None;
        if let (false, Some(action), Some(exec)) = (s.scored.success, &s.scored.action, &s.scored.exec) {
            let gt_exec = self.gold(state).await;
            let verdict = judge(&state.gt_action, gt_exec, action, exec);
            if let (true, Some(t)) = (verdict.is_failure, verdict.error_type) {
                error_type = Some(t.as_str().to_string());
                near = Some(NearMiss {
                    near_miss_id: content_id([b"policy", rollout_id.as_bytes()]),
                    trajectory_id: state.trajectory_id.clone(),
                    step_index: state.step_index as i32,
                    error_type: t.as_str().into(),
                    tool: state.gt_action.tool().into(),
                    operator: "policy".into(),
                    change: format!("sampled by run {run_id} at step {step} from a {} state", state.kind.as_str()),
                    source: "policy".into(),
                    original_action: ActionRecord::from(&state.gt_action),
                    failed_action: ActionRecord::from(action),
                    execution: exec.clone(),
                    is_failure: true,
                    verdict: "accepted".into(),
                    reason: None,
                    engine_run_id: run_id.into(),
                    seed: 0,
                });
            }
        }
        let row = Rollout {
            rollout_id,
            run_id: run_id.into(),
            step: step as i64,
            state_id: state.state_id.clone(),
            state_kind: state.kind.as_str().into(),
            group_index: i as i32,
            completion: s.text.clone(),
            reflection_tokens: s.reflection_tokens as i32,
            parsed_action: parsed,
            error_type,
            exec_status: s.scored.status,
            success: s.scored.success,
            reward: s.reward,
            advantage,
        };
        (row, near)
    }
}

/// Commits rollouts and the policy's near-misses.
pub async fn commit_rollouts(
    repo: &Repository,
    rollouts: Vec<Rollout>,
    near: Vec<NearMiss>,
    run_id: &str,
) -> Result<(usize, usize)> {
    let a = repo.appender::<Rollout>().await?.append(rollouts, &format!("regrpo {run_id}")).await?;
    let b = repo.appender::<NearMiss>().await?.append(near, &format!("regrpo {run_id}")).await?;
    Ok((a.added, b.added))
}

/// Map of trajectories by id.
pub fn by_id(ts: Vec<regrpo_schemas::Trajectory>) -> HashMap<String, regrpo_schemas::Trajectory> {
    ts.into_iter().map(|t| (t.trajectory_id.clone(), t)).collect()
}
