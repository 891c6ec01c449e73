//! `calculator`: evaluates an arithmetic expression with real parse and math errors.
//!
//! Grammar (Python-like precedence): `expr := term (('+'|'-') term)*`, `term := unary (('*'|'/'|
//! '//'|'%') unary)*`, `unary := ('-'|'+') unary | power`, `power := atom ('**' unary)?`,
//! `atom := number | name | name '(' args ')' | '(' expr ')'`. Numbers may carry `_` and `,`
//! thousands separators are refused (they are a common agent mistake worth observing).

use std::sync::Arc;

use async_trait::async_trait;
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};

use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec};

pub struct Calculator {
    spec: ToolSpec,
}

impl Calculator {
    pub fn tool() -> Arc<dyn Tool> {
        Arc::new(Calculator {
            spec: ToolSpec {
                name: "calculator".into(),
                description: "Evaluate an arithmetic expression: + - * / // % **, parentheses, sqrt, abs, round, min, max, log, exp, floor, ceil, pi, e.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"expression": {"type": "string", "minLength": 1, "description": "The expression, e.g. \"17 * 2350 / 100\"."}},
                    "required": ["expression"]
                }),
                category: "code".into(),
                feasible: vec![ErrorType::ArgInvalid, ErrorType::CodeError, ErrorType::ToolMismatch, ErrorType::InfoInsufficient],
            },
        })
    }
}

#[async_trait]
impl Tool for Calculator {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> String {
        "builtin-calculator/1".into()
    }

    async fn call(&self, args: &Map<String, Value>, _ctx: &CallContext) -> ToolOutput {
        let expr = args.get("expression").and_then(Value::as_str).unwrap_or_default();
        match evaluate(expr) {
            Ok(v) => ToolOutput::ok(format_number(v)),
            Err(e) => ToolOutput::error(e.code, format!("Error: {}", e.message)),
        }
    }
}

/// A failed evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CalcError {
    pub code: &'static str,
    pub message: String,
}

