//! Python-call code blocks, the MAT / smolagents action form.
//!
//! ```text
//! code ──tokenize──▶ tokens ──scan──▶ calls (name, args with byte spans, assignment target)
//!                                      │ arguments that are literals → JSON values
//!                                      │ anything else (a variable, an expression) → kept as text, flagged
//!                                      ▼
//!                         edited calls are spliced back into the original text by span
//! ```
//!
//! This is not a Python interpreter: it finds calls of bare names that are not Python builtins,
//! reads literal arguments (strings, numbers, booleans, `None`, lists, tuples, dicts), resolves a
//! bare variable only when the same block assigned it a literal earlier, and never guesses.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Byte range `[start, end)` into the code text.
pub type Span = (usize, usize);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Name(String),
    Number(String),
    /// A string literal: its decoded value, or `None` when it cannot be a literal (f-string
    /// with placeholders, bytes).
    Str(Option<String>),
    Op(&'static str),
    Newline,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

const OPS: [&str; 47] = [
    "**=", "//=", ">>=", "<<=", "...", "->", ":=", "==", "!=", "<=", ">=", "**", "//", "<<", ">>", "+=", "-=", "*=",
    "/=", "%=", "&=", "|=", "^=", "@=", "(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "=", "+", "-", "*", "/", "%",
    "<", ">", "&", "|", "^", "~", "@",
];

/// Splits code into tokens. Newlines inside brackets and after a line continuation are not
/// statement ends; comments are dropped.
pub(crate) fn tokenize(code: &str) -> Result<Vec<Token>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\x0c' => i += 1,
            b'\\' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            // A line continuation ends with `\r\n` or a lone `\r`: never step into the next character.
            b'\\' if bytes.get(i + 1) == Some(&b'\r') => i += if bytes.get(i + 2) == Some(&b'\n') { 3 } else { 2 },
            b'\n' => {
                if depth == 0 {
                    out.push(Token { tok: Tok::Newline, span: (i, i + 1) });
                }
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'0'..=b'9' => {
                let end = scan_number(bytes, i);
                out.push(Token { tok: Tok::Number(code[i..end].to_string()), span: (i, end) });
                i = end;
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = scan_number(bytes, i);
                out.push(Token { tok: Tok::Number(code[i..end].to_string()), span: (i, end) });
                i = end;
            }
            b'"' | b'\'' => {
                let (tok, end) = scan_string(code, i, "")?;
                out.push(Token { tok, span: (i, end) });
                i = end;
            }
            _ if is_ident_start(code, i) => {
                let end = scan_ident(code, i);
                let word = &code[i..end];
                // String prefixes: r"", b'', f"", rb"", …
                if matches!(bytes.get(end), Some(b'"' | b'\''))
                    && word.len() <= 2
                    && word.chars().all(|ch| "rRbBuUfF".contains(ch))
                {
                    let (tok, send) = scan_string(code, end, word)?;
                    out.push(Token { tok, span: (i, send) });
                    i = send;
                } else {
                    out.push(Token { tok: Tok::Name(word.to_string()), span: (i, end) });
                    i = end;
                }
            }
            _ => {
                let rest = &code[i..];
                let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                    // `!`, `$`, `?` and other characters Python would reject: keep going as an
                    // operator so that a block with a stray character still yields its calls.
                    let ch_len = rest.chars().next().map_or(1, char::len_utf8);
                    out.push(Token { tok: Tok::Op("?"), span: (i, i + ch_len) });
                    i += ch_len;
                    continue;
                };
                match *op {
                    "(" | "[" | "{" => depth += 1,
                    ")" | "]" | "}" => depth = depth.saturating_sub(1),
                    _ => {}
                }
                out.push(Token { tok: Tok::Op(op), span: (i, i + op.len()) });
                i += op.len();
            }
        }
    }
    Ok(out)
}

fn is_ident_start(code: &str, i: usize) -> bool {
    code[i..].chars().next().is_some_and(|c| c == '_' || c.is_alphabetic())
}

fn scan_ident(code: &str, i: usize) -> usize {
    let mut end = i;
    for c in code[i..].chars() {
        if c == '_' || c.is_alphanumeric() {
            end += c.len_utf8();
        } else {
            break;
        }
    }
    end
}

