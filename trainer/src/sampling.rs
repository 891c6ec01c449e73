//! Sampling: G completions of one prompt with the KV cache, seeded.
//!
//! The prompt is run once (prefill, batch 1); its cache is copied to G rows; then all G
//! continue one token at a time. Temperature, nucleus (top-p) filtering, a token budget, and
//! a stop token (`<|im_end|>`, the end of the assistant turn, which is the end of an action).
//! Temperature 0 is greedy. Each completion keeps the log-probability the sampling policy
//! gave every chosen token (temperature 1), for a PPO ratio.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{KvCache, Qwen2};

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleConfig {
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig { temperature: 1.0, top_p: 0.95, max_new_tokens: 160 }
    }
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated tokens, the stop token included when it was reached.
    pub tokens: Vec<u32>,
    /// log π(token) at temperature 1 for each generated token.
    pub logprobs: Vec<f32>,
    /// Whether the stop token ended it (rather than the budget).
    pub stopped: bool,
}

/// Picks a token from one row of logits.
fn pick(logits: &[f32], cfg: &SampleConfig, rng: &mut ChaCha8Rng) -> usize {
    if cfg.temperature <= 0.0 {
        return logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    }
    let t = cfg.temperature as f32;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f32)> = logits.iter().enumerate().map(|(i, l)| (i, ((l - max) / t).exp())).collect();
    let z: f32 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= z);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let mut n = 0;
    for p in &probs {
        kept += p.1;
        n += 1;
        if f64::from(kept) >= cfg.top_p {
            break;
        }
    }
    let mut x = rng.random::<f32>() * kept;
    for p in &probs[..n] {
        x -= p.1;
        if x <= 0.0 {
            return p.0;
        }
    }
    probs[n - 1].0
}

/// Rows of a `[rows, vocab]` tensor as vectors.
fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [r, v] = t.dims();
    let flat: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap_or_default();
    (0..r).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Samples `g` completions of `prompt`.
pub fn sample<B: Backend>(
    model: &Qwen2<B>,
    prompt: &[u32],
    g: usize,
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    rng: &mut ChaCha8Rng,
) -> Vec<Completion> {
    let device = model.embed_tokens.weight.device();
    let mut cache = KvCache::new(model.layers.len());
    let ids: Vec<i64> = prompt.iter().map(|t| i64::from(*t)).collect();
    let logits = model
        .forward_cached(Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device), &mut cache);
    let [_, p, v] = logits.dims();
    let last = logits.narrow(1, p - 1, 1).reshape([1, v]);
    let mut cache = cache.select_rows(Tensor::<B, 1, Int>::zeros([g], &device));
    let mut next = last.repeat_dim(0, g);
    let mut out: Vec<Completion> =
        (0..g).map(|_| Completion { tokens: vec![], logprobs: vec![], stopped: false }).collect();
    for _ in 0..cfg.max_new_tokens {
        let logp = rows(log_softmax(next.clone(), 1));
        let raw = rows(next);
        let mut fed = Vec::with_capacity(g);
        for (i, c) in out.iter_mut().enumerate() {
            if c.stopped {
                fed.push(i64::from(pad));
                continue;
            }
            let tok = pick(&raw[i], cfg, rng);
            c.tokens.push(tok as u32);
            c.logprobs.push(logp[i][tok]);
            if tok as u32 == stop {
                c.stopped = true;
            }
            fed.push(tok as i64);
        }
        if out.iter().all(|c| c.stopped) {
            break;
        }
        let step =
            model.forward_cached(Tensor::<B, 2, Int>::from_data(TensorData::new(fed, [g, 1]), &device), &mut cache);
        next = step.reshape([g, v]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    use crate::config::Qwen2Config;

    type B = NdArray<f32>;

    #[test]
    fn sampling_is_seeded_greedy_is_the_argmax_and_stop_ends_a_row() {
        let device = Default::default();
        let model = Qwen2::<B>::init(&Qwen2Config::tiny(40), 3, &device);
        let cfg = SampleConfig { temperature: 1.0, top_p: 1.0, max_new_tokens: 12 };
        let a = sample(&model, &[1, 2, 3], 3, &cfg, 7, 0, &mut ChaCha8Rng::seed_from_u64(5));
        let b = sample(&model, &[1, 2, 3], 3, &cfg, 7, 0, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(a, b);
        for c in &a {
            assert_eq!(c.tokens.len(), c.logprobs.len());
            assert!(c.stopped == (c.tokens.last() == Some(&7)));
            assert!(c.tokens.iter().rev().skip(1).all(|t| *t != 7));
        }
        // Greedy decoding equals the argmax of a full forward pass, token by token.
        let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: 5 };
        let g = sample(&model, &[1, 2, 3], 1, &greedy, 999, 0, &mut ChaCha8Rng::seed_from_u64(0)).remove(0);
        let mut seq = vec![1i64, 2, 3];
        for t in &g.tokens {
            let logits =
                model.forward(Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, seq.len()]), &device));
            let v = logits.dims()[2];
            let row = logits.narrow(1, seq.len() - 1, 1).reshape([v]);
            let want = row.argmax(0).into_scalar() as u32;
            assert_eq!(*t, want);
            seq.push(i64::from(*t));
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let logits = [10.0, 9.0, -10.0, -10.0];
        let cfg = SampleConfig { temperature: 1.0, top_p: 0.5, max_new_tokens: 1 };
        for _ in 0..50 {
            assert_eq!(pick(&logits, &cfg, &mut rng), 0);
        }
    }
}
