//! ReGRPO: group-relative policy optimisation over reflection + corrective-action tokens on
//! local trajectories, with rollouts executed by the engine's tools.
//!
//! ```text
//! states (failure | clean) ─▶ G completions (KV cache) ─▶ parse ─▶ execute ─▶ reward ─▶ advantage
//!        │                                                                                  │
//!        └── rollouts / near_misses(source = policy) tables ◀── log ── update (loss + β·KL) ◀┘
//! ```
//!
//! Completions are sampled under the tools' grammar (so they parse; tokens the grammar forced
//! carry no gradient). Groups whose rewards are all equal carry no signal: they are skipped,
//! counted, and refilled from new states (DAPO's dynamic sampling). The KL to the frozen
//! starting policy enters as [`rl::KlMode`] says (by default k1 in the reward).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regrpo_datasets::Repository;
use regrpo_engine::executor::execute_action;
use regrpo_engine::judge::judge;
use regrpo_engine::{CallContext, ToolSuite};
use regrpo_schemas::id::content_id;
use regrpo_schemas::{ActionRecord, NearMiss, Rollout};
use serde::{Deserialize, Serialize};

use crate::decoder::Decoder;
use crate::error::Result;
use crate::model::Qwen2;
use crate::rl::{self, AdvantageConfig, LossConfig, RewardConfig, gather_tokens};
use crate::rollout::{Scored, State, StateKind, States, score};
use crate::sampling::{Completion, SampleConfig};
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
    /// States drawn per step at most: groups whose rewards are all equal are skipped and
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
    /// Mean sequence k1 estimate of KL(π‖ref) over the completions of groups with signal.
    pub kl: f64,
    pub loss: f64,
    pub groups: usize,
    /// Groups drawn whose rewards were all equal: skipped, and refilled when draws remain.
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

/// Added to the logit of a token the grammar forbade: large enough that its probability is 0
/// in f32, finite so that no gradient becomes NaN.
const FORBIDDEN: f32 = -1e9;

/// Full log-probabilities `[g, len, vocab]` at each completion's positions given the shared
/// prompt, the completions' tokens `[g, len]`, and their weights `[g, len]`: 1 on generated
/// tokens the grammar did not force, 0 on forced tokens and padding.
///
/// Where the grammar constrained a position, the distribution is the one that sampled there:
/// the model's, renormalised over the allowed tokens (the others get a large negative logit).
/// Scoring the unconstrained π instead would add `∇ log Σ_allowed π` to each token's gradient —
/// pushing mass between allowed and forbidden tokens, which changes nothing the grammar lets
/// through — and would make the k1 estimate of KL biased (log π ≠ log q).
fn completion_logp<B: Backend>(
    model: &Qwen2<B>,
    prompt: &[u32],
    completions: &[&Completion],
    pad: u32,
) -> (Tensor<B, 3>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let device = model.embed_tokens.weight.device();
    let g = completions.len();
    let len = completions.iter().map(|c| c.tokens.len()).max().unwrap_or(1).max(1);
    let total = prompt.len() + len;
    let mut ids = Vec::with_capacity(g * total);
    let mut targets = Vec::with_capacity(g * len);
    let mut mask = Vec::with_capacity(g * len);
    for c in completions {
        ids.extend(prompt.iter().map(|t| i64::from(*t)));
        for j in 0..len {
            let tok = c.tokens.get(j).copied();
            ids.push(i64::from(tok.unwrap_or(pad)));
            targets.push(i64::from(tok.unwrap_or(pad)));
            let scored = tok.is_some() && !c.forced.get(j).copied().unwrap_or(false);
            mask.push(if scored { 1.0f32 } else { 0.0 });
        }
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [g, total]), &device);
    let mut logits = model.forward(ids).narrow(1, prompt.len() - 1, len);
    if completions.iter().any(|c| c.allowed.iter().any(Option::is_some)) {
        let vocab = logits.dims()[2];
        let mut add = vec![0.0f32; g * len * vocab];
        for (i, c) in completions.iter().enumerate() {
            for (j, allowed) in c.allowed.iter().enumerate() {
                if let Some(allowed) = allowed {
                    let row = &mut add[(i * len + j) * vocab..(i * len + j + 1) * vocab];
                    row.fill(FORBIDDEN);
                    for t in allowed {
                        row[*t as usize] = 0.0;
                    }
                }
            }
        }
        logits = logits + Tensor::<B, 3>::from_data(TensorData::new(add, [g, len, vocab]), &device);
    }
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [g, len]), &device);
    (log_softmax(logits, 2), targets, Tensor::from_data(TensorData::new(mask, [g, len]), &device))
}

