//! Constrained decoding: the grammar of an assistant turn, built from the tool specs, so that
//! every sampled completion parses into an action the suite declares.
//!
//! ```text
//! turn       := [reflection] [thought] action <|im_end|>
//! reflection := REFLECTION_OPEN ERROR_TYPE EVIDENCE_OPEN LINE FIX_PLAN_OPEN LINE "\n"
//! thought    := THOUGHT_OPEN LINE THOUGHT_END
//! action     := action_open(py) TOOL "(" [arg {", " arg}] ")" ACTION_CLOSE                   (Python calls)
//!             | action_open(json) "{\"name\":\"" TOOL "\",\"arguments\":{" [jarg {"," jarg}] "}}" ACTION_CLOSE
//! arg        := PARAM "=" value            jarg := "\"" PARAM "\":" value
//! value      := by the parameter's JSON Schema: string (or one of its enum), integer, number,
//!               boolean, array (items, minItems, maxItems), object, or a union of these
//! ```
//!
//! The upper-case literals are the layout constants of [`regrpo_schemas::react`], the one place
//! the turn format is written. `ERROR_TYPE` is one of the six names; `TOOL` and `PARAM` come from
//! the specs; every required parameter appears before the call closes, none twice. The layout is exactly what
//! [`regrpo_schemas::react::format_assistant`] prints, so a policy trained on that text is
//! steered, never pushed off it. `LINE` is free text without a newline or a backtick.
//!
//! Decoding works on bytes: a [`Recognizer`] is a small copyable pushdown state; the allowed
//! tokens of a step are found by walking a byte trie of the vocabulary with it ([`TokenTrie`]),
//! pruning every branch the grammar refuses. A token is also refused when the shortest way to
//! finish the turn after it would not fit in the remaining token budget (every byte is a token
//! of a byte-level vocabulary, so a turn can always be closed byte by byte): every completion
//! ends inside its budget and parses.

use regrpo_engine::ToolSpec;
use regrpo_schemas::ErrorType;
use regrpo_schemas::action::Surface;
use regrpo_schemas::react::{
    ACTION_CLOSE, EVIDENCE_OPEN, FIX_PLAN_OPEN, REFLECTION_OPEN, THOUGHT_END, THOUGHT_OPEN, action_open,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Longest free-text line (thought, evidence, fix plan), in bytes.
const MAX_LINE: u16 = 400;
/// Longest string value, in bytes.
const MAX_STRING: u16 = 200;
/// Most digits of a number.
const MAX_DIGITS: u8 = 15;
/// Most items of an array without `maxItems`.
const MAX_ITEMS: u16 = 32;
/// Most keys of an object value.
const MAX_KEYS: u16 = 16;
/// Depth of the recognizer's stack.
const STACK: usize = 16;

/// What a value must look like (from a parameter's JSON Schema).
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A string; with `choices`, one of the quoted literals of that alternative set.
    Str {
        choices: Option<u16>,
    },
    Int,
    Num,
    /// `True`/`False` (Python) or `true`/`false` (JSON): an alternative set.
    Bool {
        set: u16,
    },
    /// `None` / `null`: an alternative set of one.
    Null {
        set: u16,
    },
    Array {
        item: u16,
        min: u16,
        max: u16,
    },
    /// An object with string keys and values of kind `Any`.
    Object,
    /// One of several kinds, chosen by the first byte.
    Union(Vec<u16>),
}

/// What finishing an alternative leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cont {
    /// Nothing more inside this frame (a value literal, an ErrorType name).
    Pop,
    /// The reflection block's lines, then thought or action.
    Reflection,
    /// A thought line, then the action.
    Thought,
    /// The action's call.
    Action,
    /// The arguments of tool `i`.
    Tool(u16),
}

