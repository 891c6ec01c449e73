//! The ReGRPO objective: rewards, group-relative advantages, KL to the frozen reference, loss.
//!
//! As the reference defines them (`regrpo/rl/core.py`, checked by a parity fixture):
//!
//! ```text
//! R_i = λ_exec·success_i − η·C_i + λ_val·V_i          C_i = reflection tokens / 100
//! A_i = R_i − mean(R)   [÷ (std_pop(R) + 1e-8)]   [clipped to ±c]      (or leave-one-out)
//! L   = −mean_i(A_i · Σ_t lp_it) + β·mean_i(KL_i)                      (sequence level)
//! ```
//!
//! Deviations, each documented where it is defined:
//! - the KL: the reference differentiates k1 (zero expected gradient) or a k3 with the sign
//!   flipped; the default here is k1 in the reward, whose policy gradient is an unbiased
//!   gradient of KL(π‖ref) ([`KlMode`]); the reference's forms stay available by name;
//! - an unparseable completion costs a format penalty (it only happens with constrained
//!   decoding off), and partial credit for the right tool / arguments is an option, off by
//!   default;
//! - token-level aggregation (every scored token weighs the same), and a PPO ratio with
//!   asymmetric clipping for more than one update per batch of rollouts.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Tokens per unit of reflection cost.
pub const REFLECTION_COST_SCALE: f64 = 100.0;

/// Reward weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardConfig {
    pub lambda_exec: f64,
    pub eta: f64,
    pub lambda_val: f64,
    /// Subtracted when a completion does not parse into an action.
    #[serde(default = "default_format_penalty")]
    pub format_penalty: f64,
    /// Shaping (off at 0): a failed completion earns this much times its share of the right
    /// tool (half) and right arguments (half).
    #[serde(default)]
    pub partial_credit: f64,
}

fn default_format_penalty() -> f64 {
    0.5
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig { lambda_exec: 1.0, eta: 0.1, lambda_val: 0.0, format_penalty: 0.5, partial_credit: 0.0 }
    }
}

/// What a scored completion earned its reward with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub success: bool,
    pub parsed: bool,
    pub reflection_tokens: usize,
    /// The verifier's score V in [0, 1].
    pub verifier: f64,
    /// Share of the ground truth matched by a failed action, in [0, 1] (right tool, right
    /// arguments), for partial credit.
    pub partial: f64,
}

/// The reflection cost C of a completion.
pub fn reflection_cost(reflection_tokens: usize) -> f64 {
    reflection_tokens as f64 / REFLECTION_COST_SCALE
}

/// `R = λ_exec·success − η·C + λ_val·V`.
pub fn reward(success: bool, reflection_tokens: usize, verifier: f64, c: &RewardConfig) -> f64 {
    c.lambda_exec * f64::from(u8::from(success)) - c.eta * reflection_cost(reflection_tokens) + c.lambda_val * verifier
}

/// The reward of a completion: the reference's, less the format penalty when it did not parse,
/// plus partial credit when that shaping is on.
pub fn outcome_reward(o: &Outcome, c: &RewardConfig) -> f64 {
    let mut r = reward(o.success, o.reflection_tokens, o.verifier, c);
    if !o.parsed {
        r -= c.format_penalty;
    }
    if !o.success {
        r += c.partial_credit * o.partial.clamp(0.0, 1.0);
    }
    r
}

/// Population variance of a group's rewards.
pub fn variance(rewards: &[f64]) -> f64 {
    if rewards.is_empty() {
        return 0.0;
    }
    let m = rewards.iter().sum::<f64>() / rewards.len() as f64;
    rewards.iter().map(|r| (r - m).powi(2)).sum::<f64>() / rewards.len() as f64
}

/// Whether a group carries no signal (all rewards equal).
pub fn is_degenerate(rewards: &[f64]) -> bool {
    variance(rewards) <= 1e-8
}

/// How advantages are formed within a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AdvantageConfig {
    pub normalize: bool,
    pub clip: Option<f64>,
    pub leave_one_out: bool,
}

/// Group-relative advantages.
pub fn advantages(rewards: &[f64], c: &AdvantageConfig) -> Vec<f64> {
    if rewards.is_empty() {
        return vec![];
    }
    if c.leave_one_out && rewards.len() >= 2 {
        let total: f64 = rewards.iter().sum();
        let d = (rewards.len() - 1) as f64;
        return rewards.iter().map(|r| r - (total - r) / d).collect();
    }
    let m = rewards.iter().sum::<f64>() / rewards.len() as f64;
    let mut a: Vec<f64> = rewards.iter().map(|r| r - m).collect();
    if c.normalize {
        let s = variance(rewards).sqrt();
        a.iter_mut().for_each(|x| *x /= s + 1e-8);
    }
    if let Some(limit) = c.clip {
        a.iter_mut().for_each(|x| *x = x.clamp(-limit, limit));
    }
    a
}

