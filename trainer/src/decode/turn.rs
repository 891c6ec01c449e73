//! How a policy is prompted and decoded at a state: the context window, and the action
//! grammar of the state's tools when decoding is constrained. Evaluation, ReGRPO rollouts and
//! the agent loop all decode through one [`TurnDecoder`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use regrpo_engine::ToolSpec;
use regrpo_schemas::Message;
use regrpo_schemas::action::Surface;

use crate::decode::grammar::{Grammar, Masks, TokenTrie};
use crate::decode::sampling::{Completion, Constraint, Draws, Request, SampleConfig, sample_groups};
use crate::error::Result;
use crate::model::CausalLm;
use crate::text::tokenizer::ChatTokenizer;
use crate::text::window::{ChatWindow, Truncations};

/// The window, and the grammars when constrained.
pub struct TurnDecoder {
    pub window: ChatWindow,
    trie: Option<TokenTrie>,
    /// First byte of each token (`None`: special tokens), when constrained.
    first_bytes: Vec<Option<u8>>,
    grammars: Mutex<HashMap<String, Arc<TurnGrammar>>>,
}

/// The grammar of a turn for one set of tools, and the memo of the tokens its states allow.
pub struct TurnGrammar {
    pub grammar: Grammar,
    pub masks: Masks,
}

/// A prompt and what was sampled from it.
pub struct Generated {
    pub prompt: Vec<u32>,
    pub completions: Vec<Completion>,
    pub truncations: Truncations,
    /// Whether the grammar constrained this generation (it does not when the state declares no
    /// tools).
    pub constrained: bool,
}

/// A state to decode at: the chat so far, the tools it declares, the surface form of their
/// calls, and text the turn starts with (prefilled; not in the completions).
#[derive(Clone, Copy)]
pub struct Turn<'a> {
    pub messages: &'a [Message],
    pub specs: &'a [ToolSpec],
    pub surface: Surface,
    pub prefix: &'a str,
}

