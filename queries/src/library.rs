//! The named query library: the questions curators ask every day, kept as SQL files.
//!
//! Each file in `queries/sql/` opens with a header:
//!
//! ```sql
//! -- name: evidence_examples
//! -- description: A seeded random sample of one ErrorType's RoT rows…
//! -- param: error_type string = 'ArgInvalid'  -- which ErrorType
//! -- param: n int = 5  -- how many examples
//! ```
//!
//! Parameters are typed (`string`, `int`, `float`, `bool`, `snapshot`). Scalar parameters are
//! *bound*: the SQL refers to them as `$name` placeholders and their values travel as
//! [`ParamValues`], never pasted into the SQL text. A `snapshot` parameter names a snapshot
//! whose tables the query reads under a schema of the parameter's name (`base.rot`), which is
//! how one query compares two snapshots.
//!
//! The files are compiled into the binary, so `regrpo query` works from any directory.

use std::collections::HashMap;
use std::sync::OnceLock;

use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use regrpo_datasets::Repository;

use crate::error::{Error, Result};
use crate::session::{At, Session};

/// The library's files: (file name, contents).
const FILES: &[(&str, &str)] = &[
    ("failures_by_error_type.sql", include_str!("../sql/failures_by_error_type.sql")),
    ("tool_by_error_type.sql", include_str!("../sql/tool_by_error_type.sql")),
    ("operator_failure_rate.sql", include_str!("../sql/operator_failure_rate.sql")),
    ("evidence_examples.sql", include_str!("../sql/evidence_examples.sql")),
    ("unverified_and_rejected.sql", include_str!("../sql/unverified_and_rejected.sql")),
    ("reflection_length.sql", include_str!("../sql/reflection_length.sql")),
    ("snapshot_diff.sql", include_str!("../sql/snapshot_diff.sql")),
    ("duplicates.sql", include_str!("../sql/duplicates.sql")),
];

/// The type of a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    /// A snapshot name; its tables are registered under a schema named after the parameter.
    Snapshot,
}

impl ParamType {
    fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "string" => ParamType::String,
            "int" => ParamType::Int,
            "float" => ParamType::Float,
            "bool" => ParamType::Bool,
            "snapshot" => ParamType::Snapshot,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Snapshot => "snapshot",
        }
    }

    /// The typed value of `text`, or why it is not one.
    fn value(self, text: &str) -> std::result::Result<ScalarValue, String> {
        Ok(match self {
            ParamType::String | ParamType::Snapshot => ScalarValue::Utf8(Some(text.to_string())),
            ParamType::Int => ScalarValue::Int64(Some(text.parse().map_err(|_| "an integer".to_string())?)),
            ParamType::Float => ScalarValue::Float64(Some(text.parse().map_err(|_| "a number".to_string())?)),
            ParamType::Bool => ScalarValue::Boolean(Some(match text {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err("true or false".into()),
            })),
        })
    }
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    /// The default as written (strings unquoted); `None` means the parameter is required.
    pub default: Option<String>,
    pub help: String,
}

/// A query of the library.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedQuery {
    pub name: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
    /// The SQL after the header.
    pub sql: String,
    pub file: String,
}

impl NamedQuery {
    /// Parses a query file: its `-- name:`, `-- description:` and `-- param:` header lines,
    /// then the SQL.
    pub fn parse(file: &str, text: &str) -> Result<NamedQuery> {
        let bad = |line: usize, what: &str| Error::Usage(format!("{file}:{line}: {what}"));
        let (mut name, mut description, mut params) = (None, String::new(), Vec::new());
        let mut body = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Some(header) = line.strip_prefix("-- ").filter(|_| body.is_empty()) else {
                body.push(line);
                continue;
            };
            if let Some(v) = header.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = header.strip_prefix("description:") {
                description = v.trim().to_string();
            } else if let Some(v) = header.strip_prefix("param:") {
                let (decl, help) = v.split_once(" -- ").unwrap_or((v, ""));
                let (decl, default) = match decl.split_once('=') {
                    Some((d, default)) => (d, Some(unquote(default.trim()))),
                    None => (decl, None),
                };
                let mut words = decl.split_whitespace();
                let (Some(pname), Some(ty), None) = (words.next(), words.next(), words.next()) else {
                    return Err(bad(i + 1, "expected `-- param: NAME TYPE [= DEFAULT]  -- help`"));
                };
                let ty = ParamType::parse(ty)
                    .ok_or_else(|| bad(i + 1, &format!("unknown type `{ty}` (string, int, float, bool, snapshot)")))?;
                if let Some(d) = &default {
                    ty.value(d).map_err(|want| bad(i + 1, &format!("default `{d}` of `{pname}` is not {want}")))?;
                }
                params.push(ParamSpec { name: pname.to_string(), ty, default, help: help.trim().to_string() });
            } else {
                body.push(line);
            }
        }
        let name = name.ok_or_else(|| bad(1, "missing `-- name:` header"))?;
        Ok(NamedQuery { name, description, params, sql: body.join("\n").trim().to_string(), file: file.to_string() })
    }

    /// Checks `given` against the declared parameters and fills in defaults: the bound values
    /// of scalar parameters and the snapshots to attach.
    pub fn bind(&self, given: &[(String, String)]) -> Result<Binding> {
        let mut values: HashMap<String, String> = HashMap::new();
        for (k, v) in given {
            if !self.params.iter().any(|p| &p.name == k) {
                return Err(Error::UnknownParam {
                    query: self.name.clone(),
                    param: k.clone(),
                    known: self.params.iter().map(|p| p.name.clone()).collect(),
                });
            }
            values.insert(k.clone(), v.clone());
        }
        let mut binding = Binding::default();
        for p in &self.params {
            let text = values.remove(&p.name).or_else(|| p.default.clone()).ok_or_else(|| Error::MissingParam {
                query: self.name.clone(),
                param: p.name.clone(),
                ty: p.ty.as_str().to_string(),
                help: p.help.clone(),
            })?;
            let value = p.ty.value(&text).map_err(|expected| Error::BadParam {
                query: self.name.clone(),
                param: p.name.clone(),
                value: text.clone(),
                expected,
            })?;
            match p.ty {
                ParamType::Snapshot => binding.snapshots.push((p.name.clone(), text)),
                _ => binding.values.push((p.name.clone(), value)),
            }
        }
        Ok(binding)
    }
}

