//! Evaluation of a policy on the held-out split of a snapshot.
//!
//! | metric | on | what |
//! | --- | --- | --- |
//! | `recovery_rate` | failure states | the next action succeeds (executed, full argument match) |
//! | `recovery_rate_derivable` | failure states whose fix is derivable | the same, on those |
//! | `first_try_success` | clean states | the action succeeds with no reflection |
//! | `unnecessary_reflection_rate` | clean states | a reflection was written where none was needed |
//! | `mean_reflection_tokens` | all | length of the reflections written |
//! | `error_type_accuracy` | failure states with a reflection | it names the right ErrorType |
//! | `evidence_grounding_rate` | failure states with a reflection | its evidence quotes the observation |
//! | `parse_rate` | all | the completion parsed into an action |
//! | `answer_accuracy` | held-out toolworld tasks | the agent loop's final answer (GAIA scorer) |
//! | `sampled_recovery` | failure states | share of `samples` completions at temperature 1 that succeed |
//! | `pass_at_k` | failure states | at least one of the `samples` completions succeeds |
//!
//! Every state is decoded greedily by the same [`TurnDecoder`] (the headline figures); with
//! `samples > 0` each failure state also gets that many sampled completions, drawn with
//! per-state seeds so that two policies see the same random numbers. Every outcome is kept per
//! state ([`StateOutcome`]), so two policies evaluated on one [`EvalSet`] can be compared pair
//! by pair (McNemar on greedy outcomes, Wilcoxon on sampled rates; see [`crate::eval::stats`]).
//! Rates carry 95% Wilson intervals.

pub mod agent;
pub mod scoring;
pub mod stats;

use std::collections::{BTreeMap, HashMap};

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regrpo_engine::ToolSuite;
use regrpo_schemas::id::content_id;
use regrpo_schemas::{Rot, Split, Trajectory};
use serde::{Deserialize, Serialize};

use crate::data::SnapshotRows;
use crate::decode::sampling::{Draws, SampleConfig};
use crate::decode::turn::{Turn, TurnDecoder};
use crate::error::Result;
use crate::eval::agent::{AgentConfig, run_episode};
use crate::eval::scoring::gaia_score;
use crate::eval::stats::wilson;
use crate::json::{nan_if_null, nan_pair_if_null};
use crate::model::CausalLm;
use crate::regrpo::rollout::{State, StateKind, States, clean_states, failure_states, score, spread_list};
use crate::text::window::{Truncations, WindowConfig};

/// What an evaluation covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    pub max_failure_states: usize,
    pub max_clean_states: usize,
    pub max_tasks: usize,
    /// Only trajectories of these sources (default: all).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub window: WindowConfig,
    /// Decode under the tools' grammar.
    #[serde(default = "yes")]
    pub constrained: bool,
    /// States decoded together in one batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The split of the snapshot the states come from: `test` is the held-out set every
    /// reported figure comes from; `train` measures a policy on the states it trained on (to see
    /// whether training moves its own objective, without looking at the held-out states).
    #[serde(default = "test_split")]
    pub split: Split,
    /// Where the policy runs (the agent loop's episodes too).
    #[serde(default)]
    pub device: crate::model::backend::DeviceKind,
    /// Completions sampled per failure state (temperature 1, under the grammar) for sampled
    /// recovery and pass@k; 0 turns it off.
    #[serde(default)]
    pub samples: usize,
    /// Seed of the sampled completions: completion `j` of a state draws from a generator seeded
    /// by this, the state and `j`, so two policies evaluated with one seed share their random
    /// numbers (their paired comparison is sharper) and batching changes nothing.
    #[serde(default)]
    pub sample_seed: u64,
    /// The agent loop of the held-out tasks' episodes (`answer_accuracy`).
    #[serde(default)]
    pub agent: AgentConfig,
}

fn test_split() -> Split {
    Split::Test
}

fn default_batch() -> usize {
    16
}

fn yes() -> bool {
    true
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            max_failure_states: 120,
            max_clean_states: 120,
            max_tasks: 20,
            sources: None,
            window: WindowConfig::default(),
            constrained: true,
            batch: default_batch(),
            split: Split::Test,
            device: Default::default(),
            samples: 0,
            sample_seed: 0,
            agent: AgentConfig::default(),
        }
    }
}

/// What happened at one state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateOutcome {
    pub state_id: String,
    pub kind: String,
    pub error_type: Option<String>,
    pub derivable: Option<bool>,
    pub success: bool,
    pub reflected: bool,
    pub parsed: bool,
    pub reflection_tokens: usize,
    /// Clean states under the grammar: the probability that a sampled turn (temperature 1)
    /// opens with a reflection.
    #[serde(default)]
    pub reflection_probability: Option<f64>,
    /// What the policy wrote.
    pub completion: String,
    /// Failure states with sampled completions: how many of them succeeded.
    #[serde(default)]
    pub sampled_successes: Option<usize>,
}

