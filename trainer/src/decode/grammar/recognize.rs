//! The recognizer: a copyable pushdown state fed one byte at a time, and the fewest bytes that
//! finish a turn from it.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ArgPhase {
    /// Just opened: a parameter name or the close.
    Open,
    /// After a value: the separator or the close.
    AfterValue,
    /// Inside the separator.
    Sep { at: u8 },
    /// After a separator: a parameter name.
    NeedName,
    /// Matching the names of the parameters in `alive`.
    Name { at: u16, alive: u64 },
}

/// Where a bracketed sequence (array, object) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum SeqPhase {
    /// After the opening bracket: an item or the close.
    Open,
    AfterItem,
    Sep {
        at: u8,
    },
    /// After a separator: an item.
    NeedItem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Frame {
    /// An empty slot.
    Empty,
    Lit {
        lit: u16,
        at: u16,
    },
    Alt {
        set: u16,
        at: u16,
        alive: u64,
    },
    /// Free text up to (not including) a newline.
    Line {
        len: u16,
    },
    Args {
        tool: u16,
        used: u64,
        phase: ArgPhase,
    },
    /// A value not yet begun: dispatched on its first byte.
    Value {
        kind: u16,
    },
    Str {
        len: u16,
        escape: bool,
    },
    Number {
        int: bool,
        digits: u8,
        frac: Option<u8>,
    },
    Array {
        item: u16,
        count: u16,
        min: u16,
        max: u16,
        phase: SeqPhase,
    },
    Object {
        count: u16,
        phase: SeqPhase,
    },
    /// Between an object's key and its value.
    KeySep {
        at: u8,
    },
}

/// Frames to put on the stack after the current one, bottom first.
pub(super) type More = [Option<Frame>; 6];

/// What a byte does to the top frame.
pub(super) enum Step {
    /// Consumed; the frame becomes this one.
    Stay(Frame),
    /// Consumed; the frame is finished.
    Pop,
    /// Consumed; the frame becomes the first and the others go on top of it.
    Push(Frame, More),
    /// Not consumed: the frame becomes the first, the others go on top, and the byte is fed to
    /// the new top.
    Expand(Frame, More),
    /// Not consumed: the frame is finished and the byte goes to the one below.
    PopRetry,
    Reject,
}

pub(super) fn more(list: &[Frame]) -> More {
    let mut out = [None; 6];
    for (slot, f) in out.iter_mut().zip(list) {
        *slot = Some(*f);
    }
    out
}

/// The state of a turn being decoded: a stack of frames, cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recognizer {
    pub(super) stack: [Frame; STACK],
    pub(super) len: u8,
}

