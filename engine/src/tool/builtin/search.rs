//! `search_text`: BM25-ranked passages (paragraphs) of the task's .txt and .md documents.
//!
//! No match is a real outcome (`empty`); so is a query too broad to rank: when more than
//! `top_k` passages tie for the best score the tool says so instead of picking arbitrarily.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use regrpo_schemas::ErrorType;
use serde_json::{Map, Value, json};

use crate::tool::{CallContext, Tool, ToolOutput, ToolSpec};
use regrpo_schemas::ExecStatus;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "does", "for", "from", "how", "in", "is", "it", "of", "on",
    "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "with",
];

/// Lower-cased content words of a text.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

struct Passage {
    doc: String,
    para: usize,
    text: String,
    tf: HashMap<String, usize>,
    len: usize,
}

struct Index {
    passages: Vec<Passage>,
    df: HashMap<String, usize>,
    avg_len: f64,
}

impl Index {
    fn build(root: &PathBuf) -> std::io::Result<Index> {
        let mut files: Vec<_> = std::fs::read_dir(root)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "txt" || e == "md"))
            .collect();
        files.sort();
        let mut passages = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            let doc = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            for (i, para) in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).enumerate() {
                let ts = terms(para);
                let mut tf = HashMap::new();
                for t in &ts {
                    *tf.entry(t.clone()).or_insert(0) += 1;
                }
                passages.push(Passage { doc: doc.clone(), para: i + 1, text: para.to_string(), tf, len: ts.len() });
            }
        }
        let mut df = HashMap::new();
        for p in &passages {
            for t in p.tf.keys() {
                *df.entry(t.clone()).or_insert(0) += 1;
            }
        }
        let avg_len = passages.iter().map(|p| p.len).sum::<usize>() as f64 / passages.len().max(1) as f64;
        Ok(Index { passages, df, avg_len })
    }

    fn score(&self, query: &[String]) -> Vec<(usize, f64)> {
        let (k1, b) = (1.2, 0.75);
        let n = self.passages.len() as f64;
        let mut scored: Vec<(usize, f64)> = self
            .passages
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let mut s = 0.0;
                for q in query {
                    let Some(&f) = p.tf.get(q) else { continue };
                    let df = self.df[q] as f64;
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    let f = f as f64;
                    s += idf * f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * p.len as f64 / self.avg_len));
                }
                (s > 0.0).then_some((i, s))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
    }
}

pub struct SearchText {
    spec: ToolSpec,
    indexes: Mutex<HashMap<PathBuf, Arc<Index>>>,
}

impl SearchText {
    pub fn tool() -> Arc<dyn Tool> {
        Arc::new(SearchText {
            spec: ToolSpec {
                name: "search_text".into(),
                description:
                    "Search the task's documents; returns the best-matching passages with their file and paragraph."
                        .into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1, "description": "Keywords to look for."},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 10, "description": "How many passages (default 3)."}
                    },
                    "required": ["query"]
                }),
                category: "search".into(),
                feasible: vec![
                    ErrorType::ArgInvalid,
                    ErrorType::InfoInsufficient,
                    ErrorType::ToolMismatch,
                    ErrorType::GroundingDrift,
                ],
            },
            indexes: Mutex::new(HashMap::new()),
        })
    }

    fn index(&self, root: &PathBuf) -> std::io::Result<Arc<Index>> {
        if let Some(i) = self.indexes.lock().unwrap_or_else(|p| p.into_inner()).get(root) {
            return Ok(Arc::clone(i));
        }
        let idx = Arc::new(Index::build(root)?);
        let mut cache = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(root.clone(), Arc::clone(&idx));
        Ok(idx)
    }
}

#[async_trait]
impl Tool for SearchText {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn version(&self) -> String {
        "builtin-search_text/bm25-1".into()
    }

    async fn call(&self, args: &Map<String, Value>, ctx: &CallContext) -> ToolOutput {
        let query = args.get("query").and_then(Value::as_str).unwrap_or_default();
        let top_k = args.get("top_k").and_then(Value::as_u64).unwrap_or(3) as usize;
        let Some(root) = &ctx.sandbox else {
            return ToolOutput::error("no_sandbox", "Error: this task has no documents");
        };
        let index = match self.index(root) {
            Ok(i) => i,
            Err(e) => return ToolOutput::error("io_error", format!("Error: cannot read the documents: {e}")),
        };
        let q: Vec<String> = terms(query).into_iter().collect::<HashSet<_>>().into_iter().collect();
        let mut q = q;
        q.sort();
        if q.is_empty() {
            return ToolOutput::error("empty_query", format!("Error: the query '{query}' has no searchable words"));
        }
        let scored = index.score(&q);
        if scored.is_empty() {
            return ToolOutput::with_status(
                ExecStatus::Empty,
                "no_match",
                format!("No passages match the query '{query}'."),
            );
        }
        let best = scored[0].1;
        let ties = scored.iter().take_while(|(_, s)| (s - best).abs() < 1e-9).count();
        if ties > top_k {
            return ToolOutput::error(
                "too_broad",
                format!(
                    "Query too broad: '{query}' matches {} of {} passages and {ties} tie for the best match; add a distinguishing term.",
                    scored.len(),
                    index.passages.len()
                ),
            );
        }
        let lines: Vec<String> = scored
            .iter()
            .take(top_k)
            .enumerate()
            .map(|(rank, (i, s))| {
                let p = &index.passages[*i];
                format!("[{}] {} ¶{} (score {:.2}): {}", rank + 1, p.doc, p.para, s, p.text)
            })
            .collect();
        ToolOutput::ok(lines.join("\n"))
    }
}
