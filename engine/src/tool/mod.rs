//! The tool suite: specs, the [`Tool`] executor trait, argument validation and the registry.
//!
//! ```text
//!  Call(name, args) ──ToolSuite::execute──▶ spec known? ── no ──▶ no_executor (reported, never invented)
//!                                              │ yes
//!                                              ▼
//!                          positional → named, JSON Schema validation ── invalid ──▶ schema_error
//!                                              │ valid                  (the validator's message)
//!                                              ▼
//!                         executor (builtin | wasm | remote), deadline ──▶ ok | tool_error | empty
//!                                                                          | timeout | trap
//! ```

pub mod builtin;
pub mod remote;
pub mod wasm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use regrpo_schemas::action::Call;
use regrpo_schemas::{ErrorType, ExecStatus, Execution};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What a tool answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub status: ExecStatus,
    pub text: String,
    /// A short machine-readable code (`file_not_found`, `parse_error`, …).
    pub error_code: Option<String>,
}

impl ToolOutput {
    pub fn ok(text: impl Into<String>) -> Self {
        let text = text.into();
        let status = if text.trim().is_empty() { ExecStatus::Empty } else { ExecStatus::Ok };
        ToolOutput { status, text, error_code: None }
    }

    pub fn error(code: &str, text: impl Into<String>) -> Self {
        ToolOutput { status: ExecStatus::ToolError, text: text.into(), error_code: Some(code.to_string()) }
    }

    pub fn with_status(status: ExecStatus, code: &str, text: impl Into<String>) -> Self {
        ToolOutput { status, text: text.into(), error_code: Some(code.to_string()) }
    }
}

/// A tool as the agent sees it: the OpenAI function-calling shape plus what the engine needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// `file`, `code`, `search`, `image`, `answer`, `function`, …
    pub category: String,
    /// The ErrorTypes a near-miss of this tool can realistically have.
    pub feasible: Vec<ErrorType>,
}