/// A rate with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub k: usize,
    pub n: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub rate: f64,
    #[serde(deserialize_with = "nan_pair_if_null")]
    pub ci: (f64, f64),
}

impl Rate {
    pub fn of(k: usize, n: usize) -> Rate {
        Rate { k, n, rate: if n == 0 { f64::NAN } else { k as f64 / n as f64 }, ci: wilson(k, n) }
    }
}

/// The figures of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub failure_states: usize,
    pub clean_states: usize,
    pub tasks: usize,
    pub recovery: Rate,
    pub recovery_derivable: Rate,
    pub first_try: Rate,
    pub unnecessary_reflection: Rate,
    /// The unnecessary-reflection rate of sampling (temperature 1, under the grammar): the mean
    /// over clean states of the probability that the turn opens with a reflection (NaN
    /// unconstrained). Greedy decoding shows a reflection only where that probability passes
    /// one half; this shows how far the policy leans before it does.
    #[serde(default, deserialize_with = "nan_if_null")]
    pub sampled_unnecessary_reflection: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_reflection_tokens: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub error_type_accuracy: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub evidence_grounding_rate: f64,
    pub parse: Rate,
    #[serde(deserialize_with = "nan_if_null")]
    pub answer_accuracy: f64,
    /// Recovery by the failure's ErrorType.
    pub recovery_by_error_type: BTreeMap<String, Rate>,
    /// Completions sampled per failure state (0: none).
    #[serde(default)]
    pub samples: usize,
    /// Sampled recovery: the mean over failure states of the share of `samples` completions
    /// (temperature 1) that succeed — the expected recovery of the sampling policy RL trains,
    /// which greedy decoding shows only where a top token flips (NaN without samples).
    #[serde(default, deserialize_with = "nan_if_null")]
    pub sampled_recovery: f64,
    /// pass@k, `k = samples`: the share of failure states where at least one of the sampled
    /// completions succeeds (NaN without samples).
    #[serde(default, deserialize_with = "nan_if_null")]
    pub pass_at_k: f64,
    pub truncations: Truncations,
    pub outcomes: Vec<StateOutcome>,
}

