//! ReGRPO: group-relative policy optimisation over reflection + corrective-action tokens on
//! local trajectories, with rollouts executed by the engine's tools.
//!
//! ```text
//! states (failure | clean) ─▶ G completions (shared prompt) ─▶ parse ─▶ execute ─▶ reward ─▶ advantage
//!        │                                                                                  │
//!        └── rollouts / near_misses(source = policy) tables ◀── log ── update (loss + β·KL) ◀┘
//! ```
//!
//! Completions are sampled under the tools' grammar (so they parse; tokens the grammar forced
//! carry no gradient). Groups without signal — by default, whose executed outcomes all agree
//! ([`GroupFilter`]) — are skipped, counted, and refilled from new states (DAPO's dynamic
//! sampling). The KL to the frozen
//! starting policy enters as [`objective::KlMode`] says (by default k1 in the reward).

pub mod objective;
mod record;
pub mod rollout;
mod update;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regrpo_engine::ToolSuite;
use regrpo_schemas::{NearMiss, Rollout};
use serde::{Deserialize, Serialize};

use crate::checkpoint::training;
use crate::decode::sampling::{Completion, Draws, SampleConfig};
use crate::decode::turn::{Turn, TurnDecoder};
use crate::error::{Error, Result};
use crate::json::nan_if_null;
use crate::model::CausalLm;
use crate::regrpo::objective::{AdvantageConfig, LossConfig, RewardConfig};
use crate::regrpo::rollout::{Scored, SelfCheck, State, StateKind, StatePool, score};
use crate::sft::clip_global_norm;
use crate::text::window::{Truncations, WindowConfig};
use record::Seen;
pub use record::{by_id, commit_rollouts};
use update::completion_logp;

/// ReGRPO hyper-parameters. Defaults are the reference's: G = 5, λ_exec = 1, η = 0.1,
/// λ_val = 0, β = 0.04, lr 5e-6; the KL enters as k1 in the reward (see [`objective::KlMode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegrpoConfig {
    pub steps: u64,
    pub group_size: usize,
    /// Groups with signal per step.
    pub states_per_step: usize,
    /// States drawn per step at most: groups without signal ([`GroupFilter`]) are skipped and
    /// refilled from new states until `states_per_step` have signal (DAPO's dynamic sampling).
    #[serde(default = "default_draws")]
    pub max_draws_per_step: usize,
    /// Share of failure states among the states drawn.
    pub failure_fraction: f64,
    /// Train on at most this many failure states and as many clean states (spread over the
    /// list), instead of all: small runs and "can it fit a few states" checks.
    #[serde(default)]
    pub max_states: Option<usize>,
    pub lr: f64,
    pub weight_decay: f32,
    pub max_grad_norm: f64,
    pub sample: SampleConfig,
    pub reward: RewardConfig,
    pub advantage: AdvantageConfig,
    pub loss: LossConfig,
    /// Optimiser updates per batch of rollouts (more than one uses the PPO ratio).
    pub updates_per_batch: usize,
    #[serde(default)]
    pub window: WindowConfig,
    /// Sample under the tools' grammar.
    #[serde(default = "yes")]
    pub constrained: bool,
    pub seed: u64,
    /// Which groups are trained on.
    #[serde(default)]
    pub filter: GroupFilter,
    /// Draw failure states only among those whose fix the engine found derivable from the
    /// prompt (when the split has any): the others cannot be solved from what the policy sees.
    #[serde(default = "yes")]
    pub derivable_only: bool,
    /// Steps of linear learning-rate warm-up.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Groups per forward/backward pass of the update (bounds its memory; the gradient is the
    /// same).
    #[serde(default = "default_update_groups")]
    pub update_groups: usize,
    /// RoT rows (and trajectories besides theirs) the run reads at most, the first in a seeded
    /// hash order: every state it draws is self-checked by executing it, so a run of a few
    /// hundred steps would not use more.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Write a checkpoint (the model, the optimizer, and the loop's state) every this many steps
    /// and after the last (0: never); a run started again with `resume` goes on from the latest.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    25
}

fn default_update_groups() -> usize {
    4
}

fn default_max_rows() -> usize {
    50_000
}

fn default_draws() -> usize {
    12
}

fn yes() -> bool {
    true
}

