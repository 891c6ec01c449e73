//! WASI tools: limits become observations, the sandbox is read-only and closed.

use regrpo_schemas::ExecStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regrpo_engine::tool::wasm::{WasmLimits, WasmTool};
use regrpo_engine::{CallContext, Tool, ToolSpec, ToolSuite};
use regrpo_schemas::Action;
use serde_json::json;

const WRITE: &str =
    r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;

fn module(body: &str) -> String {
    format!(
        "(module {WRITE} (import \"wasi_snapshot_preview1\" \"path_open\" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32))) (memory (export \"memory\") 1) {body})"
    )
}

/// Writes `{"result":"pong"}`.
pub const PONG: &str = r#"(data (i32.const 16) "{\"result\":\"pong\"}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#;

const LOOP: &str = r#"(func (export "_start") (loop $l (br $l)))"#;

const BOMB: &str = r#"(func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l)))"#;

fn open(path: &str) -> String {
    format!(
        r#"(data (i32.const 100) "{path}")
  (data (i32.const 200) "{{\"error\":\"denied\"}}")
  (data (i32.const 300) "{{\"result\":\"opened\"}}")
  (func (export "_start") (local $e i32)
    (local.set $e (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const {len}) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 400)))
    (if (local.get $e)
      (then (i32.store (i32.const 0) (i32.const 200)) (i32.store (i32.const 4) (i32.const 18)))
      (else (i32.store (i32.const 0) (i32.const 300)) (i32.store (i32.const 4) (i32.const 19))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#,
        len = path.len()
    )
}

fn spec(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: "test".into(),
        parameters: json!({"type": "object", "properties": {}}),
        category: "wasm".into(),
        feasible: vec![],
    }
}

fn limits() -> WasmLimits {
    WasmLimits { fuel: u64::MAX / 2, memory_bytes: 8 << 20, deadline: Duration::from_millis(300) }
}

async fn call(suite: &ToolSuite, name: &str, sandbox: Option<&std::path::Path>) -> regrpo_schemas::Execution {
    let a = Action::parse_python(&format!("{name}()")).unwrap();
    let mut ctx = CallContext::new(sandbox.map(|p| p.to_path_buf()));
    ctx.timeout = Duration::from_secs(10);
    suite.execute(&a.calls[0], &[], &ctx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_sandbox_end_as_observations_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "inside").unwrap();
    let mut suite = ToolSuite::new();
    for (name, body) in [
        ("pong", PONG.to_string()),
        ("spin", LOOP.into()),
        ("bomb", BOMB.into()),
        ("peek", open("../../etc/passwd")),
        ("read", open("data.txt")),
    ] {
        suite.add(Arc::new(WasmTool::new(spec(name), module(&body).as_bytes(), limits()).unwrap()) as Arc<dyn Tool>);
    }
    let e = call(&suite, "pong", None).await;
    assert_eq!((e.status, e.text.as_str()), (ExecStatus::Ok, "pong"));

    let started = Instant::now();
    let e = call(&suite, "spin", None).await;
    assert_eq!(e.status, ExecStatus::Timeout, "{}", e.text);
    assert_eq!(e.error_code.as_deref(), Some("deadline_exceeded"));
    assert!(started.elapsed() < Duration::from_secs(3), "the deadline did not hold: {:?}", started.elapsed());

    let e = call(&suite, "bomb", None).await;
    assert_eq!(e.status, ExecStatus::Trap, "{}", e.text);
    assert!(e.text.contains("memory"), "{}", e.text);

    let e = call(&suite, "peek", Some(dir.path())).await;
    assert_eq!((e.status, e.text.as_str()), (ExecStatus::ToolError, "Error: denied"));
    let e = call(&suite, "read", Some(dir.path())).await;
    assert_eq!(e.text, "opened", "a file inside the task folder is readable");

    // The tool still works after all of that.
    assert_eq!(call(&suite, "pong", None).await.text, "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_fuel_is_a_timeout_too() {
    let mut suite = ToolSuite::new();
    let l = WasmLimits { fuel: 100_000, ..limits() };
    suite.add(Arc::new(WasmTool::new(spec("spin"), module(LOOP).as_bytes(), l).unwrap()));
    let e = call(&suite, "spin", None).await;
    assert_eq!((e.status, e.error_code.as_deref()), (ExecStatus::Timeout, Some("fuel_exhausted")));
}

#[test]
fn a_tool_folder_loads_modules_with_their_specs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pong.wat"), module(PONG)).unwrap();
    std::fs::write(
        dir.path().join("pong.json"),
        r#"{"name": "pong", "parameters": {"type": "object", "properties": {}}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a tool").unwrap();
    let tools = WasmTool::load_dir(dir.path(), limits()).unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].spec().name, "pong");
    assert!(tools[0].version().starts_with("wasm/"));
}
