//! WASI preview-1 tools run by wasmtime.
//!
//! A tool is a module (`.wasm`, or `.wat` text) with a spec beside it (`<name>.json`: name,
//! description, parameters, category, feasible). Arguments arrive as JSON on stdin; the module
//! writes its result as JSON on stdout (`{"result": …}` or `{"error": "…"}`; any other output is
//! taken as the result text). Each call gets a fresh store with:
//!
//! - fuel (instructions) and a memory cap (growing past it traps),
//! - a wall-clock deadline by epoch interruption (a ticker thread bumps the epoch every few ms;
//!   at each tick a running guest yields to the async executor, and past its deadline it is
//!   interrupted),
//! - the task folder preopened read-only as `.`, nothing else: no network, no other files.
//!
//! Modules are compiled once and linked once (`InstancePre`); instances come from the pooling
//! allocator, whose slots keep their first pages resident and reset only what a call dirtied,
//! so a call costs an instantiation, not a compilation or a page fault per page. The guest runs
//! inside the calling task (async WASI on a fiber): no hop to a blocking thread and back. An
//! infinite loop, a memory bomb or a trap becomes an observation with its status, never a crash
//! or a hang.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use regrpo_schemas::ErrorType;
use serde::Deserialize;
use serde_json::{Map, Value};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::error::{Error, IoContext, Result};
use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec};
use regrpo_schemas::ExecStatus;

/// Resource limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimits {
    pub fuel: u64,
    pub memory_bytes: usize,
    pub deadline: Duration,
}

impl Default for WasmLimits {
    fn default() -> Self {
        WasmLimits { fuel: 2_000_000_000, memory_bytes: 64 << 20, deadline: Duration::from_secs(2) }
    }
}

/// How often the epoch advances: the deadline's resolution, and how often a long-running guest
/// lets other tasks run.
const EPOCH_TICK: Duration = Duration::from_millis(5);
const MAX_OUTPUT: usize = 1 << 20;

/// The shared engine: epoch interruption, fuel, pooling allocation; one ticker thread.
fn engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true).consume_fuel(true);
            let mut pool = PoolingAllocationConfig::default();
            pool.total_memories(128)
                .total_tables(128)
                .total_core_instances(128)
                .total_stacks(128)
                .max_memory_size(256 << 20)
                // A reused slot keeps this much of its memory and table mapped and is reset by
                // writing over what the last call dirtied, instead of unmapping it and taking a
                // page fault per page on the next call.
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            let engine = Engine::new(&config).map_err(|e| e.to_string())?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(engine)
        })
        .as_ref()
        .map_err(|e| Error::Wasm(e.clone()))
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// A tool backed by a WASI module.
pub struct WasmTool {
    spec: ToolSpec,
    pre: InstancePre<State>,
    limits: WasmLimits,
    version: String,
}

#[derive(Debug, Deserialize)]
struct SpecFile {
    name: String,
    #[serde(default)]
    description: String,
    parameters: Value,
    #[serde(default = "default_category")]
    category: String,
    #[serde(default)]
    feasible: Vec<ErrorType>,
}

fn default_category() -> String {
    "wasm".into()
}

