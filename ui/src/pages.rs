//! The pages: each handler asks [`data`](crate::data) for what it shows and renders one
//! askama template (escaping every value).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, body::Body};
use regrpo_datasets::snapshot;
use regrpo_queries::library;
use regrpo_schemas::{NearMiss, Review, Rot, Trajectory, Verdict};
use serde::Deserialize;

use crate::data::{self, Count, Filter, Keyset, ListRow, PAGE_ROWS};
use crate::view::{self, DiffLine, Highlighted};
use crate::{App, RowTable};

type AppState = State<Arc<App>>;

/// The longest a SQL-box query may run.
const SQL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most rows the SQL page shows (the CSV download has them all).
const SQL_ROWS_SHOWN: usize = 1000;

/// A page that could not be shown, with why.
pub(crate) enum PageError {
    NotFound(String),
    BadRequest(String),
    Conflict(String),
    Internal(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(e: E) -> PageError {
        PageError::Internal(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            PageError::Conflict(m) => (StatusCode::CONFLICT, m),
            PageError::Internal(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        };
        let page = ErrorPage { chrome: Chrome::bare(), status: status.as_u16(), message };
        (status, render(&page)).into_response()
    }
}

/// The session of snapshot `s` (the server's when `None`); an unknown snapshot is a 404.
async fn open_session(app: &App, s: Option<&str>) -> Result<crate::Reader, PageError> {
    if let Some(name) = s
        && snapshot::get(&app.cfg.repo, name).await.is_err()
    {
        return Err(PageError::NotFound(format!("no snapshot `{name}` (the overview lists them)")));
    }
    Ok(app.session(s).await?)
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the page failed: {e}")).into_response(),
    }
}

/// What every page's frame shows.
pub(crate) struct Chrome {
    pub csrf: String,
    /// The snapshot read (`None`: latest tables).
    pub snapshot: Option<String>,
    /// `s=NAME&` to keep the snapshot in links (empty for the default).
    pub keep: String,
}

impl Chrome {
    fn new(app: &App, s: Option<&str>) -> Chrome {
        let snapshot = s.map(str::to_string).or_else(|| app.default_snapshot().map(str::to_string));
        let keep =
            s.map(|s| format!("{}&", serde_urlencoded::to_string([("s", s)]).unwrap_or_default())).unwrap_or_default();
        Chrome { csrf: app.csrf.clone(), snapshot, keep }
    }

    fn bare() -> Chrome {
        Chrome { csrf: String::new(), snapshot: None, keep: String::new() }
    }