impl Default for RegrpoConfig {
    fn default() -> Self {
        RegrpoConfig {
            steps: 20,
            group_size: 5,
            states_per_step: 4,
            max_draws_per_step: default_draws(),
            failure_fraction: 0.5,
            max_states: None,
            lr: 5e-6,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            sample: SampleConfig::default(),
            reward: RewardConfig::default(),
            advantage: AdvantageConfig::default(),
            loss: LossConfig::default(),
            updates_per_batch: 1,
            window: WindowConfig::default(),
            constrained: true,
            seed: 0,
            filter: GroupFilter::default(),
            derivable_only: true,
            warmup_steps: 0,
            update_groups: default_update_groups(),
            max_rows: default_max_rows(),
            checkpoint_every: default_checkpoint_every(),
        }
    }
}

/// One step's figures (a float that is not a number is `null` in JSON, and read back as NaN).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegrpoStep {
    pub step: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_reward: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub success_rate: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub failure_success_rate: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub clean_success_rate: f64,
    /// Mean reflection tokens per completion on clean states (what η pushes down).
    #[serde(deserialize_with = "nan_if_null")]
    pub clean_reflection_tokens: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub failure_reflection_tokens: f64,
    /// Share of completions that parsed into an action.
    #[serde(deserialize_with = "nan_if_null")]
    pub parse_rate: f64,
    /// Mean sequence k1 estimate of KL(π‖ref) over the completions of groups with signal (NaN
    /// when β = 0, where the reference is not run, or when no group was kept).
    #[serde(deserialize_with = "nan_if_null")]
    pub kl: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    pub groups: usize,
    /// Groups drawn without signal ([`GroupFilter`]): skipped, and refilled when draws remain.
    pub skipped_groups: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub sample_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub exec_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub update_s: f64,
}

/// A scored rollout with its tokens.
struct Sampled {
    completion: Completion,
    text: String,
    scored: Scored,
    reflection_tokens: usize,
    reward: f64,
}

/// Which groups carry a signal worth an update (DAPO's dynamic sampling keeps the others out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GroupFilter {
    /// Groups whose executed outcomes differ (some succeed, some fail); and, while η > 0, clean
    /// groups that all succeed but differ in how much they reflect — where the reflection cost
    /// has something to teach. A group in which everything failed teaches nothing, however its
    /// reflections' lengths differ.
    #[default]
    Success,
    /// Groups whose total rewards differ (before issue 29: with η > 0 an all-failure group passes
    /// when one reflection is a token longer).
    Reward,
}

impl GroupFilter {
    /// Whether a group of a state of `kind` with these outcomes is trained on.
    fn keeps(self, kind: StateKind, successes: &[bool], rewards: &[f64], eta: f64) -> bool {
        match self {
            GroupFilter::Reward => !objective::is_degenerate(rewards),
            GroupFilter::Success => {
                let some = successes.iter().any(|s| *s);
                let all = successes.iter().all(|s| *s);
                (some && !all) || (all && kind == StateKind::Clean && eta > 0.0 && !objective::is_degenerate(rewards))
            }
        }
    }
}

/// A group with signal: its state, prompt and scored completions, and (once computed) its
/// advantages.
struct Kept {
    state: Arc<State>,
    prompt: Vec<u32>,
    sampled: Vec<Sampled>,
    adv: Vec<f64>,
}

/// What the update of one micro-batch of groups needs besides the policy: the reference's and
/// the sampling policy's log-probabilities (fixed for the batch of rollouts).
struct Frozen<B: Backend> {
    ref_lp: Option<Tensor<B, 2>>,
    ref_full: Option<Tensor<B, 3>>,
    old_lp: Tensor<B, 2>,
}

/// What one run of ReGRPO produced.
pub struct RegrpoResult<B: AutodiffBackend> {
    pub model: CausalLm<B>,
    pub steps: Vec<RegrpoStep>,
    pub rollouts: Vec<Rollout>,
    pub near_misses: Vec<NearMiss>,
    pub truncations: Truncations,
    /// The self-check of the states the run drew (each checked once, when first drawn).
    pub self_check: SelfCheck,
}

