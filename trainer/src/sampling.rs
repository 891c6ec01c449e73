//! Sampling: G completions of one prompt with the KV cache, seeded.
//!
//! The prompt is run once (prefill, batch 1); its cache is copied to G rows; then all G
//! continue one token at a time. Temperature, nucleus (top-p) filtering, a token budget, and
//! a stop token (`<|im_end|>`, the end of the assistant turn, which is the end of an action).
//! Temperature 0 is greedy. Each completion keeps the log-probability the sampling policy
//! gave every chosen token (temperature 1, over the whole vocabulary), for a PPO ratio.
//!
//! Under a [`Constraint`] every row keeps a grammar state, and each step samples only among
//! the tokens the grammar allows within the remaining budget (see [`crate::grammar`]), so every
//! completion parses; a token that was the only one allowed is marked `forced` and carries no
//! gradient in ReGRPO.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::grammar::{Grammar, Recognizer, TokenTrie};
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
    /// For each generated token, its log-probability at temperature 1 under the distribution
    /// that sampled it: π itself, or under a grammar π renormalised over the tokens the grammar
    /// allowed (`q(t) = π(t) / Σ_{a ∈ allowed} π(a)`), the policy ReGRPO actually optimises.
    pub logprobs: Vec<f32>,
    /// Whether the stop token ended it (rather than the budget).
    pub stopped: bool,
    /// Per token: the grammar allowed no other.
    pub forced: Vec<bool>,
    /// Per token: the tokens the grammar allowed there (`None`: every token, unconstrained).
    pub allowed: Vec<Option<Vec<u32>>>,
}

/// Grammar-constrained decoding: the grammar of a turn and the vocabulary's byte trie.
#[derive(Clone, Copy)]
pub struct Constraint<'a> {
    pub grammar: &'a Grammar,
    pub trie: &'a TokenTrie,
    /// The grammar state the completion starts in (after any prefilled text of the turn).
    pub start: Recognizer,
}

/// Picks a token from one row of logits (`-inf` marks a token that may not be chosen).
fn pick(logits: &[f32], cfg: &SampleConfig, rng: &mut ChaCha8Rng) -> usize {
    if cfg.temperature <= 0.0 {
        return logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    }
    let t = cfg.temperature as f32;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f32)> =
        logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, l)| (i, ((l - max) / t).exp())).collect();
    let z: f32 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= z);
    // The nucleus is the shortest prefix, in (probability desc, id asc) order, whose mass
    // reaches `top_p`. It is usually a few dozen of the vocabulary's tokens, so the largest `k`
    // are selected (linear) and only they are sorted, `k` growing until the prefix is found:
    // the same tokens and the same running sum as sorting everything.
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut k = probs.len().min(64);
    let (kept, n) = loop {
        if k < probs.len() {
            probs.select_nth_unstable_by(k, order);
        }
        probs[..k].sort_by(order);
        let mut kept = 0.0;
        let mut n = 0;
        for p in &probs[..k] {
            kept += p.1;
            n += 1;
            if f64::from(kept) >= cfg.top_p {
                break;
            }
        }
        if f64::from(kept) >= cfg.top_p || k == probs.len() {
            break (kept, n);
        }
        k = (k * 8).min(probs.len());
    };
    let mut x = rng.random::<f32>() * kept;
    for p in &probs[..n] {
        x -= p.1;
        if x <= 0.0 {
            return p.0;
        }
    }
    probs[n - 1].0
}

/// `log Σ exp(x)`, stable.
fn log_sum_exp(xs: impl Iterator<Item = f32> + Clone) -> f32 {
    let max = xs.clone().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + xs.map(|x| (x - max).exp()).sum::<f32>().ln()
}

/// Rows of a `[rows, vocab]` tensor as vectors.
fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [r, v] = t.dims();
    let flat: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap_or_default();
    (0..r).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Samples `g` completions of `prompt`, under the grammar when `constraint` is given.