impl Recognizer {
    pub(super) fn push(&mut self, f: Frame) -> bool {
        if (self.len as usize) < STACK {
            self.stack[self.len as usize] = f;
            self.len += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn replace_top(&mut self, first: Frame, more: More) -> bool {
        self.stack[self.len as usize - 1] = first;
        more.into_iter().flatten().all(|f| self.push(f))
    }

    /// Whether the turn is complete: only the stop token may follow.
    pub fn is_done(&self) -> bool {
        self.len == 0
    }

    /// Feeds one byte; `false` (and the state unspecified) when the grammar refuses it.
    pub fn feed(&mut self, g: &Grammar, b: u8) -> bool {
        loop {
            if self.len == 0 {
                return false;
            }
            match step(g, self.stack[self.len as usize - 1], b) {
                Step::Stay(f) => {
                    self.stack[self.len as usize - 1] = f;
                    return true;
                }
                Step::Pop => {
                    self.len -= 1;
                    return true;
                }
                Step::Push(first, more) => return self.replace_top(first, more),
                Step::Expand(first, more) => {
                    if !self.replace_top(first, more) {
                        return false;
                    }
                }
                Step::PopRetry => self.len -= 1,
                Step::Reject => return false,
            }
        }
    }

    /// Feeds bytes; `false` when one is refused.
    pub fn feed_all(&mut self, g: &Grammar, bytes: &[u8]) -> bool {
        bytes.iter().all(|b| self.feed(g, *b))
    }

    /// Fewest bytes that complete the turn from here.
    pub fn min_to_finish(&self, g: &Grammar) -> u32 {
        self.stack[..self.len as usize].iter().map(|f| frame_min(g, f)).sum()
    }

    /// The state as a memo key for the tokens it allows: slots above the stack cleared, and the
    /// length of a free-text line or string on top forgotten while no token of `longest` bytes
    /// can reach its limit — from such states the same tokens are allowed, with the same
    /// shortest finish after each (a line costs nothing to finish, a string its closing quote).
    pub(super) fn memo_key(&self, longest: usize) -> Recognizer {
        let n = self.len as usize;
        let mut key = Recognizer { stack: [Frame::Empty; STACK], len: self.len };
        key.stack[..n].copy_from_slice(&self.stack[..n]);
        if let Some(top) = key.stack[..n].last_mut() {
            match top {
                Frame::Line { len } if usize::from(*len) + longest <= usize::from(MAX_LINE) => *len = 0,
                Frame::Str { len, .. } if usize::from(*len) + longest + 2 <= usize::from(MAX_STRING) => *len = 0,
                _ => {}
            }
        }
        key
    }
}

pub(super) fn frame_min(g: &Grammar, f: &Frame) -> u32 {
    let sep = g.item_sep().len() as u32;
    match *f {
        Frame::Empty | Frame::Line { .. } => 0,
        Frame::Lit { lit, at } => (g.lits[lit as usize].len() - at as usize) as u32,
        Frame::Alt { set, at, alive } => {
            let a = &g.alts[set as usize];
            (0..a.lits.len())
                .filter(|i| alive & (1 << i) != 0)
                .map(|i| (a.lits[i].len() - at as usize) as u32 + a.cont_min[i])
                .min()
                .unwrap_or(0)
        }
        Frame::Args { tool, used, phase } => match phase {
            ArgPhase::Open | ArgPhase::AfterValue => g.args_min(tool, used),
            ArgPhase::Sep { at } => sep - u32::from(at) + g.args_min_adding(tool, used, u64::MAX, 0),
            ArgPhase::NeedName => g.args_min_adding(tool, used, u64::MAX, 0),
            ArgPhase::Name { at, alive } => g.args_min_adding(tool, used, alive, at),
        },
        Frame::Value { kind } => g.value_min(kind),
        Frame::Str { escape, .. } => 1 + u32::from(escape),
        Frame::Number { digits, frac, .. } => u32::from(digits == 0) + u32::from(frac == Some(0)),
        Frame::Array { item, count, min, phase, .. } => {
            let missing = u32::from(min.saturating_sub(count));
            let item = g.value_min(item);
            match phase {
                SeqPhase::Open => 1 + missing * item + missing.saturating_sub(1) * sep,
                SeqPhase::AfterItem => 1 + missing * (sep + item),
                SeqPhase::Sep { at } => sep - u32::from(at) + item + missing.saturating_sub(1) * (sep + item) + 1,
                SeqPhase::NeedItem => item + missing.saturating_sub(1) * (sep + item) + 1,
            }
        }
        Frame::Object { phase, .. } => {
            let pair = 2 + g.key_sep().len() as u32 + g.value_min(g.any);
            match phase {
                SeqPhase::Open | SeqPhase::AfterItem => 1,
                SeqPhase::Sep { at } => sep - u32::from(at) + pair + 1,
                SeqPhase::NeedItem => pair + 1,
            }
        }
        Frame::KeySep { at } => g.key_sep().len() as u32 - u32::from(at) + g.value_min(g.any),
    }
}

/// Matches `b` against the alive alternatives at offset `at`: the alternatives still alive,
/// and the one that `b` completes.
pub(super) fn alt_step<'a>(lits: impl Iterator<Item = &'a [u8]>, at: u16, alive: u64, b: u8) -> (u64, Option<usize>) {
    let mut next = 0u64;
    let mut done = None;
    for (i, l) in lits.enumerate() {
        if alive & (1 << i) != 0 && l.get(at as usize) == Some(&b) {
            if l.len() == at as usize + 1 {
                done = Some(i);
            } else {
                next |= 1 << i;
            }
        }
    }
    (next, done)
}

pub(super) fn is_line_byte(b: u8) -> bool {
    b != b'\n' && b != b'\r' && b != b'`'
}

pub(super) fn step(g: &Grammar, f: Frame, b: u8) -> Step {
    match f {
        Frame::Empty => Step::Reject,
        Frame::Lit { lit, at } => {
            let l = &g.lits[lit as usize];
            if l[at as usize] != b {
                Step::Reject
            } else if at as usize + 1 == l.len() {
                Step::Pop
            } else {
                Step::Stay(Frame::Lit { lit, at: at + 1 })
            }
        }
        Frame::Alt { set, at, alive } => {
            let a = &g.alts[set as usize];
            match alt_step(a.lits.iter().map(Vec::as_slice), at, alive, b) {
                // Alternatives are prefix-free, so a finished one is the only one left.
                (_, Some(i)) => continuation(g, a.conts[i]),
                (next, None) if next != 0 => Step::Stay(Frame::Alt { set, at: at + 1, alive: next }),
                _ => Step::Reject,
            }
        }
        Frame::Line { len } => {
            if !is_line_byte(b) {
                Step::PopRetry
            } else if len >= MAX_LINE {
                Step::Reject
            } else {
                Step::Stay(Frame::Line { len: len + 1 })
            }
        }
        Frame::Args { tool, used, phase } => args_step(g, tool, used, phase, b),
        Frame::Value { kind } => value_start(g, kind, b),
        Frame::Str { len, escape: true } => {
            if matches!(b, b'"' | b'\\' | b'n' | b't') {
                Step::Stay(Frame::Str { len: len + 1, escape: false })
            } else {
                Step::Reject
            }
        }
        Frame::Str { len, escape: false } => match b {
            b'"' => Step::Pop,
            b'\\' if len + 2 <= MAX_STRING => Step::Stay(Frame::Str { len: len + 1, escape: true }),
            b'\n' | b'\r' | b'`' | b'\\' | 0x7f => Step::Reject,
            c if c < 0x20 => Step::Reject,
            _ if len >= MAX_STRING => Step::Reject,
            _ => Step::Stay(Frame::Str { len: len + 1, escape: false }),
        },
        Frame::Number { int, digits, frac } => match (b, frac) {
            (b'0'..=b'9', None) if digits < MAX_DIGITS => Step::Stay(Frame::Number { int, digits: digits + 1, frac }),
            (b'0'..=b'9', Some(n)) if n < MAX_DIGITS => Step::Stay(Frame::Number { int, digits, frac: Some(n + 1) }),
            (b'.', None) if !int && digits > 0 => Step::Stay(Frame::Number { int, digits, frac: Some(0) }),
            (b'0'..=b'9' | b'.', _) => Step::Reject,
            _ if digits == 0 || frac == Some(0) => Step::Reject,
            _ => Step::PopRetry,
        },
        Frame::Array { item, count, min, max, phase } => {
            let arr = |count, phase| Frame::Array { item, count, min, max, phase };
            let seq = Seq { close: b']', phase, may_close: count >= min, may_add: count < max };
            seq_step(
                g,
                b,
                seq,
                |phase| arr(count, phase),
                || (arr(count + 1, SeqPhase::AfterItem), more(&[Frame::Value { kind: item }])),
            )
        }
        Frame::Object { count, phase } => {
            let obj = |count, phase| Frame::Object { count, phase };
            let seq = Seq { close: b'}', phase, may_close: true, may_add: count < MAX_KEYS };
            seq_step(
                g,
                b,
                seq,
                |phase| obj(count, phase),
                || {
                    // The key (a string) on top, then the separator, then any value.
                    let key = Frame::Value { kind: g.string };
                    (
                        obj(count + 1, SeqPhase::AfterItem),
                        more(&[Frame::Value { kind: g.any }, Frame::KeySep { at: 0 }, key]),
                    )
                },
            )
        }
        Frame::KeySep { at } => {
            let sep = g.key_sep();
            if sep[at as usize] != b {
                Step::Reject
            } else if at as usize + 1 == sep.len() {
                Step::Pop
            } else {
                Step::Stay(Frame::KeySep { at: at + 1 })
            }
        }
    }
}

/// Where a bracketed sequence is, and what it may do next: the array and object frames share
/// [`seq_step`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Seq {
    /// The closing bracket.
    close: u8,
    phase: SeqPhase,
    /// Enough items to close.
    may_close: bool,
    /// Room for another item.
    may_add: bool,
}

