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
//! starting policy enters as [`rl::KlMode`] says (by default k1 in the reward).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, ElementConversion, Int, Tensor, TensorData};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regrpo_datasets::Repository;
use regrpo_engine::executor::execute_action;
use regrpo_engine::judge::judge;
use regrpo_engine::{CallContext, ToolSuite};
use regrpo_schemas::id::content_id;
use regrpo_schemas::{ActionRecord, Execution, NearMiss, Rollout};
use serde::{Deserialize, Serialize};

use crate::decoder::{Decoder, Turn};
use crate::error::{Error, Result};
use crate::model::Qwen2;
use crate::rl::{self, AdvantageConfig, LossConfig, RewardConfig, gather_tokens};
use crate::rollout::{Scored, SelfCheck, State, StateKind, StatePool, check_state, score};
use crate::sampling::{Completion, Draws, SampleConfig};
use crate::sft::clip_global_norm;
use crate::window::{Truncations, WindowConfig};

/// ReGRPO hyper-parameters. Defaults are the reference's: G = 5, λ_exec = 1, η = 0.1,
/// λ_val = 0, β = 0.04, lr 5e-6; the KL enters as k1 in the reward (see [`rl::KlMode`]).
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
}

fn default_update_groups() -> usize {
    4
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
        }
    }
}

/// One step's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegrpoStep {
    pub step: u64,
    pub mean_reward: f64,
    pub success_rate: f64,
    pub failure_success_rate: f64,
    pub clean_success_rate: f64,
    /// Mean reflection tokens per completion on clean states (what η pushes down).
    pub clean_reflection_tokens: f64,
    pub failure_reflection_tokens: f64,
    /// Share of completions that parsed into an action.
    pub parse_rate: f64,
    /// Mean sequence k1 estimate of KL(π‖ref) over the completions of groups with signal (NaN
    /// when β = 0, where the reference is not run, or when no group was kept).
    pub kl: f64,
    pub loss: f64,
    pub groups: usize,
    /// Groups drawn without signal ([`GroupFilter`]): skipped, and refilled when draws remain.
    pub skipped_groups: usize,
    pub sample_s: f64,
    pub exec_s: f64,
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
            GroupFilter::Reward => !rl::is_degenerate(rewards),
            GroupFilter::Success => {
                let some = successes.iter().any(|s| *s);
                let all = successes.iter().all(|s| *s);
                (some && !all) || (all && kind == StateKind::Clean && eta > 0.0 && !rl::is_degenerate(rewards))
            }
        }
    }
}

/// Added to the logit of a token the grammar forbade: large enough that its probability is 0
/// in f32, finite so that no gradient becomes NaN.
const FORBIDDEN: f32 = -1e9;

/// Log-probabilities of groups' completions, all rows of all groups in one forward pass.
struct TokenLogp<B: Backend> {
    /// Per token `[rows, len]`.
    lp: Tensor<B, 2>,
    /// Full log-probabilities `[rows, len, vocab]` (for [`rl::KlMode::Exact`]).
    full: Option<Tensor<B, 3>>,
    /// 1 on generated tokens the grammar did not force, 0 on forced tokens and padding.
    mask: Tensor<B, 2>,
}

