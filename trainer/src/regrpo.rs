//! ReGRPO: group-relative policy optimisation over reflection + corrective-action tokens on
//! local trajectories, with rollouts executed by the engine's tools.
//!
//! ```text
//! states (failure | clean) ─▶ G completions (KV cache) ─▶ parse ─▶ execute ─▶ reward ─▶ advantage
//!        │                                                                                  │
//!        └── rollouts / near_misses(source = policy) tables ◀── log ── update (loss + β·KL) ◀┘
//! ```
//!
//! Groups whose rewards are all equal carry no signal: they are skipped and counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regrpo_datasets::Repository;
use regrpo_engine::judge::judge;
use regrpo_engine::run::execute_action;
use regrpo_engine::{CallContext, ToolSuite};
use regrpo_schemas::id::content_id;
use regrpo_schemas::{ActionRecord, NearMiss, Rollout};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Qwen2;
use crate::rl::{self, AdvantageConfig, LossConfig, RewardConfig};
use crate::rollout::{Scored, State, StateKind, States, score};
use crate::sampling::{Completion, SampleConfig, sample};
use crate::sft::clip_global_norm;
use crate::tokenizer::ChatTokenizer;

/// ReGRPO hyper-parameters. Defaults are the reference's: G = 5, λ_exec = 1, η = 0.1,
/// λ_val = 0, β = 0.04, lr 5e-6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegrpoConfig {
    pub steps: u64,
    pub group_size: usize,
    pub states_per_step: usize,
    /// Share of failure states among the states of a step.
    pub failure_fraction: f64,
    pub lr: f64,
    pub weight_decay: f32,
    pub max_grad_norm: f64,
    pub sample: SampleConfig,
    pub reward: RewardConfig,
    pub advantage: AdvantageConfig,
    pub loss: LossConfig,
    /// Optimiser updates per batch of rollouts (more than one uses the PPO ratio).
    pub updates_per_batch: usize,
    pub max_prompt_tokens: usize,
    pub seed: u64,
}

impl Default for RegrpoConfig {
    fn default() -> Self {
        RegrpoConfig {
            steps: 20,
            group_size: 5,
            states_per_step: 4,
            failure_fraction: 0.5,
            lr: 5e-6,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            sample: SampleConfig::default(),
            reward: RewardConfig::default(),
            advantage: AdvantageConfig::default(),
            loss: LossConfig::default(),
            updates_per_batch: 1,
            max_prompt_tokens: 768,
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
    pub loss: f64,
    pub groups: usize,
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

fn prompt_tokens(tk: &ChatTokenizer, state: &State, max: usize) -> Result<Vec<u32>> {
    let mut ids = tk.prompt(&state.messages)?;
    if ids.len() > max {
        ids.drain(..ids.len() - max);
    }
    Ok(ids)
}

fn completion_text(tk: &ChatTokenizer, c: &Completion) -> Result<String> {
    let body: Vec<u32> = c.tokens.iter().copied().filter(|t| *t != tk.im_end).collect();
    tk.decode(&body)
}

/// Samples and scores one group.
async fn rollout_group<B: Backend>(
    model: &Qwen2<B>,
    tk: &ChatTokenizer,
    suite: &ToolSuite,
    state: &State,
    cfg: &RegrpoConfig,
    rng: &mut ChaCha8Rng,
    times: &mut (Duration, Duration),
) -> Result<(Vec<u32>, Vec<Sampled>)> {
    let prompt = prompt_tokens(tk, state, cfg.max_prompt_tokens)?;
    let t0 = Instant::now();
    let completions = sample(model, &prompt, cfg.group_size, &cfg.sample, tk.im_end, tk.pad, rng);
    times.0 += t0.elapsed();
    let mut out = Vec::new();
    for c in completions {
        let text = completion_text(tk, &c)?;
        let t1 = Instant::now();
        let scored = score(&text, state, suite).await;
        times.1 += t1.elapsed();
        let reflection_tokens = match &scored.reflection_text {
            Some(r) => tk.encode(r)?.len(),
            None => 0,
        };
        let verifier = 0.5 * f64::from(u8::from(scored.grounded)) + 0.5 * f64::from(u8::from(scored.type_correct));
        let reward = rl::reward(scored.success, reflection_tokens, verifier, &cfg.reward);
        out.push(Sampled { completion: c, text, scored, reflection_tokens, reward });
    }
    Ok((prompt, out))
}

/// Token log-probabilities of each completion `[g, len]` given the shared prompt, and the mask.
fn completion_logprobs<B: Backend>(
    model: &Qwen2<B>,
    prompt: &[u32],
    completions: &[&Completion],
    pad: u32,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
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
            mask.push(if tok.is_some() { 1.0f32 } else { 0.0 });
        }
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [g, total]), &device);
    let logits = model.forward(ids).narrow(1, prompt.len() - 1, len);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [g, len]), &device);
    (rl::token_logprobs(logits, targets), Tensor::from_data(TensorData::new(mask, [g, len]), &device))
}

