//! What the pages ask of the tables, as SQL with every user value bound as a parameter.
//!
//! A browse page is one query: the filter's conditions (pushed into the Parquet scans), a
//! keyset on the row id (`id > $after`, never an OFFSET) and a LIMIT; then the page's verdicts
//! are looked up. The `latest_reviews` table holds each reviewed row's latest verdict. Free
//! text reads, once the table's word index is built, only the rows that can hold the text
//! ([`regrpo_queries::TextIndex`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use regrpo_queries::Session;
use regrpo_schemas::Record;
use serde::{Deserialize, Serialize};

use crate::{Reader, RowTable};

/// Rows on a browse page.
pub(crate) const PAGE_ROWS: usize = 50;

/// What a browse page, a record's j/k and a bulk action cover; every field lives in the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The snapshot to read (absent: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
    /// `rot` (default) or `near_misses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The source format of the trajectory (`mat`, `bfcl`, `toolworld`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `true` or `false` (RoT rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// `accept`, `reject`, `flag` or `unreviewed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// Free text, case-insensitive, in the evidence or the observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

impl Filter {
    /// Empty fields (an untouched form input) mean no condition.
    pub(crate) fn normalized(mut self) -> Filter {
        for f in [
            &mut self.s,
            &mut self.kind,
            &mut self.error_type,
            &mut self.tool,
            &mut self.operator,
            &mut self.source,
            &mut self.verified,
            &mut self.review,
            &mut self.q,
        ] {
            if f.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *f = None;
            }
        }
        self
    }

    pub(crate) fn table(&self) -> RowTable {
        self.kind.as_deref().and_then(RowTable::parse).unwrap_or(RowTable::Rot)
    }

    /// This filter over `table`'s rows (the kind a record or review link carries).
    pub(crate) fn of_table(self, table: RowTable) -> Filter {
        Filter { kind: (table == RowTable::NearMisses).then(|| table.as_str().into()), ..self }
    }

    /// The filter as a query string (no leading `?`).
    pub(crate) fn query_string(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// This filter with one change.
    pub(crate) fn with(&self, change: impl FnOnce(&mut Filter)) -> Filter {
        let mut f = self.clone();
        change(&mut f);
        f
    }

    /// Whether any condition is set (the snapshot and kind are not conditions).
    pub(crate) fn is_narrowed(&self) -> bool {
        self.error_type.is_some()
            || self.tool.is_some()
            || self.operator.is_some()
            || self.source.is_some()
            || self.verified.is_some()
            || self.review.is_some()
            || self.q.is_some()
    }

    /// The `WHERE` conditions over alias `t`, their values pushed onto `sql`.
    fn conditions(&self, sql: &mut Bound) -> Vec<String> {
        let table = self.table();
        let id = format!("t.{}", table.id_column());
        let mut c = Vec::new();
        if let Some(v) = &self.error_type {
            c.push(format!("t.error_type = {}", sql.bind(v)));
        }
        if let Some(v) = &self.tool {
            c.push(format!("t.tool = {}", sql.bind(v)));
        }
        if let Some(v) = &self.operator {
            c.push(match table {
                RowTable::Rot => {
                    format!("t.near_miss_id IN (SELECT near_miss_id FROM near_misses WHERE operator = {})", sql.bind(v))
                }
                RowTable::NearMisses => format!("t.operator = {}", sql.bind(v)),
            });
        }
        if let Some(v) = &self.source {
            c.push(format!(
                "t.trajectory_id IN (SELECT trajectory_id FROM trajectories WHERE source = {})",
                sql.bind(v)
            ));
        }
        if let (RowTable::Rot, Some(v)) = (table, self.verified.as_deref()) {
            c.push(format!("t.verified = {}", v == "true"));
        }
        match self.review.as_deref() {
            Some("unreviewed") => c.push(format!("{id} NOT IN (SELECT row_id FROM latest_reviews)")),
            Some(v) => c.push(format!("{id} IN (SELECT row_id FROM latest_reviews WHERE verdict = {})", sql.bind(v))),
            None => {}
        }
        if let Some(v) = &self.q {
            // `icontains` (our UDF): ILIKE's answer at a case-sensitive search's speed.
            let needle = sql.bind(v);
            c.push(match table {
                RowTable::Rot => {
                    format!("(icontains(t.evidence, {needle}) OR icontains(t.failed_observation, {needle}))")
                }
                RowTable::NearMisses => format!("icontains(t.execution['text'], {needle})"),
            });
        }
        c
    }
}