/// What a ReGRPO checkpoint holds besides the model's and the optimizer's records: everything
/// the loop carries from one step to the next, so that a resumed run draws, samples and updates
/// exactly as the uninterrupted run did, and ends with the same rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Steps done.
    pub step: u64,
    /// The run's id: a resumed run keeps it, so its rows are one run's.
    pub run_id: String,
    pub config: RegrpoConfig,
    /// Where the run's ChaCha8 stream stands (a `u128`, as decimal text: JSON numbers are not
    /// that wide).
    rng_word_pos: String,
    steps: Vec<RegrpoStep>,
    rollouts: Vec<Rollout>,
    near_misses: Vec<NearMiss>,
    truncations: Truncations,
    self_check: SelfCheck,
    /// The self-check verdict of each state drawn so far, by state id.
    checked: BTreeMap<String, bool>,
}

impl Checkpoint {
    /// The latest checkpoint of the run folder `run` (its folder and state), if any.
    pub fn latest(run: &Path) -> Result<Option<(PathBuf, Checkpoint)>> {
        match training::latest_checkpoint(run) {
            Some((_, dir)) => {
                let state = training::read_state(&dir)?;
                Ok(Some((dir, state)))
            }
            None => Ok(None),
        }
    }
}

/// Where a run writes its checkpoints, and the checkpoint it goes on from (see
/// [`Checkpoint::latest`]).
#[derive(Debug)]
pub struct Checkpoints {
    pub dir: PathBuf,
    pub resume: Option<(PathBuf, Checkpoint)>,
}

/// Running sums of a step's figures.
#[derive(Default)]
struct Tally {
    failure: (f64, usize, f64),
    clean: (f64, usize, f64),
    parsed: usize,
    /// k1 estimates summed over the completions of groups with signal, and their count.
    kl: f64,
    kl_n: usize,
    rewards: Vec<f64>,
}

impl Tally {
    fn add(&mut self, kind: StateKind, s: &Sampled) {
        let slot = match kind {
            StateKind::Failure => &mut self.failure,
            StateKind::Clean => &mut self.clean,
        };
        slot.0 += f64::from(u8::from(s.scored.success));
        slot.1 += 1;
        slot.2 += s.reflection_tokens as f64;
        self.parsed += usize::from(s.scored.action.is_some());
        self.rewards.push(s.reward);
    }

    fn fill(&self, log: &mut RegrpoStep) {
        let n = (self.failure.1 + self.clean.1).max(1) as f64;
        log.mean_reward = self.rewards.iter().sum::<f64>() / self.rewards.len().max(1) as f64;
        log.success_rate = (self.failure.0 + self.clean.0) / n;
        log.failure_success_rate = self.failure.0 / self.failure.1.max(1) as f64;
        log.clean_success_rate = self.clean.0 / self.clean.1.max(1) as f64;
        log.failure_reflection_tokens = self.failure.2 / self.failure.1.max(1) as f64;
        log.clean_reflection_tokens = self.clean.2 / self.clean.1.max(1) as f64;
        log.parse_rate = self.parsed as f64 / n;
        log.kl = if self.kl_n == 0 { f64::NAN } else { self.kl / self.kl_n as f64 };
    }
}

/// The learning rate of step `step` (0-based): linear warm-up over `warmup` steps, then flat.
fn lr_at(cfg: &RegrpoConfig, step: u64) -> f64 {
    if cfg.warmup_steps == 0 || step >= cfg.warmup_steps {
        cfg.lr
    } else {
        cfg.lr * (step + 1) as f64 / (cfg.warmup_steps + 1) as f64
    }
}