#[derive(Debug, Clone)]
struct AltSet {
    lits: Vec<Vec<u8>>,
    conts: Vec<Cont>,
    /// Fewest bytes the continuation of each alternative needs.
    cont_min: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Param {
    /// `name=` (Python) or `"name":` (JSON).
    lit: Vec<u8>,
    kind: u16,
    required: bool,
}

#[derive(Debug, Clone)]
struct Tool {
    params: Vec<Param>,
}

/// The grammar of an assistant turn for one set of tools and one action surface.
#[derive(Debug, Clone)]
pub struct Grammar {
    surface: Surface,
    kinds: Vec<Kind>,
    alts: Vec<AltSet>,
    lits: Vec<Vec<u8>>,
    tools: Vec<Tool>,
    /// The alternatives at the start of the turn, after a reflection, after a thought.
    begin: u16,
    after_reflection: u16,
    action_open: u16,
    etypes: u16,
    tool_names: u16,
    any: u16,
    string: u16,
    lit_evidence: u16,
    lit_fix_plan: u16,
    lit_reflection_end: u16,
    lit_thought_end: u16,
    lit_close: u16,
}

impl Grammar {
    /// The grammar of turns calling one of `specs` in the given surface form.
    pub fn new(surface: Surface, specs: &[ToolSpec]) -> Grammar {
        let mut g = Grammar {
            surface,
            kinds: Vec::new(),
            alts: Vec::new(),
            lits: Vec::new(),
            tools: Vec::new(),
            begin: 0,
            after_reflection: 0,
            action_open: 0,
            etypes: 0,
            tool_names: 0,
            any: 0,
            string: 0,
            lit_evidence: 0,
            lit_fix_plan: 0,
            lit_reflection_end: 0,
            lit_thought_end: 0,
            lit_close: 0,
        };
        g.any = g.any_kind();
        g.string = g.kind(Kind::Str { choices: None });
        let mut tools: Vec<&ToolSpec> = specs.iter().collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools.dedup_by(|a, b| a.name == b.name);
        let mut names = Vec::new();
        for (i, spec) in tools.iter().enumerate() {
            let tool = g.tool(spec);
            g.tools.push(tool);
            let lit = match surface {
                Surface::Python => format!("{}(", spec.name),
                Surface::Json => format!("{}\",\"arguments\":{{", escape_json(&spec.name)),
            };
            names.push((lit.into_bytes(), Cont::Tool(i as u16)));
        }
        g.tool_names = g.alt_set(names);
        g.etypes = g.alt_set(ErrorType::ALL.iter().map(|t| (t.as_str().as_bytes().to_vec(), Cont::Pop)).collect());
        g.lit_evidence = g.lit(EVIDENCE_OPEN);
        g.lit_fix_plan = g.lit(FIX_PLAN_OPEN);
        g.lit_reflection_end = g.lit("\n");
        g.lit_thought_end = g.lit(THOUGHT_END);
        // JSON calls are constrained in their compact form, `{"name":"…","arguments":{…}}`.
        let (action, close) = match surface {
            Surface::Python => (action_open(surface).to_string(), ACTION_CLOSE.to_string()),
            Surface::Json => (format!("{}{{\"name\":\"", action_open(surface)), format!("}}{ACTION_CLOSE}")),
        };
        g.lit_close = g.lit(&close);
        g.action_open = g.alt_set(vec![(action.as_bytes().to_vec(), Cont::Action)]);
        g.after_reflection = g.alt_set(vec![
            (THOUGHT_OPEN.as_bytes().to_vec(), Cont::Thought),
            (action.as_bytes().to_vec(), Cont::Action),
        ]);
        g.begin = g.alt_set(vec![
            (REFLECTION_OPEN.as_bytes().to_vec(), Cont::Reflection),
            (THOUGHT_OPEN.as_bytes().to_vec(), Cont::Thought),
            (action.as_bytes().to_vec(), Cont::Action),
        ]);
        g.fill_cont_min();
        g
    }

    /// The action surface the grammar writes.
    pub fn surface(&self) -> Surface {
        self.surface
    }

    fn lit(&mut self, s: &str) -> u16 {
        self.lits.push(s.as_bytes().to_vec());
        (self.lits.len() - 1) as u16
    }