#[allow(clippy::too_many_arguments)] // a sampler's settings, each used on every step
pub fn sample<B: Backend>(
    model: &Qwen2<B>,
    prompt: &[u32],
    g: usize,
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    rng: &mut ChaCha8Rng,
    constraint: Option<Constraint<'_>>,
) -> Vec<Completion> {
    let device = model.embed_tokens.weight.device();
    let mut cache = KvCache::new(model.layers.len());
    let ids: Vec<i64> = prompt.iter().map(|t| i64::from(*t)).collect();
    let logits = model
        .forward_cached(Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device), &mut cache);
    let [_, p, v] = logits.dims();
    let last = logits.narrow(1, p - 1, 1).reshape([1, v]);
    let cache = cache.select_rows(Tensor::<B, 1, Int>::zeros([g], &device));
    let rows = Rows { constraints: vec![constraint; g], pads: None };
    decode(model, cache, last.repeat_dim(0, g), rows, cfg, stop, pad, rng)
}

/// One completion of each prompt, all decoded together: prompts are left-padded to one
/// length and every step runs one forward pass for all of them (see
/// [`Qwen2::forward_padded`]). `constraints[i]` constrains prompt `i`.
#[allow(clippy::too_many_arguments)] // as `sample`
pub fn sample_each<B: Backend>(
    model: &Qwen2<B>,
    prompts: &[Vec<u32>],
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    rng: &mut ChaCha8Rng,
    constraints: Vec<Option<Constraint<'_>>>,
) -> Vec<Completion> {
    let device = model.embed_tokens.weight.device();
    let n = prompts.len();
    let len = prompts.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let pads: Vec<usize> = prompts.iter().map(|p| len - p.len()).collect();
    let ids: Vec<i64> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(i64::from(pad), len - p.len()).chain(p.iter().map(|t| i64::from(*t))))
        .collect();
    let mut cache = KvCache::new(model.layers.len());
    let logits = model.forward_padded(
        Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, len]), &device),
        &mut cache,
        &pads,
    );
    let [_, p, v] = logits.dims();
    let last = logits.narrow(1, p - 1, 1).reshape([n, v]);
    decode(model, cache, last, Rows { constraints, pads: Some(pads) }, cfg, stop, pad, rng)
}

/// What each decoded row carries besides its tokens.
struct Rows<'a> {
    constraints: Vec<Option<Constraint<'a>>>,
    /// Left padding of each row, for batches of different prompts.
    pads: Option<Vec<usize>>,
}

