//! Builtin tools never panic, whatever JSON arguments a trajectory or a policy hands them: a
//! bad argument is an error observation, and a tool that does panic fails only its own call.

use regrpo_schemas::ExecStatus;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use regrpo_engine::{CallContext, Tool, ToolOutput, ToolSpec, ToolSuite, toolworld};
use regrpo_schemas::{Arg, Call, Trajectory};
use serde_json::{Map, Value, json};

use crate::world;

/// For each builtin tool, one real call of it from a toolworld trajectory and its sandbox.
async fn real_calls(dir: &tempfile::TempDir) -> BTreeMap<String, (Map<String, Value>, Option<PathBuf>)> {
    let repo = world(dir, "tools", 60, 11).await;
    let mut out = BTreeMap::new();
    for t in repo.read::<Trajectory>(None).await.unwrap() {
        for s in &t.steps {
            let action = s.action.as_ref().unwrap().parse().unwrap();
            out.entry(action.tool().to_string())
                .or_insert_with(|| (action.arguments(), toolworld::sandbox_of(repo.workdir(), &t)));
        }
    }
    out
}

/// Any JSON, weighted toward what trips argument handling: integral floats, integers beyond
/// `i64`, non-finite-looking extremes, odd strings and lists of the wrong length.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-300i64..300).prop_map(Value::from),
        (-300i64..300).prop_map(|i| json!(i as f64)),
        prop_oneof![Just(1e300), Just(-1e300), Just(0.5), Just(-0.0), Just(9.3e18)].prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::from),
        prop_oneof![Just(""), Just("../../etc/passwd"), Just("/"), Just("a.png"), Just("SELECT")].prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A real call's arguments with some replaced by generated JSON, some dropped, maybe one added.
fn mutated(real: Map<String, Value>) -> impl Strategy<Value = Map<String, Value>> {
    let keys: Vec<String> = real.keys().cloned().collect();
    let n = keys.len();
    (prop::collection::vec((0u8..4, any_json()), n), prop::option::of(("[a-z_]{1,8}", any_json()))).prop_map(
        move |(edits, extra)| {
            let mut args = real.clone();
            for (key, (op, value)) in keys.iter().zip(edits) {
                match op {
                    0 => {
                        args.insert(key.clone(), value);
                    }
                    1 => {
                        args.remove(key);
                    }
                    _ => {}
                }
            }
            if let Some((k, v)) = extra {
                args.insert(k, v);
            }
            args
        },
    )
}

fn call_of(tool: &str, args: &Map<String, Value>) -> Call {
    Call::new(tool, args.iter().map(|(k, v)| Arg::keyword(k.clone(), v.clone())).collect())
}

#[test]
fn builtin_tools_never_panic_on_generated_arguments() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let calls = rt.block_on(real_calls(&dir));
    let suite = ToolSuite::builtin();
    assert_eq!(calls.keys().cloned().collect::<Vec<_>>(), suite.names(), "a trajectory calls every builtin tool");
    for (tool, (real, sandbox)) in calls {
        let ctx = CallContext::new(sandbox);
        // A bounded budget per tool; no persistence file, so the run is the same every time.
        let mut runner = TestRunner::new(Config { cases: 96, failure_persistence: None, ..Config::default() });
        runner
            .run(&mutated(real), |args| {
                let e = rt.block_on(suite.execute(&call_of(&tool, &args), &[], &ctx));
                if e.error_code.as_deref() == Some("tool_panicked") {
                    return Err(TestCaseError::fail(format!("{tool}({args:?}) panicked: {}", e.text)));
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn boxes_and_positions_with_float_or_huge_numbers_are_read_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let calls = real_calls(&dir).await;
    let suite = ToolSuite::builtin();
    let run = |tool: &str, key: &str, value: Value| {
        let (mut args, sandbox) = calls[tool].clone();
        args.insert(key.into(), value);
        let suite = &suite;
        let tool = tool.to_string();
        async move { suite.execute(&call_of(&tool, &args), &[], &CallContext::new(sandbox)).await }
    };
    // `10.0` is an integer to JSON Schema, and to the tool.
    let ok = run("crop", "box", json!([0, 0, 10.0, 20])).await;
    assert_eq!(ok.status, ExecStatus::Ok, "{}", ok.text);
    assert!(ok.text.starts_with("cropped [0, 0, 10, 20]"), "{}", ok.text);
    for (tool, key, value) in [
        ("crop", "box", json!([0, 0, 1.5, 3])),
        ("crop", "box", json!([0, 0, 18446744073709551615u64, 3])),
        ("crop", "box", json!([0, 0, 5])),
        ("draw_box", "box", json!([1e300, 0, 4, 4])),
        ("add_text", "position", json!([2.5, 1])),
        ("add_text", "position", json!([3])),
    ] {
        let e = run(tool, key, value.clone()).await;
        assert_ne!(e.status, ExecStatus::Ok, "{tool} {key}={value}");
        assert_ne!(e.error_code.as_deref(), Some("tool_panicked"), "{tool} {key}={value}: {}", e.text);
    }
}

/// A tool whose executor panics.
struct Panics(ToolSpec);

#[async_trait]
impl Tool for Panics {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn version(&self) -> String {
        "panics/1".into()
    }
    async fn call(&self, _: &Map<String, Value>, _: &CallContext) -> ToolOutput {
        panic!("index out of bounds: the len is 3 but the index is 3")
    }
}

#[tokio::test]
async fn a_panicking_tool_fails_its_call_and_the_suite_goes_on() {
    let mut suite = ToolSuite::builtin();
    let spec = ToolSpec {
        name: "explode".into(),
        description: "always panics".into(),
        parameters: json!({"type": "object", "properties": {}}),
        category: "function".into(),
        feasible: vec![],
    };
    suite.add(Arc::new(Panics(spec)));
    let ctx = CallContext::new(None);
    let e = suite.execute(&Call::new("explode", vec![]), &[], &ctx).await;
    assert_eq!((e.status, e.error_code.as_deref()), (ExecStatus::ToolError, Some("tool_panicked")));
    assert!(e.text.contains("index out of bounds"), "{}", e.text);
    // The suite still answers the next call.
    let again = suite.execute(&Call::new("explode", vec![]), &[], &ctx).await;
    assert_eq!(again.error_code.as_deref(), Some("tool_panicked"));
}

#[tokio::test]
async fn a_snapshot_file_without_the_trajectories_table_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = world(&dir, "damaged", 3, 1).await;
    regrpo_datasets::snapshot::create(&repo, "s1", None).await.unwrap();
    let file = repo.local_root().unwrap().join("snapshots").join("s1.json");
    let mut snap: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    snap["tables"].as_object_mut().unwrap().remove("trajectories");
    std::fs::write(&file, snap.to_string()).unwrap();
    let cfg = regrpo_engine::EngineConfig { snapshot: Some("s1".into()), ..Default::default() };
    let err = regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &cfg, None).await.expect_err("an error, not rows");
    let msg = err.to_string();
    assert!(msg.contains("s1.json") && msg.contains("`trajectories`"), "{msg}");
}
