//! Engine micro-benchmarks (`bench/engine.sh` runs this in release):
//!
//! - `calculator` executions/s through `ToolSuite::execute` (JSON Schema validation, the
//!   expression parser and evaluator, the execution record), on one thread and on all cores;
//! - WASM call latency p50/p99 of a trivial WASI module (writes `{"result":"pong"}`) with
//!   instance reuse (`InstancePre` + pooling allocator), sequential calls.
//!
//!     cargo run --release --example engine_micro -- [CALLS]

/// The binary's allocator, so in-process figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use regrpo_engine::tool::wasm::{WasmLimits, WasmTool};
use regrpo_engine::{CallContext, Tool, ToolSpec, ToolSuite};
use regrpo_schemas::Action;
use serde_json::json;

const PONG: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"result\":\"pong\"}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let suite = Arc::new(ToolSuite::builtin());
    let exprs: Vec<Action> = (0..64)
        .map(|i| {
            Action::parse_python(&format!("calculator(expression=\"({i} + 17) * 2350 / 100 - {i} ** 2\")")).unwrap()
        })
        .collect();
    let ctx = CallContext::new(None);
    // Warm-up (compiles the validator once).
    suite.execute(&exprs[0].calls[0], &[], &ctx).await;

    let started = Instant::now();
    for i in 0..calls {
        let e = suite.execute(&exprs[i % exprs.len()].calls[0], &[], &ctx).await;
        assert_eq!(e.status, regrpo_schemas::ExecStatus::Ok, "{}", e.text);
    }
    let one = calls as f64 / started.elapsed().as_secs_f64();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let tasks: Vec<_> = (0..threads)
        .map(|t| {
            let (suite, exprs) = (Arc::clone(&suite), exprs.clone());
            tokio::spawn(async move {
                let ctx = CallContext::new(None);
                for i in (t..calls).step_by(threads) {
                    suite.execute(&exprs[i % exprs.len()].calls[0], &[], &ctx).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let all = calls as f64 / started.elapsed().as_secs_f64();
    println!("calculator: {one:.0} executions/s on one task, {all:.0}/s on {threads} tasks ({calls} calls each run)");

    let spec = ToolSpec {
        name: "pong".into(),
        description: "returns pong".into(),
        parameters: json!({"type": "object", "properties": {}}),
        category: "wasm".into(),
        feasible: vec![],
    };
    let limits = WasmLimits { fuel: 10_000_000, memory_bytes: 8 << 20, deadline: Duration::from_secs(1) };
    let tool = WasmTool::new(spec, PONG.as_bytes(), limits)?;
    let args = serde_json::Map::new();
    let n = (calls / 20).max(1000);
    for _ in 0..100 {
        tool.call(&args, &ctx).await;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let out = tool.call(&args, &ctx).await;
        lat.push(s.elapsed());
        assert!(out.text.contains("pong"), "{}", out.text);
    }
    lat.sort();
    println!(
        "wasm (trivial module, a fresh store per call in a pooled instance slot): p50 {:?}, p99 {:?}, max {:?} over {n} sequential calls",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    // For bench/all.sh.
    println!(
        "{}",
        json!({"bench": "engine_micro", "calculator_per_s": one, "calculator_all_cores_per_s": all,
               "wasm_p50_us": percentile(&lat, 0.5).as_secs_f64() * 1e6, "wasm_p99_us": percentile(&lat, 0.99).as_secs_f64() * 1e6})
    );
    Ok(())
}
