//! Generated inputs for the hand-written parsers of actions and model output: the Python-call
//! parser, JSON calls, and assistant turns as a policy writes them. Random text never panics
//! and, when it parses, prints back to itself; generated calls and turns round-trip byte for
//! byte. Inputs that once failed are kept in `regressions`.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use crate::action::{Action, Arg, Call, Surface};
use crate::react::{Reflection, format_assistant, parse_assistant};

/// JSON values of every kind, nested a few levels, with strings that need escaping.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
        "[a-z \"'\\\\\n\t#(),=\\[\\]{}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_ ]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A name the Python parser takes for a tool: not a builtin, not a keyword.
fn tool_name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,10}(\\.[a-z_][a-z0-9_]{0,6})?".prop_filter("a tool name", |n| {
        !n.contains('.') && Action::parse_python(&format!("{n}()")).is_ok_and(|a| a.calls.len() == 1)
    })
}

fn call() -> impl Strategy<Value = Call> {
    (
        tool_name(),
        prop::collection::vec(json_value(), 0..3),
        prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", json_value(), 0..3),
    )
        .prop_filter("keywords are not Python keywords", |(_, _, kw)| {
            kw.keys().all(|k| Action::parse_python(&format!("t({k}=1)")).is_ok_and(|a| a.arguments().contains_key(k)))
        })
        .prop_map(|(name, positional, keywords)| {
            let mut args: Vec<Arg> = positional.into_iter().map(Arg::positional).collect();
            args.extend(keywords.into_iter().map(|(k, v)| Arg::keyword(k, v)));
            Call::new(name, args)
        })
}

/// Text that looks like code often enough to reach deep into the tokenizer.
fn code_like() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z_0-9 ()\\[\\]{},.:=\"'\\\\#\n\ré+-]{0,60}", "[a-z]{1,4}\\([^)]{0,30}\\)?",]
}

/// One line of prose: what a reflection field or a thought holds.
fn line() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 ,.;'()=_-]{0,40}[A-Za-z0-9.]".prop_map(|s| s.trim().to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn python_text_never_panics_and_prints_back_to_itself(code in code_like()) {
        if let Ok(a) = Action::parse_python(&code) {
            prop_assert_eq!(a.to_text(), code);
        }
    }

    #[test]
    fn generated_python_calls_round_trip_byte_for_byte(calls in prop::collection::vec(call(), 1..3)) {
        let mut action = Action::single(Surface::Python, calls[0].clone());
        action.calls.extend(calls[1..].iter().cloned());
        let text = action.to_text();
        let parsed = Action::parse_python(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(parsed.calls.len(), calls.len(), "{}", text);
        for (p, c) in parsed.calls.iter().zip(&calls) {
            prop_assert_eq!(&p.name, &c.name);
            prop_assert_eq!(p.arguments(), c.arguments(), "{}", text);
        }
        prop_assert_eq!(parsed.to_text(), text);
    }

    #[test]
    fn an_edited_python_call_reads_back_with_the_edit(c in call(), value in json_value()) {
        let text = Action::single(Surface::Python, c).to_text();
        let mut a = Action::parse_python(&text).unwrap();
        a.calls[0].set_arg("edited", value.clone());
        let again = Action::parse_python(&a.to_text()).unwrap();
        let args = again.arguments();
        prop_assert_eq!(args.get("edited"), Some(&value), "{}", a.to_text());
    }

    #[test]
    fn json_calls_never_panic_and_generated_ones_round_trip(text in any::<String>(), c in call()) {
        let _ = Action::parse_json(&text);
        let a = Action::single(Surface::Json, c);
        let parsed = Action::parse_json(&a.to_text()).unwrap();
        prop_assert_eq!(parsed.arguments(), a.arguments());
        prop_assert_eq!(parsed.to_text(), a.to_text());
    }

    #[test]
    fn model_output_never_panics(text in prop_oneof![
        any::<String>(),
        "(Reflection:\n- ErrorType: |- Evidence: |Thought: |Code:\n```py\n|Action:\n```json\n|```|\n|[a-z(\"=)]{1,8}){0,12}",
    ]) {
        let turn = parse_assistant(&text);
        if let Some((surface, code)) = &turn.action {
            let _ = Action::parse(*surface, code);
        }
    }

    #[test]
    fn generated_turns_read_back(
        reflection in prop::option::of((line(), line(), line())),
        thought in prop::option::of(line()),
        c in call(),
        json in any::<bool>(),
    ) {
        let reflection = reflection.map(|(error_type, evidence, fix_plan)| Reflection { error_type, evidence, fix_plan });
        let action = Action::single(if json { Surface::Json } else { Surface::Python }, c);
        let text = format_assistant(reflection.as_ref(), thought.as_deref(), &action);
        let turn = parse_assistant(&text);
        prop_assert_eq!(&turn.reflection, &reflection, "{}", text);
        prop_assert_eq!(turn.thought.as_deref(), thought.as_deref(), "{}", text);
        prop_assert_eq!(turn.action, Some((action.surface, action.to_text())), "{}", text);
    }
}

/// Inputs generated runs once got wrong, kept as they were found.
#[test]
fn regressions() {
    // `\\\r` before a multi-byte character stepped into the middle of it (a panic on slicing).
    for code in ["", "f(", "f(**", "a = f(1)\nb = g(a)", "f(1)\\\ré", "f(\\\r\n2)"] {
        if let Ok(a) = Action::parse_python(code) {
            assert_eq!(a.to_text(), code);
        }
    }
    // Integers past i64 read back as floats (u64::MAX became 1.8446744073709552e19).
    for n in [Value::from(u64::MAX), Value::from(i64::MIN), Value::from(i64::MAX)] {
        let a = Action::single(Surface::Python, Call::new("t", vec![Arg::positional(n.clone())]));
        assert_eq!(Action::parse_python(&a.to_text()).unwrap().arguments()["$0"], n);
    }
}
