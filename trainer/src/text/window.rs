//! The context window: what a policy sees at a step, and the target it learns there.
//!
//! SFT, ReGRPO, evaluation and the agent loop all tokenise through [`ChatWindow`], so a state
//! is seen the same way when it is trained on and when it is acted from: the prompt tokens of a
//! training sample are, token for token, the prompt the policy gets at inference.
//!
//! ```text
//! system  ≤ system_tokens        (cut in the middle, with a marker)
//! task    ≤ task_tokens
//! turns   assistant (whole) + observation ≤ observation_tokens, oldest pairs dropped first
//!         (a marker in the task says how many) until the prompt fits max_prompt_tokens
//! target  ≤ max_target_tokens    (training only)
//! ```
//!
//! Nothing is cut silently: every cut is counted in [`Truncations`], which jobs add up and
//! write into their run log.

use regrpo_schemas::Message;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::text::tokenizer::ChatTokenizer;

/// Tokenised samples.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<bool>,
}

/// Token budgets of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// The whole prompt, the assistant header included.
    pub max_prompt_tokens: usize,
    /// A target turn, its end-of-turn token included (also the sampling budget).
    pub max_target_tokens: usize,
    pub system_tokens: usize,
    pub task_tokens: usize,
    /// Each observation (a user turn after the task).
    pub observation_tokens: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            max_prompt_tokens: 1024,
            max_target_tokens: 256,
            system_tokens: 384,
            task_tokens: 256,
            observation_tokens: 256,
        }
    }
}

impl WindowConfig {
    /// The longest training sequence: a full prompt and a full target.
    pub fn max_len(&self) -> usize {
        self.max_prompt_tokens + self.max_target_tokens
    }

    pub fn validate(&self) -> Result<()> {
        // System, task, one turn and the markers must fit, or no window could.
        let floor = self.system_tokens + self.task_tokens + self.observation_tokens + 64;
        if self.max_prompt_tokens < floor {
            return Err(Error::Config(format!(
                "max_prompt_tokens {} is below system {} + task {} + one observation {} + 64 for one turn",
                self.max_prompt_tokens, self.system_tokens, self.task_tokens, self.observation_tokens
            )));
        }
        if self.max_target_tokens < 16 {
            return Err(Error::Config(format!("max_target_tokens {} is below 16", self.max_target_tokens)));
        }
        Ok(())
    }
}

/// What was cut to fit windows, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncations {
    /// Windows built.
    pub windows: usize,
    /// Windows in which anything was cut.
    pub cut_windows: usize,
    pub system: usize,
    pub task: usize,
    pub observations: usize,
    /// Earlier (assistant, observation) pairs left out.
    pub turns_dropped: usize,
    /// Prompts still too long after dropping every earlier turn, cut at the front.
    pub overflows: usize,
    pub targets: usize,
}

impl Truncations {
    /// Cuts of every kind.
    pub fn total(&self) -> usize {
        self.system + self.task + self.observations + self.turns_dropped + self.overflows + self.targets
    }

    pub fn add(&mut self, o: &Truncations) {
        self.windows += o.windows;
        self.cut_windows += o.cut_windows;
        self.system += o.system;
        self.task += o.task;
        self.observations += o.observations;
        self.turns_dropped += o.turns_dropped;
        self.overflows += o.overflows;
        self.targets += o.targets;
    }

    fn close_window(&mut self, before: usize) {
        self.windows += 1;
        if self.total() > before {
            self.cut_windows += 1;
        }
    }
}

/// A message as tokens: the turn header, the content, and the closing tokens.
struct Part {
    header: Vec<u32>,
    content: Vec<u32>,
    close: Vec<u32>,
}

impl Part {
    fn len(&self) -> usize {
        self.header.len() + self.content.len() + self.close.len()
    }
}

/// Builds windows for one tokenizer and one set of budgets.
#[derive(Clone)]
pub struct ChatWindow {
    pub tk: ChatTokenizer,
    pub cfg: WindowConfig,
}

impl ChatWindow {
    pub fn new(tk: ChatTokenizer, cfg: WindowConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(ChatWindow { tk, cfg })
    }

    fn part(&self, m: &Message) -> Result<Part> {
        let mut close = vec![self.tk.im_end];
        close.extend(self.tk.encode("\n")?);
        Ok(Part { header: self.tk.header(&m.role)?, content: self.tk.encode(&m.content)?, close })
    }

    /// Keeps the head and the tail of `ids` within `budget` tokens, with a marker between.
    fn cut(&self, ids: &mut Vec<u32>, budget: usize) -> Result<bool> {
        if ids.len() <= budget {
            return Ok(false);
        }
        let marker = self.tk.encode(&format!("\n[… {} tokens cut …]\n", ids.len() - budget))?;
        let keep = budget.saturating_sub(marker.len());
        let head = keep * 2 / 3;
        let tail = keep - head;
        let mut out = ids[..head].to_vec();
        out.extend(marker);
        out.extend_from_slice(&ids[ids.len() - tail..]);
        *ids = out;
        Ok(true)
    }