/// The log-probabilities of each group's completions given its prompt: `groups[k]` is a prompt
/// and its `g` completions (every group the same size). The prompts are run once each
/// ([`Qwen2::prefix`]) and the completions attend to them in place ([`Qwen2::rows`]); logits
/// are computed at completion positions only.
///
/// Where the grammar constrained a position, the distribution is the one that sampled there:
/// the model's, renormalised over the allowed tokens (the others get a large negative logit).
/// Scoring the unconstrained π instead would add `∇ log Σ_allowed π` to each token's gradient —
/// pushing mass between allowed and forbidden tokens, which changes nothing the grammar lets
/// through — and would make the k1 estimate of KL biased (log π ≠ log q).
fn completion_logp<B: Backend>(
    model: &Qwen2<B>,
    groups: &[(&[u32], Vec<&Completion>)],
    pad: u32,
    keep_full: bool,
) -> TokenLogp<B> {
    let device = model.embed_tokens.weight.device();
    let s = groups.len();
    let g = groups.first().map_or(0, |(_, c)| c.len());
    let rows = s * g;
    let p = groups.iter().map(|(prompt, _)| prompt.len()).max().unwrap_or(1).max(1);
    let len = groups.iter().flat_map(|(_, cs)| cs.iter().map(|c| c.tokens.len())).max().unwrap_or(1).max(1);
    let pads: Vec<usize> = groups.iter().map(|(prompt, _)| p - prompt.len()).collect();
    let prompt_ids: Vec<i64> = groups
        .iter()
        .flat_map(|(prompt, _)| {
            std::iter::repeat_n(i64::from(pad), p - prompt.len()).chain(prompt.iter().map(|t| i64::from(*t)))
        })
        .collect();
    let mut ids = Vec::with_capacity(rows * len);
    let mut mask = Vec::with_capacity(rows * len);
    for c in groups.iter().flat_map(|(_, cs)| cs) {
        for j in 0..len {
            let tok = c.tokens.get(j).copied();
            ids.push(i64::from(tok.unwrap_or(pad)));
            let scored = tok.is_some() && !c.forced.get(j).copied().unwrap_or(false);
            mask.push(if scored { 1.0f32 } else { 0.0 });
        }
    }
    let (last, prefix) = model.prefix(Tensor::from_data(TensorData::new(prompt_ids, [s, p]), &device), &pads);
    let completions = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [rows, len]), &device);
    // Token j is predicted at position j − 1: the prompt's last position for the first token.
    let width = last.dims()[1];
    let owner: Vec<i64> = (0..rows).map(|r| (r / g) as i64).collect();
    let first = last.select(0, Tensor::from_data(TensorData::new(owner, [rows]), &device)).reshape([rows, 1, width]);
    let hidden = if len > 1 {
        let h = model.rows(completions.clone().narrow(1, 0, len - 1), &prefix, g, None);
        Tensor::cat(vec![first, h], 1)
    } else {
        first
    };
    let mut logits = model.head(hidden);
    let constrained = groups.iter().flat_map(|(_, cs)| cs).any(|c| c.allowed.iter().any(Option::is_some));
    if constrained {
        let vocab = logits.dims()[2];
        let mut hide = vec![false; rows * len * vocab];
        for (i, c) in groups.iter().flat_map(|(_, cs)| cs).enumerate() {
            for (j, allowed) in c.allowed.iter().enumerate() {
                if let Some(allowed) = allowed {
                    let row = &mut hide[(i * len + j) * vocab..(i * len + j + 1) * vocab];
                    row.fill(true);
                    for t in allowed.iter() {
                        row[t as usize] = false;
                    }
                }
            }
        }
        let hide = Tensor::<B, 3, Bool>::from_data(TensorData::new(hide, [rows, len, vocab]), &device);
        logits = logits.mask_fill(hide, FORBIDDEN);
    }
    let full = log_softmax(logits, 2);
    let lp = gather_tokens(full.clone(), completions);
    TokenLogp {
        lp,
        full: keep_full.then_some(full),
        mask: Tensor::from_data(TensorData::new(mask, [rows, len]), &device),
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
    pub model: Qwen2<B>,
    pub steps: Vec<RegrpoStep>,
    pub rollouts: Vec<Rollout>,
    pub near_misses: Vec<NearMiss>,
    pub truncations: Truncations,
    /// The self-check of the states the run drew (each checked once, when first drawn).
    pub self_check: SelfCheck,
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

/// What a run learns about the states it draws: each is self-checked once, when first drawn
/// (instead of executing every state of the split before the first step), and its ground-truth
/// action's execution is kept for judging the failures sampled there.
#[derive(Default)]
struct Seen {
    checked: HashMap<String, bool>,
    gold: HashMap<String, Execution>,
    check: SelfCheck,
}

impl Seen {
    async fn passes(&mut self, state: &State, suite: &ToolSuite) -> bool {
        if let Some(ok) = self.checked.get(&state.state_id) {
            return *ok;
        }
        let c = check_state(state, suite).await;
        self.check.add(&c);
        self.checked.insert(state.state_id.clone(), c.kept == 1);
        c.kept == 1
    }

    async fn gold(&mut self, state: &State, suite: &ToolSuite) -> &Execution {
        if !self.gold.contains_key(&state.state_id) {
            let ctx = CallContext { sandbox: state.sandbox.clone(), timeout: Duration::from_secs(10) };
            let exec = execute_action(suite, &state.gt_action, &state.specs, &ctx, state.is_final).await;
            self.gold.insert(state.state_id.clone(), exec);
        }
        &self.gold[&state.state_id]
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

/// Trains `model` (starting from the SFT policy, also the frozen reference) on the states.
pub async fn train<B: AutodiffBackend>(
    mut model: Qwen2<B>,
    decoder: &Decoder,
    suite: &ToolSuite,
    states: &StatePool,
    cfg: &RegrpoConfig,
    run_id: &str,
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
        .init::<B, Qwen2<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut seen = Seen::default();
    let mut steps = Vec::new();
    let mut rollouts = Vec::new();
    let mut near_misses = Vec::new();
    let mut truncations = Truncations::default();
    for step in 0..cfg.steps {
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
                            Some(s) => seen.passes(&s, suite).await.then(|| Arc::new(s)),
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
                    let outcome = rl::Outcome {
                        success: scored.success,
                        parsed: scored.action.is_some(),
                        reflection_tokens,
                        verifier,
                        partial: scored.partial,
                    };
                    let reward = rl::outcome_reward(&outcome, &cfg.reward);
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
                        let (row, near) = record(run_id, step + 1, &state, i, s, 0.0, &mut seen, suite).await;
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
                            rl::k1_penalty(&old[span.clone()], &ref_values[span.clone()], &weights[span], 1.0)
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
                        if cfg.loss.kl == rl::KlMode::K1Reward {
                            let shaped: Vec<f64> =
                                rewards.iter().zip(pen).map(|(r, p)| r - cfg.loss.beta * p).collect();
                            rl::advantages(&shaped, &cfg.advantage)
                        } else {
                            rl::advantages(&rewards, &cfg.advantage)
                        }
                    }
                    None => rl::advantages(&rewards, &cfg.advantage),
                };
            }
            frozen.push(Frozen { ref_lp, ref_full, old_lp });
        }
        let t1 = Instant::now();
        for group in &kept {
            for (i, s) in group.sampled.iter().enumerate() {
                let (row, near) = record(run_id, step + 1, &group.state, i, s, group.adv[i], &mut seen, suite).await;
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
                let mut acc = burn::optim::GradientsAccumulator::<Qwen2<B>>::new();
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
                        let inputs = rl::LossInputs {
                            ref_lp: match &fz.ref_lp {
                                Some(r) => rows(Tensor::from_inner(r.clone())),
                                None => lp.clone().detach(),
                            },
                            old_lp: rows(Tensor::from_inner(fz.old_lp.clone())),
                            mask: rows(x.mask.clone()),
                            full: match (&x.full, &fz.ref_full) {
                                (Some(full), Some(r)) => Some((
                                    full.clone().narrow(0, k * g, g),
                                    Tensor::from_inner(r.clone().narrow(0, k * g, g)),
                                )),
                                _ => None,
                            },
                            lp,
                        };
                        let mut lc = cfg.loss;
                        if fz.ref_lp.is_none() {
                            // β = 0: no reference was run, and no KL term enters.
                            lc.beta = 0.0;
                            lc.kl = rl::KlMode::K1Reward;
                        }
                        let l = rl::loss(inputs, &group.adv, &lc).div_scalar(n_groups);
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
    }
    Ok(RegrpoResult { model, steps, rollouts, near_misses, truncations, self_check: seen.check })
}

/// The `rollouts` row of a completion, and a `near_misses` row (source = policy) when it failed
/// with an action the judge can classify.
#[allow(clippy::too_many_arguments)] // a rollout row's parts
async fn record(
    run_id: &str,
    step: u64,
    state: &State,
    i: usize,
    s: &Sampled,
    advantage: f64,
    seen: &mut Seen,
    suite: &ToolSuite,
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
        let gt_exec = seen.gold(state, suite).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use regrpo_schemas::action::Surface;

    use crate::config::Qwen2Config;
    use crate::grammar::{Grammar, Masks, TokenTrie};
    use crate::sampling::{Constraint, sample};

    type B = Autodiff<NdArray<f32>>;

    /// Today's scoring of one group: a full forward pass of every row's prompt + completion,
    /// logits at every position, the grammar's mask added over the vocabulary.
    fn reference_logp(model: &Qwen2<B>, prompt: &[u32], cs: &[&Completion], pad: u32) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let device = Default::default();
        let (g, len) = (cs.len(), cs.iter().map(|c| c.tokens.len()).max().unwrap());
        let total = prompt.len() + len;
        let (mut ids, mut targets, mut mask) = (vec![], vec![], vec![]);
        for c in cs {
            ids.extend(prompt.iter().map(|t| i64::from(*t)));
            for j in 0..len {
                let tok = c.tokens.get(j).copied();
                ids.push(i64::from(tok.unwrap_or(pad)));
                targets.push(i64::from(tok.unwrap_or(pad)));
                mask.push(if tok.is_some() && !c.forced[j] { 1.0f32 } else { 0.0 });
            }
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [g, total]), &device);
        let mut logits = model.forward(ids).narrow(1, prompt.len() - 1, len);
        let vocab = logits.dims()[2];
        let mut add = vec![0.0f32; g * len * vocab];
        for (i, c) in cs.iter().enumerate() {
            for (j, allowed) in c.allowed.iter().enumerate() {
                if let Some(allowed) = allowed {
                    let row = &mut add[(i * len + j) * vocab..(i * len + j + 1) * vocab];
                    row.fill(FORBIDDEN);
                    for t in allowed.iter() {
                        row[t as usize] = 0.0;
                    }
                }
            }
        }
        logits = logits + Tensor::<B, 3>::from_data(TensorData::new(add, [g, len, vocab]), &device);
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [g, len]), &device);
        (gather_tokens(log_softmax(logits, 2), targets), Tensor::from_data(TensorData::new(mask, [g, len]), &device))
    }

    /// Two groups of constrained completions of prompts of different lengths: the batched
    /// scoring over shared prompts gives today's log-probabilities, loss and gradients.
    #[test]
    fn the_batched_update_computes_todays_loss_and_gradients() {
        let device = Default::default();
        let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        vocab.push(Some(b"Code:\n```py\n".to_vec()));
        vocab.extend([None, None]);
        let (stop, pad) = (vocab.len() as u32 - 2, vocab.len() as u32 - 1);
        let model = Qwen2::<B>::init(&Qwen2Config::tiny(vocab.len()), 5, &device);
        let grammar = Grammar::new(Surface::Python, &regrpo_engine::ToolSuite::builtin().specs());
        let (trie, masks) = (TokenTrie::new(&vocab), Masks::default());
        let constraint = Some(Constraint { grammar: &grammar, masks: &masks, trie: &trie, start: grammar.start() });
        let cfg = SampleConfig { temperature: 1.0, top_p: 1.0, max_new_tokens: 40 };
        let prompts: [Vec<u32>; 2] = [vec![3, 4, 5, 6, 7, 8], vec![9, 10]];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let sampled: Vec<Vec<Completion>> =
            prompts.iter().map(|p| sample(&model.valid(), p, 3, &cfg, stop, pad, &mut rng, constraint)).collect();
        let adv = [vec![0.5, -0.25, -0.25], vec![1.0, 0.0, -1.0]];
        for token_level in [false, true] {
            let lc = LossConfig { beta: 0.0, token_level, ..Default::default() };
            let groups: Vec<(&[u32], Vec<&Completion>)> =
                prompts.iter().zip(&sampled).map(|(p, cs)| (p.as_slice(), cs.iter().collect())).collect();
            let x = completion_logp(&model, &groups, pad, false);
            let mut new_loss = None;
            let mut old_loss = None;
            for (k, (prompt, cs)) in groups.iter().enumerate() {
                let lp = x.lp.clone().narrow(0, 3 * k, 3);
                let (want_lp, want_mask) = reference_logp(&model, prompt, cs, pad);
                let len = want_lp.dims()[1];
                let got: Vec<f32> = lp.clone().narrow(1, 0, len).inner().into_data().to_vec().unwrap();
                let want: Vec<f32> = want_lp.clone().inner().into_data().to_vec().unwrap();
                let mask: Vec<f32> = want_mask.clone().inner().into_data().to_vec().unwrap();
                for ((a, b), m) in got.iter().zip(&want).zip(&mask) {
                    assert!(*m == 0.0 || (a - b).abs() < 1e-4, "group {k}: {a} vs {b}");
                }
                let loss = |lp: Tensor<B, 2>, mask: Tensor<B, 2>| {
                    let inputs = rl::LossInputs {
                        ref_lp: lp.clone().detach(),
                        old_lp: lp.clone().detach(),
                        mask,
                        full: None,
                        lp,
                    };
                    rl::loss(inputs, &adv[k], &lc).div_scalar(2.0)
                };
                let n = loss(lp, x.mask.clone().narrow(0, 3 * k, 3));
                let o = loss(want_lp, want_mask);
                new_loss = Some(match new_loss {
                    Some(s) => s + n,
                    None => n,
                });
                old_loss = Some(match old_loss {
                    Some(s) => s + o,
                    None => o,
                });
            }
            let (new_loss, old_loss) = (new_loss.unwrap(), old_loss.unwrap());
            let (a, b) = (new_loss.clone().into_scalar(), old_loss.clone().into_scalar());
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "loss {a} vs {b}");
            let (gn, go) = (new_loss.backward(), old_loss.backward());
            let grads = |g: &<B as AutodiffBackend>::Gradients| {
                let flat = |w: Tensor<B, 2>| w.grad(g).unwrap().into_data().to_vec::<f32>().unwrap();
                let mut v = flat(model.embed_tokens.weight.val());
                v.extend(flat(model.layers[0].self_attn.q_proj.base.weight.val()));
                v.extend(flat(model.layers[1].mlp.down_proj.base.weight.val()));
                v
            };
            let (gn, go) = (grads(&gn), grads(&go));
            let scale = go.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0);
            for (x, y) in gn.iter().zip(&go) {
                assert!((x - y).abs() < 1e-4 * scale, "gradient {x} vs {y} (scale {scale})");
            }
        }
    }
}