fn scan_number(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len() {
        let c = bytes[i];
        let exp_sign = (c == b'+' || c == b'-')
            && i > start
            && matches!(bytes[i - 1], b'e' | b'E')
            && !bytes[start..i].starts_with(b"0x")
            && !bytes[start..i].starts_with(b"0X");
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || exp_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Scans a string literal starting at the quote at `start`; returns its token and end offset.
fn scan_string(code: &str, start: usize, prefix: &str) -> Result<(Tok, usize)> {
    let bytes = code.as_bytes();
    let quote = bytes[start];
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let qlen = if triple { 3 } else { 1 };
    let raw = prefix.contains(['r', 'R']);
    let mut i = start + qlen;
    let body_start = i;
    loop {
        if i >= bytes.len() {
            return Err(Error::PyCode { offset: start, reason: "unterminated string literal".into() });
        }
        let c = bytes[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if !triple && c == b'\n' {
            return Err(Error::PyCode { offset: start, reason: "end of line inside a single-quoted string".into() });
        }
        if c == quote && (!triple || (bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote))) {
            break;
        }
        i += 1;
    }
    let body = &code[body_start..i];
    let end = i + qlen;
    let is_bytes = prefix.contains(['b', 'B']);
    let is_f = prefix.contains(['f', 'F']);
    let value = if is_bytes || (is_f && body.contains('{')) {
        None
    } else if raw {
        Some(body.to_string())
    } else {
        unescape(body)
    };
    Ok((Tok::Str(value), end))
}

/// Decodes Python escape sequences; `None` for an escape we do not model (`\N{…}`).
fn unescape(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                for _ in 0..2 {
                    match chars.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v)?);
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            'N' => return None,
            other => {
                // Python keeps unknown escapes verbatim.
                out.push('\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Names that are Python builtins or keywords: calls to them are code, not tool calls.
const NOT_TOOLS: &[&str] = &[
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "breakpoint",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "compile",
    "complex",
    "delattr",
    "dict",
    "dir",
    "divmod",
    "enumerate",
    "eval",
    "exec",
    "filter",
    "float",
    "format",
    "frozenset",
    "getattr",
    "globals",
    "hasattr",
    "hash",
    "help",
    "hex",
    "id",
    "input",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "locals",
    "map",
    "max",
    "memoryview",
    "min",
    "next",
    "object",
    "oct",
    "open",
    "ord",
    "pow",
    "print",
    "property",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "setattr",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "type",
    "vars",
    "zip",
    "__import__",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "del",
    "elif",
    "else",
    "except",
    "for",
    "from",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "not",
    "or",
    "return",
    "while",
    "with",
    "yield",
    "raise",
];

/// One argument of a call: positional (`name == None`) or keyword.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// The keyword, or `None` for a positional argument.
    pub name: Option<String>,
    /// The value as a literal, or the expression text kept verbatim.
    pub value: ArgValue,
    /// Where the original argument text sits in the code; `None` once edited or when built.
    pub(crate) span: Option<Span>,
}

impl Arg {
    /// A positional argument holding a literal.
    pub fn positional(value: Value) -> Arg {
        Arg { name: None, value: ArgValue::Literal(value), span: None }
    }

    /// A keyword argument holding a literal.
    pub fn keyword(name: impl Into<String>, value: Value) -> Arg {
        Arg { name: Some(name.into()), value: ArgValue::Literal(value), span: None }
    }
}

/// The value of an argument.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// A literal read from the code (or given by a JSON call).
    Literal(Value),
    /// Not a literal: a variable or expression, kept as written. `resolved` holds the literal
    /// the same block assigned to that variable earlier, when there was exactly such an
    /// assignment; otherwise the argument is unresolved and flagged.
    Expr { text: String, resolved: Option<Value> },
}

impl ArgValue {
    /// The JSON value when it is known, `None` for an unresolved expression.
    pub fn value(&self) -> Option<&Value> {
        match self {
            ArgValue::Literal(v) => Some(v),
            ArgValue::Expr { resolved, .. } => resolved.as_ref(),
        }
    }

    /// Whether the value is known (a literal, or a variable bound to one).
    pub fn is_resolved(&self) -> bool {
        self.value().is_some()
    }
}

/// One call found in a code block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PyCall {
    pub name: String,
    pub args: Vec<Arg>,
    pub assign: Option<String>,
    /// From the first byte of the name to the byte after `)`.
    pub span: Span,
}

/// Finds the tool calls of a code block.
pub(crate) fn parse_calls(code: &str) -> Result<Vec<PyCall>> {
    let toks = tokenize(code)?;
    let assignments = literal_assignments(&toks);
    let mut calls = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let Tok::Name(name) = &t.tok else { continue };
        if !matches!(toks.get(i + 1), Some(Token { tok: Tok::Op("("), .. })) {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &toks[p].tok);
        let after_dot = matches!(prev, Some(Tok::Op(".")));
        let is_def = matches!(prev, Some(Tok::Name(k)) if k == "def" || k == "class");
        if after_dot || is_def || NOT_TOOLS.contains(&name.as_str()) {
            continue;
        }
        let Some(close) = matching_close(&toks, i + 1) else {
            return Err(Error::PyCode { offset: t.span.0, reason: format!("unclosed `(` of call `{name}`") });
        };
        let args = split_args(code, &toks[i + 2..close], t.span.0, &assignments)?;
        // `x = tool(...)` at the start of a statement.
        let assign = match (i.checked_sub(2).map(|p| &toks[p]), prev) {
            (Some(Token { tok: Tok::Name(var), .. }), Some(Tok::Op("=")))
                if i < 3 || matches!(toks[i - 3].tok, Tok::Newline | Tok::Op(";")) =>
            {
                Some(var.clone())
            }
            _ => None,
        };
        calls.push(PyCall { name: name.clone(), args, assign, span: (t.span.0, toks[close].span.1) });
    }
    Ok(calls)
}