/// A bracketed sequence of items separated by the item separator, closed by `seq.close`;
/// `with` rebuilds the frame at a new phase, `item` opens an item.
pub(super) fn seq_step(
    g: &Grammar,
    b: u8,
    seq: Seq,
    with: impl Fn(SeqPhase) -> Frame,
    item: impl Fn() -> (Frame, More),
) -> Step {
    let Seq { close, phase, may_close, may_add } = seq;
    let sep = g.item_sep();
    match phase {
        SeqPhase::Open | SeqPhase::AfterItem if b == close => {
            if may_close {
                Step::Pop
            } else {
                Step::Reject
            }
        }
        SeqPhase::AfterItem if b == sep[0] && may_add => {
            if sep.len() == 1 {
                Step::Stay(with(SeqPhase::NeedItem))
            } else {
                Step::Stay(with(SeqPhase::Sep { at: 1 }))
            }
        }
        SeqPhase::Sep { at } if sep[at as usize] == b => {
            if at as usize + 1 == sep.len() {
                Step::Stay(with(SeqPhase::NeedItem))
            } else {
                Step::Stay(with(SeqPhase::Sep { at: at + 1 }))
            }
        }
        SeqPhase::Open | SeqPhase::NeedItem if may_add => {
            let (f, m) = item();
            Step::Expand(f, m)
        }
        _ => Step::Reject,
    }
}