/// Scalar KL estimators on token log-probabilities (for logging and the parity fixture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlEstimator {
    /// `lp − ref`: unbiased for KL(π‖ref) under samples of π.
    K1,
    /// `e^(ref−lp) − (ref−lp) − 1` (Schulman's k3, TRL, verl's `low_var_kl`): unbiased for
    /// KL(π‖ref), never negative.
    K3,
    /// `e^(lp−ref) − (lp−ref) − 1`, the reference's formula: its mean is χ²(π‖ref) − KL(π‖ref),
    /// not a KL.
    ReferenceK3,
}

/// The estimator's value for one token, `d = lp − ref`.
fn kl_token(d: f64, est: KlEstimator) -> f64 {
    match est {
        KlEstimator::K1 => d,
        KlEstimator::K3 => (-d).exp() + d - 1.0,
        KlEstimator::ReferenceK3 => d.exp() - d - 1.0,
    }
}

/// Sequence KL from token log-probabilities (scalar form, for tests and logging).
pub fn kl(logprobs: &[f64], ref_logprobs: &[f64], est: KlEstimator, length_normalize: bool) -> f64 {
    let k: f64 = logprobs.iter().zip(ref_logprobs).map(|(a, b)| kl_token(a - b, est)).sum();
    if length_normalize { k / logprobs.len().max(1) as f64 } else { k }
}

/// The reference's loss on scalars (k1 KL, sequence level).
pub fn loss_scalar(logprobs: &[Vec<f64>], refs: &[Vec<f64>], adv: &[f64], beta: f64, length_normalize: bool) -> f64 {
    let n = adv.len() as f64;
    let policy: f64 = logprobs
        .iter()
        .zip(adv)
        .map(|(lp, a)| {
            let s: f64 = lp.iter().sum();
            a * if length_normalize { s / lp.len().max(1) as f64 } else { s }
        })
        .sum::<f64>()
        / n;
    let kls: f64 =
        logprobs.iter().zip(refs).map(|(lp, r)| kl(lp, r, KlEstimator::K1, length_normalize)).sum::<f64>() / n;
    -policy + beta * kls
}

/// How the KL to the frozen reference enters the objective, and which divergence its expected
/// gradient follows (`trainer` unit tests check each claim by enumeration).
///
/// | mode | where | expected gradient |
/// | --- | --- | --- |
/// | `k1-reward` (default) | `β·Σ_t(lp − ref)` subtracted from the reward, no gradient through it | ∇ KL(π‖ref) |
/// | `exact` | `Σ_t Σ_v π(v)(log π(v) − log ref(v))` in the loss | ∇ KL(π‖ref) at the visited positions |
/// | `k3` | `Σ_t e^(ref−lp) − (ref−lp) − 1` in the loss (TRL, verl) | ∇ KL(ref‖π), the reverse KL |
/// | `reference-k1` | `Σ_t (lp − ref)` in the loss (the reference's default) | 0 |
/// | `reference-k3` | `Σ_t e^(lp−ref) − (lp−ref) − 1` in the loss (the reference's k3) | ½ ∇ χ²(π‖ref) |
///
/// The reference's two forms are kept by name to reproduce its runs; they are a documented
/// deviation, like the reference's first-argument action equivalence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum KlMode {
    #[default]
    K1Reward,
    Exact,
    K3,
    ReferenceK1,
    ReferenceK3,
}

impl KlMode {
    pub const ALL: [KlMode; 5] =
        [KlMode::K1Reward, KlMode::Exact, KlMode::K3, KlMode::ReferenceK1, KlMode::ReferenceK3];

    pub fn as_str(self) -> &'static str {
        match self {
            KlMode::K1Reward => "k1-reward",
            KlMode::Exact => "exact",
            KlMode::K3 => "k3",
            KlMode::ReferenceK1 => "reference-k1",
            KlMode::ReferenceK3 => "reference-k3",
        }
    }

    /// Whether the loss needs the full distributions of policy and reference.
    pub fn needs_full_distribution(self) -> bool {
        self == KlMode::Exact
    }
}