fn matching_close(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// `(variable, offset, literal)` for every statement `NAME = <literal>` in the block.
fn literal_assignments(toks: &[Token]) -> Vec<(String, usize, Option<Value>)> {
    let mut out = Vec::new();
    let mut stmt_start = 0;
    for (i, t) in toks.iter().enumerate() {
        let ends = matches!(t.tok, Tok::Newline | Tok::Op(";"));
        if !ends && i + 1 != toks.len() {
            continue;
        }
        let end = if ends { i } else { i + 1 };
        let stmt = &toks[stmt_start..end];
        if let [Token { tok: Tok::Name(var), .. }, Token { tok: Tok::Op("="), .. }, rest @ ..] = stmt
            && !rest.is_empty()
        {
            out.push((var.clone(), stmt[0].span.0, parse_literal(rest)));
        }
        stmt_start = i + 1;
    }
    out
}

fn split_args(
    code: &str,
    toks: &[Token],
    call_at: usize,
    assignments: &[(String, usize, Option<Value>)],
) -> Result<Vec<Arg>> {
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (j, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth -= 1,
            _ => {}
        }
        let at_comma = depth == 0 && t.tok == Tok::Op(",");
        if at_comma || j + 1 == toks.len() {
            let end = if at_comma { j } else { j + 1 };
            if start < end {
                args.push(make_arg(code, &toks[start..end], call_at, assignments));
            }
            start = j + 1;
        }
    }
    Ok(args)
}

fn make_arg(code: &str, toks: &[Token], call_at: usize, assignments: &[(String, usize, Option<Value>)]) -> Arg {
    let (name, value_toks) = match toks {
        [Token { tok: Tok::Name(k), .. }, Token { tok: Tok::Op("="), .. }, rest @ ..] if !rest.is_empty() => {
            (Some(k.clone()), rest)
        }
        _ => (None, toks),
    };
    let span = (toks[0].span.0, toks[toks.len() - 1].span.1);
    let vspan = (value_toks[0].span.0, value_toks[value_toks.len() - 1].span.1);
    let value = match parse_literal(value_toks) {
        Some(v) => ArgValue::Literal(v),
        None => {
            let resolved = match value_toks {
                [Token { tok: Tok::Name(var), .. }] => assignments
                    .iter()
                    .rev()
                    .find(|(v, at, _)| v == var && *at < call_at)
                    .and_then(|(_, _, lit)| lit.clone()),
                _ => None,
            };
            ArgValue::Expr { text: code[vspan.0..vspan.1].to_string(), resolved }
        }
    };
    Arg { name, value, span: Some(span) }
}