/// One state's prompt, its sampled completions and their advantages.
type Group<'a> = (Vec<u32>, Vec<Sampled>, Vec<f64>, &'a State);
/// Reference and sampling log-probabilities of a group's completions, fixed for the batch.
type FixedLogprobs<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// What one run of ReGRPO produced.
pub struct RegrpoResult<B: AutodiffBackend> {
    pub model: Qwen2<B>,
    pub steps: Vec<RegrpoStep>,
    pub rollouts: Vec<Rollout>,
    pub near_misses: Vec<NearMiss>,
}

/// Trains `model` (starting from the SFT policy, also the frozen reference) on the states.
pub async fn train<B: AutodiffBackend>(
    mut model: Qwen2<B>,
    tk: &ChatTokenizer,
    suite: &ToolSuite,
    states: &States,
    cfg: &RegrpoConfig,
    run_id: &str,
    mut on_step: impl FnMut(&RegrpoStep),
) -> Result<RegrpoResult<B>> {
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
    for step in 0..cfg.steps {
        let mut log = RegrpoStep { step: step + 1, ..Default::default() };
        let mut times = (Duration::ZERO, Duration::ZERO);
        let policy = model.valid();
        let mut groups: Vec<Group> = Vec::new();
        let (mut fs, mut fn_, mut cs, mut cn) = (0.0, 0usize, 0.0, 0usize);
        let (mut f_refl, mut c_refl) = (0.0, 0.0);
        let mut rewards_all = Vec::new();
        for _ in 0..cfg.states_per_step {
            let pool =
                if rng.random_bool(cfg.failure_fraction.clamp(0.0, 1.0)) && !failures.is_empty() || cleans.is_empty() {
                    failures
                } else {
                    cleans
                };
            let Some(state) = pool.choose(&mut rng) else { continue };
            let (prompt, sampled) = rollout_group(&policy, tk, suite, state, cfg, &mut rng, &mut times).await?;
            let rewards: Vec<f64> = sampled.iter().map(|s| s.reward).collect();
            for s in &sampled {
                match state.kind {
                    StateKind::Failure => {
                        fs += f64::from(u8::from(s.scored.success));
                        fn_ += 1;
                        f_refl += s.reflection_tokens as f64;
                    }
                    StateKind::Clean => {
                        cs += f64::from(u8::from(s.scored.success));
                        cn += 1;
                        c_refl += s.reflection_tokens as f64;
                    }
                }
            }
            rewards_all.extend(rewards.iter().copied());
            let adv = if rl::is_degenerate(&rewards) {
                vec![0.0; rewards.len()]
            } else {
                rl::advantages(&rewards, &cfg.advantage)
            };
            for (i, s) in sampled.iter().enumerate() {
                let (row, near) = record(run_id, step + 1, state, i, s, adv[i], suite).await;
                rollouts.push(row);
                near_misses.extend(near);
            }
            if rl::is_degenerate(&rewards) {
                log.skipped_groups += 1;
            } else {
                groups.push((prompt, sampled, adv, state));
            }
        }
        log.groups = groups.len();
        log.mean_reward = rewards_all.iter().sum::<f64>() / rewards_all.len().max(1) as f64;
        log.success_rate = (fs + cs) / (fn_ + cn).max(1) as f64;
        log.failure_success_rate = fs / fn_.max(1) as f64;
        log.clean_success_rate = cs / cn.max(1) as f64;
        log.failure_reflection_tokens = f_refl / fn_.max(1) as f64;
        log.clean_reflection_tokens = c_refl / cn.max(1) as f64;
        log.sample_s = times.0.as_secs_f64();
        log.exec_s = times.1.as_secs_f64();

        let t_update = Instant::now();
        if !groups.is_empty() {
            // Reference and sampling log-probabilities are fixed for the batch.
            let fixed: Vec<FixedLogprobs<B::InnerBackend>> = groups
                .iter()
                .map(|(prompt, sampled, _, _)| {
                    let cs: Vec<&Completion> = sampled.iter().map(|s| &s.completion).collect();
                    let (ref_lp, _) = completion_logprobs(reference, prompt, &cs, tk.pad);
                    let len = ref_lp.dims()[1];
                    let old: Vec<f32> =
                        cs.iter().flat_map(|c| (0..len).map(|j| c.logprobs.get(j).copied().unwrap_or(0.0))).collect();
                    let old = Tensor::from_data(TensorData::new(old, [cs.len(), len]), &ref_lp.device());
                    (ref_lp, old)
                })
                .collect();
            for _ in 0..cfg.updates_per_batch.max(1) {
                let mut total = 0.0;
                let mut acc = burn::optim::GradientsAccumulator::<Qwen2<B>>::new();
                for ((prompt, sampled, adv, _), (ref_lp, old)) in groups.iter().zip(&fixed) {
                    let cs: Vec<&Completion> = sampled.iter().map(|s| &s.completion).collect();
                    let (lp, mask) = completion_logprobs(&model, prompt, &cs, tk.pad);
                    let l = rl::loss(
                        lp,
                        Tensor::from_inner(ref_lp.clone()),
                        Tensor::from_inner(old.clone()),
                        mask,
                        adv,
                        &cfg.loss,
                    )
                    .div_scalar(groups.len() as f64);
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
    Ok(RegrpoResult { model, steps, rollouts, near_misses })
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
        exec_status: s.scored.status.clone(),
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