impl TurnDecoder {
    pub fn new(window: ChatWindow, constrained: bool) -> TurnDecoder {
        let bytes = if constrained { window.tk.token_bytes() } else { vec![] };
        let first_bytes = bytes.iter().map(|b| b.as_ref().and_then(|b| b.first().copied())).collect();
        let trie = constrained.then(|| TokenTrie::new(&bytes));
        TurnDecoder { window, trie, first_bytes, grammars: Mutex::new(HashMap::new()) }
    }

    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.window.tk
    }

    pub fn is_constrained(&self) -> bool {
        self.trie.is_some()
    }

    /// The grammar of turns calling `specs` in `surface` form (cached), or `None` when decoding
    /// is free or there are no tools to call.
    pub fn grammar(&self, surface: Surface, specs: &[ToolSpec]) -> Option<Arc<TurnGrammar>> {
        self.trie.as_ref()?;
        if specs.is_empty() {
            return None;
        }
        let mut names: Vec<String> = specs.iter().map(|s| format!("{}{}", s.name, s.parameters)).collect();
        names.sort();
        let key = format!("{}\u{0}{}", surface.as_str(), names.join("\u{0}"));
        let mut cache = self.grammars.lock().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(cache.entry(key).or_insert_with(|| {
            Arc::new(TurnGrammar { grammar: Grammar::new(surface, specs), masks: Masks::default() })
        })))
    }

    /// Samples `g` completions of the next assistant turn after `turn.messages` (whose tools are
    /// `turn.specs`, written in `turn.surface` form). `turn.prefix` is text the turn starts with,
    /// prefilled (the agent loop opens a reflection with `Reflection:\n`); it is not in the
    /// completions.
    pub fn generate<B: Backend>(
        &self,
        model: &CausalLm<B>,
        turn: Turn<'_>,
        g: usize,
        cfg: &SampleConfig,
        rng: &mut ChaCha8Rng,
    ) -> Result<Generated> {
        Ok(self.generate_groups(model, &[turn], g, cfg, Draws::Shared(rng))?.remove(0))
    }

    /// One completion for each of several states, decoded together in one batch (greedy
    /// evaluation of many states): `(messages, specs, surface)` of each.
    pub fn generate_each<B: Backend>(
        &self,
        model: &CausalLm<B>,
        requests: &[(&[Message], &[ToolSpec], Surface)],
        cfg: &SampleConfig,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Generated>> {
        let turns: Vec<Turn<'_>> = requests
            .iter()
            .map(|(messages, specs, surface)| Turn { messages, specs, surface: *surface, prefix: "" })
            .collect();
        self.generate_groups(model, &turns, 1, cfg, Draws::Shared(rng))
    }

    /// `g` completions at each of several states, decoded together in one batch: each prompt
    /// is run once and shared by its group's rows (see [`sample_groups`]).
    pub fn generate_groups<B: Backend>(
        &self,
        model: &CausalLm<B>,
        turns: &[Turn<'_>],
        g: usize,
        cfg: &SampleConfig,
        draws: Draws<'_>,
    ) -> Result<Vec<Generated>> {
        let tk = &self.window.tk;
        let mut prompts = Vec::with_capacity(turns.len());
        let mut cuts = Vec::with_capacity(turns.len());
        let mut grammars = Vec::with_capacity(turns.len());
        for t in turns {
            let (mut prompt, c) = self.window.prompt(t.messages)?;
            prompt.extend(tk.encode(t.prefix)?);
            prompts.push(prompt);
            cuts.push(c);
            grammars.push(self.grammar(t.surface, t.specs));
        }
        let constraints: Vec<Option<Constraint<'_>>> = grammars
            .iter()
            .zip(turns)
            .map(|(g, t)| match (g, &self.trie) {
                (Some(tg), Some(trie)) => {
                    let mut start = tg.grammar.start();
                    // A prefix the grammar refuses leaves the turn unconstrained.
                    start.feed_all(&tg.grammar, t.prefix.as_bytes()).then_some(Constraint {
                        grammar: &tg.grammar,
                        masks: &tg.masks,
                        trie,
                        start,
                    })
                }
                _ => None,
            })
            .collect();
        let requests: Vec<Request<'_>> =
            prompts.iter().zip(&constraints).map(|(p, c)| Request { prompt: p, constraint: *c }).collect();
        let completions = sample_groups(model, &requests, g, cfg, tk.im_end, tk.pad, draws);
        let constrained: Vec<bool> = constraints.iter().map(Option::is_some).collect();
        Ok(prompts
            .into_iter()
            .zip(completions)
            .zip(cuts)
            .zip(constrained)
            .map(|(((prompt, completions), truncations), constrained)| Generated {
                prompt,
                completions,
                truncations,
                constrained,
            })
            .collect())
    }

    /// For each state `(messages, specs, surface)`: the probability that a completion sampled
    /// at temperature 1 under the grammar opens with a reflection, read exactly from the first
    /// step's distribution (the grammar's openings — `Reflection:`, `Thought:`, the action —
    /// differ in their first byte, and only a reflection starts with `R`). This is the
    /// expected reflection rate of sampling, which a greedy decode shows only once it passes
    /// one half. `None` where the turn is not constrained. Prompts are prefilled `batch` at a
    /// time.
    pub fn reflection_probabilities<B: Backend>(
        &self,
        model: &CausalLm<B>,
        requests: &[(&[Message], &[ToolSpec], Surface)],
        budget: usize,
        batch: usize,
    ) -> Result<Vec<Option<f64>>> {
        let tk = &self.window.tk;
        let device = model.embed_tokens.weight.device();
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(batch.max(1)) {
            let mut prompts = Vec::with_capacity(chunk.len());
            for (messages, _, _) in chunk {
                prompts.push(self.window.prompt(messages)?.0);
            }
            let len = prompts.iter().map(Vec::len).max().unwrap_or(0).max(1);
            let pads: Vec<usize> = prompts.iter().map(|p| len - p.len()).collect();
            let ids: Vec<i64> = prompts
                .iter()
                .flat_map(|p| {
                    std::iter::repeat_n(i64::from(tk.pad), len - p.len()).chain(p.iter().map(|t| i64::from(*t)))
                })
                .collect();
            let n = prompts.len();
            let (last, _) =
                model.prefix(Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, len]), &device), &pads);
            let v = model.vocab_size();
            let logp: Vec<f32> = log_softmax(model.head(last.unsqueeze_dim::<3>(1)).reshape([n, v]), 1)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            for (i, (_, specs, surface)) in chunk.iter().enumerate() {
                let (Some(tg), Some(trie)) = (self.grammar(*surface, specs), &self.trie) else {
                    out.push(None);
                    continue;
                };
                let row = &logp[i * v..(i + 1) * v];
                let (mut all, mut reflect) = (0.0f64, 0.0f64);
                let start = tg.grammar.start();
                let allowed = tg.masks.allowed(&tg.grammar, trie, &start, budget, tk.im_end);
                for t in allowed.iter().flat_map(|a| a.iter()) {
                    let q = f64::from(row[t as usize]).exp();
                    all += q;
                    if self.first_bytes.get(t as usize).copied().flatten() == Some(b'R') {
                        reflect += q;
                    }
                }
                out.push((all > 0.0).then(|| reflect / all));
            }
        }
        Ok(out)
    }

    /// The text of a completion, without its end-of-turn token.
    pub fn text(&self, c: &Completion) -> Result<String> {
        let tk = &self.window.tk;
        let body: Vec<u32> = c.tokens.iter().copied().filter(|t| *t != tk.im_end).collect();
        tk.decode(&body)
    }
}
