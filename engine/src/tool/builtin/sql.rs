//! `sql_query`: DataFusion SQL over the task's CSV and Parquet files, each registered as a
//! table named by its file stem (`sales.csv` → `sales`). Errors are DataFusion's own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};

use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec};

/// Rows printed at most; more are summarised.
const MAX_ROWS: usize = 50;

/// Files up to this size are read once into memory when the sandbox's context is made: a query
/// then plans against a table already in memory instead of listing, opening and parsing its
/// file again (the larger share of a call's time on small task tables). Larger files stay on disk.
const IN_MEMORY_BYTES: u64 = 8 << 20;

pub struct SqlQuery {
    spec: ToolSpec,
    /// One context per sandbox: registering files infers schemas (and reads small ones).
    contexts: Mutex<HashMap<PathBuf, SessionContext>>,
    /// Files up to this many bytes are read into memory ([`IN_MEMORY_BYTES`]).
    in_memory_bytes: u64,
}

impl SqlQuery {
    pub fn tool() -> Arc<dyn Tool> {
        Arc::new(SqlQuery::new(IN_MEMORY_BYTES))
    }

    fn new(in_memory_bytes: u64) -> SqlQuery {
        SqlQuery {
            spec: ToolSpec {
                name: "sql_query".into(),
                description: "Run a read-only SQL query over the task's tables (each CSV/Parquet file is a table named by its file name without extension).".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"query": {"type": "string", "minLength": 1, "description": "A SELECT statement."}},
                    "required": ["query"]
                }),
                category: "code".into(),
                feasible: vec![
                    ErrorType::ArgInvalid,
                    ErrorType::GroundingDrift,
                    ErrorType::InfoInsufficient,
                    ErrorType::CodeError,
                    ErrorType::ToolMismatch,
                ],
            },
            contexts: Mutex::new(HashMap::new()),
            in_memory_bytes,
        }
    }

    async fn context(&self, root: &PathBuf) -> Result<SessionContext, ToolOutput> {
        if let Some(ctx) = self.contexts.lock().unwrap_or_else(|p| p.into_inner()).get(root) {
            return Ok(ctx.clone());
        }
        let config = SessionConfig::new().with_target_partitions(1).with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        let mut entries: Vec<_> = std::fs::read_dir(root)
            .map_err(|e| ToolOutput::error("io_error", format!("Error: cannot list the task files: {e}")))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let (Some(stem), Some(ext)) =
                (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
            else {
                continue;
            };
            let file = path.to_string_lossy().into_owned();
            let registered = match ext {
                "csv" => ctx.register_csv(stem, &file, CsvReadOptions::new().has_header(true)).await,
                "parquet" => ctx.register_parquet(stem, &file, ParquetReadOptions::default()).await,
                _ => continue,
            };
            let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= self.in_memory_bytes);
            let registered = match registered {
                Ok(()) if small => into_memory(&ctx, stem).await,
                other => other,
            };
            if let Err(e) = registered {
                return Err(ToolOutput::error("bad_table", format!("Error: cannot read {stem}.{ext}: {e}")));
            }
        }
        let mut cache = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(root.clone(), ctx.clone());
        Ok(ctx)
    }
}

/// Replaces the registered table `name` by its rows in memory (same schema, same order).
async fn into_memory(ctx: &SessionContext, name: &str) -> datafusion::error::Result<()> {
    let df = ctx.table(name).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    Ok(())
}

/// Renders batches as CSV-like text: a header line, then one line per row.
fn render(batches: &[datafusion::arrow::array::RecordBatch]) -> String {
    let Some(first) = batches.first() else { return String::new() };
    let schema = first.schema();
    let mut out: Vec<String> = vec![schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(",")];
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let opts = FormatOptions::default().with_null("NULL");
    'outer: for b in batches {
        let fmts: Vec<_> = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect();
        for row in 0..b.num_rows() {
            if out.len() > MAX_ROWS {
                break 'outer;
            }
            let cells: Vec<String> = fmts
                .iter()
                .map(|f| match f {
                    Ok(f) => f.value(row).to_string(),
                    Err(_) => "?".into(),
                })
                .collect();
            out.push(cells.join(","));
        }
    }
    if total > MAX_ROWS {
        out.push(format!("[{} more rows not shown]", total - MAX_ROWS));
    }
    out.join("\n")
}