/// The KL penalty `k1-reward` subtracts from a completion's reward: `β·Σ_t w_t·(lp_t − ref_t)`
/// over its scored tokens (`w` 1 on scored tokens, 0 elsewhere).
pub fn k1_penalty(lp: &[f32], ref_lp: &[f32], weights: &[f32], beta: f64) -> f64 {
    beta * lp.iter().zip(ref_lp).zip(weights).map(|((a, b), w)| f64::from(*w) * f64::from(a - b)).sum::<f64>()
}

/// How the loss is aggregated and regularised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub beta: f64,
    pub kl: KlMode,
    /// Every scored token weighs the same (instead of every sequence).
    pub token_level: bool,
    /// Divide sequence sums by their length (sequence level only).
    pub length_normalize: bool,
    /// PPO ratio clipping `(ε_low, ε_high)` against the policy that sampled.
    pub ppo_clip: Option<(f64, f64)>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { beta: 0.04, kl: KlMode::default(), token_level: false, length_normalize: false, ppo_clip: None }
    }
}

/// Per-token log-probabilities of `tokens` under `logits`: `[rows, len]`.
pub fn token_logprobs<B: Backend>(logits: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    gather_tokens(log_softmax(logits, 2), tokens)
}

/// Picks each position's token out of full log-probabilities `[rows, len, vocab]`.
pub fn gather_tokens<B: Backend>(logp: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    logp.gather(2, tokens.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2)
}

/// What the loss of one batch of completions is computed from.
pub struct LossInputs<B: Backend> {
    /// The policy's token log-probabilities `[rows, len]`, with gradient.
    pub lp: Tensor<B, 2>,
    /// The KL term's inputs, in the form its mode needs.
    pub kl: Kl<B>,
    /// The sampling policy's (for the PPO ratio).
    pub old_lp: Tensor<B, 2>,
    /// Weight of each token: 1 on scored tokens, 0 on padding and on tokens the grammar forced.
    pub mask: Tensor<B, 2>,
}

/// The KL to the frozen reference as one batch's loss takes it: the mode with what it is
/// computed from, so that a mode cannot meet inputs it cannot use.
pub enum Kl<B: Backend> {
    /// `k1-reward`: the KL acts through the reward; no term in the loss.
    InReward,
    /// `k3`, `reference-k1`, `reference-k3`: from the reference's token log-probabilities.
    Tokens { mode: KlMode, ref_lp: Tensor<B, 2> },
    /// `exact`: from the full log-probabilities `[rows, len, vocab]` of the policy (with
    /// gradient) and of the reference.
    Exact { logp: Tensor<B, 3>, ref_logp: Tensor<B, 3> },
}

impl<B: Backend> Kl<B> {
    /// The KL inputs of `mode`: the reference's token log-probabilities, and the full
    /// distributions when the mode is `exact` (an error without them).
    pub fn new(mode: KlMode, ref_lp: Tensor<B, 2>, full: Option<(Tensor<B, 3>, Tensor<B, 3>)>) -> Result<Kl<B>> {
        Ok(match (mode, full) {
            (KlMode::K1Reward, _) => Kl::InReward,
            (KlMode::Exact, Some((logp, ref_logp))) => Kl::Exact { logp, ref_logp },
            (KlMode::Exact, None) => {
                return Err(Error::Config(
                    "the exact KL needs the full distributions of the policy and the reference".into(),
                ));
            }
            (mode, _) => Kl::Tokens { mode, ref_lp },
        })
    }
}

/// The per-token KL terms `[rows, len]` a mode puts in the loss (zero for `k1-reward`, which
/// acts through the reward).
pub fn kl_loss_terms<B: Backend>(lp: Tensor<B, 2>, kl: Kl<B>) -> Tensor<B, 2> {
    match kl {
        Kl::InReward => lp.zeros_like(),
        Kl::Tokens { mode: KlMode::K3, ref_lp } => {
            let d = ref_lp - lp;
            d.clone().exp() - d - 1.0
        }
        Kl::Tokens { mode: KlMode::ReferenceK3, ref_lp } => {
            let d = lp - ref_lp;
            d.clone().exp() - d - 1.0
        }
        Kl::Tokens { mode: KlMode::ReferenceK1, ref_lp } => lp - ref_lp,
        // `Kl::new` builds no other token mode: k1 acts through the reward.
        Kl::Tokens { .. } => lp.zeros_like(),
        Kl::Exact { logp, ref_logp } => (logp.clone().exp() * (logp - ref_logp)).sum_dim(2).squeeze_dim::<2>(2),
    }
}