/// Decodes every row from its first logits `next` `[rows, vocab]` and the prompt's cache.
#[allow(clippy::too_many_arguments)] // as `sample`
fn decode<B: Backend>(
    model: &Qwen2<B>,
    mut cache: KvCache<B>,
    mut next: Tensor<B, 2>,
    rows_of: Rows<'_>,
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    rng: &mut ChaCha8Rng,
) -> Vec<Completion> {
    let device = model.embed_tokens.weight.device();
    let [g, v] = next.dims();
    let mut out: Vec<Completion> = (0..g)
        .map(|_| Completion { tokens: vec![], logprobs: vec![], stopped: false, forced: vec![], allowed: vec![] })
        .collect();
    let constraints = rows_of.constraints;
    let mut states: Vec<Option<Recognizer>> = constraints.iter().map(|c| c.map(|c| c.start)).collect();
    let mut dead = vec![false; g];
    for _ in 0..cfg.max_new_tokens {
        let logp = rows(log_softmax(next.clone(), 1));
        let raw = rows(next);
        let mut fed = Vec::with_capacity(g);
        for (i, c) in out.iter_mut().enumerate() {
            if c.stopped || dead[i] {
                fed.push(i64::from(pad));
                continue;
            }
            let (tok, forced, lp, allowed_here) = match (constraints[i], &mut states[i]) {
                (Some(con), Some(state)) => {
                    let budget = cfg.max_new_tokens - c.tokens.len();
                    let allowed = con.trie.allowed(con.grammar, state, budget, stop);
                    if allowed.is_empty() {
                        // Only when the vocabulary cannot spell what the grammar needs.
                        dead[i] = true;
                        fed.push(i64::from(pad));
                        continue;
                    }
                    let mut masked = vec![f32::NEG_INFINITY; raw[i].len()];
                    for (t, _) in &allowed {
                        masked[*t as usize] = raw[i][*t as usize];
                    }
                    let tok = pick(&masked, cfg, rng);
                    if let Some((_, s)) = allowed.iter().find(|(t, _)| *t as usize == tok) {
                        *state = *s;
                    }
                    let kept: Vec<u32> = allowed.iter().map(|(t, _)| *t).collect();
                    let lq = logp[i][tok] - log_sum_exp(kept.iter().map(|t| logp[i][*t as usize]));
                    (tok, kept.len() == 1, lq, (kept.len() < v).then_some(kept))
                }
                _ => {
                    let tok = pick(&raw[i], cfg, rng);
                    (tok, false, logp[i][tok], None)
                }
            };
            c.tokens.push(tok as u32);
            c.logprobs.push(lp);
            c.forced.push(forced);
            c.allowed.push(allowed_here);
            if tok as u32 == stop {
                c.stopped = true;
            }
            fed.push(tok as i64);
        }
        if out.iter().zip(&dead).all(|(c, d)| c.stopped || *d) {
            break;
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(fed, [g, 1]), &device);
        let step = match &rows_of.pads {
            Some(pads) => model.forward_padded(ids, &mut cache, pads),
            None => model.forward_cached(ids, &mut cache),
        };
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
        let a = sample(&model, &[1, 2, 3], 3, &cfg, 7, 0, &mut ChaCha8Rng::seed_from_u64(5), None);
        let b = sample(&model, &[1, 2, 3], 3, &cfg, 7, 0, &mut ChaCha8Rng::seed_from_u64(5), None);
        assert_eq!(a, b);
        for c in &a {
            assert_eq!(c.tokens.len(), c.logprobs.len());
            assert!(c.stopped == (c.tokens.last() == Some(&7)));
            assert!(c.tokens.iter().rev().skip(1).all(|t| *t != 7));
        }
        // Greedy decoding equals the argmax of a full forward pass, token by token.
        let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: 5 };
        let g = sample(&model, &[1, 2, 3], 1, &greedy, 999, 0, &mut ChaCha8Rng::seed_from_u64(0), None).remove(0);
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
    fn prompts_decoded_together_give_what_each_gives_alone() {
        let device = Default::default();
        let model = Qwen2::<B>::init(&Qwen2Config::tiny(40), 4, &device);
        let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: 6 };
        let prompts = vec![vec![1, 2, 3, 4, 5, 6], vec![7, 8], vec![9, 10, 11]];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let together = sample_each(&model, &prompts, &greedy, 39, 0, &mut rng, vec![None; 3]);
        for (p, t) in prompts.iter().zip(&together) {
            let alone = sample(&model, p, 1, &greedy, 39, 0, &mut rng, None).remove(0);
            assert_eq!(alone.tokens, t.tokens);
            for (a, b) in alone.logprobs.iter().zip(&t.logprobs) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn the_partial_nucleus_picks_what_a_full_sort_picks() {
        // The reference: sort everything, then take the prefix.
        fn full(logits: &[f32], top_p: f64, rng: &mut ChaCha8Rng) -> usize {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut probs: Vec<(usize, f32)> =
                logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, l)| (i, (l - max).exp())).collect();
            let z: f32 = probs.iter().map(|p| p.1).sum();
            probs.iter_mut().for_each(|p| p.1 /= z);
            probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let (mut kept, mut n) = (0.0f32, 0);
            for p in &probs {
                kept += p.1;
                n += 1;
                if f64::from(kept) >= top_p {
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
        let mut noise = ChaCha8Rng::seed_from_u64(3);
        for (vocab, spread) in [(5000, 0.5f32), (5000, 4.0), (300, 0.01), (70, 2.0)] {
            // Ties (rounded logits) exercise the id order; -inf entries are never picked.
            let logits: Vec<f32> =
                (0..vocab)
                    .map(|i| {
                        if i % 97 == 5 {
                            f32::NEG_INFINITY
                        } else {
                            (noise.random::<f32>() * spread * 8.0).round() / 8.0
                        }
                    })
                    .collect();
            for top_p in [0.5, 0.95, 1.0] {
                let cfg = SampleConfig { temperature: 1.0, top_p, max_new_tokens: 1 };
                for seed in 0..20 {
                    let a = pick(&logits, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
                    let b = full(&logits, top_p, &mut ChaCha8Rng::seed_from_u64(seed));
                    assert_eq!(a, b, "vocab {vocab}, spread {spread}, top_p {top_p}, seed {seed}");
                }
            }
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