/// What a filtered statement reads: the table itself or, for free text once the table's word
/// index is built, only the rows the index says can hold the text (a superset: the statement
/// still applies the exact condition), registered under a name of their own while the statement
/// runs.
struct Rows {
    name: String,
    registered: Option<SessionContext>,
}

impl Rows {
    async fn of(reader: &Reader, filter: &Filter) -> anyhow::Result<Rows> {
        let table = filter.table();
        let plain = Rows { name: table.as_str().to_string(), registered: None };
        let Some(q) = &filter.q else { return Ok(plain) };
        let Some(index) = reader.text_index(table).await else { return Ok(plain) };
        let Some(candidates) = index.candidates(q) else { return Ok(plain) };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("{}__text_{}", table.as_str(), NEXT.fetch_add(1, Ordering::Relaxed));
        let ctx = reader.context().clone();
        ctx.register_table(name.as_str(), index.provider(&candidates))?;
        Ok(Rows { name, registered: Some(ctx) })
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        if let Some(ctx) = &self.registered {
            let _ = ctx.deregister_table(self.name.as_str());
        }
    }
}

/// Positional parameters of one statement.
#[derive(Default)]
struct Bound {
    values: Vec<ScalarValue>,
}

impl Bound {
    fn bind(&mut self, v: &str) -> String {
        self.values.push(ScalarValue::Utf8(Some(v.to_string())));
        format!("${}", self.values.len())
    }
}

/// Runs a statement with its bound values.
async fn run(session: &Session, sql: &str, bound: Bound) -> anyhow::Result<Vec<RecordBatch>> {
    let df = session.sql(sql).await?;
    let df = if bound.values.is_empty() { df } else { df.with_param_values(bound.values)? };
    Ok(df.collect().await?)
}

/// Column `i` of every batch as optional strings (any type, cast).
fn strings(batches: &[RecordBatch], i: usize) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let col = cast(b.column(i), &DataType::Utf8)?;
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|r| col.is_valid(r).then(|| col.value(r).to_string())));
    }
    Ok(out)
}

/// Column `i` of every batch as integers.
fn ints(batches: &[RecordBatch], i: usize) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for b in batches {
        let col = cast(b.column(i), &DataType::Int64)?;
        let col = col.as_primitive::<arrow::datatypes::Int64Type>();
        out.extend((0..col.len()).map(|r| if col.is_valid(r) { col.value(r) } else { 0 }));
    }
    Ok(out)
}

/// Registers `latest_reviews`: each reviewed row's latest review, `clear`ed rows left out.
///
/// Computed once per version of `reviews` and held in memory (one row per reviewed row), not a
/// view: every browse page joins it, and recomputing the window over the whole reviews table in
/// each query cost ~35 ms a page at 20,000 reviews (2 cores).
pub(crate) async fn register_latest_reviews(session: &Session) -> anyhow::Result<()> {
    let ctx = session.context();
    let df = ctx
        .sql(
            "SELECT row_table, row_id, verdict, reason, reviewer, reviewed_at FROM (\
               SELECT *, row_number() OVER (PARTITION BY row_id ORDER BY reviewed_at DESC, review_id DESC) AS rn \
               FROM reviews) \
             WHERE rn = 1 AND verdict <> 'clear'",
        )
        .await?;
    let schema = Arc::clone(df.schema().inner());
    let table = MemTable::try_new(schema, vec![df.collect().await?])?;
    ctx.deregister_table("latest_reviews")?;
    ctx.register_table("latest_reviews", Arc::new(table))?;
    Ok(())
}

