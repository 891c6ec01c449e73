//! Evaluation of a policy on the held-out split of a snapshot.
//!
//! | metric | on | what |
//! | --- | --- | --- |
//! | `recovery_rate` | failure states | the next action succeeds (executed, full argument match) |
//! | `first_try_success` | clean states | the action succeeds with no reflection |
//! | `unnecessary_reflection_rate` | clean states | a reflection was written where none was needed |
//! | `mean_reflection_tokens` | all | length of the reflections written |
//! | `error_type_accuracy` | failure states with a reflection | it names the right ErrorType |
//! | `evidence_grounding_rate` | failure states with a reflection | its evidence quotes the observation |
//! | `answer_accuracy` | held-out toolworld tasks | the agent loop's final answer (GAIA scorer) |

use std::collections::HashMap;

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regrpo_engine::ToolSuite;
use regrpo_schemas::{Rot, Trajectory};
use serde::{Deserialize, Serialize};

use crate::agent::{AgentConfig, run_episode};
use crate::data::is_held_out;
use crate::error::Result;
use crate::metrics::gaia_score;
use crate::model::Qwen2;
use crate::rollout::{StateKind, States, clean_states, failure_states, score};
use crate::sampling::{SampleConfig, sample};
use crate::tokenizer::ChatTokenizer;

/// What an evaluation covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Share of trajectories held out (must match the training split).
    pub eval_fraction: f64,
    pub max_failure_states: usize,
    pub max_clean_states: usize,
    pub max_tasks: usize,
    pub max_new_tokens: usize,
    pub max_prompt_tokens: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            eval_fraction: 0.1,
            max_failure_states: 40,
            max_clean_states: 40,
            max_tasks: 20,
            max_new_tokens: 192,
            max_prompt_tokens: 1024,
        }
    }
}

/// The figures of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub failure_states: usize,
    pub clean_states: usize,
    pub tasks: usize,
    pub recovery_rate: f64,
    pub first_try_success: f64,
    pub unnecessary_reflection_rate: f64,
    pub mean_reflection_tokens: f64,
    pub error_type_accuracy: f64,
    pub evidence_grounding_rate: f64,
    pub answer_accuracy: f64,
}

impl EvalReport {
    /// `(name, value)` pairs in table order.
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("recovery_rate", self.recovery_rate),
            ("first_try_success", self.first_try_success),
            ("unnecessary_reflection_rate", self.unnecessary_reflection_rate),
            ("mean_reflection_tokens", self.mean_reflection_tokens),
            ("error_type_accuracy", self.error_type_accuracy),
            ("evidence_grounding_rate", self.evidence_grounding_rate),
            ("answer_accuracy", self.answer_accuracy),
        ]
    }
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { f64::NAN } else { n as f64 / d as f64 }
}

/// What a model is evaluated on: held-out states and tasks.
#[derive(Debug, Clone, Default)]
pub struct EvalSet {
    pub states: States,
    pub tasks: Vec<Trajectory>,
}

/// Held-out states and tasks of a snapshot's rows.
pub fn held_out(trajectories: &[Trajectory], rots: &[Rot], root: &std::path::Path, cfg: &EvalConfig) -> EvalSet {
    let test: Vec<Trajectory> =
        trajectories.iter().filter(|t| is_held_out(&t.trajectory_id, cfg.eval_fraction)).cloned().collect();
    let by_id: HashMap<String, Trajectory> =
        trajectories.iter().map(|t| (t.trajectory_id.clone(), t.clone())).collect();
    let test_rots: Vec<Rot> =
        rots.iter().filter(|r| is_held_out(&r.trajectory_id, cfg.eval_fraction)).cloned().collect();
    let mut failures = failure_states(&test_rots, &by_id, root);
    failures.truncate(cfg.max_failure_states);
    let mut cleans = clean_states(&test, root);
    cleans.truncate(cfg.max_clean_states);
    let tasks: Vec<Trajectory> = test.into_iter().filter(|t| t.source == "toolworld").take(cfg.max_tasks).collect();
    EvalSet { states: States { failures, cleans }, tasks }
}

/// Evaluates a model (greedy decoding) on held-out states and tasks.
pub async fn evaluate<B: Backend>(
    model: &Qwen2<B>,
    tk: &ChatTokenizer,
    suite: &ToolSuite,
    set: &EvalSet,
    root: &std::path::Path,
    cfg: &EvalConfig,
) -> Result<EvalReport> {
    let (failures, cleans, tasks) = (&set.states.failures, &set.states.cleans, &set.tasks);
    let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: cfg.max_new_tokens };
    let mut r = EvalReport {
        failure_states: failures.len(),
        clean_states: cleans.len(),
        tasks: tasks.len(),
        ..Default::default()
    };
    let (mut recovered, mut typed, mut grounded, mut with_refl_f) = (0, 0, 0, 0);
    let (mut first_try, mut unnecessary) = (0, 0);
    let (mut refl_tokens, mut refl_n) = (0usize, 0usize);
    for state in failures.iter().chain(cleans) {
        let mut prompt = tk.prompt(&state.messages)?;
        if prompt.len() > cfg.max_prompt_tokens {
            prompt.drain(..prompt.len() - cfg.max_prompt_tokens);
        }
        let c = sample(model, &prompt, 1, &greedy, tk.im_end, tk.pad, &mut ChaCha8Rng::seed_from_u64(0)).remove(0);
        let body: Vec<u32> = c.tokens.iter().copied().filter(|t| *t != tk.im_end).collect();
        let text = tk.decode(&body)?;
        let s = score(&text, state, suite).await;
        if let Some(block) = &s.reflection_text {
            refl_tokens += tk.encode(block)?.len();
            refl_n += 1;
        }
        match state.kind {
            StateKind::Failure => {
                recovered += usize::from(s.success);
                if s.reflection.is_some() {
                    with_refl_f += 1;
                    typed += usize::from(s.type_correct);
                    grounded += usize::from(s.grounded);
                }
            }
            StateKind::Clean => {
                first_try += usize::from(s.success && s.reflection.is_none());
                unnecessary += usize::from(s.reflection.is_some());
            }
        }
    }
    r.recovery_rate = ratio(recovered, failures.len());
    r.first_try_success = ratio(first_try, cleans.len());
    r.unnecessary_reflection_rate = ratio(unnecessary, cleans.len());
    r.mean_reflection_tokens = if refl_n == 0 { 0.0 } else { refl_tokens as f64 / refl_n as f64 };
    r.error_type_accuracy = ratio(typed, with_refl_f);
    r.evidence_grounding_rate = ratio(grounded, with_refl_f);
    let agent = AgentConfig {
        max_new_tokens: cfg.max_new_tokens,
        max_prompt_tokens: cfg.max_prompt_tokens,
        ..Default::default()
    };
    let mut correct = 0;
    for t in tasks {
        let ep = run_episode(model, tk, suite, t, root, &agent).await?;
        let gt = t.final_answer.as_deref().unwrap_or_default();
        correct += usize::from(ep.final_answer.as_deref().is_some_and(|a| gaia_score(a, gt)));
    }
    r.answer_accuracy = ratio(correct, tasks.len());
    Ok(r)
}