    fn alt_set(&mut self, alts: Vec<(Vec<u8>, Cont)>) -> u16 {
        let (lits, conts): (Vec<_>, Vec<_>) = alts.into_iter().take(64).unzip();
        let n = lits.len();
        self.alts.push(AltSet { lits, conts, cont_min: vec![0; n] });
        (self.alts.len() - 1) as u16
    }

    fn kind(&mut self, k: Kind) -> u16 {
        if let Some(i) = self.kinds.iter().position(|x| *x == k) {
            return i as u16;
        }
        self.kinds.push(k);
        (self.kinds.len() - 1) as u16
    }

    fn bool_kind(&mut self) -> u16 {
        let (t, f) = match self.surface {
            Surface::Python => ("True", "False"),
            Surface::Json => ("true", "false"),
        };
        let set = self.alt_set(vec![(t.as_bytes().to_vec(), Cont::Pop), (f.as_bytes().to_vec(), Cont::Pop)]);
        self.kind(Kind::Bool { set })
    }

    fn null_kind(&mut self) -> u16 {
        let n = match self.surface {
            Surface::Python => "None",
            Surface::Json => "null",
        };
        let set = self.alt_set(vec![(n.as_bytes().to_vec(), Cont::Pop)]);
        self.kind(Kind::Null { set })
    }

    /// Any JSON value: string, number, boolean, null, array of any, object.
    fn any_kind(&mut self) -> u16 {
        // The array's items refer to the union itself: reserve its slot first.
        self.kinds.push(Kind::Union(vec![]));
        let any = (self.kinds.len() - 1) as u16;
        let s = self.kind(Kind::Str { choices: None });
        let n = self.kind(Kind::Num);
        let b = self.bool_kind();
        let z = self.null_kind();
        let a = self.kind(Kind::Array { item: any, min: 0, max: MAX_ITEMS });
        let o = self.kind(Kind::Object);
        self.kinds[any as usize] = Kind::Union(vec![s, n, b, z, a, o]);
        any
    }