/// Trains `model` (starting from the SFT policy, also the frozen reference) on the states,
/// writing checkpoints into `checkpoints.dir` and going on from `checkpoints.resume` when set.
#[allow(clippy::too_many_arguments)]
pub async fn train<B: AutodiffBackend>(
    mut model: CausalLm<B>,
    decoder: &TurnDecoder,
    suite: &ToolSuite,
    states: &StatePool,
    cfg: &RegrpoConfig,
    run_id: &str,
    checkpoints: Checkpoints,
    mut on_step: impl FnMut(&RegrpoStep),
) -> Result<RegrpoResult<B>> {
    let tk = decoder.tokenizer();
    let (n_failures, n_cleans) = states.len();
    let mut failures: Vec<usize> = (0..n_failures).collect();
    if cfg.derivable_only && failures.iter().any(|i| states.derivable(*i) == Some(true)) {
        failures.retain(|i| states.derivable(*i) == Some(true));
    }
    let cleans: Vec<usize> = (0..n_cleans).collect();
    // States are built when first drawn (`None`: it cannot be, or fails its self-check).
    let mut built: HashMap<(bool, usize), Option<Arc<State>>> = HashMap::new();
    // The starting (SFT) policy, frozen: the KL term's reference (not run when β = 0).
    let with_reference = cfg.loss.beta > 0.0;
    let reference = with_reference.then(|| model.valid());
    let exact = cfg.loss.kl.needs_full_distribution() && with_reference;
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(cfg.weight_decay)
        .init::<B, CausalLm<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut seen = Seen::new(suite);
    let mut steps = Vec::new();
    let mut rollouts = Vec::new();
    let mut near_misses = Vec::new();
    let mut truncations = Truncations::default();
    let mut start = 0;
    if let Some((dir, ck)) = checkpoints.resume {
        // The reference above is the starting policy; the policy and its optimizer go on from
        // the checkpoint.
        if (RegrpoConfig { steps: cfg.steps, ..ck.config.clone() }) != *cfg {
            return Err(Error::Checkpoint {
                path: dir,
                reason: "it was written with other settings than this run's (only the step count may change on a \
                         resume): resume with the same flags, or train into a new folder"
                    .into(),
            });
        }
        let device = model.embed_tokens.weight.device();
        (model, optim) = training::load(&dir, model, optim, &device)?;
        let pos = ck.rng_word_pos.parse::<u128>().map_err(|e| Error::Checkpoint {
            path: dir.clone(),
            reason: format!("rng_word_pos {:?}: {e}", ck.rng_word_pos),
        })?;
        rng.set_word_pos(pos);
        seen.resume(ck.checked, ck.self_check);
        (steps, rollouts, near_misses, truncations) = (ck.steps, ck.rollouts, ck.near_misses, ck.truncations);
        start = ck.step;
    }
    for step in start..cfg.steps {
        let mut log = RegrpoStep { step: step + 1, ..Default::default() };
        let (mut sample_t, mut exec_t) = (Duration::ZERO, Duration::ZERO);
        let policy = model.valid();
        let mut kept: Vec<Kept> = Vec::new();
        let mut tally = Tally::default();
        let max_draws = cfg.max_draws_per_step.max(cfg.states_per_step);
        let mut draws = 0;
        while kept.len() < cfg.states_per_step && draws < max_draws {
            // Draw the states still needed (each passing its self-check), and sample all their
            // groups in one batch.
            let want = (cfg.states_per_step - kept.len()).min(max_draws - draws);
            let mut batch: Vec<Arc<State>> = Vec::with_capacity(want);
            let t1 = Instant::now();
            // Bounded: a pool of states that mostly fail their self-check ends the step early.
            for _ in 0..want * 64 {
                if batch.len() == want {
                    break;
                }
                let fail = rng.random_bool(cfg.failure_fraction.clamp(0.0, 1.0));
                let failure = fail && !failures.is_empty() || cleans.is_empty();
                let pool = if failure { &failures } else { &cleans };
                let Some(i) = pool.choose(&mut rng).copied() else { break };
                let kind = if failure { StateKind::Failure } else { StateKind::Clean };
                let state = match built.get(&(failure, i)) {
                    Some(s) => s.clone(),
                    None => {
                        let s = match states.state(kind, i) {
                            Some(s) => seen.passes(&s).await.then(|| Arc::new(s)),
                            None => None,
                        };
                        built.insert((failure, i), s.clone());
                        s
                    }
                };
                batch.extend(state);
            }
            exec_t += t1.elapsed();
            if batch.is_empty() {
                if !built.values().any(Option::is_some) {
                    return Err(Error::NoData(
                        "no training state passes its self-check (its ground-truth action does not succeed when \
                         executed)"
                            .into(),
                    ));
                }
                break;
            }
            draws += batch.len();
            let turns: Vec<Turn<'_>> = batch
                .iter()
                .map(|s| Turn { messages: &s.messages, specs: &s.specs, surface: s.gt_action.surface, prefix: "" })
                .collect();
            let t0 = Instant::now();
            let generated =
                decoder.generate_groups(&policy, &turns, cfg.group_size, &cfg.sample, Draws::Shared(&mut rng))?;
            sample_t += t0.elapsed();
            for (state, generated) in batch.into_iter().zip(generated) {
                truncations.add(&generated.truncations);
                let mut sampled = Vec::with_capacity(generated.completions.len());
                for c in generated.completions {
                    let text = decoder.text(&c)?;
                    let t1 = Instant::now();
                    let scored = score(&text, &state, suite).await;
                    exec_t += t1.elapsed();
                    let reflection_tokens = match &scored.reflection_text {
                        Some(r) => tk.encode(r)?.len(),
                        None => 0,
                    };
                    let verifier =
                        0.5 * f64::from(u8::from(scored.grounded)) + 0.5 * f64::from(u8::from(scored.type_correct));
                    let outcome = objective::Outcome {
                        success: scored.success,
                        parsed: scored.action.is_some(),
                        reflection_tokens,
                        verifier,
                        partial: scored.partial,
                    };
                    let reward = objective::outcome_reward(&outcome, &cfg.reward);
                    sampled.push(Sampled { completion: c, text, scored, reflection_tokens, reward });
                }
                for s in &sampled {
                    tally.add(state.kind, s);
                }
                let successes: Vec<bool> = sampled.iter().map(|s| s.scored.success).collect();
                let rewards: Vec<f64> = sampled.iter().map(|s| s.reward).collect();
                if !cfg.filter.keeps(state.kind, &successes, &rewards, cfg.reward.eta) {
                    // No signal: logged, skipped, and (draws permitting) replaced by a new state.
                    let t1 = Instant::now();
                    for (i, s) in sampled.iter().enumerate() {
                        let (row, near) = seen.record(run_id, step + 1, &state, i, s, 0.0).await;
                        rollouts.push(row);
                        near_misses.extend(near);
                    }
                    exec_t += t1.elapsed();
                    log.skipped_groups += 1;
                    continue;
                }
                kept.push(Kept { state, prompt: generated.prompt, sampled, adv: vec![] });
            }
        }
        log.groups = kept.len();
        log.sample_s = sample_t.as_secs_f64();

        let t_update = Instant::now();
        // The frozen parts of each micro-batch: the sampling policy's log-probabilities, and the
        // reference's (for the KL, in the reward or in the loss); then the advantages.
        let chunk = cfg.update_groups.max(1);
        let mut frozen: Vec<Frozen<B::InnerBackend>> = Vec::new();
        for part in kept.chunks_mut(chunk) {
            let len =
                part.iter().flat_map(|k| k.sampled.iter().map(|s| s.completion.tokens.len())).max().unwrap_or(1).max(1);
            let rows = part.len() * cfg.group_size;
            let old: Vec<f32> = part
                .iter()
                .flat_map(|k| k.sampled.iter())
                .flat_map(|s| (0..len).map(|j| s.completion.logprobs.get(j).copied().unwrap_or(0.0)))
                .collect();
            let device = policy.embed_tokens.weight.device();
            let old_lp = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(old.clone(), [rows, len]), &device);
            let (ref_lp, ref_full, penalties) = match &reference {
                Some(reference) => {
                    let groups: Vec<(&[u32], Vec<&Completion>)> = part
                        .iter()
                        .map(|k| (k.prompt.as_slice(), k.sampled.iter().map(|s| &s.completion).collect()))
                        .collect();
                    let r = completion_logp(reference, &groups, tk.pad, exact);
                    let ref_values: Vec<f32> = r.lp.clone().into_data().convert::<f32>().to_vec().unwrap_or_default();
                    let weights: Vec<f32> = r.mask.into_data().convert::<f32>().to_vec().unwrap_or_default();
                    let penalties: Vec<f64> = (0..rows)
                        .map(|i| {
                            let span = i * len..(i + 1) * len;
                            objective::k1_penalty(&old[span.clone()], &ref_values[span.clone()], &weights[span], 1.0)
                        })
                        .collect();
                    (Some(r.lp), r.full, Some(penalties))
                }
                None => (None, None, None),
            };
            for (k, group) in part.iter_mut().enumerate() {
                let rewards: Vec<f64> = group.sampled.iter().map(|s| s.reward).collect();
                group.adv = match &penalties {
                    Some(pen) => {
                        let pen = &pen[k * cfg.group_size..(k + 1) * cfg.group_size];
                        tally.kl += pen.iter().sum::<f64>();
                        tally.kl_n += pen.len();
                        if cfg.loss.kl == objective::KlMode::K1Reward {
                            let shaped: Vec<f64> =
                                rewards.iter().zip(pen).map(|(r, p)| r - cfg.loss.beta * p).collect();
                            objective::advantages(&shaped, &cfg.advantage)
                        } else {
                            objective::advantages(&rewards, &cfg.advantage)
                        }
                    }
                    None => objective::advantages(&rewards, &cfg.advantage),
                };
            }
            frozen.push(Frozen { ref_lp, ref_full, old_lp });
        }
        let t1 = Instant::now();
        for group in &kept {
            for (i, s) in group.sampled.iter().enumerate() {
                let (row, near) = seen.record(run_id, step + 1, &group.state, i, s, group.adv[i]).await;
                rollouts.push(row);
                near_misses.extend(near);
            }
        }
        exec_t += t1.elapsed();
        let t_exec_records = t1.elapsed();
        tally.fill(&mut log);
        log.exec_s = exec_t.as_secs_f64();

        if !kept.is_empty() {
            let n_groups = kept.len() as f64;
            for _ in 0..cfg.updates_per_batch.max(1) {
                let mut total = 0.0;
                let mut acc = burn::optim::GradientsAccumulator::<CausalLm<B>>::new();
                for (part, fz) in kept.chunks(chunk).zip(&frozen) {
                    let groups: Vec<(&[u32], Vec<&Completion>)> = part
                        .iter()
                        .map(|k| (k.prompt.as_slice(), k.sampled.iter().map(|s| &s.completion).collect()))
                        .collect();
                    let x = completion_logp(&model, &groups, tk.pad, exact);
                    let g = cfg.group_size;
                    let mut loss: Option<Tensor<B, 1>> = None;
                    for (k, group) in part.iter().enumerate() {
                        let rows = |t: Tensor<B, 2>| t.narrow(0, k * g, g);
                        let lp = rows(x.lp.clone());
                        let mut lc = cfg.loss;
                        if fz.ref_lp.is_none() {
                            // β = 0: no reference was run, and no KL term enters.
                            lc.beta = 0.0;
                            lc.kl = objective::KlMode::K1Reward;
                        }
                        let ref_lp = match &fz.ref_lp {
                            Some(r) => rows(Tensor::from_inner(r.clone())),
                            None => lp.clone().detach(),
                        };
                        let full = match (&x.full, &fz.ref_full) {
                            (Some(full), Some(r)) => Some((
                                full.clone().narrow(0, k * g, g),
                                Tensor::from_inner(r.clone().narrow(0, k * g, g)),
                            )),
                            _ => None,
                        };
                        let inputs = objective::LossInputs {
                            kl: objective::Kl::new(lc.kl, ref_lp, full)?,
                            old_lp: rows(Tensor::from_inner(fz.old_lp.clone())),
                            mask: rows(x.mask.clone()),
                            lp,
                        };
                        let l = objective::loss(inputs, &group.adv, &lc).div_scalar(n_groups);
                        loss = Some(match loss {
                            Some(sum) => sum + l,
                            None => l,
                        });
                    }
                    let Some(loss) = loss else { continue };
                    total += loss.clone().into_scalar().elem::<f64>();
                    acc.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
                }
                let mut grads = acc.grads();
                clip_global_norm(&model, &mut grads, cfg.max_grad_norm);
                model = optim.step(lr_at(cfg, step), model, grads);
                log.loss = total;
            }
        }
        log.update_s = (t_update.elapsed() - t_exec_records).as_secs_f64();
        on_step(&log);
        steps.push(log);
        let done = step + 1;
        if cfg.checkpoint_every > 0 && (done % cfg.checkpoint_every == 0 || done == cfg.steps) {
            let state = Checkpoint {
                step: done,
                run_id: run_id.into(),
                config: cfg.clone(),
                rng_word_pos: rng.get_word_pos().to_string(),
                steps: steps.clone(),
                rollouts: rollouts.clone(),
                near_misses: near_misses.clone(),
                truncations,
                self_check: seen.check,
                checked: seen.checked().clone(),
            };
            training::save(&checkpoints.dir, done, &model, &optim, &state)?;
        }
    }
    Ok(RegrpoResult { model, steps, rollouts, near_misses, truncations, self_check: seen.check })
}