    pub fn snapshot_label(&self) -> String {
        self.snapshot.as_ref().map_or_else(|| "latest tables".to_string(), |s| format!("snapshot {s}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Overview

struct Bar {
    key: String,
    n: i64,
    href: String,
}

struct Facet {
    title: &'static str,
    max: i64,
    bars: Vec<Bar>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    facets: Vec<Facet>,
    rot_rows: i64,
    verified: i64,
    derivable: i64,
    derivable_known: i64,
    near_misses: i64,
    trajectories: i64,
    verified_share: String,
    derivable_share: String,
    reviews: Vec<Count>,
    reviewed: i64,
    snapshots: Vec<String>,
    snapshots_newest_first: Vec<String>,
    /// The snapshot read, or empty.
    current: String,
}

fn share(n: i64, of: i64) -> String {
    if of == 0 { "—".into() } else { format!("{:.1}%", 100.0 * n as f64 / of as f64) }
}

#[derive(Deserialize)]
pub(crate) struct SnapshotQuery {
    #[serde(default)]
    s: Option<String>,
}

fn snapshot_param(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

pub(crate) async fn overview(State(app): AppState, Query(q): Query<SnapshotQuery>) -> Result<Response, PageError> {
    let s = snapshot_param(q.s);
    let session = open_session(&app, s.as_deref()).await?;
    let base = Filter { s: s.clone(), ..Filter::default() };
    let facet = |title, kind: Option<&str>, counts: Vec<Count>, set: fn(&mut Filter, String)| {
        let max = counts.iter().map(|c| c.n).max().unwrap_or(0);
        let bars = counts
            .into_iter()
            .map(|c| {
                let f = base.with(|f| {
                    f.kind = kind.map(str::to_string);
                    set(f, c.key.clone())
                });
                Bar { href: format!("/browse?{}", f.query_string()), key: c.key, n: c.n }
            })
            .collect();
        Facet { title, max, bars }
    };
    let by_type =
        data::counts(&session, "SELECT error_type, count(*) AS n FROM rot GROUP BY 1 ORDER BY n DESC, 1").await?;
    let by_tool = data::counts(&session, "SELECT tool, count(*) AS n FROM rot GROUP BY 1 ORDER BY n DESC, 1").await?;
    let by_op =
        data::counts(&session, "SELECT operator, count(*) AS n FROM near_misses GROUP BY 1 ORDER BY n DESC, 1").await?;
    let by_source = data::counts(
        &session,
        "SELECT t.source, count(*) AS n FROM rot r JOIN trajectories t ON r.trajectory_id = t.trajectory_id \
         GROUP BY 1 ORDER BY n DESC, 1",
    )
    .await?;
    let facets = vec![
        facet("RoT rows by ErrorType", None, by_type, |f, v| f.error_type = Some(v)),
        facet("RoT rows by tool", None, by_tool, |f, v| f.tool = Some(v)),
        facet("Near-misses by operator", Some("near_misses"), by_op, |f, v| f.operator = Some(v)),
        facet("RoT rows by source", None, by_source, |f, v| f.source = Some(v)),
    ];
    let totals = data::scalars(
        &session,
        "SELECT count(*), count(*) FILTER (WHERE verified), count(*) FILTER (WHERE derivable), count(derivable) FROM rot",
    )
    .await?;
    let others = data::scalars(
        &session,
        "SELECT (SELECT count(*) FROM near_misses) AS near_misses, (SELECT count(*) FROM trajectories) AS trajectories",
    )
    .await?;
    let reviews = data::counts(
        &session,
        "SELECT verdict, count(*) AS n FROM latest_reviews WHERE row_table = 'rot' GROUP BY 1 ORDER BY 1",
    )
    .await?;
    let snapshots: Vec<String> = snapshot::list(&app.cfg.repo).await?.into_iter().map(|s| s.name).collect();
    let chrome = Chrome::new(&app, s.as_deref());
    let page = Overview {
        current: chrome.snapshot.clone().unwrap_or_default(),
        chrome,
        verified_share: share(totals[1], totals[0]),
        derivable_share: share(totals[2], totals[3]),
        reviewed: reviews.iter().map(|c| c.n).sum(),
        snapshots_newest_first: snapshots.iter().rev().cloned().collect(),
        facets,
        rot_rows: totals[0],
        verified: totals[1],
        derivable: totals[2],
        derivable_known: totals[3],
        near_misses: others[0],
        trajectories: others[1],
        reviews,
        snapshots,
    };
    Ok(render(&page))
}

// ---------------------------------------------------------------------------------------------
// Snapshot diff

#[derive(Template)]
#[template(path = "diff.html")]
struct DiffPage {
    chrome: Chrome,
    base: String,
    head: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[derive(Deserialize)]
pub(crate) struct DiffQuery {
    base: String,
    head: String,
}

pub(crate) async fn diff(State(app): AppState, Query(q): Query<DiffQuery>) -> Result<Response, PageError> {
    let query = library::find("snapshot_diff")?;
    let params = [("base".to_string(), q.base.clone()), ("head".to_string(), q.head.clone())];
    let (_, df) = library::plan(&app.cfg.repo, regrpo_queries::At::Latest, query, &params)
        .await
        .map_err(|e| PageError::BadRequest(e.to_string()))?;
    let (header, rows) = data::cells(&df.collect().await?)?;
    Ok(render(&DiffPage { chrome: Chrome::new(&app, None), base: q.base, head: q.head, header, rows }))
}

// ---------------------------------------------------------------------------------------------
// Browse

#[derive(Template)]
#[template(path = "browse.html")]
struct Browse {
    chrome: Chrome,
    filter: Filter,
    form: FilterForm,
    narrowed: bool,
    rows: Vec<ListRow>,
    table: &'static str,
    qs: String,
    prev: Option<String>,
    next: Option<String>,
    page_rows: usize,
}

/// A filter's values as the form shows them (empty: no condition).
struct FilterForm {
    error_type: String,
    tool: String,
    operator: String,
    source: String,
    verified: String,
    review: String,
    q: String,
}

impl FilterForm {
    fn of(f: &Filter) -> FilterForm {
        let v = |x: &Option<String>| x.clone().unwrap_or_default();
        FilterForm {
            error_type: v(&f.error_type),
            tool: v(&f.tool),
            operator: v(&f.operator),
            source: v(&f.source),
            verified: v(&f.verified),
            review: v(&f.review),
            q: v(&f.q),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct BrowseQuery {
    #[serde(flatten)]
    filter: Filter,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

pub(crate) async fn browse(State(app): AppState, Query(q): Query<BrowseQuery>) -> Result<Response, PageError> {
    let filter = q.filter.normalized();
    let at = match (q.after.filter(|s| !s.is_empty()), q.before.filter(|s| !s.is_empty())) {
        (Some(a), _) => Keyset::After(a),
        (None, Some(b)) => Keyset::Before(b),
        (None, None) => Keyset::First,
    };
    let session = open_session(&app, filter.s.as_deref()).await?;
    let page = data::page(&session, &filter, &at, PAGE_ROWS).await?;
    let qs = filter.query_string();
    let link = |key: &str, id: &str| {
        let k = serde_urlencoded::to_string([(key, id)]).unwrap_or_default();
        if qs.is_empty() { format!("/browse?{k}") } else { format!("/browse?{qs}&{k}") }
    };
    let prev = page.rows.first().filter(|_| page.has_prev).map(|r| link("before", &r.id));
    let next = page.rows.last().filter(|_| page.has_next).map(|r| link("after", &r.id));
    let page = Browse {
        chrome: Chrome::new(&app, filter.s.as_deref()),
        table: filter.table().as_str(),
        form: FilterForm::of(&filter),
        narrowed: filter.is_narrowed(),
        filter,
        rows: page.rows,
        qs,
        prev,
        next,
        page_rows: PAGE_ROWS,
    };
    Ok(render(&page))
}

// ---------------------------------------------------------------------------------------------
// Record

struct ActionView {
    dom: &'static str,
    tool: String,
    pretty: String,
    raw: String,
}

impl ActionView {
    fn of(dom: &'static str, a: &regrpo_schemas::ActionRecord) -> ActionView {
        ActionView { dom, tool: a.tool.clone(), pretty: view::pretty_arguments(a), raw: a.raw.clone() }
    }
}

struct StepView {
    index: i32,
    thought: String,
    action: Option<ActionView>,
    observation: String,
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    chrome: Chrome,
    table: &'static str,
    id: String,
    back: String,
    prev: Option<String>,
    next: Option<String>,
    verdict: Option<String>,
    history: Vec<[String; 4]>,
    error_type: String,
    tool: String,
    facts: Vec<(String, String)>,
    task: String,
    trajectory_id: String,
    steps: Vec<StepView>,
    failed: ActionView,
    status: String,
    observation: Highlighted,
    evidence: String,
    fix_plan: String,
    diff: Vec<DiffLine>,
    corrected: Option<ActionView>,
    reexecution: Option<String>,
    siblings: Vec<[String; 5]>,
}

impl RecordPage {
    /// A page for row `id` of `table` with nothing filled in but where it is and how it was
    /// reached; the handler fills in the row.
    fn blank(chrome: Chrome, table: RowTable, id: &str, back: &str) -> RecordPage {
        RecordPage {
            chrome,
            table: table.as_str(),
            id: id.to_string(),
            back: back.to_string(),
            prev: None,
            next: None,
            verdict: None,
            history: Vec::new(),
            error_type: String::new(),
            tool: String::new(),
            facts: Vec::new(),
            task: String::new(),
            trajectory_id: String::new(),
            steps: Vec::new(),
            failed: ActionView { dom: "failed", tool: String::new(), pretty: String::new(), raw: String::new() },
            status: String::new(),
            observation: view::highlight("", "", None, None),
            evidence: String::new(),
            fix_plan: String::new(),
            diff: Vec::new(),
            corrected: None,
            reexecution: None,
            siblings: Vec::new(),
        }
    }
}

pub(crate) async fn record(
    State(app): AppState,
    Path((table, id)): Path<(String, String)>,
    Query(filter): Query<Filter>,
) -> Result<Response, PageError> {
    let table = RowTable::parse(&table).ok_or_else(|| PageError::NotFound(format!("no table `{table}` to review")))?;
    let filter = filter.normalized().of_table(table);
    let session = open_session(&app, filter.s.as_deref()).await?;
    let back = filter.query_string();
    let (mut page, step) = match table {
        RowTable::Rot => {
            let rot = data::one::<Rot>(&session, &id).await?.ok_or_else(|| {
                PageError::NotFound(format!(
                    "no RoT row {id} in {}",
                    Chrome::new(&app, filter.s.as_deref()).snapshot_label()
                ))
            })?;
            let mut facts = vec![
                ("verified".to_string(), rot.verified.to_string()),
                ("derivable".to_string(), rot.derivable.map_or("unknown".into(), |d| d.to_string())),
                ("gates passed".to_string(), rot.gates.join(", ")),
                ("generator".to_string(), rot.generator.clone()),
            ];
            if let Some(nm) = &rot.near_miss_id
                && let Some(n) = data::one::<NearMiss>(&session, nm).await?
            {
                facts.insert(0, ("operator".into(), format!("{} ({})", n.operator, n.change)));
            }
            let page = RecordPage {
                error_type: rot.error_type.clone(),
                tool: rot.tool.clone(),
                facts,
                trajectory_id: rot.trajectory_id.clone(),
                failed: ActionView::of("failed", &rot.failed_action),
                status: "error".into(),
                observation: view::highlight(
                    &rot.failed_observation,
                    &rot.evidence,
                    rot.evidence_start,
                    rot.evidence_end,
                ),
                evidence: rot.evidence.clone(),
                fix_plan: rot.fix_plan.clone(),
                diff: view::action_diff(&rot.failed_action, &rot.corrected_action),
                corrected: Some(ActionView::of("corrected", &rot.corrected_action)),
                reexecution: rot.corrected_observation.clone(),
                ..RecordPage::blank(Chrome::new(&app, filter.s.as_deref()), table, &id, &back)
            };
            (page, rot.step_index)
        }
        RowTable::NearMisses => {
            let n = data::one::<NearMiss>(&session, &id)
                .await?
                .ok_or_else(|| PageError::NotFound(format!("no near-miss {id}")))?;
            let page = RecordPage {
                error_type: n.error_type.clone(),
                tool: n.tool.clone(),
                facts: vec![
                    ("operator".into(), format!("{} ({})", n.operator, n.change)),
                    (
                        "judge".into(),
                        format!("{}{}", n.verdict, n.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()),
                    ),
                    ("is a failure".into(), n.is_failure.to_string()),
                    ("error code".into(), n.execution.error_code.clone().unwrap_or_default()),
                ],
                trajectory_id: n.trajectory_id.clone(),
                failed: ActionView::of("failed", &n.failed_action),
                status: n.execution.status.as_str().to_string(),
                observation: view::highlight(&n.execution.text, "", None, None),
                diff: view::action_diff(&n.failed_action, &n.original_action),
                corrected: Some(ActionView::of("original", &n.original_action)),
                ..RecordPage::blank(Chrome::new(&app, filter.s.as_deref()), table, &id, &back)
            };
            (page, n.step_index)
        }
    };
    if let Some(t) = data::one::<Trajectory>(&session, &page.trajectory_id).await? {
        page.task = t.task.clone();
        page.steps = t
            .steps
            .iter()
            .filter(|s| s.index < step)
            .map(|s| StepView {
                index: s.index,
                thought: s.thought.clone().unwrap_or_default(),
                action: s.action.as_ref().map(|a| ActionView::of("", a)),
                observation: s.observation.as_ref().map(|o| o.text.clone()).unwrap_or_default(),
            })
            .collect();
    }
    page.siblings = data::siblings(&session, &page.trajectory_id).await?.into_iter().filter(|s| s[1] != id).collect();
    page.history = data::history(&session, &id).await?;
    page.verdict = data::verdict(&session, &id).await?;
    let href = |other: Option<String>| other.map(|o| record_href(table, &o, &back));
    page.prev = href(data::neighbour(&session, &filter, &id, false).await?);
    page.next = href(data::neighbour(&session, &filter, &id, true).await?);
    Ok(render(&page))
}

fn record_href(table: RowTable, id: &str, back: &str) -> String {
    if back.is_empty() {
        format!("/record/{}/{id}", table.as_str())
    } else {
        format!("/record/{}/{id}?{back}", table.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Review

#[derive(Deserialize)]
pub(crate) struct ReviewForm {
    table: String,
    row_id: String,
    verdict: String,
    #[serde(default)]
    reason: Option<String>,
    /// The filter the reviewer was in (a query string): where j/k and the next record come from.
    #[serde(default)]
    back: String,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn parse_back(back: &str) -> Filter {
    serde_urlencoded::from_str::<Filter>(back).unwrap_or_default().normalized()
}

fn reason(r: Option<String>, verdict: Verdict) -> Result<Option<String>, PageError> {
    let r = r.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    if verdict == Verdict::Reject && r.is_none() {
        return Err(PageError::BadRequest("a reject needs a reason".into()));
    }
    Ok(r)
}

/// Records one verdict, then shows the next record of the filter (or, from htmx, the verdict).
pub(crate) async fn review(
    State(app): AppState,
    headers: HeaderMap,
    Form(f): Form<ReviewForm>,
) -> Result<Response, PageError> {
    let table = RowTable::parse(&f.table).ok_or_else(|| PageError::BadRequest(format!("no table `{}`", f.table)))?;
    let verdict: Verdict = f.verdict.parse().map_err(PageError::BadRequest)?;
    let reason = reason(f.reason, verdict)?;
    let filter = parse_back(&f.back).of_table(table);
    let session = open_session(&app, filter.s.as_deref()).await?;
    let exists = match table {
        RowTable::Rot => data::one::<Rot>(&session, &f.row_id).await?.is_some(),
        RowTable::NearMisses => data::one::<NearMiss>(&session, &f.row_id).await?.is_some(),
    };
    if !exists {
        return Err(PageError::NotFound(format!("no {} row {}", table.as_str(), f.row_id)));
    }
    let r = Review::new(
        table.as_str(),
        &f.row_id,
        verdict,
        reason,
        &app.cfg.reviewer,
        now_micros(),
        filter.s.clone().or_else(|| app.default_snapshot().map(str::to_string)),
    );
    app.append_reviews(vec![r]).await?;
    if headers.contains_key("hx-request") {
        return Ok(Html(format!("<span class=\"verdict {v}\">{v}</span>", v = verdict.as_str())).into_response());
    }
    let session = open_session(&app, filter.s.as_deref()).await?;
    let back = filter.query_string();
    let to = match data::neighbour(&session, &filter, &f.row_id, true).await? {
        Some(next) => record_href(table, &next, &back),
        None => record_href(table, &f.row_id, &back),
    };
    Ok(Redirect::to(&to).into_response())
}

#[derive(Deserialize)]
pub(crate) struct UndoForm {
    #[serde(default)]
    back: String,
}

/// Undoes this reviewer's latest review that is not itself an undo and not undone yet: appends a
/// review restoring the verdict before it, and shows that record.
pub(crate) async fn undo(State(app): AppState, Form(f): Form<UndoForm>) -> Result<Response, PageError> {
    let history = regrpo_datasets::reviews::all(&app.cfg.repo).await?;
    let undone: Vec<&str> =
        history.iter().filter_map(|r| r.reason.as_deref().and_then(|x| x.strip_prefix("undo of "))).collect();
    let last = history
        .iter()
        .rev()
        .filter(|r| r.reviewer == app.cfg.reviewer)
        .find(|r| {
            !r.reason.as_deref().is_some_and(|x| x.starts_with("undo of ")) && !undone.contains(&r.review_id.as_str())
        })
        .ok_or_else(|| PageError::Conflict("nothing of yours to undo".into()))?
        .clone();
    let earlier: Vec<Review> = history.iter().take_while(|r| r.review_id != last.review_id).cloned().collect();
    let previous = regrpo_datasets::Verdicts::from_reviews(&earlier).of(&last.row_id).unwrap_or(Verdict::Clear);
    let restore = Review::new(
        &last.row_table,
        &last.row_id,
        previous,
        Some(format!("undo of {}", last.review_id)),
        &app.cfg.reviewer,
        now_micros().max(last.reviewed_at + 1),
        last.snapshot.clone(),
    );
    app.append_reviews(vec![restore]).await?;
    let table = RowTable::parse(&last.row_table).unwrap_or(RowTable::Rot);
    Ok(Redirect::to(&record_href(table, &last.row_id, &f.back)).into_response())
}

#[derive(Template)]
#[template(path = "bulk.html")]
struct BulkPage {
    chrome: Chrome,
    verdict: String,
    count: i64,
    back: String,
    conditions: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub(crate) struct BulkQuery {
    #[serde(flatten)]
    filter: Filter,
    verdict: String,
}

fn described(f: &Filter) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&f.query_string()).unwrap_or_default();
    pairs.into_iter().filter(|(k, _)| k != "s").collect()
}

/// Shows how many rows a bulk verdict would cover before it is given.
pub(crate) async fn bulk_confirm(State(app): AppState, Query(q): Query<BulkQuery>) -> Result<Response, PageError> {
    let verdict: Verdict = q.verdict.parse().map_err(PageError::BadRequest)?;
    let filter = q.filter.normalized();
    let session = open_session(&app, filter.s.as_deref()).await?;
    let count = data::count(&session, &filter).await?;
    Ok(render(&BulkPage {
        chrome: Chrome::new(&app, filter.s.as_deref()),
        verdict: verdict.as_str().into(),
        count,
        back: filter.query_string(),
        conditions: described(&filter),
    }))
}

#[derive(Deserialize)]
pub(crate) struct BulkForm {
    verdict: String,
    #[serde(default)]
    reason: Option<String>,
    back: String,
    /// The count the reviewer saw: if the filter now matches another number, nothing is done.
    expected: i64,
}

/// Gives one verdict to every row the filter matches, as one commit.
pub(crate) async fn bulk(State(app): AppState, Form(f): Form<BulkForm>) -> Result<Response, PageError> {
    let verdict: Verdict = f.verdict.parse().map_err(PageError::BadRequest)?;
    let reason = reason(f.reason, verdict)?;
    let filter = parse_back(&f.back);
    let session = open_session(&app, filter.s.as_deref()).await?;
    let ids = data::ids(&session, &filter).await?;
    if ids.len() as i64 != f.expected {
        return Err(PageError::Conflict(format!(
            "the filter now matches {} rows, not the {} you confirmed: nothing was reviewed; look again",
            ids.len(),
            f.expected
        )));
    }
    let (table, at) = (filter.table(), now_micros());
    let snap = filter.s.clone().or_else(|| app.default_snapshot().map(str::to_string));
    let reviews = ids
        .iter()
        .map(|id| Review::new(table.as_str(), id, verdict, reason.clone(), &app.cfg.reviewer, at, snap.clone()))
        .collect();
    app.append_reviews(reviews).await?;
    Ok(Redirect::to(&format!("/browse?{}", filter.query_string())).into_response())
}

// ---------------------------------------------------------------------------------------------
// SQL

struct NamedView {
    name: String,
    description: String,
    params: String,
}

#[derive(Template)]
#[template(path = "sql.html")]
struct SqlPage {
    chrome: Chrome,
    q: String,
    qs: String,
    named: Vec<NamedView>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    total: usize,
    error: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SqlQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    s: Option<String>,
    /// `p_<param>=value` for a named query's parameters.
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

impl SqlQuery {
    fn params(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = self
            .rest
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("p_").map(|k| (k.to_string(), v.clone())))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        p.sort();
        p
    }
}

/// Runs the page's query: the named one, or the text of the box; `None` when there is none.
async fn run_sql(app: &App, q: &SqlQuery) -> Result<Option<Vec<arrow::array::RecordBatch>>, String> {
    let s = snapshot_param(q.s.clone());
    let work = async {
        if let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) {
            let query = library::find(name).map_err(|e| e.to_string())?;
            let at = regrpo_queries::At::from_option(s.as_deref().or(app.default_snapshot()));
            let (_, df) = library::plan(&app.cfg.repo, at, query, &q.params()).await.map_err(|e| e.to_string())?;
            df.collect().await.map(Some).map_err(|e| e.to_string())
        } else if let Some(text) = q.q.as_deref().filter(|t| !t.trim().is_empty()) {
            let session = app.session(s.as_deref()).await.map_err(|e| format!("{e:#}"))?;
            session.query(text).await.map(Some).map_err(|e| e.to_string())
        } else {
            Ok(None)
        }
    };
    match tokio::time::timeout(SQL_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("the query ran past {} s and was stopped", SQL_TIMEOUT.as_secs())),
    }
}

pub(crate) async fn sql(State(app): AppState, Query(q): Query<SqlQuery>) -> Result<Response, PageError> {
    let named = library::library()
        .iter()
        .map(|n| NamedView {
            name: n.name.clone(),
            description: n.description.clone(),
            params: n
                .params
                .iter()
                .map(|p| {
                    format!(
                        "{} {}{}",
                        p.name,
                        p.ty.as_str(),
                        p.default.as_ref().map(|d| format!(" = {d}")).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let (mut header, mut rows, mut total, mut error) = (Vec::new(), Vec::new(), 0, None);
    match run_sql(&app, &q).await {
        Ok(Some(batches)) => {
            (header, rows) = data::cells(&batches)?;
            total = rows.len();
            rows.truncate(SQL_ROWS_SHOWN);
        }
        Ok(None) => {}
        Err(e) => error = Some(e),
    }
    let shown_q = match q.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => library::find(n).map(|x| x.sql.clone()).unwrap_or_default(),
        None => q.q.clone().unwrap_or_default(),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(s) = snapshot_param(q.s.clone()) {
        pairs.push(("s".into(), s));
    }
    match q.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => {
            pairs.push(("name".into(), n.into()));
            pairs.extend(q.params().into_iter().map(|(k, v)| (format!("p_{k}"), v)));
        }
        None => pairs.push(("q".into(), shown_q.clone())),
    }
    let page = SqlPage {
        chrome: Chrome::new(&app, snapshot_param(q.s.clone()).as_deref()),
        q: shown_q,
        qs: serde_urlencoded::to_string(&pairs).unwrap_or_default(),
        named,
        header,
        rows,
        total,
        error,
    };
    Ok(render(&page))
}

/// The SQL page's query as a CSV download.
pub(crate) async fn sql_csv(State(app): AppState, Query(q): Query<SqlQuery>) -> Result<Response, PageError> {
    let batches = match run_sql(&app, &q).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(PageError::BadRequest("no query: give q=SQL or name=QUERY".into())),
        Err(e) => return Err(PageError::BadRequest(e)),
    };
    let mut out = Vec::new();
    regrpo_queries::output::write_batches(&batches, regrpo_queries::OutputFormat::Csv, &mut out)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"query.csv\""),
        ],
        Body::from(out),
    )
        .into_response())
}

pub(crate) async fn not_found() -> PageError {
    PageError::NotFound("no such page".into())
}
