//! Tools served over HTTP by an OpenAPI tool server of the AgentLego kind (the one the GTA
//! benchmark uses): the tool list and argument schemas come from `GET /openapi.json`, a call is
//! `POST /<ToolName>` with the arguments as a JSON body.
//!
//! Calls have a timeout; connection errors (refused, reset) are retried with backoff, nothing
//! else is. A server that is down, slow or answers garbage gives an error observation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec};
use regrpo_schemas::ExecStatus;

/// Settings of a remote tool server.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub base_url: String,
    pub timeout: Duration,
    pub retries: u32,
}

impl RemoteConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        RemoteConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(30),
            retries: 2,
        }
    }
}

/// One tool of a remote server.
pub struct RemoteTool {
    spec: ToolSpec,
    client: reqwest::Client,
    config: RemoteConfig,
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/")) {
        Some(path) => path.split('/').fold(doc, |node, key| node.get(key).unwrap_or(&Value::Null)),
        None => v,
    }
}

/// Reads tool specs from an OpenAPI document: every `POST /<Tool>` path.
pub fn specs_from_openapi(doc: &Value) -> Vec<ToolSpec> {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return vec![] };
    let mut specs = Vec::new();
    for (path, item) in paths {
        let Some(post) = item.get("post") else { continue };
        let name = path.trim_matches('/').to_string();
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let content = post.get("requestBody").map(|b| resolve(doc, b)).and_then(|b| b.get("content"));
        let schema = content
            .and_then(|c| c.get("application/json").or_else(|| c.get("multipart/form-data")))
            .and_then(|m| m.get("schema"))
            .map(|s| resolve(doc, s).clone())
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let description =
            post.get("description").or_else(|| post.get("summary")).and_then(Value::as_str).unwrap_or_default();
        specs.push(ToolSpec {
            name,
            description: description.to_string(),
            parameters: schema,
            category: "remote".into(),
            feasible: vec![ErrorType::ArgInvalid, ErrorType::ToolMismatch, ErrorType::GroundingDrift],
        });
    }
    specs
}

/// Connects to a server and returns its tools.
pub async fn connect(config: RemoteConfig) -> Result<Vec<Arc<dyn Tool>>> {
    let client = reqwest::Client::builder().timeout(config.timeout).build().map_err(|e| Error::Http(e.to_string()))?;
    let url = format!("{}/openapi.json", config.base_url);
    let resp = client.get(&url).send().await.map_err(|e| Error::Http(format!("{url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::Http(format!("{url}: HTTP {}", resp.status())));
    }
    let doc: Value = resp.json().await.map_err(|e| Error::Http(format!("{url}: not an OpenAPI JSON document: {e}")))?;
    Ok(specs_from_openapi(&doc)
        .into_iter()
        .map(|spec| Arc::new(RemoteTool { spec, client: client.clone(), config: config.clone() }) as Arc<dyn Tool>)
        .collect())
}

#[async_trait]
impl Tool for RemoteTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> String {
        format!("remote/{}", self.config.base_url)
    }

    async fn call(&self, args: &Map<String, Value>, _ctx: &CallContext) -> ToolOutput {
        let url = format!("{}/{}", self.config.base_url, self.spec.name);
        let mut attempt = 0;
        let resp = loop {
            match self.client.post(&url).json(args).send().await {
                Ok(r) => break r,
                Err(e) if e.is_timeout() => {
                    return ToolOutput::with_status(
                        ExecStatus::Timeout,
                        "timeout",
                        format!("Error: {} did not answer within {:?}", self.spec.name, self.config.timeout),
                    );
                }
                Err(e) if e.is_connect() && attempt < self.config.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => {
                    return ToolOutput::error(
                        "connection_error",
                        format!("Error: cannot reach the tool server for {}: {e}", self.spec.name),
                    );
                }
            }
        };
        let status = resp.status();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => {
                return ToolOutput::with_status(
                    ExecStatus::Timeout,
                    "timeout",
                    format!("Error: {} did not finish its answer within {:?}", self.spec.name, self.config.timeout),
                );
            }
            Err(e) => {
                return ToolOutput::error(
                    "connection_error",
                    format!("Error: reading the answer of {}: {e}", self.spec.name),
                );
            }
        };
        if !status.is_success() {
            return ToolOutput::error(
                "http_error",
                format!("Error: {} answered HTTP {}: {}", self.spec.name, status.as_u16(), truncate(&body, 500)),
            );
        }
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Object(m)) if m.contains_key("error") || m.contains_key("detail") => {
                let e = m.get("error").or_else(|| m.get("detail")).cloned().unwrap_or_default();
                ToolOutput::error(
                    "tool_error",
                    format!("Error: {}", e.as_str().map_or_else(|| e.to_string(), str::to_string)),
                )
            }
            Ok(Value::String(s)) => ToolOutput::ok(s),
            Ok(v) => ToolOutput::ok(v.to_string()),
            Err(_) => ToolOutput::error(
                "malformed_response",
                format!(
                    "Error: the tool server answered {} with something that is not JSON: {}",
                    self.spec.name,
                    truncate(&body, 200)
                ),
            ),
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_paths_become_specs_with_resolved_refs() {
        let doc = json!({
            "paths": {
                "/OCR": {"post": {"summary": "Read text", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/OCRIn"}}}}}},
                "/health": {"get": {}}
            },
            "components": {"schemas": {"OCRIn": {"type": "object", "properties": {"image": {"type": "string"}}, "required": ["image"]}}}
        });
        let specs = specs_from_openapi(&doc);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "OCR");
        assert_eq!(specs[0].required(), ["image"]);
    }
}