pub(super) fn args_step(g: &Grammar, tool: u16, used: u64, phase: ArgPhase, b: u8) -> Step {
    let params = &g.tools[tool as usize].params;
    let unused: u64 = (0..params.len()).filter(|i| used & (1 << i) == 0).fold(0, |m, i| m | (1 << i));
    let complete = params.iter().enumerate().all(|(i, p)| !p.required || used & (1 << i) != 0);
    let close = match g.surface {
        Surface::Python => b')',
        Surface::Json => b'}',
    };
    let sep = g.item_sep();
    let args = |phase| Frame::Args { tool, used, phase };
    match phase {
        ArgPhase::Open | ArgPhase::AfterValue if b == close => {
            if complete {
                Step::Pop
            } else {
                Step::Reject
            }
        }
        ArgPhase::AfterValue if b == sep[0] && unused != 0 => {
            Step::Stay(args(if sep.len() == 1 { ArgPhase::NeedName } else { ArgPhase::Sep { at: 1 } }))
        }
        ArgPhase::Sep { at } if sep[at as usize] == b => Step::Stay(args(if at as usize + 1 == sep.len() {
            ArgPhase::NeedName
        } else {
            ArgPhase::Sep { at: at + 1 }
        })),
        ArgPhase::Open | ArgPhase::NeedName if unused != 0 => {
            Step::Expand(args(ArgPhase::Name { at: 0, alive: unused }), more(&[]))
        }
        ArgPhase::Name { at, alive } => match alt_step(params.iter().map(|p| p.lit.as_slice()), at, alive, b) {
            (_, Some(i)) => Step::Push(
                Frame::Args { tool, used: used | (1 << i), phase: ArgPhase::AfterValue },
                more(&[Frame::Value { kind: params[i].kind }]),
            ),
            (next, None) if next != 0 => Step::Stay(args(ArgPhase::Name { at: at + 1, alive: next })),
            _ => Step::Reject,
        },
        _ => Step::Reject,
    }
}

pub(super) fn value_start(g: &Grammar, kind: u16, b: u8) -> Step {
    match &g.kinds[kind as usize] {
        Kind::Str { choices: None } if b == b'"' => Step::Stay(Frame::Str { len: 0, escape: false }),
        Kind::Str { choices: Some(set) } | Kind::Bool { set } | Kind::Null { set } => {
            let n = g.alts[*set as usize].lits.len();
            Step::Expand(Frame::Alt { set: *set, at: 0, alive: all_alive(n) }, more(&[]))
        }
        Kind::Int | Kind::Num if b == b'-' || b.is_ascii_digit() => {
            let int = g.kinds[kind as usize] == Kind::Int;
            Step::Stay(Frame::Number { int, digits: u8::from(b != b'-'), frac: None })
        }
        Kind::Array { item, min, max } if b == b'[' => {
            Step::Stay(Frame::Array { item: *item, count: 0, min: *min, max: *max, phase: SeqPhase::Open })
        }
        Kind::Object if b == b'{' => Step::Stay(Frame::Object { count: 0, phase: SeqPhase::Open }),
        Kind::Union(kinds) => {
            let fits = |k: &Kind| match k {
                Kind::Str { .. } => b == b'"',
                Kind::Int | Kind::Num => b == b'-' || b.is_ascii_digit(),
                Kind::Bool { .. } => matches!(b, b'T' | b'F' | b't' | b'f'),
                Kind::Null { .. } => matches!(b, b'N' | b'n'),
                Kind::Array { .. } => b == b'[',
                Kind::Object => b == b'{',
                Kind::Union(_) => false,
            };
            match kinds.iter().find(|k| fits(&g.kinds[**k as usize])) {
                Some(k) => Step::Expand(Frame::Value { kind: *k }, more(&[])),
                None => Step::Reject,
            }
        }
        _ => Step::Reject,
    }
}

pub(super) fn continuation(g: &Grammar, c: Cont) -> Step {
    let alt = |set: u16| Frame::Alt { set, at: 0, alive: all_alive(g.alts[set as usize].lits.len()) };
    match c {
        Cont::Pop => Step::Pop,
        Cont::Action => Step::Stay(alt(g.tool_names)),
        // The argument list, above the call's closing literal.
        Cont::Tool(tool) => Step::Push(
            Frame::Lit { lit: g.lit_close, at: 0 },
            more(&[Frame::Args { tool, used: 0, phase: ArgPhase::Open }]),
        ),
        Cont::Thought => Step::Push(
            alt(g.action_open),
            more(&[Frame::Lit { lit: g.lit_thought_end, at: 0 }, Frame::Line { len: 0 }]),
        ),
        Cont::Reflection => Step::Push(
            alt(g.after_reflection),
            more(&[
                Frame::Lit { lit: g.lit_reflection_end, at: 0 },
                Frame::Line { len: 0 },
                Frame::Lit { lit: g.lit_fix_plan, at: 0 },
                Frame::Line { len: 0 },
                Frame::Lit { lit: g.lit_evidence, at: 0 },
                alt(g.etypes),
            ]),
        ),
    }
}