/// The ReGRPO loss of one batch of completions, `adv` one advantage per row.
pub fn loss<B: Backend>(x: LossInputs<B>, adv: &[f64], c: &LossConfig) -> Tensor<B, 1> {
    let LossInputs { lp, kl, old_lp, mask } = x;
    let device = lp.device();
    let [rows, _] = lp.dims();
    let a =
        Tensor::<B, 1>::from_data(TensorData::new(adv.iter().map(|x| *x as f32).collect::<Vec<_>>(), [rows]), &device)
            .unsqueeze_dim::<2>(1);
    let kl_tok = kl_loss_terms(lp.clone(), kl) * mask.clone();
    let policy_tok = match c.ppo_clip {
        None => lp * a.clone(),
        Some((lo, hi)) => {
            let ratio = (lp - old_lp).exp();
            let unclipped = ratio.clone() * a.clone();
            let clipped = ratio.clamp(1.0 - lo, 1.0 + hi) * a.clone();
            // min(r·A, clip(r)·A) without a min op that loses the gradient choice.
            let take_unclipped = unclipped.clone().lower_equal(clipped.clone());
            clipped.mask_where(take_unclipped, unclipped)
        }
    } * mask.clone();
    if c.token_level {
        let n = mask.sum().clamp_min(1.0);
        return (policy_tok.sum().neg() + kl_tok.sum().mul_scalar(c.beta)) / n;
    }
    let len = mask.sum_dim(1).clamp_min(1.0).squeeze_dim::<1>(1);
    let mut seq_policy = policy_tok.sum_dim(1).squeeze_dim::<1>(1);
    let mut seq_kl = kl_tok.sum_dim(1).squeeze_dim::<1>(1);
    if c.length_normalize {
        seq_policy = seq_policy / len.clone();
        seq_kl = seq_kl / len;
    }
    seq_policy.mean().neg() + seq_kl.mean().mul_scalar(c.beta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_center_normalise_and_clip() {
        let r = [1.0, 0.0, 0.0, 1.0, 0.5];
        let a = advantages(&r, &AdvantageConfig::default());
        assert!((a.iter().sum::<f64>()).abs() < 1e-12);
        let n = advantages(&r, &AdvantageConfig { normalize: true, ..Default::default() });
        assert!((variance(&n) - 1.0).abs() < 1e-6);
        let c = advantages(&r, &AdvantageConfig { normalize: true, clip: Some(0.5), ..Default::default() });
        assert!(c.iter().all(|x| x.abs() <= 0.5));
        assert!(is_degenerate(&[0.3, 0.3, 0.3]));
    }

    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray<f32>>;

    /// Two categoricals over five outcomes: the policy π = softmax(θ) and the reference ρ.
    const THETA: [f32; 5] = [0.3, -0.2, 1.1, 0.0, -0.7];
    const PHI: [f32; 5] = [0.1, 0.4, -0.3, 0.8, -0.1];

    fn softmax(x: &[f32]) -> Vec<f64> {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = x.iter().map(|v| f64::from(v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    #[test]
    fn kl_estimators_have_the_documented_means() {
        let (p, r) = (softmax(&THETA), softmax(&PHI));
        let kl_pr: f64 = p.iter().zip(&r).map(|(a, b)| a * (a / b).ln()).sum();
        let chi2: f64 = p.iter().zip(&r).map(|(a, b)| a * a / b).sum::<f64>() - 1.0;
        // The exact expectation under π, outcome by outcome.
        let mean = |est| -> f64 { p.iter().zip(&r).map(|(a, b)| a * kl(&[a.ln()], &[b.ln()], est, false)).sum() };
        assert!((mean(KlEstimator::K1) - kl_pr).abs() < 1e-12, "k1");
        assert!((mean(KlEstimator::K3) - kl_pr).abs() < 1e-12, "k3 (Schulman's sign)");
        assert!((mean(KlEstimator::ReferenceK3) - (chi2 - kl_pr)).abs() < 1e-12, "the reference's k3");
        assert!(
            (mean(KlEstimator::ReferenceK3) - kl_pr).abs() > 1e-3,
            "the reference's k3 is not an estimate of the KL"
        );
        for (a, b) in p.iter().zip(&r) {
            assert!(kl(&[a.ln()], &[b.ln()], KlEstimator::K3, false) >= 0.0);
        }
    }

    /// `∇_θ D(θ)` of a divergence written on `log π = log_softmax(θ)` and `log ρ`.
    fn analytic(d: impl Fn(Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, 1>) -> Vec<f32> {
        let device = Default::default();
        let theta = Tensor::<B, 1>::from_floats(THETA, &device).require_grad();
        let logp = log_softmax(theta.clone(), 0);
        let ref_logp = log_softmax(Tensor::<B, 1>::from_floats(PHI, &device), 0);
        let g = d(logp, ref_logp).backward();
        theta.grad(&g).unwrap().into_data().to_vec().unwrap()
    }

    /// The expected gradient of a mode's loss under π, by enumeration: one row per outcome y
    /// (a one-token completion), weighted by π(y) through the token weights.
    fn expected_loss_gradient(mode: KlMode) -> Vec<f32> {
        let device = Default::default();
        let n = THETA.len();
        let theta = Tensor::<B, 1>::from_floats(THETA, &device).require_grad();
        let logp = log_softmax(theta.clone(), 0);
        let ref_logp = log_softmax(Tensor::<B, 1>::from_floats(PHI, &device), 0);
        let p = softmax(&THETA);
        let lp_values: Vec<f32> = logp.clone().inner().into_data().to_vec().unwrap();
        let ref_values: Vec<f32> = ref_logp.clone().inner().into_data().to_vec().unwrap();
        // k1-reward acts through the advantage: A_y = −k1(y); the others through the loss.
        let adv: Vec<f64> = (0..n)
            .map(|y| match mode {
                KlMode::K1Reward => -k1_penalty(&[lp_values[y]], &[ref_values[y]], &[1.0], 1.0),
                _ => 0.0,
            })
            .collect();
        let weights: Vec<f32> = p.iter().map(|v| (*v * n as f64) as f32).collect();
        let full =
            (logp.clone().reshape([1, 1, n]).repeat_dim(0, n), ref_logp.clone().reshape([1, 1, n]).repeat_dim(0, n));
        let x = LossInputs {
            lp: logp.clone().reshape([n, 1]),
            kl: Kl::new(mode, ref_logp.reshape([n, 1]), Some(full)).unwrap(),
            old_lp: logp.reshape([n, 1]).detach(),
            mask: Tensor::from_data(TensorData::new(weights, [n, 1]), &device),
        };
        let c = LossConfig { beta: 1.0, kl: mode, ..Default::default() };
        let g = loss(x, &adv, &c).backward();
        theta.grad(&g).unwrap().into_data().to_vec().unwrap()
    }

    #[test]
    fn kl_modes_follow_the_gradient_their_documentation_claims() {
        let kl_forward = |lp: Tensor<B, 1>, r: Tensor<B, 1>| (lp.clone().exp() * (lp - r)).sum();
        let kl_reverse = |lp: Tensor<B, 1>, r: Tensor<B, 1>| (r.clone().exp() * (r - lp)).sum();
        let half_chi2 =
            |lp: Tensor<B, 1>, r: Tensor<B, 1>| ((lp.mul_scalar(2.0) - r).exp().sum() - 1.0).mul_scalar(0.5);
        let zero = |lp: Tensor<B, 1>, _r: Tensor<B, 1>| lp.sum().mul_scalar(0.0);
        type Divergence<'a> = &'a dyn Fn(Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, 1>;
        let cases: [(KlMode, Divergence, &str); 5] = [
            (KlMode::K1Reward, &kl_forward, "KL(π‖ref)"),
            (KlMode::Exact, &kl_forward, "KL(π‖ref)"),
            (KlMode::K3, &kl_reverse, "KL(ref‖π)"),
            (KlMode::ReferenceK1, &zero, "nothing"),
            (KlMode::ReferenceK3, &half_chi2, "½χ²(π‖ref)"),
        ];
        for (mode, divergence, name) in cases {
            let got = expected_loss_gradient(mode);
            let want = analytic(divergence);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{}: expected gradient {got:?}, ∇{name} {want:?}", mode.as_str());
            }
        }
        // And the two that claim KL(π‖ref) are not also matching the others by accident.
        let fwd = analytic(kl_forward);
        assert!(fwd.iter().zip(analytic(kl_reverse)).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn unparseable_completions_pay_the_format_penalty_and_shaping_is_off_by_default() {
        let c = RewardConfig::default();
        let o = Outcome { success: false, parsed: true, reflection_tokens: 0, verifier: 0.0, partial: 1.0 };
        assert_eq!(outcome_reward(&o, &c), 0.0);
        assert_eq!(outcome_reward(&Outcome { parsed: false, ..o }, &c), -0.5);
        let shaped = RewardConfig { partial_credit: 0.2, ..c };
        assert!((outcome_reward(&o, &shaped) - 0.2).abs() < 1e-12);
        assert_eq!(outcome_reward(&Outcome { success: true, ..o }, &shaped), 1.0);
    }
}
