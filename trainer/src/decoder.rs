//! How a policy is prompted and decoded at a state: the context window, and the action
//! grammar of the state's tools when decoding is constrained. Evaluation, ReGRPO rollouts and
//! the agent loop all decode through one [`Decoder`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use rand_chacha::ChaCha8Rng;
use regrpo_engine::ToolSpec;
use regrpo_schemas::Message;
use regrpo_schemas::action::Surface;

use crate::error::Result;
use crate::grammar::{Grammar, TokenTrie};
use crate::model::Qwen2;
use crate::sampling::{Completion, Constraint, SampleConfig, sample, sample_each};
use crate::tokenizer::ChatTokenizer;
use crate::window::{ChatWindow, Truncations};

/// The window, and the grammars when constrained.
pub struct Decoder {
    pub window: ChatWindow,
    trie: Option<TokenTrie>,
    grammars: Mutex<HashMap<String, Arc<Grammar>>>,
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

impl Decoder {
    pub fn new(window: ChatWindow, constrained: bool) -> Decoder {
        let trie = constrained.then(|| TokenTrie::new(&window.tk.token_bytes()));
        Decoder { window, trie, grammars: Mutex::new(HashMap::new()) }
    }

    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.window.tk
    }

    pub fn is_constrained(&self) -> bool {
        self.trie.is_some()
    }

    /// The grammar of turns calling `specs` in `surface` form (cached), or `None` when decoding
    /// is free or there are no tools to call.
    pub fn grammar(&self, surface: Surface, specs: &[ToolSpec]) -> Option<Arc<Grammar>> {
        self.trie.as_ref()?;
        if specs.is_empty() {
            return None;
        }
        let mut names: Vec<String> = specs.iter().map(|s| format!("{}{}", s.name, s.parameters)).collect();
        names.sort();
        let key = format!("{}\u{0}{}", surface.as_str(), names.join("\u{0}"));
        let mut cache = self.grammars.lock().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(cache.entry(key).or_insert_with(|| Arc::new(Grammar::new(surface, specs)))))
    }

    /// Samples `g` completions of the next assistant turn after `messages` (whose tools are
    /// `specs`, written in `surface` form). `prefix` is text the turn starts with, prefilled
    /// (the agent loop opens a reflection with `Reflection:\n`); it is not in the completions.
    #[allow(clippy::too_many_arguments)] // one generation's inputs
    pub fn generate<B: Backend>(
        &self,
        model: &Qwen2<B>,
        messages: &[Message],
        prefix: &str,
        specs: &[ToolSpec],
        surface: Surface,
        g: usize,
        cfg: &SampleConfig,
        rng: &mut ChaCha8Rng,
    ) -> Result<Generated> {
        let tk = &self.window.tk;
        let (mut prompt, truncations) = self.window.prompt(messages)?;
        prompt.extend(tk.encode(prefix)?);
        let grammar = self.grammar(surface, specs);
        let constraint = match (&grammar, &self.trie) {
            (Some(grammar), Some(trie)) => {
                let mut start = grammar.start();
                // A prefix the grammar refuses leaves the turn unconstrained.
                start.feed_all(grammar, prefix.as_bytes()).then_some(Constraint { grammar, trie, start })
            }
            _ => None,
        };
        let completions = sample(model, &prompt, g, cfg, tk.im_end, tk.pad, rng, constraint);
        Ok(Generated { prompt, completions, truncations, constrained: constraint.is_some() })
    }

    /// One completion for each of several states, decoded together in one batch (greedy
    /// evaluation of many states): `(messages, specs, surface)` of each.
    pub fn generate_each<B: Backend>(
        &self,
        model: &Qwen2<B>,
        requests: &[(&[Message], &[ToolSpec], Surface)],
        cfg: &SampleConfig,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Generated>> {
        let tk = &self.window.tk;
        let mut prompts = Vec::with_capacity(requests.len());
        let mut cuts = Vec::with_capacity(requests.len());
        let mut grammars = Vec::with_capacity(requests.len());
        for (messages, specs, surface) in requests {
            let (prompt, t) = self.window.prompt(messages)?;
            prompts.push(prompt);
            cuts.push(t);
            grammars.push(self.grammar(*surface, specs));
        }
        let constraints: Vec<Option<Constraint<'_>>> = grammars
            .iter()
            .map(|g| match (g, &self.trie) {
                (Some(grammar), Some(trie)) => Some(Constraint { grammar, trie, start: grammar.start() }),
                _ => None,
            })
            .collect();
        let constrained: Vec<bool> = constraints.iter().map(Option::is_some).collect();
        let completions = sample_each(model, &prompts, cfg, tk.im_end, tk.pad, rng, constraints);
        Ok(prompts
            .into_iter()
            .zip(completions)
            .zip(cuts)
            .zip(constrained)
            .map(|(((prompt, c), truncations), constrained)| Generated {
                prompt,
                completions: vec![c],
                truncations,
                constrained,
            })
            .collect())
    }

    /// The text of a completion, without its end-of-turn token.
    pub fn text(&self, c: &Completion) -> Result<String> {
        let tk = &self.window.tk;
        let body: Vec<u32> = c.tokens.iter().copied().filter(|t| *t != tk.im_end).collect();
        tk.decode(&body)
    }
}
