//! Sampling: G completions of each of several prompts, seeded.
//!
//! The prompts are run once, together (prefill, left-padded to one length), and their keys and
//! values are shared by their groups' rows, never copied ([`crate::model::Prefix`]); then all
//! rows continue one token at a time, each row's own keys kept in a block cache
//! ([`crate::model::RowCache`]). Temperature, nucleus (top-p) filtering, a token budget, and a
//! stop token (`<|im_end|>`, the end of the assistant turn, which is the end of an action).
//! Temperature 0 is greedy. Each completion keeps the log-probability the sampling policy gave
//! every chosen token (temperature 1, over the tokens it could choose from), for a PPO ratio.
//!
//! Under a [`Constraint`] every row keeps a grammar state, and each step samples only among
//! the tokens the grammar allows within the remaining budget (see [`crate::decode::grammar`]), so every
//! completion parses; a token that was the only one allowed is marked `forced` and carries no
//! gradient in ReGRPO.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::decode::grammar::{Allowed, Grammar, Masks, Recognizer, TokenTrie};
use crate::model::{CausalLm, RowCache};

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleConfig {
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig { temperature: 1.0, top_p: 0.95, max_new_tokens: 192 }
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
    pub allowed: Vec<Option<Allowed>>,
}

/// Grammar-constrained decoding: the grammar of a turn, its memo of allowed tokens, and the
/// vocabulary's byte trie.
#[derive(Clone, Copy)]
pub struct Constraint<'a> {
    pub grammar: &'a Grammar,
    pub masks: &'a Masks,
    pub trie: &'a TokenTrie,
    /// The grammar state the completion starts in (after any prefilled text of the turn).
    pub start: Recognizer,
}

/// Where the random numbers of a decode come from.
pub enum Draws<'a> {
    /// One generator, drawn from by every row in turn at each step (so a row's draws depend on
    /// the rows decoded beside it).
    Shared(&'a mut ChaCha8Rng),
    /// One generator per row: a row's completion depends on its own seed only, whatever else is
    /// in the batch — and two policies sampled with the same seeds share their random numbers,
    /// which makes their paired comparison sharper.
    PerRow(Vec<ChaCha8Rng>),
}

impl Draws<'_> {
    fn rng(&mut self, row: usize) -> &mut ChaCha8Rng {
        match self {
            Draws::Shared(rng) => rng,
            Draws::PerRow(rngs) => &mut rngs[row],
        }
    }
}

/// Picks a token among `candidates` (`(id, logit)`, ascending ids; a non-finite logit is never
/// chosen).
fn pick(candidates: impl Iterator<Item = (usize, f32)> + Clone, cfg: &SampleConfig, rng: &mut ChaCha8Rng) -> usize {
    if cfg.temperature <= 0.0 {
        return candidates.max_by(|a, b| a.1.total_cmp(&b.1)).map_or(0, |(i, _)| i);
    }
    let t = cfg.temperature as f32;
    let max = candidates.clone().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    if cfg.top_p >= 1.0 {
        // No nucleus: one draw against the running mass in id order, no sorting. (The same
        // distribution as the nucleus walk below at top_p = 1, which visits tokens by probability
        // and so lands on another token for the same draw.)
        let z: f32 = candidates.clone().filter(|(_, l)| l.is_finite()).map(|(_, l)| ((l - max) / t).exp()).sum();
        let mut x = rng.random::<f32>() * z;
        let mut last = 0;
        for (i, l) in candidates.filter(|(_, l)| l.is_finite()) {
            x -= ((l - max) / t).exp();
            last = i;
            if x <= 0.0 {
                return i;
            }
        }
        return last;
    }
    let mut probs: Vec<(usize, f32)> =
        candidates.filter(|(_, l)| l.is_finite()).map(|(i, l)| (i, ((l - max) / t).exp())).collect();
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

/// A prompt to continue, and the grammar its completions follow.
#[derive(Clone)]
pub struct Request<'a> {
    pub prompt: &'a [u32],
    pub constraint: Option<Constraint<'a>>,
}