impl EvalReport {
    /// `(name, value)` pairs in table order.
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("recovery_rate", self.recovery.rate),
            ("recovery_rate_derivable", self.recovery_derivable.rate),
            ("first_try_success", self.first_try.rate),
            ("unnecessary_reflection_rate", self.unnecessary_reflection.rate),
            ("sampled_unnecessary_reflection", self.sampled_unnecessary_reflection),
            ("mean_reflection_tokens", self.mean_reflection_tokens),
            ("error_type_accuracy", self.error_type_accuracy),
            ("evidence_grounding_rate", self.evidence_grounding_rate),
            ("parse_rate", self.parse.rate),
            ("answer_accuracy", self.answer_accuracy),
            ("sampled_recovery", self.sampled_recovery),
            ("pass_at_k", self.pass_at_k),
        ]
    }

    /// The share of sampled completions that succeeded, per failure state, in evaluation order
    /// (`None` without samples).
    pub fn sampled_rates(&self) -> Vec<Option<f64>> {
        self.outcomes
            .iter()
            .filter(|o| o.kind == StateKind::Failure.as_str())
            .map(|o| o.sampled_successes.map(|k| k as f64 / self.samples.max(1) as f64))
            .collect()
    }

    /// Success per state of one kind, in evaluation order (for paired tests).
    pub fn successes(&self, kind: StateKind) -> Vec<bool> {
        self.outcomes.iter().filter(|o| o.kind == kind.as_str()).map(|o| o.success).collect()
    }

    /// The probability of opening with a reflection per clean state, in evaluation order.
    pub fn clean_reflection_probabilities(&self) -> Vec<Option<f64>> {
        self.outcomes.iter().filter(|o| o.kind == StateKind::Clean.as_str()).map(|o| o.reflection_probability).collect()
    }

    /// Reflected or not per clean state, in evaluation order.
    pub fn clean_reflections(&self) -> Vec<bool> {
        self.outcomes.iter().filter(|o| o.kind == StateKind::Clean.as_str()).map(|o| o.reflected).collect()
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

/// The states and tasks of the snapshot's `cfg.split` (the test split unless told otherwise).
pub fn held_out(rows: &SnapshotRows, root: &std::path::Path, cfg: &EvalConfig) -> EvalSet {
    let wanted = |t: &Trajectory| cfg.sources.as_ref().is_none_or(|s| s.contains(&t.source));
    let test: Vec<Trajectory> = rows
        .trajectories
        .iter()
        .filter(|t| wanted(t) && rows.split.of(&t.trajectory_id) == cfg.split)
        .cloned()
        .collect();
    let by_id: HashMap<String, Trajectory> = test.iter().map(|t| (t.trajectory_id.clone(), t.clone())).collect();
    let test_rots: Vec<Rot> = rows.rots.iter().filter(|r| by_id.contains_key(&r.trajectory_id)).cloned().collect();
    let failures = spread_list(failure_states(&test_rots, &by_id, root), cfg.max_failure_states);
    let cleans = spread_list(clean_states(&test, root), cfg.max_clean_states);
    let tasks: Vec<Trajectory> = test.into_iter().filter(|t| t.source == "toolworld").take(cfg.max_tasks).collect();
    EvalSet { states: States { failures, cleans }, tasks }
}

/// States whose completions are sampled together (each with `samples` rows).
const SAMPLED_STATES_PER_BATCH: usize = 8;

/// For each failure state, how many of `cfg.samples` completions sampled at temperature 1
/// (under the grammar, no nucleus cut) succeed; each completion draws from its own generator
/// seeded by `cfg.sample_seed`, the state and its index.
async fn sampled_successes<B: Backend>(
    model: &CausalLm<B>,
    decoder: &TurnDecoder,
    suite: &ToolSuite,
    failures: &[State],
    cfg: &EvalConfig,
) -> Result<HashMap<String, usize>> {
    let mut out = HashMap::new();
    if cfg.samples == 0 {
        return Ok(out);
    }
    let sample = SampleConfig { temperature: 1.0, top_p: 1.0, max_new_tokens: cfg.window.max_target_tokens };
    for chunk in failures.chunks(SAMPLED_STATES_PER_BATCH) {
        let turns: Vec<Turn<'_>> = chunk
            .iter()
            .map(|s| Turn { messages: &s.messages, specs: &s.specs, surface: s.gt_action.surface, prefix: "" })
            .collect();
        let seeds = chunk
            .iter()
            .flat_map(|s| {
                (0..cfg.samples).map(move |j| {
                    let id =
                        content_id([s.state_id.as_bytes(), &cfg.sample_seed.to_le_bytes(), &(j as u64).to_le_bytes()]);
                    ChaCha8Rng::seed_from_u64(u64::from_str_radix(&id[..16], 16).unwrap_or_default())
                })
            })
            .collect();
        let generated = decoder.generate_groups(model, &turns, cfg.samples, &sample, Draws::PerRow(seeds))?;
        for (state, g) in chunk.iter().zip(generated) {
            let mut k = 0;
            for c in &g.completions {
                k += usize::from(score(&decoder.text(c)?, state, suite).await.success);
            }
            out.insert(state.state_id.clone(), k);
        }
    }
    Ok(out)
}

/// Evaluates a model (greedy decoding) on held-out states and tasks.
pub async fn evaluate<B: Backend>(
    model: &CausalLm<B>,
    decoder: &TurnDecoder,
    suite: &ToolSuite,
    set: &EvalSet,
    root: &std::path::Path,
    cfg: &EvalConfig,
    mut on_state: impl FnMut(),
) -> Result<EvalReport> {
    let tk = decoder.tokenizer();
    let (failures, cleans, tasks) = (&set.states.failures, &set.states.cleans, &set.tasks);
    let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: cfg.window.max_target_tokens };
    let mut r = EvalReport {
        failure_states: failures.len(),
        clean_states: cleans.len(),
        tasks: tasks.len(),
        ..Default::default()
    };
    let (mut typed, mut grounded, mut with_refl_f) = (0, 0, 0);
    let (mut refl_tokens, mut refl_n) = (0usize, 0usize);
    let all: Vec<&State> = failures.iter().chain(cleans).collect();
    // Greedy decoding of a batch of states at once gives what each gives alone, faster.
    let mut decoded = Vec::with_capacity(all.len());
    for chunk in all.chunks(cfg.batch.max(1)) {
        let requests: Vec<_> =
            chunk.iter().map(|s| (s.messages.as_slice(), s.specs.as_slice(), s.gt_action.surface)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (state, generated) in chunk.iter().zip(decoder.generate_each(model, &requests, &greedy, &mut rng)?) {
            decoded.push((*state, generated));
            on_state();
        }
    }
    let sampled = sampled_successes(model, decoder, suite, failures, cfg).await?;
    let clean_requests: Vec<_> =
        cleans.iter().map(|s| (s.messages.as_slice(), s.specs.as_slice(), s.gt_action.surface)).collect();
    let mut probabilities =
        decoder.reflection_probabilities(model, &clean_requests, cfg.window.max_target_tokens, cfg.batch)?.into_iter();
    for (state, generated) in decoded {
        r.truncations.add(&generated.truncations);
        let text = decoder.text(&generated.completions[0])?;
        let s = score(&text, state, suite).await;
        let reflection_tokens = match &s.reflection_text {
            Some(block) => tk.encode(block)?.len(),
            None => 0,
        };
        if s.reflection_text.is_some() {
            refl_tokens += reflection_tokens;
            refl_n += 1;
        }
        if state.kind == StateKind::Failure && s.reflection.is_some() {
            with_refl_f += 1;
            typed += usize::from(s.type_correct);
            grounded += usize::from(s.grounded);
        }
        r.outcomes.push(StateOutcome {
            state_id: state.state_id.clone(),
            kind: state.kind.as_str().into(),
            error_type: state.error_type.map(|t| t.as_str().to_string()),
            derivable: state.derivable,
            // A clean state is solved at the first try: without reflecting.
            success: s.success && (state.kind == StateKind::Failure || s.reflection.is_none()),
            reflected: s.reflection.is_some(),
            parsed: s.action.is_some(),
            reflection_tokens,
            reflection_probability: if state.kind == StateKind::Clean { probabilities.next().flatten() } else { None },
            completion: text,
            sampled_successes: sampled.get(&state.state_id).copied(),
        });
    }
    r.samples = cfg.samples;
    let rates: Vec<f64> = r.sampled_rates().into_iter().flatten().collect();
    (r.sampled_recovery, r.pass_at_k) = if rates.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let n = rates.len() as f64;
        (rates.iter().sum::<f64>() / n, rates.iter().filter(|x| **x > 0.0).count() as f64 / n)
    };
    let count = |f: &dyn Fn(&StateOutcome) -> bool| r.outcomes.iter().filter(|o| f(o)).count();
    let failure = |o: &StateOutcome| o.kind == StateKind::Failure.as_str();
    let clean = |o: &StateOutcome| o.kind == StateKind::Clean.as_str();
    r.recovery = Rate::of(count(&|o| failure(o) && o.success), failures.len());
    r.recovery_derivable = Rate::of(
        count(&|o| failure(o) && o.success && o.derivable == Some(true)),
        count(&|o| failure(o) && o.derivable == Some(true)),
    );
    r.first_try = Rate::of(count(&|o| clean(o) && o.success), cleans.len());
    r.unnecessary_reflection = Rate::of(count(&|o| clean(o) && o.reflected), cleans.len());
    let probs: Vec<f64> = r.clean_reflection_probabilities().into_iter().flatten().collect();
    r.sampled_unnecessary_reflection =
        if probs.is_empty() { f64::NAN } else { probs.iter().sum::<f64>() / probs.len() as f64 };
    r.parse = Rate::of(count(&|o| o.parsed), r.outcomes.len());
    r.mean_reflection_tokens = if refl_n == 0 { 0.0 } else { refl_tokens as f64 / refl_n as f64 };
    r.error_type_accuracy = ratio(typed, with_refl_f);
    r.evidence_grounding_rate = ratio(grounded, with_refl_f);
    let mut by_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in r.outcomes.iter().filter(|o| failure(o)) {
        let e = by_type.entry(o.error_type.clone().unwrap_or_default()).or_default();
        e.0 += usize::from(o.success);
        e.1 += 1;
    }
    r.recovery_by_error_type = by_type.into_iter().map(|(t, (k, n))| (t, Rate::of(k, n))).collect();
    let mut correct = 0;
    for t in tasks {
        let ep = run_episode(model, decoder, suite, t, root, &cfg.agent).await?;
        r.truncations.add(&ep.truncations);
        let gt = t.final_answer.as_deref().unwrap_or_default();
        correct += usize::from(ep.final_answer.as_deref().is_some_and(|a| gaia_score(a, gt)));
    }
    r.answer_accuracy = ratio(correct, tasks.len());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_nan_figures_reads_back_as_written() {
        let report = EvalReport {
            recovery: Rate::of(0, 0),
            answer_accuracy: f64::NAN,
            sampled_recovery: 0.25,
            ..Default::default()
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"answer_accuracy\":null"), "{text}");
        let back: EvalReport = serde_json::from_str(&text).unwrap();
        assert!(back.answer_accuracy.is_nan() && back.recovery.rate.is_nan());
        assert!(back.recovery.ci.0.is_finite() || back.recovery.ci.0.is_nan());
        assert_eq!(back.sampled_recovery, 0.25);
        assert_eq!(back.recovery.n, 0);
    }
}
