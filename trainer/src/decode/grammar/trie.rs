//! The vocabulary as a byte trie, walked with a [`Recognizer`] to find the tokens a grammar
//! state allows; and the memo of those per state ([`Masks`]).

use super::*;

/// The vocabulary as a byte trie, for finding the tokens a grammar state allows.
#[derive(Debug, Clone)]
pub struct TokenTrie {
    /// Children of each node: `(byte, node)`, sorted by byte.
    pub(super) children: Vec<Vec<(u8, u32)>>,
    /// Tokens whose bytes end at each node.
    pub(super) tokens: Vec<Vec<u32>>,
    /// The bytes of each token (empty for special tokens, which are not in the trie).
    pub(super) bytes: Vec<Vec<u8>>,
    /// Bytes of the longest token.
    pub(super) longest: usize,
}

/// The tokens a grammar state accepts, by id, each with the fewest bytes that finish the turn
/// after it (what the remaining token budget is checked against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub(super) tokens: Vec<u32>,
    pub(super) finish: Vec<u32>,
}

/// The tokens allowed at one step: those of a state's [`Accepted`] whose shortest finish fits
/// in `room` bytes. Cheap to keep per generated token (a shared list and a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub(super) accepted: Arc<Accepted>,
    pub(super) room: u32,
}

impl Allowed {
    /// The allowed token ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + Clone + '_ {
        self.accepted.tokens.iter().zip(&self.accepted.finish).filter(|(_, f)| **f <= self.room).map(|(t, _)| *t)
    }
}

/// The tokens each state of one grammar allows, remembered per state: decoding visits the same
/// few states again and again (every byte of free text is one state), and walking the trie
/// costs a pass over much of the vocabulary. The memo is emptied when it holds more than
/// [`Masks::CAPACITY`] token ids in all, so a long run over many grammars stays bounded.
#[derive(Debug, Default)]
pub struct Masks {
    pub(super) memo: Mutex<(HashMap<Recognizer, Arc<Accepted>>, usize)>,
}

impl Masks {
    /// Token ids held by the memo at most (8 bytes each): 256 MiB.
    pub const CAPACITY: usize = 32 << 20;

    /// The tokens allowed from `state` when at most `budget` tokens may still be generated, the
    /// stop token included (it is allowed, alone, once the turn is complete); `None` when no
    /// token can be, because the budget cannot finish the turn.
    pub fn allowed(
        &self,
        g: &Grammar,
        trie: &TokenTrie,
        state: &Recognizer,
        budget: usize,
        stop: u32,
    ) -> Option<Allowed> {
        if state.is_done() {
            return Some(Allowed { accepted: Arc::new(Accepted { tokens: vec![stop], finish: vec![0] }), room: 0 });
        }
        if budget < 2 {
            return None;
        }
        // After a token, `budget - 1` remain, one of which the stop token needs.
        let room = (budget - 2) as u32;
        let key = state.memo_key(trie.longest);
        let accepted = {
            let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            let (memo, held) = &mut *memo;
            match memo.get(&key) {
                Some(a) => Arc::clone(a),
                None => {
                    let a = Arc::new(trie.accepted(g, state));
                    if *held + a.tokens.len() > Self::CAPACITY {
                        memo.clear();
                        *held = 0;
                    }
                    *held += a.tokens.len();
                    memo.insert(key, Arc::clone(&a));
                    a
                }
            }
        };
        let allowed = Allowed { accepted, room };
        let any = allowed.iter().next().is_some();
        any.then_some(allowed)
    }
}

impl TokenTrie {
    /// A trie of `bytes[id]` for every token that has bytes.
    pub fn new(bytes: &[Option<Vec<u8>>]) -> TokenTrie {
        let mut t =
            TokenTrie { children: vec![vec![]], tokens: vec![vec![]], bytes: vec![vec![]; bytes.len()], longest: 0 };
        for (id, b) in bytes.iter().enumerate() {
            let Some(b) = b.as_ref().filter(|b| !b.is_empty()) else { continue };
            t.bytes[id] = b.clone();
            t.longest = t.longest.max(b.len());
            let mut node = 0usize;
            for &c in b {
                node = match t.children[node].binary_search_by_key(&c, |x| x.0) {
                    Ok(i) => t.children[node][i].1 as usize,
                    Err(i) => {
                        t.children.push(vec![]);
                        t.tokens.push(vec![]);
                        let n = t.children.len() - 1;
                        t.children[node].insert(i, (c, n as u32));
                        n
                    }
                };
            }
            t.tokens[node].push(id as u32);
        }
        t
    }

    /// The bytes of a token (empty for a special token).
    pub fn bytes(&self, token: u32) -> &[u8] {
        self.bytes.get(token as usize).map_or(&[], Vec::as_slice)
    }

    /// Every token the grammar accepts from `state` (the stop token aside), with the shortest
    /// finish after each, by one walk of the trie that prunes every branch the grammar refuses.
    pub(super) fn accepted(&self, g: &Grammar, state: &Recognizer) -> Accepted {
        let mut found: Vec<(u32, u32)> = Vec::new();
        let mut stack: Vec<(u32, Recognizer)> = vec![(0, *state)];
        while let Some((node, st)) = stack.pop() {
            for &(b, child) in &self.children[node as usize] {
                let mut next = st;
                if !next.feed(g, b) {
                    continue;
                }
                if !self.tokens[child as usize].is_empty() {
                    let finish = next.min_to_finish(g);
                    found.extend(self.tokens[child as usize].iter().map(|t| (*t, finish)));
                }
                stack.push((child, next));
            }
        }
        found.sort_unstable();
        let (tokens, finish) = found.into_iter().unzip();
        Accepted { tokens, finish }
    }

    /// The tokens allowed from `state` when at most `budget` tokens may still be generated,
    /// the stop token included (it is allowed, alone, once the turn is complete), with the
    /// state each leads to: the plain walk, without [`Masks`]' memo — the reference the
    /// memo and the sampler are tested against.
    #[cfg(test)]
    pub fn allowed(&self, g: &Grammar, state: &Recognizer, budget: usize, stop: u32) -> Vec<(u32, Recognizer)> {
        if state.is_done() {
            return vec![(stop, *state)];
        }
        if budget < 2 {
            return vec![];
        }
        // After a token, `budget - 1` remain, one of which the stop token needs.
        let room = (budget - 2) as u32;
        let mut out = Vec::new();
        let mut stack: Vec<(u32, Recognizer)> = vec![(0, *state)];
        while let Some((node, st)) = stack.pop() {
            for &(b, child) in &self.children[node as usize] {
                let mut next = st;
                if !next.feed(g, b) {
                    continue;
                }
                if !self.tokens[child as usize].is_empty() && next.min_to_finish(g) <= room {
                    out.extend(self.tokens[child as usize].iter().map(|t| (*t, next)));
                }
                stack.push((child, next));
            }
        }
        out
    }
}