    /// The parts of a chat after the per-message budgets, `t` counting the cuts.
    fn parts(&self, messages: &[Message], t: &mut Truncations) -> Result<Vec<Part>> {
        let mut out = Vec::with_capacity(messages.len());
        let mut users = 0;
        for m in messages {
            let mut p = self.part(m)?;
            match m.role.as_str() {
                "system" => t.system += usize::from(self.cut(&mut p.content, self.cfg.system_tokens)?),
                "user" => {
                    let budget = if users == 0 { self.cfg.task_tokens } else { self.cfg.observation_tokens };
                    let hit = usize::from(self.cut(&mut p.content, budget)?);
                    if users == 0 {
                        t.task += hit;
                    } else {
                        t.observations += hit;
                    }
                    users += 1;
                }
                _ => {}
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Index of the first part after the system prompt and the task.
    fn head_len(messages: &[Message]) -> usize {
        let sys = usize::from(messages.first().is_some_and(|m| m.role == "system"));
        (sys + usize::from(messages.get(sys).is_some_and(|m| m.role == "user"))).min(messages.len())
    }

    /// Prompt tokens of the chat so far (ending before the next assistant turn), the assistant
    /// header included, fitted to the budgets.
    pub fn prompt(&self, messages: &[Message]) -> Result<(Vec<u32>, Truncations)> {
        let mut t = Truncations::default();
        let ids = self.prompt_counted(messages, &mut t)?;
        Ok((ids, t))
    }

    fn prompt_counted(&self, messages: &[Message], t: &mut Truncations) -> Result<Vec<u32>> {
        let before = t.total();
        let mut parts = self.parts(messages, t)?;
        let header = self.tk.header("assistant")?;
        let budget = self.cfg.max_prompt_tokens;
        let head = Self::head_len(messages);
        let total = |ps: &[Part]| ps.iter().map(Part::len).sum::<usize>() + header.len();
        // Drop the oldest (assistant, observation) pairs until the prompt fits, keeping the last.
        // Once a turn is dropped, the marker saying so must fit too.
        let marker = self.tk.encode("\n[999 earlier steps not shown]")?.len();
        let (mut dropped, mut at) = (0, head);
        while total(&parts) + if dropped > 0 { marker } else { 0 } > budget && parts.len() >= head + 3 {
            // A pair is an assistant turn and the observation after it, when there is one.
            let n = if messages.get(at + 1).is_some_and(|m| m.role != "assistant") { 2 } else { 1 };
            parts.drain(head..head + n);
            at += n;
            dropped += 1;
        }
        if dropped > 0 {
            t.turns_dropped += dropped;
            let note = self.tk.encode(&format!("\n[{dropped} earlier steps not shown]"))?;
            match parts.get_mut(head.saturating_sub(1)).filter(|_| head > 0) {
                Some(task) => task.content.extend(note),
                None => parts.insert(0, Part { header: vec![], content: note, close: vec![] }),
            }
        }
        let mut ids: Vec<u32> =
            parts.iter().flat_map(|p| p.header.iter().chain(&p.content).chain(&p.close)).copied().collect();
        ids.extend(header);
        if ids.len() > budget {
            // System and task alone exceed the budget's share: cut from the front.
            t.overflows += 1;
            ids.drain(..ids.len() - budget);
        }
        t.close_window(before);
        Ok(ids)
    }

    /// A target turn's tokens (content and end of turn), cut to its budget.
    fn target(&self, m: &Message, t: &mut Truncations) -> Result<Vec<u32>> {
        let mut ids = self.tk.encode(&m.content)?;
        ids.push(self.tk.im_end);
        if ids.len() > self.cfg.max_target_tokens {
            t.targets += 1;
            ids.truncate(self.cfg.max_target_tokens);
        }
        Ok(ids)
    }

    /// One training sample: the window before message `at` (an assistant turn) and that turn as
    /// the target.
    pub fn sample_at(&self, messages: &[Message], at: usize, t: &mut Truncations) -> Result<Encoded> {
        let mut ids = self.prompt_counted(&messages[..at], t)?;
        let before = t.total();
        let target = self.target(&messages[at], t)?;
        if t.total() > before {
            t.cut_windows += 1;
        }
        let mut mask = vec![false; ids.len()];
        mask.extend(std::iter::repeat_n(true, target.len()));
        ids.extend(target);
        Ok(Encoded { ids, mask })
    }

    /// Training samples of a chat whose target turns `is_target` picks: the whole chat up to
    /// its last target as one sequence when it fits uncut (every prefix is then exactly the
    /// window of that step), else one window per target.
    pub fn samples(
        &self,
        messages: &[Message],
        is_target: impl Fn(usize, &Message) -> bool,
    ) -> Result<(Vec<Encoded>, Truncations)> {
        let targets: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(i, m)| m.role == "assistant" && is_target(*i, m))
            .map(|(i, _)| i)
            .collect();
        let mut t = Truncations::default();
        let Some(&last) = targets.last() else { return Ok((vec![], t)) };
        let chat = &messages[..=last];
        let mut probe = Truncations::default();
        let parts = self.parts(chat, &mut probe)?;
        let whole: usize = parts.iter().map(Part::len).sum();
        let fits = probe.total() == 0
            && whole <= self.cfg.max_prompt_tokens + self.cfg.max_target_tokens
            && self.prompt(&chat[..last])?.1.total() == 0
            && targets.iter().all(|i| parts[*i].content.len() < self.cfg.max_target_tokens);
        if !fits {
            let out = targets.iter().map(|i| self.sample_at(messages, *i, &mut t)).collect::<Result<Vec<_>>>()?;
            return Ok((out, t));
        }
        let mut ids = Vec::with_capacity(whole);
        let mut mask = Vec::with_capacity(whole);
        for (i, p) in parts.iter().enumerate() {
            let on = targets.contains(&i);
            ids.extend(&p.header);
            mask.extend(std::iter::repeat_n(false, p.header.len()));
            ids.extend(&p.content);
            mask.extend(std::iter::repeat_n(on, p.content.len()));
            // The end-of-turn token is part of the target; the newline after it is not.
            ids.extend(&p.close);
            mask.extend(p.close.iter().enumerate().map(|(k, _)| on && k == 0));
        }
        t.windows += targets.len();
        Ok((vec![Encoded { ids, mask }], t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    fn window(max_prompt: usize) -> ChatWindow {
        let texts =
            (0..40).map(|i| format!("Thought: step {i}\nCode:\n```py\ncalculator(expression=\"{i} * 2\")\n```"));
        let tk = ChatTokenizer::train(texts, 320).unwrap();
        let cfg = WindowConfig {
            max_prompt_tokens: max_prompt,
            max_target_tokens: 64,
            // A vocabulary of 320 splits the observations' words into many tokens.
            system_tokens: 48,
            task_tokens: 48,
            observation_tokens: 48,
        };
        ChatWindow { tk, cfg }
    }

    fn chat(steps: usize) -> Vec<Message> {
        let mut m = vec![msg("system", "You are an agent."), msg("user", "Task: double some numbers")];
        for i in 0..steps {
            m.push(msg(
                "assistant",
                &format!("Thought: step {i}\n\nCode:\n```py\ncalculator(expression=\"{i} * 2\")\n```"),
            ));
            m.push(msg("user", &format!("[OUTPUT OF STEP {i}] -> Observation:\n{}", i * 2)));
        }
        m
    }

    #[test]
    fn every_prefix_of_a_whole_chat_sample_is_the_inference_prompt() {
        let w = window(400);
        let mut c = chat(3);
        c.pop();
        let (samples, t) = w.samples(&c, |_, _| true).unwrap();
        assert_eq!(samples.len(), 1, "the chat fits: one sequence");
        assert_eq!(t.total(), 0);
        let s = &samples[0];
        for (i, m) in c.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let (prompt, pt) = w.prompt(&c[..i]).unwrap();
            assert_eq!(pt.total(), 0);
            assert_eq!(&s.ids[..prompt.len()], &prompt[..], "before turn {i}");
            let target = w.tk.encode(&m.content).unwrap();
            assert_eq!(&s.ids[prompt.len()..prompt.len() + target.len()], &target[..]);
            assert!(s.mask[prompt.len()..=prompt.len() + target.len()].iter().all(|m| *m));
            assert!(!s.mask[prompt.len() - 1]);
        }
    }

    #[test]
    fn long_chats_become_windows_and_every_cut_is_counted() {
        let w = window(120);
        let mut c = chat(8);
        c.pop();
        let (samples, t) = w.samples(&c, |_, _| true).unwrap();
        assert_eq!(samples.len(), 8, "one window per target");
        assert!(t.turns_dropped > 0 && t.cut_windows > 0, "{t:?}");
        for s in &samples {
            assert!(s.ids.len() <= w.cfg.max_len());
            let p = s.mask.iter().position(|m| *m).unwrap();
            assert!(p <= w.cfg.max_prompt_tokens);
        }
        // The last window is the inference prompt of that step.
        let at = c.len() - 1;
        let (prompt, _) = w.prompt(&c[..at]).unwrap();
        assert_eq!(&samples[7].ids[..prompt.len()], &prompt[..]);
        let long = msg("user", &"word ".repeat(200));
        let (ids, t) = w.prompt(&[msg("system", "s"), msg("user", "Task: t"), msg("assistant", "a"), long]).unwrap();
        assert_eq!(t.observations, 1);
        assert!(ids.len() <= 120);
    }
}