/// One row of a browse page.
#[derive(Debug, Clone)]
pub(crate) struct ListRow {
    pub id: String,
    pub error_type: String,
    pub tool: String,
    /// `verified` / `unverified` for RoT rows, the operator for near-misses.
    pub tag: String,
    /// The start of the evidence (RoT) or the observation (near-miss).
    pub snippet: String,
    pub verdict: Option<String>,
}

/// Where a page starts.
#[derive(Debug, Clone, Default)]
pub(crate) enum Keyset {
    #[default]
    First,
    After(String),
    Before(String),
}

/// A browse page: its rows, and whether rows lie before and after it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub rows: Vec<ListRow>,
    pub has_prev: bool,
    pub has_next: bool,
}

/// One page of the rows the filter matches, in id order.
pub(crate) async fn page(session: &Reader, filter: &Filter, at: &Keyset, rows: usize) -> anyhow::Result<Page> {
    let table = filter.table();
    let from = Rows::of(session, filter).await?;
    let mut bound = Bound::default();
    let mut conds = filter.conditions(&mut bound);
    let id = table.id_column();
    let (order, desc) = match at {
        Keyset::First => ("ASC", false),
        Keyset::After(k) => {
            conds.push(format!("t.{id} > {}", bound.bind(k)));
            ("ASC", false)
        }
        Keyset::Before(k) => {
            conds.push(format!("t.{id} < {}", bound.bind(k)));
            ("DESC", true)
        }
    };
    let (tag, snippet) = match table {
        RowTable::Rot => ("CASE WHEN t.verified THEN 'verified' ELSE 'unverified' END", "substr(t.evidence, 1, 240)"),
        RowTable::NearMisses => ("t.operator", "substr(t.execution['text'], 1, 240)"),
    };
    // The verdicts are looked up for the page's rows afterwards rather than joined here: the
    // join collected the LIMIT's output, whose strings still point into every buffer the scan
    // decoded (~75 MB at 2M rows), and copied them (+50 ms a page).
    let sql = format!(
        "SELECT t.{id} AS id, t.error_type, t.tool, {tag} AS tag, {snippet} AS snippet FROM {table} t \
         {where_} ORDER BY t.{id} {order} LIMIT {limit}",
        table = from.name,
        where_ = where_clause(&conds),
        limit = rows + 1,
    );
    let batches = run(session, &sql, bound).await?;
    let cols: Vec<Vec<Option<String>>> = (0..5).map(|i| strings(&batches, i)).collect::<anyhow::Result<_>>()?;
    let ids: Vec<String> = cols[0].iter().map(|v| v.clone().unwrap_or_default()).collect();
    let mut verdicts = verdicts(session, &ids).await?;
    let mut out: Vec<ListRow> = (0..ids.len())
        .map(|r| {
            let get = |c: usize| cols[c][r].clone().unwrap_or_default();
            ListRow {
                id: get(0),
                error_type: get(1),
                tool: get(2),
                tag: get(3),
                snippet: get(4),
                verdict: verdicts.remove(&ids[r]),
            }
        })
        .collect();
    let more = out.len() > rows;
    out.truncate(rows);
    if desc {
        out.reverse();
    }
    let (has_prev, has_next) = match at {
        Keyset::First => (false, more),
        Keyset::After(_) => (true, more),
        Keyset::Before(_) => (more, true),
    };
    Ok(Page { rows: out, has_prev, has_next })
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) }
}

/// How many rows the filter matches.
pub(crate) async fn count(session: &Reader, filter: &Filter) -> anyhow::Result<i64> {
    let from = Rows::of(session, filter).await?;
    let mut bound = Bound::default();
    let conds = filter.conditions(&mut bound);
    let sql = format!("SELECT count(*) FROM {} t {}", from.name, where_clause(&conds));
    Ok(ints(&run(session, &sql, bound).await?, 0)?.first().copied().unwrap_or(0))
}