    /// The kind of a JSON Schema (unknown or absent types are any value).
    fn schema_kind(&mut self, schema: &Value) -> u16 {
        if let Some(choices) = schema.get("enum").and_then(Value::as_array)
            && !choices.is_empty()
            && choices.iter().all(Value::is_string)
        {
            let set = self.alt_set(
                choices.iter().filter_map(Value::as_str).map(|s| (quote(s).into_bytes(), Cont::Pop)).collect(),
            );
            return self.kind(Kind::Str { choices: Some(set) });
        }
        let types: Vec<String> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => return self.any,
        };
        let mut kinds = Vec::new();
        for t in &types {
            let k = match t.as_str() {
                "string" => self.kind(Kind::Str { choices: None }),
                "integer" => self.kind(Kind::Int),
                "number" | "float" => self.kind(Kind::Num),
                "boolean" => self.bool_kind(),
                "null" => self.null_kind(),
                "array" | "tuple" => {
                    let item = schema.get("items").map_or(self.any, |i| self.schema_kind(i));
                    let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0).min(u64::from(MAX_ITEMS));
                    let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(u64::from(MAX_ITEMS));
                    let max = max.clamp(min.max(1), u64::from(MAX_ITEMS));
                    self.kind(Kind::Array { item, min: min as u16, max: max as u16 })
                }
                "object" | "dict" => self.kind(Kind::Object),
                _ => return self.any,
            };
            kinds.push(k);
        }
        // A number also takes integers: keep the wider one.
        let num = self.kind(Kind::Num);
        let int = self.kind(Kind::Int);
        if kinds.contains(&num) {
            kinds.retain(|k| *k != int);
        }
        kinds.dedup();
        match kinds.as_slice() {
            [one] => *one,
            [] => self.any,
            _ => self.kind(Kind::Union(kinds)),
        }
    }

    fn tool(&mut self, spec: &ToolSpec) -> Tool {
        let required = spec.required();
        let props = spec.parameters.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let params = props
            .iter()
            .take(64)
            .map(|(name, schema)| {
                let lit = match self.surface {
                    Surface::Python => format!("{name}="),
                    Surface::Json => format!("{}:", quote(name)),
                };
                Param { lit: lit.into_bytes(), kind: self.schema_kind(schema), required: required.contains(name) }
            })
            .collect();
        Tool { params }
    }

    /// Fewest bytes of a value of this kind.
    fn value_min(&self, k: u16) -> u32 {
        self.value_min_depth(k, 0)
    }

    fn value_min_depth(&self, k: u16, depth: u8) -> u32 {
        match &self.kinds[k as usize] {
            Kind::Str { choices: None } => 2,
            Kind::Str { choices: Some(set) } | Kind::Bool { set } | Kind::Null { set } => {
                self.alts[*set as usize].lits.iter().map(|l| l.len() as u32).min().unwrap_or(0)
            }
            Kind::Int | Kind::Num => 1,
            Kind::Object => 2,
            Kind::Array { item, min, .. } => {
                let item = if *min > 0 && depth < 4 { self.value_min_depth(*item, depth + 1) } else { 0 };
                2 + u32::from(*min) * item + u32::from(min.saturating_sub(1)) * self.item_sep().len() as u32
            }
            Kind::Union(ks) => ks.iter().map(|k| self.value_min_depth(*k, depth + 1)).min().unwrap_or(1),
        }
    }

    fn item_sep(&self) -> &'static [u8] {
        match self.surface {
            Surface::Python => b", ",
            Surface::Json => b",",
        }
    }

    fn key_sep(&self) -> &'static [u8] {
        match self.surface {
            Surface::Python => b": ",
            Surface::Json => b":",
        }
    }

    /// Bytes of a parameter's name literal and its shortest value.
    fn param_min(&self, p: &Param) -> u32 {
        p.lit.len() as u32 + self.value_min(p.kind)
    }

    /// Fewest bytes of the required parameters of tool `t` not in `used` (other than `except`),
    /// each with the separator before it when `preceded`, and the closing byte.
    fn required_rest(&self, t: u16, used: u64, except: Option<usize>, preceded: bool) -> u32 {
        let sep = self.item_sep().len() as u32;
        let mut first = !preceded;
        let mut total = 1;
        for (i, p) in self.tools[t as usize].params.iter().enumerate() {
            if p.required && used & (1 << i) == 0 && Some(i) != except {
                total += self.param_min(p) + if first { 0 } else { sep };
                first = false;
            }
        }
        total
    }

    /// Fewest bytes from an argument list with `used` given to its closing byte.
    fn args_min(&self, t: u16, used: u64) -> u32 {
        self.required_rest(t, used, None, used != 0)
    }

    /// Fewest bytes when one more parameter (among `alive`, `at` bytes of its name matched)
    /// must be given before closing.
    fn args_min_adding(&self, t: u16, used: u64, alive: u64, at: u16) -> u32 {
        self.tools[t as usize]
            .params
            .iter()
            .enumerate()
            .filter(|(i, _)| used & (1 << i) == 0 && alive & (1 << i) != 0)
            .map(|(i, p)| self.param_min(p) - u32::from(at) + self.required_rest(t, used, Some(i), true))
            .min()
            .unwrap_or(u32::MAX / 4)
    }

    /// Fewest bytes of what an alternative's continuation pushes.
    fn cont_min(&self, c: Cont) -> u32 {
        let lit = |i: u16| self.lits[i as usize].len() as u32;
        let alt_min = |set: u16| -> u32 {
            let a = &self.alts[set as usize];
            a.lits.iter().zip(&a.cont_min).map(|(l, c)| l.len() as u32 + c).min().unwrap_or(0)
        };
        match c {
            Cont::Pop => 0,
            Cont::Tool(t) => self.args_min(t, 0) + lit(self.lit_close),
            Cont::Action => alt_min(self.tool_names),
            Cont::Thought => lit(self.lit_thought_end) + alt_min(self.action_open),
            Cont::Reflection => {
                alt_min(self.etypes)
                    + lit(self.lit_evidence)
                    + lit(self.lit_fix_plan)
                    + lit(self.lit_reflection_end)
                    + alt_min(self.after_reflection)
            }
        }
    }

    /// Continuation costs depend on other sets' costs: fill in dependency order.
    fn fill_cont_min(&mut self) {
        let order = [
            Some(self.tool_names),
            Some(self.etypes),
            Some(self.action_open),
            Some(self.after_reflection),
            Some(self.begin),
        ];
        for set in 0..self.alts.len() as u16 {
            if !order.contains(&Some(set)) {
                self.fill_set(set);
            }
        }
        for set in order.into_iter().flatten() {
            self.fill_set(set);
        }
    }

    fn fill_set(&mut self, set: u16) {
        let mins: Vec<u32> = self.alts[set as usize].conts.clone().into_iter().map(|c| self.cont_min(c)).collect();
        self.alts[set as usize].cont_min = mins;
    }

    /// A recognizer at the start of a turn.
    pub fn start(&self) -> Recognizer {
        let mut r = Recognizer { stack: [Frame::Empty; STACK], len: 0 };
        r.push(Frame::Alt { set: self.begin, at: 0, alive: all_alive(self.alts[self.begin as usize].lits.len()) });
        r
    }
}