/// A query's parameters after checking: bound scalar values, and snapshots to attach.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub values: Vec<(String, ScalarValue)>,
    /// (schema, snapshot name)
    pub snapshots: Vec<(String, String)>,
}

fn unquote(s: &str) -> String {
    s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).unwrap_or(s).to_string()
}

/// Every query of the library, parsed once.
pub fn library() -> &'static [NamedQuery] {
    static LIBRARY: OnceLock<Vec<NamedQuery>> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, text)| NamedQuery::parse(file, text).expect("the embedded query library parses (tested)"))
            .collect()
    })
}

/// The library query called `name`.
pub fn find(name: &str) -> Result<&'static NamedQuery> {
    library().iter().find(|q| q.name == name).ok_or_else(|| Error::UnknownQuery {
        name: name.to_string(),
        known: library().iter().map(|q| q.name.clone()).collect(),
    })
}

/// Plans a library query on a repository at `at`: attaches the snapshots its parameters name
/// and binds its scalar parameters. Returns the session (for its pinned versions) and the plan.
pub async fn plan(
    repo: &Repository,
    at: At,
    query: &NamedQuery,
    given: &[(String, String)],
) -> Result<(Session, DataFrame)> {
    plan_on(repo, at, None, query, given).await
}

/// [`plan`], the statement running on a Ballista cluster (`df://HOST:PORT`) when one is given.
pub async fn plan_on(
    repo: &Repository,
    at: At,
    cluster: Option<&str>,
    query: &NamedQuery,
    given: &[(String, String)],
) -> Result<(Session, DataFrame)> {
    let binding = query.bind(given)?;
    let session = Session::open_on(repo, at, cluster).await?;
    for (schema, snapshot) in &binding.snapshots {
        session.attach(repo, schema, snapshot).await?;
    }
    let df = session.sql(&query.sql).await?;
    let df = if binding.values.is_empty() {
        df
    } else {
        df.with_param_values(ParamValues::Map(
            binding.values.into_iter().map(|(k, v)| (k, v.into())).collect::<HashMap<_, _>>(),
        ))?
    };
    Ok((session, df))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_file_parses_and_declares_what_it_uses() {
        assert_eq!(library().len(), FILES.len());
        for q in library() {
            assert!(!q.description.is_empty(), "{}", q.file);
            assert_eq!(format!("{}.sql", q.name), q.file);
            for p in &q.params {
                let used = match p.ty {
                    ParamType::Snapshot => q.sql.contains(&format!("{}.", p.name)),
                    _ => q.sql.contains(&format!("${}", p.name)),
                };
                assert!(used, "{}: parameter {} is declared but not used", q.file, p.name);
            }
        }
    }

    #[test]
    fn binding_checks_names_types_and_requirements() {
        let q = find("evidence_examples").unwrap();
        let b = q.bind(&[("n".into(), "3".into())]).unwrap();
        assert!(b.values.contains(&("n".into(), ScalarValue::Int64(Some(3)))));
        assert!(b.values.contains(&("error_type".into(), ScalarValue::Utf8(Some("ArgInvalid".into())))));
        let e = q.bind(&[("n".into(), "three".into())]).unwrap_err().to_string();
        assert!(e.contains("expects an integer"), "{e}");
        let e = q.bind(&[("limit".into(), "3".into())]).unwrap_err().to_string();
        assert!(e.contains("no parameter `limit`") && e.contains("error_type, n, seed"), "{e}");
        let e = find("snapshot_diff").unwrap().bind(&[("base".into(), "v1".into())]).unwrap_err().to_string();
        assert!(e.contains("needs --param head="), "{e}");
        let e = NamedQuery::parse("x.sql", "-- name: x\n-- param: a text\nSELECT 1").unwrap_err().to_string();
        assert!(e.contains("x.sql:2") && e.contains("unknown type `text`"), "{e}");
    }
}