/// The ids of every row the filter matches (a bulk action's rows).
pub(crate) async fn ids(session: &Reader, filter: &Filter) -> anyhow::Result<Vec<String>> {
    let from = Rows::of(session, filter).await?;
    let mut bound = Bound::default();
    let conds = filter.conditions(&mut bound);
    let table = filter.table();
    let sql = format!("SELECT t.{} FROM {} t {}", table.id_column(), from.name, where_clause(&conds));
    Ok(strings(&run(session, &sql, bound).await?, 0)?.into_iter().flatten().collect())
}

/// The row after (`forward`) or before `id` among those the filter matches.
pub(crate) async fn neighbour(
    session: &Reader,
    filter: &Filter,
    id: &str,
    forward: bool,
) -> anyhow::Result<Option<String>> {
    let table = filter.table();
    let from = Rows::of(session, filter).await?;
    let col = table.id_column();
    let mut bound = Bound::default();
    let mut conds = filter.conditions(&mut bound);
    let (op, order) = if forward { (">", "ASC") } else { ("<", "DESC") };
    conds.push(format!("t.{col} {op} {}", bound.bind(id)));
    let sql = format!("SELECT t.{col} FROM {} t {} ORDER BY t.{col} {order} LIMIT 1", from.name, where_clause(&conds));
    Ok(strings(&run(session, &sql, bound).await?, 0)?.into_iter().flatten().next())
}

/// The record of table `R` whose id is `id`.
pub(crate) async fn one<R: Record>(session: &Session, id: &str) -> anyhow::Result<Option<R>> {
    let mut bound = Bound::default();
    let sql = format!("SELECT * FROM {} WHERE {} = {}", R::TABLE, R::ID, bound.bind(id));
    let batches = run(session, &sql, bound).await?;
    for b in &batches {
        if b.num_rows() > 0 {
            return Ok(regrpo_schemas::from_batch::<R>(b)?.into_iter().next());
        }
    }
    Ok(None)
}

/// A labelled count.
#[derive(Debug, Clone)]
pub(crate) struct Count {
    pub key: String,
    pub n: i64,
}

/// `(key, count)` rows of a two-column statement.
pub(crate) async fn counts(session: &Session, sql: &str) -> anyhow::Result<Vec<Count>> {
    let batches = run(session, sql, Bound::default()).await?;
    let (keys, ns) = (strings(&batches, 0)?, ints(&batches, 1)?);
    Ok(keys.into_iter().zip(ns).map(|(k, n)| Count { key: k.unwrap_or_else(|| "(none)".into()), n }).collect())
}

/// The single row of integers a statement returns.
pub(crate) async fn scalars(session: &Session, sql: &str) -> anyhow::Result<Vec<i64>> {
    let batches = run(session, sql, Bound::default()).await?;
    (0..batches.first().map_or(0, |b| b.num_columns()))
        .map(|i| Ok(ints(&batches, i)?.first().copied().unwrap_or(0)))
        .collect()
}

/// Other rows of a trajectory: `(table, id, step, error type, tool)`.
pub(crate) async fn siblings(session: &Session, trajectory_id: &str) -> anyhow::Result<Vec<[String; 5]>> {
    let mut bound = Bound::default();
    let t = bound.bind(trajectory_id);
    let sql = format!(
        "SELECT 'rot' AS tbl, rot_id AS id, step_index, error_type, tool FROM rot WHERE trajectory_id = {t} \
         UNION ALL \
         SELECT 'near_misses', near_miss_id, step_index, error_type, tool FROM near_misses WHERE trajectory_id = {t} \
         ORDER BY step_index, tbl DESC, id"
    );
    let batches = run(session, &sql, bound).await?;
    let cols: Vec<Vec<Option<String>>> = (0..5).map(|i| strings(&batches, i)).collect::<anyhow::Result<_>>()?;
    Ok((0..cols[0].len()).map(|r| std::array::from_fn(|c| cols[c][r].clone().unwrap_or_default())).collect())
}