impl ToolSpec {
    /// The OpenAI `{"type": "function", "function": {…}}` form.
    pub fn to_openai(&self) -> Value {
        json!({"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}})
    }

    /// Reads the OpenAI form (or a bare `{name, description, parameters}`).
    pub fn from_openai(v: &Value) -> Option<ToolSpec> {
        let f = v.get("function").unwrap_or(v);
        let name = f.get("name")?.as_str()?.to_string();
        Some(ToolSpec {
            description: f.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
            parameters: f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
            category: "function".into(),
            feasible: vec![ErrorType::ArgInvalid, ErrorType::ToolMismatch],
            name,
        })
    }

    /// Parameter names in declaration order.
    pub fn parameter_names(&self) -> Vec<String> {
        self.parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// `name takes: a (string, required), b (integer)`: what a call of this tool may pass.
    pub fn signature(&self) -> String {
        let required = self.required();
        let props = self.parameters.get("properties").and_then(Value::as_object);
        let params: Vec<String> = props
            .map(|p| {
                p.iter()
                    .map(|(name, schema)| {
                        let ty = match schema.get("type") {
                            Some(Value::String(t)) => t.clone(),
                            Some(Value::Array(ts)) => {
                                ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or ")
                            }
                            _ => "any".into(),
                        };
                        let req = if required.contains(name) { ", required" } else { "" };
                        format!("{name} ({ty}{req})")
                    })
                    .collect()
            })
            .unwrap_or_default();
        if params.is_empty() {
            format!("{} takes no arguments", self.name)
        } else {
            format!("{} takes: {}", self.name, params.join(", "))
        }
    }

    /// Required parameter names.
    pub fn required(&self) -> Vec<String> {
        self.parameters
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Where a call runs: the task's sandbox folder (read-only for tools) and its deadline.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub sandbox: Option<PathBuf>,
    pub timeout: Duration,
}

impl CallContext {
    pub fn new(sandbox: Option<PathBuf>) -> Self {
        CallContext { sandbox, timeout: Duration::from_secs(10) }
    }
}

/// An executor for one tool.
#[async_trait]
pub trait Tool: Send + Sync {
    fn spec(&self) -> &ToolSpec;
    /// Identifies the implementation, recorded with every execution.
    fn version(&self) -> String;
    /// Runs the call with arguments already validated against the spec.
    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput;
}

/// Compiled argument validators, one per spec.
struct Validator {
    schema: jsonschema::Validator,
}

impl Validator {
    fn new(spec: &ToolSpec) -> Result<Self, String> {
        let mut schema = spec.parameters.clone();
        // A tool is a function: arguments it does not declare are an error, as a Python
        // function rejects an unexpected keyword. Specs that say otherwise keep their choice.
        if let Some(obj) = schema.as_object_mut()
            && obj.contains_key("properties")
            && !obj.contains_key("additionalProperties")
        {
            obj.insert("additionalProperties".into(), Value::Bool(false));
        }
        let schema = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(Validator { schema })
    }

    /// The validator's messages, one per problem, or `None` when the arguments are valid.
    fn check(&self, args: &Value) -> Option<String> {
        let errors: Vec<String> = self
            .schema
            .iter_errors(args)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() { e.to_string() } else { format!("{e} (at {path})") }
            })
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// The tools available in a run: specs (what the agent may call) and executors.
#[derive(Clone, Default)]
pub struct ToolSuite {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    validators: Arc<std::sync::Mutex<BTreeMap<String, Arc<Validator>>>>,
}

impl ToolSuite {
    pub fn new() -> Self {
        Self::default()
    }

    /// The builtin tools.
    pub fn builtin() -> Self {
        let mut s = Self::new();
        for t in builtin::all() {
            s.add(t);
        }
        s
    }

    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.spec().name.clone(), tool);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// The spec a call of `tool` is checked against: the suite's own, else the one the
    /// trajectory declared.
    pub fn spec_of<'a>(&'a self, tool: &str, declared: &'a [ToolSpec]) -> Option<&'a ToolSpec> {
        self.get(tool).map(|t| t.spec()).or_else(|| declared.iter().find(|s| s.name == tool))
    }

    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec().clone()).collect()
    }

    fn validator(&self, spec: &ToolSpec) -> Result<Arc<Validator>, String> {
        let key = format!("{}\u{0}{}", spec.name, spec.parameters);
        let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(&key) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(Validator::new(spec)?);
        cache.insert(key, Arc::clone(&v));
        Ok(v)
    }

    /// Executes one call. `specs` are the tools the trajectory declared (used for validation
    /// when the suite has no executor of that name); the suite's own spec wins otherwise.
    pub async fn execute(&self, call: &Call, declared: &[ToolSpec], ctx: &CallContext) -> Execution {
        let started = Instant::now();
        let tool = self.tools.get(&call.name);
        let spec = self.spec_of(&call.name, declared).cloned();
        let version = tool.map_or_else(|| "none".to_string(), |t| t.version());
        let out = match spec {
            None => ToolOutput::with_status(
                ExecStatus::NoExecutor,
                "unknown_tool",
                format!("Error: unknown tool `{}`: no such tool is available", call.name),
            ),
            Some(spec) => self.execute_with_spec(call, &spec, tool, ctx).await,
        };
        Execution {
            status: out.status,
            text: out.text,
            error_code: out.error_code,
            duration_us: started.elapsed().as_micros() as i64,
            tool_version: version,
        }
    }

    async fn execute_with_spec(
        &self,
        call: &Call,
        spec: &ToolSpec,
        tool: Option<&Arc<dyn Tool>>,
        ctx: &CallContext,
    ) -> ToolOutput {
        let args = match named_arguments(call, spec) {
            Ok(a) => a,
            Err(out) => return out,
        };
        let validator = match self.validator(spec) {
            Ok(v) => v,
            Err(e) => {
                return ToolOutput::with_status(
                    ExecStatus::NoExecutor,
                    "bad_spec",
                    format!("the spec of `{}` is not valid JSON Schema: {e}", spec.name),
                );
            }
        };
        if let Some(msg) = validator.check(&Value::Object(args.clone())) {
            // Like a function's signature in a real error, the message says what it takes.
            return ToolOutput::with_status(
                ExecStatus::SchemaError,
                "invalid_arguments",
                format!("Error: invalid arguments for {}: {msg}. {}", spec.name, spec.signature()),
            );
        }
        let Some(tool) = tool else {
            return ToolOutput::with_status(
                ExecStatus::NoExecutor,
                "no_executor",
                format!("no executor for `{}`: configure a wasm module or a remote tool server", spec.name),
            );
        };
        // A tool that panics fails this call, with the panic's message as its observation; the
        // run goes on.
        let call = std::panic::AssertUnwindSafe(tool.call(&args, ctx)).catch_unwind();
        match tokio::time::timeout(ctx.timeout, call).await {
            Ok(Ok(out)) => out,
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                tracing::warn!(tool = %spec.name, "tool panicked: {msg}");
                ToolOutput::error("tool_panicked", format!("Error: {} failed: {msg}", spec.name))
            }
            Err(_) => ToolOutput::with_status(
                ExecStatus::Timeout,
                "timeout",
                format!("Error: {} did not answer within {:?}", spec.name, ctx.timeout),
            ),
        }
    }
}