/// Parses Python source text that is one literal (`{'a': [1, None]}`) into JSON; `None` if the
/// text is anything else.
pub fn literal_from_text(text: &str) -> Option<Value> {
    parse_literal(&tokenize(text).ok()?)
}

/// Parses a whole token slice as one literal; `None` if it is anything else.
pub(crate) fn parse_literal(toks: &[Token]) -> Option<Value> {
    let mut pos = 0;
    let v = literal_at(toks, &mut pos, 0)?;
    (pos == toks.len()).then_some(v)
}

const MAX_LITERAL_DEPTH: usize = 64;

fn literal_at(toks: &[Token], pos: &mut usize, depth: usize) -> Option<Value> {
    if depth > MAX_LITERAL_DEPTH {
        return None;
    }
    let t = toks.get(*pos)?;
    match &t.tok {
        Tok::Str(s) => {
            let mut acc = s.clone()?;
            *pos += 1;
            // Adjacent literals concatenate: "a" "b" == "ab".
            while let Some(Token { tok: Tok::Str(next), .. }) = toks.get(*pos) {
                acc.push_str(next.as_deref()?);
                *pos += 1;
            }
            Some(Value::String(acc))
        }
        Tok::Number(n) => {
            *pos += 1;
            number(n, false)
        }
        Tok::Op(sign @ ("-" | "+")) => {
            let Some(Token { tok: Tok::Number(n), .. }) = toks.get(*pos + 1) else { return None };
            *pos += 2;
            number(n, *sign == "-")
        }
        Tok::Name(n) => {
            let v = match n.as_str() {
                "True" => Value::Bool(true),
                "False" => Value::Bool(false),
                "None" => Value::Null,
                _ => return None,
            };
            *pos += 1;
            Some(v)
        }
        Tok::Op(open @ ("[" | "(")) => {
            let close = if *open == "[" { "]" } else { ")" };
            *pos += 1;
            let mut items = Vec::new();
            let mut saw_comma = false;
            loop {
                if toks.get(*pos)?.tok == Tok::Op(close) {
                    *pos += 1;
                    break;
                }
                items.push(literal_at(toks, pos, depth + 1)?);
                match &toks.get(*pos)?.tok {
                    Tok::Op(",") => {
                        saw_comma = true;
                        *pos += 1;
                    }
                    Tok::Op(c) if *c == close => {}
                    _ => return None,
                }
            }
            // `(x)` is a parenthesised value, `(x,)` a tuple.
            if *open == "(" && items.len() == 1 && !saw_comma {
                return items.pop();
            }
            Some(Value::Array(items))
        }
        Tok::Op("{") => {
            *pos += 1;
            let mut map = Map::new();
            loop {
                if toks.get(*pos)?.tok == Tok::Op("}") {
                    *pos += 1;
                    break;
                }
                let Value::String(key) = literal_at(toks, pos, depth + 1)? else { return None };
                if toks.get(*pos)?.tok != Tok::Op(":") {
                    return None; // a set, not a dict
                }
                *pos += 1;
                let v = literal_at(toks, pos, depth + 1)?;
                map.insert(key, v);
                match &toks.get(*pos)?.tok {
                    Tok::Op(",") => *pos += 1,
                    Tok::Op("}") => {}
                    _ => return None,
                }
            }
            Some(Value::Object(map))
        }
        _ => None,
    }
}

fn number(text: &str, negative: bool) -> Option<Value> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let lower = clean.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        u128::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u128::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        u128::from_str_radix(b, 2).ok()
    } else if lower.bytes().all(|b| b.is_ascii_digit()) {
        lower.parse::<u128>().ok()
    } else {
        None
    };
    // Every integer JSON holds (i64 and u64, as `py_literal` prints them) reads back exact;
    // a larger one becomes a float, as it has no JSON integer form.
    let exact = int.and_then(|i| match negative {
        true => i128::try_from(i).ok().and_then(|i| i64::try_from(-i).ok()).map(Number::from),
        false => u64::try_from(i).ok().map(Number::from),
    });
    if let Some(n) = exact {
        return Some(Value::Number(n));
    }
    if lower.ends_with('j') || lower.starts_with("0x") {
        return None; // complex numbers and overflowing hex have no JSON form
    }
    let f: f64 = lower.parse().ok()?;
    Number::from_f64(if negative { -f } else { f }).map(Value::Number)
}