/// A row's reviews, oldest first: `(verdict, reason, reviewer, time)`.
pub(crate) async fn history(session: &Session, row_id: &str) -> anyhow::Result<Vec<[String; 4]>> {
    let mut bound = Bound::default();
    let sql = format!(
        "SELECT verdict, reason, reviewer, reviewed_at FROM reviews WHERE row_id = {} ORDER BY reviewed_at, review_id",
        bound.bind(row_id)
    );
    let batches = run(session, &sql, bound).await?;
    let cols: Vec<Vec<Option<String>>> = (0..3).map(|i| strings(&batches, i)).collect::<anyhow::Result<_>>()?;
    let at = ints(&batches, 3)?;
    Ok((0..at.len())
        .map(|r| {
            let when = chrono::DateTime::from_timestamp_micros(at[r])
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            [
                cols[0][r].clone().unwrap_or_default(),
                cols[1][r].clone().unwrap_or_default(),
                cols[2][r].clone().unwrap_or_default(),
                when,
            ]
        })
        .collect())
}

/// The current verdicts of these rows (rows without one are absent).
async fn verdicts(session: &Session, ids: &[String]) -> anyhow::Result<HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut bound = Bound::default();
    let list: Vec<String> = ids.iter().map(|id| bound.bind(id)).collect();
    let sql = format!("SELECT row_id, verdict FROM latest_reviews WHERE row_id IN ({})", list.join(", "));
    let batches = run(session, &sql, bound).await?;
    let (rows, verdicts) = (strings(&batches, 0)?, strings(&batches, 1)?);
    Ok(rows.into_iter().zip(verdicts).filter_map(|(r, v)| Some((r?, v?))).collect())
}

/// A row's current verdict.
pub(crate) async fn verdict(session: &Session, row_id: &str) -> anyhow::Result<Option<String>> {
    Ok(verdicts(session, &[row_id.to_string()]).await?.remove(row_id))
}

/// Every cell of a result as text (`NULL` as empty), for the SQL page.
pub(crate) fn cells(batches: &[RecordBatch]) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let Some(first) = batches.first() else { return Ok((Vec::new(), Vec::new())) };
    let header = first.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for b in batches {
        let mut cols = Vec::with_capacity(b.num_columns());
        for i in 0..b.num_columns() {
            let formatter = arrow::util::display::ArrayFormatter::try_new(b.column(i), &Default::default())?;
            cols.push((0..b.num_rows()).map(|r| formatter.value(r).to_string()).collect::<Vec<_>>());
        }
        rows.extend((0..b.num_rows()).map(|r| cols.iter().map(|c| c[r].clone()).collect()));
    }
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_bind_every_value_and_round_trip_through_the_url() {
        let f = Filter {
            error_type: Some("ArgInvalid".into()),
            q: Some("50%_off' OR 1=1 --".into()),
            review: Some("unreviewed".into()),
            verified: Some("true".into()),
            ..Filter::default()
        };
        let mut b = Bound::default();
        let conds = f.conditions(&mut b).join(" AND ");
        assert!(!conds.contains("ArgInvalid") && !conds.contains("OR 1=1"), "{conds}");
        assert_eq!(b.values.len(), 2);
        // The text is a needle for `icontains`, not a LIKE pattern: `%` and `_` stay literal.
        assert_eq!(b.values[1], ScalarValue::Utf8(Some("50%_off' OR 1=1 --".into())));
        assert!(conds.contains("icontains(t.evidence, $2)"), "{conds}");
        let back: Filter = serde_urlencoded::from_str(&f.query_string()).unwrap();
        assert_eq!(back, f);
        let blank: Filter = serde_urlencoded::from_str("error_type=&tool=calculator&q=").unwrap();
        assert_eq!(blank.normalized(), Filter { tool: Some("calculator".into()), ..Filter::default() });
    }
}
