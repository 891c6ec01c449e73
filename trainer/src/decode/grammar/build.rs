//! Building a turn's grammar from the tool specs: the alternatives, parameters and value kinds
//! a [`Recognizer`] walks.

use super::*;

/// Longest free-text line (thought, evidence, fix plan), in bytes.
pub(super) const MAX_LINE: u16 = 400;
/// Longest string value, in bytes.
pub(super) const MAX_STRING: u16 = 200;
/// Most digits of a number.
pub(super) const MAX_DIGITS: u8 = 15;
/// Most items of an array without `maxItems`.
pub(super) const MAX_ITEMS: u16 = 32;
/// Most keys of an object value.
pub(super) const MAX_KEYS: u16 = 16;
/// Depth of the recognizer's stack.
pub(super) const STACK: usize = 16;

/// What a value must look like (from a parameter's JSON Schema).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
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
pub(super) enum Cont {
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
pub(super) struct AltSet {
    pub(super) lits: Vec<Vec<u8>>,
    pub(super) conts: Vec<Cont>,
    /// Fewest bytes the continuation of each alternative needs.
    pub(super) cont_min: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(super) struct Param {
    /// `name=` (Python) or `"name":` (JSON).
    pub(super) lit: Vec<u8>,
    pub(super) kind: u16,
    pub(super) required: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Tool {
    pub(super) params: Vec<Param>,
}

/// The grammar of an assistant turn for one set of tools and one action surface.
#[derive(Debug, Clone)]
pub struct Grammar {
    pub(super) surface: Surface,
    pub(super) kinds: Vec<Kind>,
    pub(super) alts: Vec<AltSet>,
    pub(super) lits: Vec<Vec<u8>>,
    pub(super) tools: Vec<Tool>,
    /// The alternatives at the start of the turn, after a reflection, after a thought.
    pub(super) begin: u16,
    pub(super) after_reflection: u16,
    pub(super) action_open: u16,
    pub(super) etypes: u16,
    pub(super) tool_names: u16,
    pub(super) any: u16,
    pub(super) string: u16,
    pub(super) lit_evidence: u16,
    pub(super) lit_fix_plan: u16,
    pub(super) lit_reflection_end: u16,
    pub(super) lit_thought_end: u16,
    pub(super) lit_close: u16,
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

    pub(super) fn lit(&mut self, s: &str) -> u16 {
        self.lits.push(s.as_bytes().to_vec());
        (self.lits.len() - 1) as u16
    }

    pub(super) fn alt_set(&mut self, alts: Vec<(Vec<u8>, Cont)>) -> u16 {
        let (lits, conts): (Vec<_>, Vec<_>) = alts.into_iter().take(64).unzip();
        let n = lits.len();
        self.alts.push(AltSet { lits, conts, cont_min: vec![0; n] });
        (self.alts.len() - 1) as u16
    }

    pub(super) fn kind(&mut self, k: Kind) -> u16 {
        if let Some(i) = self.kinds.iter().position(|x| *x == k) {
            return i as u16;
        }
        self.kinds.push(k);
        (self.kinds.len() - 1) as u16
    }

    pub(super) fn bool_kind(&mut self) -> u16 {
        let (t, f) = match self.surface {
            Surface::Python => ("True", "False"),
            Surface::Json => ("true", "false"),
        };
        let set = self.alt_set(vec![(t.as_bytes().to_vec(), Cont::Pop), (f.as_bytes().to_vec(), Cont::Pop)]);
        self.kind(Kind::Bool { set })
    }

    pub(super) fn null_kind(&mut self) -> u16 {
        let n = match self.surface {
            Surface::Python => "None",
            Surface::Json => "null",
        };
        let set = self.alt_set(vec![(n.as_bytes().to_vec(), Cont::Pop)]);
        self.kind(Kind::Null { set })
    }

    /// Any JSON value: string, number, boolean, null, array of any, object.
    pub(super) fn any_kind(&mut self) -> u16 {
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
    pub(super) fn schema_kind(&mut self, schema: &Value) -> u16 {
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

    pub(super) fn tool(&mut self, spec: &ToolSpec) -> Tool {
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
    pub(super) fn value_min(&self, k: u16) -> u32 {
        self.value_min_depth(k, 0)
    }

    pub(super) fn value_min_depth(&self, k: u16, depth: u8) -> u32 {
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

    pub(super) fn item_sep(&self) -> &'static [u8] {
        match self.surface {
            Surface::Python => b", ",
            Surface::Json => b",",
        }
    }

    pub(super) fn key_sep(&self) -> &'static [u8] {
        match self.surface {
            Surface::Python => b": ",
            Surface::Json => b":",
        }
    }

    /// Bytes of a parameter's name literal and its shortest value.
    pub(super) fn param_min(&self, p: &Param) -> u32 {
        p.lit.len() as u32 + self.value_min(p.kind)
    }

    /// Fewest bytes of the required parameters of tool `t` not in `used` (other than `except`),
    /// each with the separator before it when `preceded`, and the closing byte.
    pub(super) fn required_rest(&self, t: u16, used: u64, except: Option<usize>, preceded: bool) -> u32 {
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
    pub(super) fn args_min(&self, t: u16, used: u64) -> u32 {
        self.required_rest(t, used, None, used != 0)
    }

    /// Fewest bytes when one more parameter (among `alive`, `at` bytes of its name matched)
    /// must be given before closing.
    pub(super) fn args_min_adding(&self, t: u16, used: u64, alive: u64, at: u16) -> u32 {
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
    pub(super) fn cont_min(&self, c: Cont) -> u32 {
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
    pub(super) fn fill_cont_min(&mut self) {
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

    pub(super) fn fill_set(&mut self, set: u16) {
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

pub(super) fn all_alive(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// A JSON / Python double-quoted string literal (the escapes both languages share).
pub(super) fn quote(s: &str) -> String {
    format!("\"{}\"", escape_json(s))
}

pub(super) fn escape_json(s: &str) -> String {
    let v = serde_json::to_string(s).unwrap_or_default();
    v[1..v.len() - 1].to_string()
}