/// Formats a result: integers without a fraction, others with up to 10 significant digits.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{:.10}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Evaluates an expression.
pub fn evaluate(expr: &str) -> Result<f64, CalcError> {
    let mut p = Parser { src: expr, chars: expr.char_indices().collect(), pos: 0, depth: 0 };
    p.skip_ws();
    if p.pos >= p.chars.len() {
        return Err(p.err("parse_error", "empty expression".into()));
    }
    let v = p.expr()?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        let (at, c) = p.chars[p.pos];
        return Err(p.err("parse_error", format!("unexpected character '{c}' at position {at}")));
    }
    if !v.is_finite() {
        return Err(CalcError {
            code: "math_error",
            message: format!("the result of '{expr}' is not a finite number"),
        });
    }
    Ok(v)
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, code: &'static str, what: String) -> CalcError {
        CalcError { code, message: format!("cannot parse expression '{}': {what}", self.src) }
    }

    fn math(&self, what: String) -> CalcError {
        CalcError { code: "math_error", message: format!("math error in '{}': {what}", self.src) }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|c| c.1)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let mut i = self.pos;
        for c in s.chars() {
            if self.chars.get(i).map(|x| x.1) != Some(c) {
                return false;
            }
            i += 1;
        }
        // `*` must not eat the first half of `**`, nor `/` of `//`.
        if (s == "*" || s == "/") && self.chars.get(i).map(|x| x.1) == s.chars().next() {
            return false;
        }
        self.pos = i;
        true
    }

    fn here(&self) -> String {
        match self.chars.get(self.pos) {
            Some((at, c)) => format!("unexpected character '{c}' at position {at}"),
            None => "unexpected end of expression".into(),
        }
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        self.depth += 1;
        if self.depth > 200 {
            return Err(self.err("parse_error", "expression nested too deeply".into()));
        }
        let mut v = self.term()?;
        loop {
            if self.eat("+") {
                v += self.term()?;
            } else if self.eat("-") {
                v -= self.term()?;
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(v)
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut v = self.unary()?;
        loop {
            if self.eat("//") {
                let d = self.unary()?;
                if d == 0.0 {
                    return Err(self.math("integer division by zero".into()));
                }
                v = (v / d).floor();
            } else if self.eat("*") {
                v *= self.unary()?;
            } else if self.eat("/") {
                let d = self.unary()?;
                if d == 0.0 {
                    return Err(self.math("division by zero".into()));
                }
                v /= d;
            } else if self.eat("%") {
                let d = self.unary()?;
                if d == 0.0 {
                    return Err(self.math("modulo by zero".into()));
                }
                v = v - d * (v / d).floor();
            } else {
                break;
            }
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        if self.eat("-") {
            return Ok(-self.unary()?);
        }
        if self.eat("+") {
            return self.unary();
        }
        self.power()
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.atom()?;
        if self.eat("**") || self.eat("^") {
            let exp = self.unary()?;
            let v = base.powf(exp);
            if v.is_nan() {
                return Err(self.math(format!("{base} ** {exp} is not a real number")));
            }
            return Ok(v);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, CalcError> {
        self.skip_ws();
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some('(') => {
                self.pos += 1;
                let v = self.expr()?;
                if !self.eat(")") {
                    return Err(self.err("parse_error", format!("missing ')': {}", self.here())));
                }
                Ok(v)
            }
            Some(c) if c.is_alphabetic() => self.name(),
            _ => Err(self.err("parse_error", self.here())),
        }
    }

    fn number(&mut self) -> Result<f64, CalcError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '_') {
            self.pos += 1;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            } else {
                self.pos = save;
            }
        }
        let text: String = self.chars[start..self.pos].iter().map(|c| c.1).filter(|c| *c != '_').collect();
        text.parse::<f64>().map_err(|_| {
            let at = self.chars[start].0;
            self.err("parse_error", format!("invalid number '{text}' at position {at}"))
        })
    }

    fn name(&mut self) -> Result<f64, CalcError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
        let at = self.chars[start].0;
        match name.as_str() {
            "pi" => return Ok(std::f64::consts::PI),
            "e" => return Ok(std::f64::consts::E),
            _ => {}
        }
        if !self.eat("(") {
            return Err(self.err("name_error", format!("unknown name '{name}' at position {at}")));
        }
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.expr()?);
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return Err(
                        self.err("parse_error", format!("expected ',' or ')' in the call of {name}: {}", self.here()))
                    );
                }
            }
        }
        let one = |args: &[f64]| -> Result<f64, CalcError> {
            if args.len() == 1 {
                Ok(args[0])
            } else {
                Err(self.err("type_error", format!("{name}() takes 1 argument ({} given)", args.len())))
            }
        };
        Ok(match name.as_str() {
            "sqrt" => {
                let x = one(&args)?;
                if x < 0.0 {
                    return Err(self.math(format!("sqrt of negative number {x}")));
                }
                x.sqrt()
            }
            "abs" => one(&args)?.abs(),
            "floor" => one(&args)?.floor(),
            "ceil" => one(&args)?.ceil(),
            "exp" => one(&args)?.exp(),
            "log" => {
                let x = one(&args)?;
                if x <= 0.0 {
                    return Err(self.math(format!("log of non-positive number {x}")));
                }
                x.ln()
            }
            "round" => match args.as_slice() {
                [x] => x.round(),
                [x, d] => {
                    let f = 10f64.powi(*d as i32);
                    (x * f).round() / f
                }
                _ => return Err(self.err("type_error", "round() takes 1 or 2 arguments".into())),
            },
            "min" | "max" if !args.is_empty() => {
                let it = args.iter().copied();
                if name == "min" { it.fold(f64::INFINITY, f64::min) } else { it.fold(f64::NEG_INFINITY, f64::max) }
            }
            _ => return Err(self.err("name_error", format!("unknown function '{name}' at position {at}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_with_python_precedence() {
        assert_eq!(evaluate("17 * 2350 / 100").unwrap(), 399.5);
        assert_eq!(evaluate("2 ** 3 ** 2").unwrap(), 512.0);
        assert_eq!(evaluate("-2 ** 2").unwrap(), -4.0);
        assert_eq!(evaluate("7 // 2 + 7 % 3").unwrap(), 4.0);
        assert_eq!(evaluate("round(2.345, 2) + max(1, 4, 2) + sqrt(16)").unwrap(), 10.35);
        assert_eq!(evaluate("1_000 * 2").unwrap(), 2000.0);
        assert_eq!(format_number(399.5), "399.5");
        assert_eq!(format_number(2000.0), "2000");
        assert_eq!(format_number(1.0 / 3.0), "0.3333333333");
    }

    #[test]
    fn errors_are_real_and_located() {
        let e = evaluate("17 * 2350 / 10O").unwrap_err();
        assert_eq!(e.message, "cannot parse expression '17 * 2350 / 10O': unexpected character 'O' at position 14");
        assert_eq!(evaluate("(1 + 2").unwrap_err().code, "parse_error");
        assert_eq!(evaluate("1 / (2 - 2)").unwrap_err().code, "math_error");
        assert_eq!(evaluate("sqrt(-1)").unwrap_err().code, "math_error");
        assert_eq!(evaluate("foo(1)").unwrap_err().code, "name_error");
        assert_eq!(
            evaluate("1,000 + 1").unwrap_err().message,
            "cannot parse expression '1,000 + 1': unexpected character ',' at position 1"
        );
        assert!(evaluate(&"(".repeat(1000)).is_err());
    }
}