/// Maps positional arguments (`$0`, `$1`, …) to the spec's parameter names in order; an
/// unresolved argument (a variable the code did not bind) cannot be executed.
fn named_arguments(call: &Call, spec: &ToolSpec) -> Result<Map<String, Value>, ToolOutput> {
    call.named_arguments(&spec.parameter_names()).map_err(|u| {
        ToolOutput::with_status(
            ExecStatus::NoExecutor,
            "unresolved_argument",
            format!(
                "argument `{}` of {} is the expression `{}`, which has no literal value here",
                u.argument, spec.name, u.expression
            ),
        )
    })
}

/// The files of the task folder, for error messages that say what does exist.
pub fn folder_listing(ctx: &CallContext) -> String {
    let Some(root) = &ctx.sandbox else { return String::new() };
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    match names.len() {
        0 => "The task folder is empty.".into(),
        n if n > 20 => format!("The task folder has: {} and {} more.", names[..20].join(", "), n - 20),
        _ => format!("The task folder has: {}.", names.join(", ")),
    }
}

/// The error of a missing file: what was asked for, and what the folder has.
pub fn file_not_found(ctx: &CallContext, what: &str, given: &str) -> ToolOutput {
    ToolOutput::error("file_not_found", format!("Error: {what} not found: {given}. {}", folder_listing(ctx)))
}

/// Resolves a path an agent gave against the sandbox, refusing anything outside it.
pub fn sandbox_path(ctx: &CallContext, given: &str) -> Result<PathBuf, ToolOutput> {
    let Some(root) = &ctx.sandbox else {
        return Err(ToolOutput::error("no_sandbox", "Error: this task has no files"));
    };
    let rel = Path::new(given.trim_start_matches("./"));
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(ToolOutput::error(
            "permission_denied",
            format!("Error: permission denied: {given} is outside the task folder"),
        ));
    }
    Ok(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regrpo_schemas::Action;

    fn spec() -> ToolSpec {
        ToolSpec {
            name: "area".into(),
            description: "".into(),
            parameters: json!({"type": "object", "properties": {"base": {"type": "integer"}, "height": {"type": "integer"}}, "required": ["base", "height"]}),
            category: "function".into(),
            feasible: vec![],
        }
    }

    async fn run(code: &str) -> Execution {
        let a = Action::parse_python(code).unwrap();
        ToolSuite::new().execute(&a.calls[0], &[spec()], &CallContext::new(None)).await
    }

    #[tokio::test]
    async fn validator_messages_are_the_observation() {
        let e = run("area(base=1)").await;
        assert_eq!(e.status, ExecStatus::SchemaError);
        assert!(e.text.contains("\"height\" is a required property"), "{}", e.text);
        assert!(e.text.ends_with("area takes: base (integer, required), height (integer, required)"), "{}", e.text);
        let e = run("area(base='a', height=2)").await;
        assert!(e.text.contains("is not of type \"integer\""), "{}", e.text);
        let e = run("area(1, 2, depth=3)").await;
        assert!(e.text.contains("Additional properties are not allowed ('depth' was unexpected)"), "{}", e.text);
    }

    #[tokio::test]
    async fn valid_call_without_executor_is_reported_not_invented() {
        let e = run("area(1, 2)").await;
        assert_eq!(e.status, ExecStatus::NoExecutor);
        assert!(e.text.contains("no executor for `area`"));
        let e = run("visualizer(question='q')").await;
        assert_eq!(e.status, ExecStatus::NoExecutor);
        let e = run("area(base=b, height=2)").await;
        assert_eq!(e.error_code.as_deref(), Some("unresolved_argument"));
    }

    #[test]
    fn paths_outside_the_sandbox_are_denied() {
        let ctx = CallContext::new(Some(PathBuf::from("/sb")));
        assert!(sandbox_path(&ctx, "../../etc/passwd").is_err());
        assert!(sandbox_path(&ctx, "/etc/passwd").is_err());
        assert_eq!(sandbox_path(&ctx, "./a/b.txt").unwrap(), PathBuf::from("/sb/a/b.txt"));
    }
}