/// A group with signal, ready for the update: its prompt, completions, advantages, and the
/// reference's and the sampling policy's log-probabilities (fixed for the batch).
struct Group<B: Backend> {
    prompt: Vec<u32>,
    completions: Vec<Completion>,
    adv: Vec<f64>,
    ref_lp: Tensor<B, 2>,
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
        log.kl = self.kl / self.kl_n.max(1) as f64;
    }
}

/// Trains `model` (starting from the SFT policy, also the frozen reference) on the states.
pub async fn train<B: AutodiffBackend>(
    mut model: Qwen2<B>,
    decoder: &Decoder,
    suite: &ToolSuite,
    states: &States,
    cfg: &RegrpoConfig,
    run_id: &str,
    mut on_step: impl FnMut(&RegrpoStep),
) -> Result<RegrpoResult<B>> {
    let tk = decoder.tokenizer();
    let (failures, cleans) = (&states.failures[..], &states.cleans[..]);
    // The starting (SFT) policy, frozen: the KL term's reference.
    let reference = &model.valid();
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(cfg.weight_decay)
        .init::<B, Qwen2<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut steps = Vec::new();
    let mut rollouts = Vec::new();
    let mut near_misses = Vec::new();
    let mut truncations = Truncations::default();
    let exact = cfg.loss.kl.needs_full_distribution();
    for step in 0..cfg.steps {
        let mut log = RegrpoStep { step: step + 1, ..Default::default() };
        let (mut sample_t, mut exec_t) = (Duration::ZERO, Duration::ZERO);
        let policy = model.valid();
        let mut groups: Vec<Group<B::InnerBackend>> = Vec::new();
        let mut tally = Tally::default();
        let mut draws = 0;
        while groups.len() < cfg.states_per_step && draws < cfg.max_draws_per_step.max(cfg.states_per_step) {
            draws += 1;
            let pool =
                if rng.random_bool(cfg.failure_fraction.clamp(0.0, 1.0)) && !failures.is_empty() || cleans.is_empty() {
                    failures
                } else {
                    cleans
                };
            let Some(state) = pool.choose(&mut rng) else { break };
            let t0 = Instant::now();
            let surface = state.gt_action.surface;
            let generated = decoder.generate(
                &policy,
                &state.messages,
                "",
                &state.specs,
                surface,
                cfg.group_size,
                &cfg.sample,
                &mut rng,
            )?;
            sample_t += t0.elapsed();
            truncations.add(&generated.truncations);
            let mut sampled = Vec::with_capacity(generated.completions.len());
            for c in generated.completions {
                let text = decoder.text(&c)?;
                let t1 = Instant::now();
                let scored = score(&text, state, suite).await;
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
            let task_rewards: Vec<f64> = sampled.iter().map(|s| s.reward).collect();
            if rl::is_degenerate(&task_rewards) {
                // No signal: logged, skipped, and (draws permitting) replaced by a new state.
                for (i, s) in sampled.iter().enumerate() {
                    let (row, near) = record(run_id, step + 1, state, i, s, 0.0, suite).await;
                    rollouts.push(row);
                    near_misses.extend(near);
                }
                log.skipped_groups += 1;
                continue;
            }
            let completions: Vec<&Completion> = sampled.iter().map(|s| &s.completion).collect();
            // The reference's log-probabilities of what was sampled: for the KL, in the reward
            // or in the loss.
            let (ref_full, tokens, mask) = completion_logp(reference, &generated.prompt, &completions, tk.pad);
            let ref_lp = gather_tokens(ref_full.clone(), tokens);
            let len = ref_lp.dims()[1];
            let old: Vec<f32> =
                completions.iter().flat_map(|c| (0..len).map(|j| c.logprobs.get(j).copied().unwrap_or(0.0))).collect();
            let ref_values: Vec<f32> = ref_lp.clone().into_data().convert::<f32>().to_vec().unwrap_or_default();
            let weights: Vec<f32> = mask.into_data().convert::<f32>().to_vec().unwrap_or_default();
            let penalties: Vec<f64> = (0..completions.len())
                .map(|i| {
                    let r = i * len..(i + 1) * len;
                    rl::k1_penalty(&old[r.clone()], &ref_values[r.clone()], &weights[r], 1.0)
                })
                .collect();
            tally.kl += penalties.iter().sum::<f64>();
            tally.kl_n += penalties.len();
            let adv = if cfg.loss.kl == rl::KlMode::K1Reward && cfg.loss.beta > 0.0 {
                let shaped: Vec<f64> =
                    task_rewards.iter().zip(&penalties).map(|(r, k)| r - cfg.loss.beta * k).collect();
                rl::advantages(&shaped, &cfg.advantage)
            } else {
                rl::advantages(&task_rewards, &cfg.advantage)
            };
            for (i, s) in sampled.iter().enumerate() {
                let (row, near) = record(run_id, step + 1, state, i, s, adv[i], suite).await;
                rollouts.push(row);
                near_misses.extend(near);
            }
            let device = ref_lp.device();
            groups.push(Group {
                prompt: generated.prompt,
                old_lp: Tensor::from_data(TensorData::new(old, [completions.len(), len]), &device),
                completions: sampled.into_iter().map(|s| s.completion).collect(),
                adv,
                ref_lp,
                ref_full: exact.then_some(ref_full),
            });
        }
        log.groups = groups.len();
        tally.fill(&mut log);
        log.sample_s = sample_t.as_secs_f64();
        log.exec_s = exec_t.as_secs_f64();

        let t_update = Instant::now();
        if !groups.is_empty() {
            for _ in 0..cfg.updates_per_batch.max(1) {
                let mut total = 0.0;
                let mut acc = burn::optim::GradientsAccumulator::<Qwen2<B>>::new();
                for g in &groups {
                    let cs: Vec<&Completion> = g.completions.iter().collect();
                    let (full, tokens, mask) = completion_logp(&model, &g.prompt, &cs, tk.pad);
                    let lp = gather_tokens(full.clone(), tokens);
                    let inputs = rl::LossInputs {
                        lp,
                        ref_lp: Tensor::from_inner(g.ref_lp.clone()),
                        old_lp: Tensor::from_inner(g.old_lp.clone()),
                        mask,
                        full: g.ref_full.clone().map(|r| (full, Tensor::from_inner(r))),
                    };
                    let l = rl::loss(inputs, &g.adv, &cfg.loss).div_scalar(groups.len() as f64);
                    total += l.clone().into_scalar().elem::<f64>();
                    acc.accumulate(&model, GradientsParams::from_grads(l.backward(), &model));
                }
                let mut grads = acc.grads();
                clip_global_norm(&model, &mut grads, cfg.max_grad_norm);
                model = optim.step(cfg.lr, model, grads);
                log.loss = total;
            }
        }
        log.update_s = t_update.elapsed().as_secs_f64();
        on_step(&log);
        steps.push(log);
    }
    Ok(RegrpoResult { model, steps, rollouts, near_misses, truncations })
}

/// The `rollouts` row of a completion, and a `near_misses` row (source = policy) when it failed
/// with an action the judge can classify.
async fn record(
    run_id: &str,
    step: u64,
    state: &State,
    i: usize,
    s: &Sampled,
    advantage: f64,
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
        let ctx = CallContext { sandbox: state.sandbox.clone(), timeout: Duration::from_secs(10) };
        let gt_exec = execute_action(suite, &state.gt_action, &state.specs, &ctx, state.is_final).await;
        let verdict = judge(&state.gt_action, &gt_exec, action, exec);
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