/// Prints a JSON value as the Python literal that reads back to it.
pub fn py_literal(v: &Value) -> String {
    let mut s = String::new();
    write_py_literal(v, &mut s);
    s
}

fn write_py_literal(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            let text = n.to_string();
            out.push_str(&text);
            if n.is_f64() && !text.contains(['.', 'e', 'E']) {
                out.push_str(".0");
            }
        }
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_literal(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_literal(&Value::String(k.clone()), out);
                out.push_str(": ");
                write_py_literal(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lit(src: &str) -> Option<Value> {
        parse_literal(&tokenize(src).unwrap())
    }

    #[test]
    fn literals_of_every_kind_become_json() {
        assert_eq!(lit("'a\\nb'"), Some(json!("a\nb")));
        assert_eq!(lit("r'a\\nb'"), Some(json!("a\\nb")));
        assert_eq!(lit("\"\"\"x\ny\"\"\""), Some(json!("x\ny")));
        assert_eq!(lit("'a' 'b'"), Some(json!("ab")));
        assert_eq!(lit("-3"), Some(json!(-3)));
        assert_eq!(lit("1_000"), Some(json!(1000)));
        assert_eq!(lit("2.5e-3"), Some(json!(0.0025)));
        assert_eq!(lit("0x1F"), Some(json!(31)));
        assert_eq!(lit("[1, (2, 3), {'k': None}]"), Some(json!([1, [2, 3], {"k": null}])));
        assert_eq!(lit("(True,)"), Some(json!([true])));
        assert_eq!(lit("(False)"), Some(json!(false)));
        assert_eq!(lit("x"), None);
        assert_eq!(lit("1 + 2"), None);
        assert_eq!(lit("f'{x}'"), None);
        assert_eq!(lit("f'plain'"), Some(json!("plain")));
        assert_eq!(lit("{1, 2}"), None);
    }

    #[test]
    fn calls_skip_builtins_methods_and_definitions() {
        let code = "from PIL import Image\nimg = Image.open('a.png')\ndef helper(x):\n    return x\nr = visualizer(question=\"q\", image_path='a.png')\nprint(len(r), helper(1))\n";
        let calls = parse_calls(code).unwrap();
        let names: Vec<_> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["visualizer", "helper"]);
        assert_eq!(calls[0].assign.as_deref(), Some("r"));
        assert_eq!(calls[0].args[0].name.as_deref(), Some("question"));
        assert_eq!(&code[calls[0].span.0..calls[0].span.1], "visualizer(question=\"q\", image_path='a.png')");
    }

    #[test]
    fn variables_bound_to_literals_resolve_and_others_stay_flagged() {
        let code = "p = 'a.png'\nn = 160 * 2\nvisualizer(image_path=p)\nfinal_answer(n)\n";
        let calls = parse_calls(code).unwrap();
        assert_eq!(calls[0].args[0].value, ArgValue::Expr { text: "p".into(), resolved: Some(json!("a.png")) });
        assert_eq!(calls[1].args[0].value, ArgValue::Expr { text: "n".into(), resolved: None });
        assert!(!calls[1].args[0].value.is_resolved());
    }

    #[test]
    fn unterminated_string_is_an_error_with_its_offset() {
        let err = parse_calls("x = tool('abc)\n").unwrap_err();
        assert!(matches!(err, Error::PyCode { offset: 9, .. }), "{err}");
    }

    #[test]
    fn deep_nesting_is_not_a_literal_and_does_not_overflow() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(lit(&deep), None);
    }

    #[test]
    fn py_literal_reads_back_to_the_same_value() {
        for v in [json!("q\"uo\\te\n\u{1}é"), json!(1.0), json!(-2), json!([1, {"a": null}]), json!(true)] {
            assert_eq!(lit(&py_literal(&v)), Some(v));
        }
    }
}