impl WasmTool {
    /// Compiles a module (binary or WAT text) and links it once.
    pub fn new(spec: ToolSpec, module_bytes: &[u8], limits: WasmLimits) -> Result<WasmTool> {
        let engine = engine()?;
        let module = Module::new(engine, module_bytes)
            .map_err(|e| Error::ToolSetup { tool: spec.name.clone(), reason: format!("{e:#}") })?;
        let mut linker: Linker<State> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(|e| Error::Wasm(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::ToolSetup { tool: spec.name.clone(), reason: format!("{e:#}") })?;
        let version = format!("wasm/{}", &regrpo_schemas::id::sha256_hex(module_bytes)[..12]);
        Ok(WasmTool { spec, pre, limits, version })
    }

    /// Loads every `<name>.wasm` or `<name>.wat` that has a `<name>.json` spec in `dir`.
    pub fn load_dir(dir: &Path, limits: WasmLimits) -> Result<Vec<Arc<dyn Tool>>> {
        let mut out: Vec<Arc<dyn Tool>> = Vec::new();
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).at(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for module_path in entries {
            let ext = module_path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "wasm" && ext != "wat" {
                continue;
            }
            let spec_path = module_path.with_extension("json");
            let text = std::fs::read_to_string(&spec_path).at(&spec_path)?;
            let s: SpecFile = serde_json::from_str(&text).map_err(|e| Error::ToolSetup {
                tool: module_path.display().to_string(),
                reason: format!("{}: {e}", spec_path.display()),
            })?;
            let spec = ToolSpec {
                name: s.name,
                description: s.description,
                parameters: s.parameters,
                category: s.category,
                feasible: s.feasible,
            };
            let bytes = std::fs::read(&module_path).at(&module_path)?;
            out.push(Arc::new(WasmTool::new(spec, &bytes, limits)?));
        }
        Ok(out)
    }

    /// Runs one call to completion in the calling task.
    async fn run(&self, input: Vec<u8>, sandbox: Option<&Path>) -> ToolOutput {
        let stdout = MemoryOutputPipe::new(MAX_OUTPUT);
        let stderr = MemoryOutputPipe::new(64 << 10);
        let mut builder = WasiCtxBuilder::new();
        // Reading the task folder's small files on the calling thread is cheaper than a hop to
        // the blocking pool and back.
        builder
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true);
        if let Some(dir) = sandbox
            && let Err(e) = builder.preopened_dir(dir, ".", FsPerms::ReadOnly)
        {
            return ToolOutput::error("sandbox", format!("Error: cannot open the task folder: {e:#}"));
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(1)
            .build();
        let mut store = Store::new(self.pre.module().engine(), State { wasi: builder.build_p1(), limits });
        store.limiter(|s| &mut s.limits);
        if store.set_fuel(self.limits.fuel).is_err() {
            return ToolOutput::error("internal", "Error: fuel is not enabled");
        }
        // At every tick: yield to the executor, or stop the guest once its time is up
        // (`Trap::Interrupt`).
        let deadline = Instant::now() + self.limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });

        let result = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Ok(start) => start.call_async(&mut store, ()).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        drop(store);
        let out = String::from_utf8_lossy(&stdout.contents()).into_owned();
        let err = String::from_utf8_lossy(&stderr.contents()).into_owned();
        match result {
            Ok(()) => parse_output(&out),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    return if exit.0 == 0 {
                        parse_output(&out)
                    } else {
                        ToolOutput::error(
                            "exit",
                            format!("Error: {} exited with status {}: {}", self.spec.name, exit.0, err.trim()),
                        )
                    };
                }
                match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => ToolOutput::with_status(
                        ExecStatus::Timeout,
                        "deadline_exceeded",
                        format!(
                            "Error: {} ran past its {:?} deadline and was stopped",
                            self.spec.name, self.limits.deadline
                        ),
                    ),
                    Some(Trap::OutOfFuel) => ToolOutput::with_status(
                        ExecStatus::Timeout,
                        "fuel_exhausted",
                        format!(
                            "Error: {} used up its {} units of fuel and was stopped",
                            self.spec.name, self.limits.fuel
                        ),
                    ),
                    Some(trap) => ToolOutput::with_status(
                        ExecStatus::Trap,
                        "trap",
                        format!("Error: {} trapped: {trap}", self.spec.name),
                    ),
                    None if format!("{e:#}").contains("grow") || format!("{e:#}").contains("memory") => {
                        ToolOutput::with_status(
                            ExecStatus::Trap,
                            "memory_limit",
                            format!(
                                "Error: {} exceeded its memory limit of {} bytes: {e:#}",
                                self.spec.name, self.limits.memory_bytes
                            ),
                        )
                    }
                    None => ToolOutput::with_status(
                        ExecStatus::Trap,
                        "trap",
                        format!("Error: {} failed: {e:#}", self.spec.name),
                    ),
                }
            }
        }
    }
}

/// `{"result": …}` → ok, `{"error": "…"}` → tool error, anything else → the text as result.
fn parse_output(out: &str) -> ToolOutput {
    match serde_json::from_str::<Value>(out.trim()) {
        Ok(Value::Object(m)) if m.contains_key("error") => {
            let msg = match &m["error"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            ToolOutput::error("tool_error", format!("Error: {msg}"))
        }
        Ok(Value::Object(m)) if m.contains_key("result") => ToolOutput::ok(match &m["result"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }),
        _ => ToolOutput::ok(out.trim().to_string()),
    }
}

#[async_trait]
impl Tool for WasmTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let input = match serde_json::to_vec(args) {
            Ok(bytes) => bytes,
            Err(e) => return ToolOutput::error("internal", format!("Error: cannot encode the arguments: {e}")),
        };
        // Dropping this future (the caller's timeout) drops the store and stops the guest.
        self.run(input, ctx.sandbox.as_deref()).await
    }
}