fn all_alive(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// A JSON / Python double-quoted string literal (the escapes both languages share).
fn quote(s: &str) -> String {
    format!("\"{}\"", escape_json(s))
}

fn escape_json(s: &str) -> String {
    let v = serde_json::to_string(s).unwrap_or_default();
    v[1..v.len() - 1].to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArgPhase {
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
enum SeqPhase {
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
enum Frame {
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
type More = [Option<Frame>; 6];

/// What a byte does to the top frame.
enum Step {
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

fn more(list: &[Frame]) -> More {
    let mut out = [None; 6];
    for (slot, f) in out.iter_mut().zip(list) {
        *slot = Some(*f);
    }
    out
}

/// The state of a turn being decoded: a stack of frames, cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recognizer {
    stack: [Frame; STACK],
    len: u8,
}

impl Recognizer {
    fn push(&mut self, f: Frame) -> bool {
        if (self.len as usize) < STACK {
            self.stack[self.len as usize] = f;
            self.len += 1;
            true
        } else {
            false
        }
    }

    fn replace_top(&mut self, first: Frame, more: More) -> bool {
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
    fn memo_key(&self, longest: usize) -> Recognizer {
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

fn frame_min(g: &Grammar, f: &Frame) -> u32 {
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
fn alt_step<'a>(lits: impl Iterator<Item = &'a [u8]>, at: u16, alive: u64, b: u8) -> (u64, Option<usize>) {
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

fn is_line_byte(b: u8) -> bool {
    b != b'\n' && b != b'\r' && b != b'`'
}

fn step(g: &Grammar, f: Frame, b: u8) -> Step {
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
            seq_step(
                g,
                b,
                b']',
                phase,
                count >= min,
                count < max,
                |phase| arr(count, phase),
                || (arr(count + 1, SeqPhase::AfterItem), more(&[Frame::Value { kind: item }])),
            )
        }
        Frame::Object { count, phase } => {
            let obj = |count, phase| Frame::Object { count, phase };
            seq_step(
                g,
                b,
                b'}',
                phase,
                true,
                count < MAX_KEYS,
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

/// A bracketed sequence of items separated by the item separator, closed by `close`.
#[allow(clippy::too_many_arguments)] // the array and object frames share this walk
fn seq_step(
    g: &Grammar,
    b: u8,
    close: u8,
    phase: SeqPhase,
    may_close: bool,
    may_add: bool,
    with: impl Fn(SeqPhase) -> Frame,
    item: impl Fn() -> (Frame, More),
) -> Step {
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

fn args_step(g: &Grammar, tool: u16, used: u64, phase: ArgPhase, b: u8) -> Step {
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

fn value_start(g: &Grammar, kind: u16, b: u8) -> Step {
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

fn continuation(g: &Grammar, c: Cont) -> Step {
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

/// The vocabulary as a byte trie, for finding the tokens a grammar state allows.
#[derive(Debug, Clone)]
pub struct TokenTrie {
    /// Children of each node: `(byte, node)`, sorted by byte.
    children: Vec<Vec<(u8, u32)>>,
    /// Tokens whose bytes end at each node.
    tokens: Vec<Vec<u32>>,
    /// The bytes of each token (empty for special tokens, which are not in the trie).
    bytes: Vec<Vec<u8>>,
    /// Bytes of the longest token.
    longest: usize,
}

/// The tokens a grammar state accepts, by id, each with the fewest bytes that finish the turn
/// after it (what the remaining token budget is checked against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    tokens: Vec<u32>,
    finish: Vec<u32>,
}

/// The tokens allowed at one step: those of a state's [`Accepted`] whose shortest finish fits
/// in `room` bytes. Cheap to keep per generated token (a shared list and a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    accepted: Arc<Accepted>,
    room: u32,
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
    memo: Mutex<(HashMap<Recognizer, Arc<Accepted>>, usize)>,
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
    fn accepted(&self, g: &Grammar, state: &Recognizer) -> Accepted {
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

#[cfg(test)]
mod tests {
    use super::*;
    use regrpo_engine::ToolSuite;
    use regrpo_schemas::Action;
    use regrpo_schemas::react::{Reflection, format_assistant};

    fn python() -> Grammar {
        Grammar::new(Surface::Python, &ToolSuite::builtin().specs())
    }

    fn accepts(g: &Grammar, text: &str) -> bool {
        let mut r = g.start();
        r.feed_all(g, text.as_bytes()) && r.is_done()
    }

    fn turn(code: &str, reflect: bool) -> String {
        let a = Action::parse_python(code).unwrap();
        let r = Reflection {
            error_type: "ArgInvalid".into(),
            evidence: "The observation says 'Error: file not found: bil.txt', so the file does not exist.".into(),
            fix_plan: "Set file_path to 'bill.txt' instead of 'bil.txt'.".into(),
        };
        format_assistant(reflect.then_some(&r), Some("Read the bill."), &a)
    }

    #[test]
    fn the_printed_layout_of_every_builtin_call_is_accepted() {
        let g = python();
        for code in [
            "inspect_file_as_text(file_path=\"bill.txt\")",
            "crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])",
            "add_text(image_path=\"shapes.png\", text=\"A3\", position=[4, 6])",
            "draw_box(image_path=\"a.png\", box=[1, 2, 3, 4], color=\"black\")",
            "search_text(query=\"Varlo founded year\", top_k=1)",
            "calculator(expression=\"17 * 2350 * (1 - 10 / 100)\")",
            "final_answer(answer=\"say \\\"hi\\\"\")",
            "final_answer(answer=12.5)",
            "sql_query(query=\"SELECT sum(revenue) AS total FROM sales WHERE region = 'north'\")",
        ] {
            for reflect in [false, true] {
                let t = turn(code, reflect);
                assert!(accepts(&g, &t), "refused:\n{t}");
            }
        }
        assert!(accepts(&g, "Code:\n```py\nimage_info(image_path=\"a.png\")\n```"), "no thought");
    }

    #[test]
    fn calls_outside_the_specs_are_refused() {
        let g = python();
        for bad in [
            "Code:\n```py\nprint(\"x\")\n```",
            "Code:\n```py\ncrop(image_path=\"a.png\")\n```",
            "Code:\n```py\ncrop(image_path=\"a.png\", box=[0, 0, 32])\n```",
            "Code:\n```py\ncrop(image_path=1, box=[0, 0, 32, 32])\n```",
            "Code:\n```py\ninspect_file_as_text(filepath=\"a.txt\")\n```",
            "Code:\n```py\ninspect_file_as_text(file_path=\"a.txt\", file_path=\"b.txt\")\n```",
            "Code:\n```py\ndraw_box(image_path=\"a.png\", box=[1, 2, 3, 4], color=\"blackish\")\n```",
            "Reflection:\n- ErrorType: Typo\n- Evidence: x\n- FixPlan: y\nCode:\n```py\nimage_info(image_path=\"a.png\")\n```",
            "Thought: a\nb\n\nCode:\n```py\nimage_info(image_path=\"a.png\")\n```",
        ] {
            assert!(!accepts(&g, bad), "accepted:\n{bad}");
        }
    }

    #[test]
    fn json_calls_follow_the_compact_layout() {
        let g = Grammar::new(Surface::Json, &ToolSuite::builtin().specs());
        let a = Action::parse_json(r#"{"name": "crop", "arguments": {"image_path": "a.png", "box": [0, 0, 8, 8]}}"#)
            .unwrap();
        let t = format_assistant(None, Some("Crop it."), &a);
        assert!(accepts(&g, &t), "{t}");
        assert!(!accepts(&g, &t.replace("\"box\"", "\"bbox\"")));
    }

    #[test]
    fn the_shortest_finish_is_exact_at_every_prefix() {
        // Walking a turn byte by byte, the remaining bytes always cover the shortest finish, and
        // at the start the shortest finish is the shortest turn there is.
        let g = python();
        let t = turn("crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])", true);
        let mut r = g.start();
        for (i, b) in t.bytes().enumerate() {
            assert!(r.min_to_finish(&g) as usize <= t.len() - i, "at byte {i}");
            assert!(r.feed(&g, b));
        }
        assert!(r.is_done() && r.min_to_finish(&g) == 0);
        let shortest = "Code:\n```py\nsql_query(query=\"\")\n```";
        assert!(accepts(&g, shortest));
        assert_eq!(g.start().min_to_finish(&g) as usize, shortest.len());
    }

    #[test]
    fn the_trie_allows_exactly_the_tokens_the_grammar_takes() {
        let g = python();
        let vocab: Vec<Option<Vec<u8>>> = ["Code", ":\n", "```", "py\n", "Th", "ought: ", "x", "\n", "`", "crop("]
            .iter()
            .map(|s| Some(s.as_bytes().to_vec()))
            .chain([None])
            .collect();
        let trie = TokenTrie::new(&vocab);
        let ids: Vec<u32> = trie.allowed(&g, &g.start(), 100, 10).into_iter().map(|(t, _)| t).collect();
        assert_eq!(ids.iter().copied().collect::<std::collections::BTreeSet<_>>(), [0, 4].into_iter().collect());
        // Too little budget left for the shortest call: nothing fits.
        assert!(trie.allowed(&g, &g.start(), 10, 10).is_empty());
    }

    #[test]
    fn the_memo_allows_what_the_walk_allows_at_every_prefix_and_budget() {
        let g = python();
        // Every byte, and longer tokens that cross frames (a literal into a line, a value into
        // the argument list).
        let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        for w in [
            "Code:\n",
            "```py\n",
            "Reflection:\n",
            "- Evidence: ",
            "crop(",
            "image_path=\"",
            "\", box=[",
            ", ",
            "32",
            "]",
            ")\n```",
            "aaaaaaaa",
            "a\nb",
            "Thought: ",
        ] {
            vocab.push(Some(w.as_bytes().to_vec()));
        }
        vocab.push(None);
        let stop = (vocab.len() - 1) as u32;
        let trie = TokenTrie::new(&vocab);
        let masks = Masks::default();
        let long_line = format!(
            "Thought: {}\n\nCode:\n```py\nimage_info(image_path=\"{}\")\n```",
            "a".repeat(398),
            "b".repeat(197)
        );
        for text in [turn("crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])", true), long_line] {
            let mut r = g.start();
            for (i, b) in text.bytes().enumerate() {
                for budget in [0, 1, 2, 3, 8, 40, 500] {
                    let want: Vec<u32> = {
                        let mut v: Vec<u32> = trie.allowed(&g, &r, budget, stop).into_iter().map(|(t, _)| t).collect();
                        v.sort_unstable();
                        v
                    };
                    let got: Vec<u32> =
                        masks.allowed(&g, &trie, &r, budget, stop).map(|a| a.iter().collect()).unwrap_or_default();
                    assert_eq!(got, want, "byte {i} of {text:?}, budget {budget}");
                }
                assert!(r.feed(&g, b));
            }
            assert!(r.is_done());
            assert_eq!(masks.allowed(&g, &trie, &r, 1, stop).unwrap().iter().collect::<Vec<_>>(), vec![stop]);
        }
    }
}