#[async_trait]
impl Tool for SqlQuery {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> String {
        "builtin-sql_query/datafusion-55".into()
    }

    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let query = args.get("query").and_then(Value::as_str).unwrap_or_default();
        let Some(root) = &ctx.sandbox else {
            return ToolOutput::error("no_sandbox", "Error: this task has no tables");
        };
        let session = match self.context(root).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let opts = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = match session.sql_with_options(query, opts).await {
            Ok(df) => df,
            Err(e) => {
                let msg = e.to_string();
                // DataFusion names the valid columns of an unknown one; say which tables exist too.
                let tables = if msg.contains("table") && msg.contains("not found") {
                    format!(" Tables: {}.", table_names(root).join(", "))
                } else {
                    String::new()
                };
                return ToolOutput::error(error_code(&msg), format!("Error: {}{tables}", first_line(&msg)));
            }
        };
        match df.collect().await {
            Ok(batches) if batches.iter().all(|b| b.num_rows() == 0) => {
                let header = batches.first().map(|b| render(std::slice::from_ref(b))).unwrap_or_default();
                ToolOutput {
                    status: regrpo_schemas::ExecStatus::Empty,
                    text: format!("{header}\n(0 rows)").trim_start().to_string(),
                    error_code: Some("no_rows".into()),
                }
            }
            Ok(batches) => ToolOutput::ok(render(&batches)),
            Err(e) => ToolOutput::error(error_code(&e.to_string()), format!("Error: {}", first_line(&e.to_string()))),
        }
    }
}

/// The tables of a sandbox: its CSV and Parquet files by stem.
fn table_names(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "csv" || x == "parquet"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Classifies DataFusion's message: syntax errors are code errors, unknown names are not.
fn error_code(msg: &str) -> &'static str {
    if msg.contains("SQL error: ParserError") || msg.contains("ParserError") {
        "sql_syntax_error"
    } else if msg.contains("No field named") || msg.contains("not found") || msg.contains("Schema error") {
        "sql_unknown_name"
    } else if msg.contains("not supported") {
        "sql_not_supported"
    } else {
        "sql_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regrpo_schemas::ExecStatus;

    /// A sandbox with a CSV table and a Parquet table.
    fn sandbox() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("region,amount\n");
        for i in 0..200 {
            csv.push_str(&format!("{},{}\n", ["north", "south", "east"][i % 3], i));
        }
        std::fs::write(dir.path().join("sales.csv"), csv).unwrap();
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter([(
            "name",
            Arc::new(datafusion::arrow::array::StringArray::from(vec!["b", "a"])) as _,
        )])
        .unwrap();
        let file = std::fs::File::create(dir.path().join("names.parquet")).unwrap();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        dir
    }

    async fn answers(in_memory_bytes: u64, dir: &std::path::Path) -> Vec<ToolOutput> {
        let tool = SqlQuery::new(in_memory_bytes);
        let ctx = CallContext::new(Some(dir.to_path_buf()));
        let mut out = Vec::new();
        for q in [
            "SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region ORDER BY region",
            "SELECT * FROM sales",
            "SELECT name FROM names ORDER BY name",
            "SELECT nope FROM sales",
            "SELECT * FROM missing",
            "SELEC 1",
            "SELECT * FROM sales WHERE amount > 1000",
        ] {
            let args = Map::from_iter([("query".to_string(), Value::from(q))]);
            out.push(tool.call(&args, &ctx).await);
        }
        out
    }

    /// Every answer — rows, empty results, each kind of error — is the same whether the task's
    /// tables were read into memory or are scanned from their files.
    #[tokio::test]
    async fn tables_in_memory_answer_as_files_do() {
        let dir = sandbox();
        let in_memory = answers(IN_MEMORY_BYTES, dir.path()).await;
        let on_disk = answers(0, dir.path()).await;
        assert_eq!(in_memory, on_disk);
        assert_eq!(in_memory[0].text, "region,n,total\neast,66,6567\nnorth,67,6633\nsouth,67,6700");
        assert!(in_memory[1].text.ends_with("[150 more rows not shown]"), "{}", in_memory[1].text);
        assert_eq!(in_memory[2].text, "name\na\nb");
        let codes: Vec<_> = in_memory[3..].iter().map(|o| (o.status, o.error_code.as_deref())).collect();
        assert_eq!(
            codes,
            [
                (ExecStatus::ToolError, Some("sql_unknown_name")),
                (ExecStatus::ToolError, Some("sql_unknown_name")),
                (ExecStatus::ToolError, Some("sql_syntax_error")),
                (ExecStatus::Empty, Some("no_rows")),
            ]
        );
        assert!(in_memory[4].text.contains("Tables: names, sales."), "{}", in_memory[4].text);
    }
}