/// Samples `g` completions of one prompt, under the grammar when the request has a constraint.
pub fn sample<B: Backend>(
    model: &CausalLm<B>,
    request: Request<'_>,
    g: usize,
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    rng: &mut ChaCha8Rng,
) -> Vec<Completion> {
    sample_groups(model, &[request], g, cfg, stop, pad, Draws::Shared(rng)).remove(0)
}

/// One completion of each prompt, all decoded together (see [`sample_groups`]).
pub fn sample_each<B: Backend>(
    model: &CausalLm<B>,
    requests: &[Request<'_>],
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    rng: &mut ChaCha8Rng,
) -> Vec<Completion> {
    sample_groups(model, requests, 1, cfg, stop, pad, Draws::Shared(rng)).into_iter().flatten().collect()
}

/// `g` completions of each request, all decoded together: the prompts are left-padded to one
/// length and run once ([`CausalLm::prefix`]); the group of rows of each prompt attends to its
/// keys without copying them, and keeps its own keys in a cache written in place
/// ([`RowCache`]); every step is one forward pass of all rows. Under a constraint each row
/// keeps a grammar state and samples among the tokens it allows ([`Masks`]).
pub fn sample_groups<B: Backend>(
    model: &CausalLm<B>,
    requests: &[Request<'_>],
    g: usize,
    cfg: &SampleConfig,
    stop: u32,
    pad: u32,
    mut draws: Draws<'_>,
) -> Vec<Vec<Completion>> {
    let device = model.embed_tokens.weight.device();
    let s = requests.len();
    if s == 0 || g == 0 {
        return vec![vec![]; s];
    }
    let rows = s * g;
    let len = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0).max(1);
    let pads: Vec<usize> = requests.iter().map(|r| len - r.prompt.len()).collect();
    let ids: Vec<i64> = requests
        .iter()
        .flat_map(|r| {
            std::iter::repeat_n(i64::from(pad), len - r.prompt.len()).chain(r.prompt.iter().map(|t| i64::from(*t)))
        })
        .collect();
    let (last, prefix) = model.prefix(Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [s, len]), &device), &pads);
    let first = model.head(last.unsqueeze_dim::<3>(1)).reshape([s, model.vocab_size()]);
    let mut next: Vec<f32> = first.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let v = next.len() / s;
    if g > 1 {
        next = next.chunks(v).flat_map(|row| std::iter::repeat_n(row, g).flatten().copied()).collect();
    }
    let mut cache = RowCache::new(model);
    let mut out: Vec<Completion> = (0..rows)
        .map(|_| Completion { tokens: vec![], logprobs: vec![], stopped: false, forced: vec![], allowed: vec![] })
        .collect();
    let mut states: Vec<Option<Recognizer>> = (0..rows).map(|i| requests[i / g].constraint.map(|c| c.start)).collect();
    let mut dead = vec![false; rows];
    let mut candidates: Vec<u32> = Vec::new();
    for step in 0..cfg.max_new_tokens {
        let mut fed = Vec::with_capacity(rows);
        for (i, c) in out.iter_mut().enumerate() {
            if c.stopped || dead[i] {
                fed.push(i64::from(pad));
                continue;
            }
            let logits = &next[i * v..(i + 1) * v];
            let (tok, forced, lp, allowed_here) = match (requests[i / g].constraint, &mut states[i]) {
                (Some(con), Some(state)) => {
                    let budget = cfg.max_new_tokens - c.tokens.len();
                    let Some(allowed) = con.masks.allowed(con.grammar, con.trie, state, budget, stop) else {
                        // Only when the vocabulary cannot spell what the grammar needs.
                        dead[i] = true;
                        fed.push(i64::from(pad));
                        continue;
                    };
                    candidates.clear();
                    candidates.extend(allowed.iter());
                    let scored = candidates.iter().map(|t| (*t as usize, logits[*t as usize]));
                    let tok = pick(scored.clone(), cfg, draws.rng(i));
                    if tok as u32 != stop {
                        state.feed_all(con.grammar, con.trie.bytes(tok as u32));
                    }
                    // log q(t) = log π(t) − log Σ_allowed π = logit(t) − log Σ_allowed e^logit.
                    let lq = logits[tok] - log_sum_exp(scored.map(|(_, l)| l));
                    let n = candidates.len();
                    (tok, n == 1, lq, (n < v).then_some(allowed))
                }
                _ => {
                    let tok = pick(logits.iter().copied().enumerate(), cfg, draws.rng(i));
                    (tok, false, logits[tok] - log_sum_exp(logits.iter().copied()), None)
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
        if step + 1 == cfg.max_new_tokens || out.iter().zip(&dead).all(|(c, d)| c.stopped || *d) {
            break;
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(fed, [rows, 1]), &device);
        let h = model.rows(ids, &prefix, g, Some(&mut cache));
        next = model.head(h).into_data().convert::<f32>().to_vec().unwrap_or_default();
    }
    let mut out = out.into_iter();
    (0..s).map(|_| out.by_ref().take(g).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    use crate::model::config::CausalLmConfig;

    type B = NdArray<f32>;

    #[test]
    fn sampling_is_seeded_greedy_is_the_argmax_and_stop_ends_a_row() {
        let device = Default::default();
        let model = CausalLm::<B>::init(&CausalLmConfig::tiny(40), 3, &device);
        let cfg = SampleConfig { temperature: 1.0, top_p: 1.0, max_new_tokens: 12 };
        let a = sample(
            &model,
            Request { prompt: &[1, 2, 3], constraint: None },
            3,
            &cfg,
            7,
            0,
            &mut ChaCha8Rng::seed_from_u64(5),
        );
        let b = sample(
            &model,
            Request { prompt: &[1, 2, 3], constraint: None },
            3,
            &cfg,
            7,
            0,
            &mut ChaCha8Rng::seed_from_u64(5),
        );
        assert_eq!(a, b);
        for c in &a {
            assert_eq!(c.tokens.len(), c.logprobs.len());
            assert!(c.stopped == (c.tokens.last() == Some(&7)));
            assert!(c.tokens.iter().rev().skip(1).all(|t| *t != 7));
        }
        // Greedy decoding equals the argmax of a full forward pass, token by token.
        let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: 5 };
        let g = sample(
            &model,
            Request { prompt: &[1, 2, 3], constraint: None },
            1,
            &greedy,
            999,
            0,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .remove(0);
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
        let model = CausalLm::<B>::init(&CausalLmConfig::tiny(40), 4, &device);
        let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: 6 };
        let prompts = [vec![1, 2, 3, 4, 5, 6], vec![7, 8], vec![9, 10, 11]];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let together = sample_each(
            &model,
            &prompts.iter().map(|p| Request { prompt: p, constraint: None }).collect::<Vec<_>>(),
            &greedy,
            39,
            0,
            &mut rng,
        );
        for (p, t) in prompts.iter().zip(&together) {
            let alone = sample(&model, Request { prompt: p, constraint: None }, 1, &greedy, 39, 0, &mut rng).remove(0);
            assert_eq!(alone.tokens, t.tokens);
            for (a, b) in alone.logprobs.iter().zip(&t.logprobs) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }

    /// What every reference call of a test shares.
    #[derive(Clone, Copy)]
    struct Setup<'a> {
        cfg: &'a SampleConfig,
        stop: u32,
        pad: u32,
        constraint: Option<(&'a Grammar, &'a TokenTrie)>,
    }

    /// A reference row: tokens, log q, forced flags and the allowed ids at each token.
    type Row = (Vec<u32>, Vec<f32>, Vec<bool>, Vec<Option<Vec<u32>>>);

    /// The sampler before issue 29, written plainly: a full forward pass of every row's whole
    /// sequence at each step (no cache), the plain trie walk for the allowed tokens, a
    /// vocabulary-sized masked row for the pick, and log-probabilities from the tensor's
    /// log-softmax.
    fn reference(
        model: &CausalLm<B>,
        prompt: &[u32],
        g: usize,
        s: &Setup<'_>,
        draws: &mut Draws<'_>,
        row0: usize,
    ) -> Vec<Row> {
        let Setup { cfg, stop, pad, constraint } = *s;
        use burn::tensor::activation::log_softmax;
        let device = Default::default();
        let mut seqs: Vec<Vec<i64>> = vec![prompt.iter().map(|t| i64::from(*t)).collect(); g];
        let mut out = vec![(vec![], vec![], vec![], vec![]); g];
        let mut states: Vec<Option<Recognizer>> = vec![constraint.map(|(gr, _)| gr.start()); g];
        let mut stopped = vec![false; g];
        for _ in 0..cfg.max_new_tokens {
            let n = seqs[0].len();
            let flat: Vec<i64> = seqs.iter().flatten().copied().collect();
            let logits = model.forward(Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [g, n]), &device));
            let v = logits.dims()[2];
            let last = logits.narrow(1, n - 1, 1).reshape([g, v]);
            let raw: Vec<f32> = last.clone().into_data().to_vec().unwrap();
            let logp: Vec<f32> = log_softmax(last, 1).into_data().to_vec().unwrap();
            for i in 0..g {
                if stopped[i] {
                    seqs[i].push(i64::from(pad));
                    continue;
                }
                let (raw, logp) = (&raw[i * v..(i + 1) * v], &logp[i * v..(i + 1) * v]);
                let (tok, forced, lp, allowed) = match (constraint, &mut states[i]) {
                    (Some((gr, trie)), Some(state)) => {
                        let allowed = trie.allowed(gr, state, cfg.max_new_tokens - out[i].0.len(), stop);
                        assert!(!allowed.is_empty());
                        let mut masked = vec![f32::NEG_INFINITY; v];
                        for (t, _) in &allowed {
                            masked[*t as usize] = raw[*t as usize];
                        }
                        let tok = pick(masked.iter().copied().enumerate(), cfg, draws.rng(row0 + i));
                        *state = allowed.iter().find(|(t, _)| *t as usize == tok).unwrap().1;
                        let mut kept: Vec<u32> = allowed.iter().map(|(t, _)| *t).collect();
                        kept.sort_unstable();
                        let lq = logp[tok] - log_sum_exp(kept.iter().map(|t| logp[*t as usize]));
                        (tok, kept.len() == 1, lq, Some(kept))
                    }
                    _ => {
                        let tok = pick(raw.iter().copied().enumerate(), cfg, draws.rng(row0 + i));
                        (tok, false, logp[tok], None)
                    }
                };
                out[i].0.push(tok as u32);
                out[i].1.push(lp);
                out[i].2.push(forced);
                out[i].3.push(allowed);
                stopped[i] = tok as u32 == stop;
                seqs[i].push(tok as i64);
            }
            if stopped.iter().all(|s| *s) {
                break;
            }
        }
        out
    }

    fn assert_same(got: &[Completion], want: &[Row]) {
        assert_eq!(got.len(), want.len());
        for (r, (c, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(c.tokens, w.0, "row {r}: tokens");
            for (a, b) in c.logprobs.iter().zip(&w.1) {
                assert!((a - b).abs() < 1e-4, "row {r}: log-probability {a} vs {b}");
            }
            assert_eq!(c.forced, w.2, "row {r}: forced");
            let allowed: Vec<Option<Vec<u32>>> =
                c.allowed.iter().map(|a| a.as_ref().map(|a| a.iter().collect())).collect();
            assert_eq!(allowed, w.3, "row {r}: allowed tokens");
        }
    }

    /// A byte-level vocabulary with a few longer tokens, a stop token and a pad token.
    fn byte_vocab() -> (Vec<Option<Vec<u8>>>, u32, u32) {
        let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        for w in ["Code:\n```py\n", "Reflection:\n", "Thought: ", "image_path=\"", "\")\n```", "crop(", ", ", "ab"] {
            vocab.push(Some(w.as_bytes().to_vec()));
        }
        vocab.extend([None, None]);
        let n = vocab.len() as u32;
        (vocab, n - 2, n - 1)
    }

    #[test]
    fn the_sampler_draws_what_the_plain_full_forward_sampler_draws() {
        use regrpo_engine::ToolSuite;
        use regrpo_schemas::action::Surface;
        let device = Default::default();
        let (vocab, stop, pad) = byte_vocab();
        let model = CausalLm::<B>::init(&CausalLmConfig::tiny(vocab.len()), 11, &device);
        let grammar = Grammar::new(Surface::Python, &ToolSuite::builtin().specs());
        let trie = TokenTrie::new(&vocab);
        let masks = Masks::default();
        let cfg = SampleConfig { temperature: 1.0, top_p: 0.95, max_new_tokens: 48 };
        let prompts: [Vec<u32>; 2] = [vec![1, 2, 3, 4, 5, 6, 7], vec![40, 41, 42]];
        for constrained in [false, true] {
            let constraint = constrained.then_some(Constraint {
                grammar: &grammar,
                masks: &masks,
                trie: &trie,
                start: grammar.start(),
            });
            // One prompt, one generator shared by the rows: today's `sample`.
            let got = sample(
                &model,
                Request { prompt: &prompts[0], constraint },
                4,
                &cfg,
                stop,
                pad,
                &mut ChaCha8Rng::seed_from_u64(3),
            );
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let setup = Setup { cfg: &cfg, stop, pad, constraint: constrained.then_some((&grammar, &trie)) };
            let want = reference(&model, &prompts[0], 4, &setup, &mut Draws::Shared(&mut rng), 0);
            assert_same(&got, &want);
            // Two prompts (left-padded) in one batch, a generator per row: each group draws what
            // it draws alone.
            let seeds = || Draws::PerRow((0..6).map(|i| ChaCha8Rng::seed_from_u64(100 + i)).collect());
            let requests: Vec<Request<'_>> = prompts.iter().map(|p| Request { prompt: p, constraint }).collect();
            let got = sample_groups(&model, &requests, 3, &cfg, stop, pad, seeds());
            let mut draws = seeds();
            for (k, p) in prompts.iter().enumerate() {
                let want = reference(&model, p, 3, &setup, &mut draws, 3 * k);
                assert_same(&got[k], &want);
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
            for top_p in [0.5, 0.95, 0.999] {
                let cfg = SampleConfig { temperature: 1.0, top_p, max_new_tokens: 1 };
                for seed in 0..20 {
                    let a = pick(logits.iter().copied().enumerate(), &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
                    let b = full(&logits, top_p, &mut ChaCha8Rng::seed_from_u64(seed));
                    assert_eq!(a, b, "vocab {vocab}, spread {spread}, top_p {top_p}, seed {seed}");
                }
            }
        }
    }

    #[test]
    fn without_a_nucleus_tokens_are_drawn_by_their_probability() {
        // 40,000 draws at top_p = 1 (the id-order walk) against the softmax, token by token, and
        // with a temperature; -inf never drawn.
        let logits = [1.0f32, 0.0, f32::NEG_INFINITY, 2.0, -1.0, 0.5];
        for temperature in [1.0, 0.5] {
            let cfg = SampleConfig { temperature, top_p: 1.0, max_new_tokens: 1 };
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let n = 40_000;
            let mut counts = [0usize; 6];
            for _ in 0..n {
                counts[pick(logits.iter().copied().enumerate(), &cfg, &mut rng)] += 1;
            }
            let e: Vec<f64> = logits.iter().map(|l| (f64::from(*l) / temperature).exp()).collect();
            let z: f64 = e.iter().sum();
            for (i, c) in counts.iter().enumerate() {
                let p = e[i] / z;
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                let got = *c as f64 / n as f64;
                assert!((got - p).abs() <= 5.0 * sd + 1e-12, "token {i} at T={temperature}: {got} vs {p}");
            }
            assert_eq!(counts[2], 0);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let logits = [10.0, 9.0, -10.0, -10.0];
        let cfg = SampleConfig { temperature: 1.0, top_p: 0.5, max_new_tokens: 1 };
        for _ in 0..50 {
            assert_eq!(pick(logits.iter().copied().enumerate(), &cfg, &mut rng), 0);
        }
    }
}
