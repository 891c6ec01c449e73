//! `inspect_file_as_text`: reads a task file as text (txt, md, csv, tsv, json).

use std::sync::Arc;

use async_trait::async_trait;
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};

use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec, file_not_found, sandbox_path};

/// Longest text returned; the rest is cut with a note.
const MAX_CHARS: usize = 8_000;

pub struct InspectFile {
    spec: ToolSpec,
}

impl InspectFile {
    pub fn tool() -> Arc<dyn Tool> {
        Arc::new(InspectFile {
            spec: ToolSpec {
                name: "inspect_file_as_text".into(),
                description: "Read a task file as text. Handles .txt, .md, .csv, .tsv and .json; not images.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "file_path": {"type": "string", "minLength": 1, "description": "The file, relative to the task folder."},
                        "question": {"type": "string", "description": "[Optional] what you want to know (the file is returned whole)."}
                    },
                    "required": ["file_path"]
                }),
                category: "file".into(),
                feasible: vec![ErrorType::ArgInvalid, ErrorType::GroundingDrift, ErrorType::ToolMismatch],
            },
        })
    }
}

/// Reads a sandbox file as text, with the errors a real reader gives.
pub fn read_text(ctx: &CallContext, given: &str) -> Result<String, ToolOutput> {
    let path = sandbox_path(ctx, given)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if !path.exists() {
        return Err(file_not_found(ctx, "file", given));
    }
    if path.is_dir() {
        return Err(ToolOutput::error("is_a_directory", format!("Error: {given} is a directory, not a file")));
    }
    if !matches!(ext.as_str(), "txt" | "md" | "csv" | "tsv" | "json") {
        return Err(ToolOutput::error(
            "unsupported_format",
            format!(
                "Error: unsupported format '.{ext}' of {given}: inspect_file_as_text reads txt, md, csv, tsv and json files"
            ),
        ));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| ToolOutput::error("io_error", format!("Error: cannot read {given}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ToolOutput::error("not_utf8", format!("Error: {given} is not UTF-8 text")))?;
    if ext == "json" {
        return match serde_json::from_str::<Value>(&text) {
            Ok(v) => Ok(serde_json::to_string_pretty(&v).unwrap_or(text)),
            Err(e) => Err(ToolOutput::error("invalid_json", format!("Error: {given} is not valid JSON: {e}"))),
        };
    }
    Ok(text)
}

#[async_trait]
impl Tool for InspectFile {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> String {
        "builtin-inspect_file_as_text/1".into()
    }

    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let given = args.get("file_path").and_then(Value::as_str).unwrap_or_default();
        match read_text(ctx, given) {
            Ok(text) if text.chars().count() > MAX_CHARS => {
                let cut: String = text.chars().take(MAX_CHARS).collect();
                ToolOutput::ok(format!("{cut}\n[… {} more characters not shown]", text.chars().count() - MAX_CHARS))
            }
            Ok(text) => ToolOutput::ok(text),
            Err(e) => e,
        }
    }
}
