//! The ReGRPO objective: rewards, group-relative advantages, KL to the frozen reference, loss.
//!
//! As the reference defines them (`regrpo/rl/core.py`, checked by a parity fixture):
//!
//! ```text
//! R_i = λ_exec·success_i − η·C_i + λ_val·V_i          C_i = reflection tokens / 100
//! A_i = R_i − mean(R)   [÷ (std_pop(R) + 1e-8)]   [clipped to ±c]      (or leave-one-out)
//! KL  = Σ_t (lp − ref)              (k1)      or   Σ_t (e^(lp−ref) − (lp−ref) − 1)   (k3)
//! L   = −mean_i(A_i · Σ_t lp_it) + β·mean_i(KL_i)                      (sequence level)
//! ```
//!
//! Beyond the reference: token-level aggregation (every scored token weighs the same), and a
//! PPO ratio with asymmetric clipping for more than one update per batch of rollouts.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Tokens per unit of reflection cost.
pub const REFLECTION_COST_SCALE: f64 = 100.0;

/// Reward weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardConfig {
    pub lambda_exec: f64,
    pub eta: f64,
    pub lambda_val: f64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig { lambda_exec: 1.0, eta: 0.1, lambda_val: 0.0 }
    }
}

/// The reflection cost C of a completion.
pub fn reflection_cost(reflection_tokens: usize) -> f64 {
    reflection_tokens as f64 / REFLECTION_COST_SCALE
}

/// `R = λ_exec·success − η·C + λ_val·V`.
pub fn reward(success: bool, reflection_tokens: usize, verifier: f64, c: &RewardConfig) -> f64 {
    c.lambda_exec * f64::from(u8::from(success)) - c.eta * reflection_cost(reflection_tokens) + c.lambda_val * verifier
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

/// KL estimators against the reference policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    K1,
    K3,
}

/// Sequence KL from token log-probabilities (scalar form, for tests and logging).
pub fn kl(logprobs: &[f64], ref_logprobs: &[f64], est: KlEstimator, length_normalize: bool) -> f64 {
    let k: f64 = logprobs
        .iter()
        .zip(ref_logprobs)
        .map(|(a, b)| {
            let d = a - b;
            match est {
                KlEstimator::K1 => d,
                KlEstimator::K3 => d.exp() - d - 1.0,
            }
        })
        .sum();
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

/// How the loss is aggregated and regularised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub beta: f64,
    pub kl: KlEstimator,
    /// Every scored token weighs the same (instead of every sequence).
    pub token_level: bool,
    /// Divide sequence sums by their length (sequence level only).
    pub length_normalize: bool,
    /// PPO ratio clipping `(ε_low, ε_high)` against the policy that sampled.
    pub ppo_clip: Option<(f64, f64)>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { beta: 0.04, kl: KlEstimator::K1, token_level: false, length_normalize: false, ppo_clip: None }
    }
}

/// Per-token log-probabilities of `tokens` under `logits`: `[rows, len]`.
pub fn token_logprobs<B: Backend>(logits: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    log_softmax(logits, 2).gather(2, tokens.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2)
}

/// The ReGRPO loss of one batch of completions.
///
/// `lp` `[rows, len]` are the policy's token log-probabilities (with gradient), `ref_lp` the
/// frozen reference's, `old_lp` the sampling policy's (for the PPO ratio), `mask` 1 on scored
/// tokens, `adv` one advantage per row.
pub fn loss<B: Backend>(
    lp: Tensor<B, 2>,
    ref_lp: Tensor<B, 2>,
    old_lp: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    adv: &[f64],
    c: &LossConfig,
) -> Tensor<B, 1> {
    let device = lp.device();
    let [rows, _] = lp.dims();
    let a =
        Tensor::<B, 1>::from_data(TensorData::new(adv.iter().map(|x| *x as f32).collect::<Vec<_>>(), [rows]), &device)
            .unsqueeze_dim::<2>(1);
    let delta = lp.clone() - ref_lp;
    let kl_tok = match c.kl {
        KlEstimator::K1 => delta,
        KlEstimator::K3 => delta.clone().exp() - delta - 1.0,
    } * mask.clone();
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
}
