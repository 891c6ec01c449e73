//! The web view's router over HTTP, without a browser: escaping, access control, paging,
//! reviews. (The browser tests drive the real binary: the root package's `tests/it`.)

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use regrpo_datasets::{Repository, Verdicts};
use regrpo_schemas::{ActionRecord, ExecStatus, Execution, NearMiss, Observation, Rot, Step, Trajectory, Verdict};
use regrpo_ui::UiConfig;
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";
const TOKEN: &str = "a-long-enough-test-token";

fn action(tool: &str, args: &str) -> ActionRecord {
    ActionRecord { tool: tool.into(), arguments: args.into(), surface: "json".into(), raw: format!("{tool}({args})") }
}

fn trajectory(id: &str, task: &str) -> Trajectory {
    Trajectory {
        trajectory_id: id.into(),
        source: "toolworld".into(),
        source_id: id.into(),
        source_file: "fixture".into(),
        source_offset: 0,
        source_line: None,
        task: task.into(),
        system_prompt: None,
        files: vec![],
        tool_specs: "[]".into(),
        steps: vec![
            Step {
                index: 0,
                thought: Some("look first".into()),
                action: Some(action("list_files", "{}")),
                observation: Some(Observation { status: ExecStatus::Ok, text: "a.txt <b>b.txt</b>".into() }),
            },
            Step {
                index: 1,
                thought: Some("read it".into()),
                action: Some(action("inspect_file_as_text", r#"{"path":"a.txt"}"#)),
                observation: Some(Observation { status: ExecStatus::Ok, text: "hello".into() }),
            },
        ],
        final_answer: Some("hello".into()),
        gt_answer: None,
        meta: None,
        ingest_batch: "fixture".into(),
    }
}

fn near_miss(id: &str, trajectory_id: &str, error_type: &str, observation: &str) -> NearMiss {
    NearMiss {
        near_miss_id: id.into(),
        trajectory_id: trajectory_id.into(),
        step_index: 1,
        error_type: error_type.into(),
        tool: "inspect_file_as_text".into(),
        operator: "arg.typo".into(),
        change: "path a.txt -> a.tx".into(),
        source: "engine".into(),
        original_action: action("inspect_file_as_text", r#"{"path":"a.txt"}"#),
        failed_action: action("inspect_file_as_text", r#"{"path":"a.tx"}"#),
        execution: Execution {
            status: ExecStatus::ToolError,
            text: observation.into(),
            error_code: Some("not_found".into()),
            duration_us: 10,
            tool_version: "1".into(),
        },
        is_failure: true,
        verdict: "failure".into(),
        reason: None,
        engine_run_id: "run".into(),
        seed: 0,
    }
}

fn rot(id: &str, nm: &NearMiss, evidence: &str, verified: bool) -> Rot {
    Rot {
        rot_id: id.into(),
        near_miss_id: Some(nm.near_miss_id.clone()),
        trajectory_id: nm.trajectory_id.clone(),
        step_index: nm.step_index,
        error_type: nm.error_type.clone(),
        tool: nm.tool.clone(),
        evidence: evidence.into(),
        evidence_start: None,
        evidence_end: None,
        fix_plan: "Use the path the listing showed.".into(),
        failed_action: nm.failed_action.clone(),
        failed_observation: nm.execution.text.clone(),
        corrected_action: nm.original_action.clone(),
        corrected_observation: Some("hello".into()),
        verified,
        derivable: Some(true),
        conversation: vec![],
        gates: vec!["grounded".into()],
        generator: "template-v1".into(),
        engine_run_id: "run".into(),
    }
}

/// A repository of `n` RoT rows (ids `r000…`, ArgInvalid and ToolMismatch in turn) and one
/// hostile row (`hostile`) whose every text field holds markup.
async fn repo(dir: &std::path::Path, n: usize) -> Repository {
    let repo = Repository::init(dir.join("repo")).await.unwrap();
    let (mut ts, mut nms, mut rots) = (vec![], vec![], vec![]);
    for i in 0..n {
        let t = format!("t{i:03}");
        let et = if i % 2 == 0 { "ArgInvalid" } else { "ToolMismatch" };
        let nm = near_miss(&format!("n{i:03}"), &t, et, "Error: file 'a.tx' not found");
        rots.push(rot(&format!("r{i:03}"), &nm, "The tool said 'a.tx' not found", i % 3 != 0));
        ts.push(trajectory(&t, "read a.txt"));
        nms.push(nm);
    }
    let t = trajectory("thostile", "<script>alert('task')</script>");
    let nm = near_miss("nhostile", "thostile", "ArgInvalid", "Error: <img src=x onerror=alert(1)> not found");
    rots.push(rot("hostile", &nm, "The tool said '<img src=x onerror=alert(1)>' <script>alert(2)</script>", true));
    ts.push(t);
    nms.push(nm);
    repo.commit(&ts, "fixture").await.unwrap();
    repo.commit(&nms, "fixture").await.unwrap();
    repo.commit(&rots, "fixture").await.unwrap();
    repo
}

async fn router(repo: &Repository, token: Option<&str>) -> Router {
    regrpo_ui::router(UiConfig {
        repo: repo.clone(),
        snapshot: None,
        addr: HOST.parse::<SocketAddr>().unwrap(),
        token: token.map(str::to_string),
        reviewer: "tester".into(),
        allowed_hosts: vec![],
    })
    .await
    .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(r: &Router, req: Request<Body>) -> Answer {
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = String::from_utf8(to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    Answer { status, headers, body }
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::get(uri).header(header::HOST, HOST)
}

async fn page(r: &Router, uri: &str) -> Answer {
    send(r, get(uri).body(Body::empty()).unwrap()).await
}

/// A browser's form post from this server's own page.
fn post(uri: &str, form: &[(&str, &str)]) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

/// The CSRF token a page carries.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("the page carries a CSRF field") + 19;
    body[at..at + 64].to_string()
}

/// A page's text as a browser reads it: character references decoded.
fn text(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').filter(|e| *e < 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }
        });
        match (decoded, end) {
            (Some(c), Some(e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The row ids a browse page lists, in order.
fn listed(body: &str) -> Vec<String> {
    body.split("data-row=\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect()
}

#[tokio::test]
async fn a_hostile_record_renders_as_text_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 2).await;
    let r = router(&repo, None).await;
    let a = page(&r, "/record/rot/hostile").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for raw in ["<script>alert", "<img src=x", "<b>b.txt"] {
        assert!(!a.body.contains(raw), "`{raw}` reached the page unescaped");
    }
    let shown = text(&a.body);
    assert!(shown.contains("<pre><script>alert('task')</script></pre>"), "the task is shown as text");
    // The quote is highlighted, built from escaped pieces.
    assert!(a.body.contains("<mark id=\"evidence-quote\">&"));
    assert!(shown.contains("<mark id=\"evidence-quote\"><img src=x onerror=alert(1)></mark>"), "{shown}");
    let csp = a.headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'") && !csp.contains("unsafe"), "{csp}");
    // The only scripts are the binary's own files.
    assert_eq!(a.body.matches("<script").count(), 2);
    assert!(a.body.contains("\"allowEval\":false") && a.body.contains("\"allowScriptTags\":false"));
    let browse = page(&r, "/browse?q=onerror").await;
    assert_eq!(listed(&browse.body), vec!["hostile"]);
    assert!(!browse.body.contains("<script>alert"));
    // Free text is case-blind, finds cuts inside words, and searches near-misses' observations
    // (a struct field) through the same word index.
    assert_eq!(listed(&page(&r, "/browse?q=NERRO").await.body), vec!["hostile"]);
    assert_eq!(listed(&page(&r, "/browse?kind=near_misses&q=src%3Dx%20ONERROR").await.body), vec!["nhostile"]);
    assert_eq!(listed(&page(&r, "/browse?kind=near_misses&q=a.tx%27%20not").await.body), vec!["n000", "n001"]);
}

#[tokio::test]
async fn tokens_hosts_origins_and_csrf_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 3).await;
    let r = router(&repo, Some(TOKEN)).await;
    assert_eq!(page(&r, "/").await.status, StatusCode::UNAUTHORIZED);
    let bearer = |uri: &str, token: &str| get(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    assert_eq!(
        send(&r, bearer("/", "wrong-token-of-some-length").body(Body::empty()).unwrap()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(send(&r, bearer("/", TOKEN).body(Body::empty()).unwrap()).await.status, StatusCode::OK);
    // A first visit with ?token= sets the cookie and drops the token from the address.
    let first = page(&r, &format!("/browse?error_type=ArgInvalid&token={TOKEN}")).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(first.headers.get(header::LOCATION).unwrap(), "/browse?error_type=ArgInvalid");
    let cookie = first.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let jar = cookie.split(';').next().unwrap().to_string();
    let with_cookie = |uri: &str| get(uri).header(header::COOKIE, jar.clone());
    let browse = send(&r, with_cookie("/browse").body(Body::empty()).unwrap()).await;
    assert_eq!(browse.status, StatusCode::OK);
    // The right token from another Host (DNS rebinding) is refused.
    let rebound = Request::get("/").header(header::HOST, "evil.example:8080").header(header::COOKIE, jar.clone());
    assert_eq!(send(&r, rebound.body(Body::empty()).unwrap()).await.status, StatusCode::FORBIDDEN);

    // State changes: Origin and CSRF.
    let record = send(&r, with_cookie("/record/rot/r001").body(Body::empty()).unwrap()).await;
    let token = csrf(&record.body);
    let form = |csrf: &str| {
        serde_urlencoded::to_string([("csrf", csrf), ("table", "rot"), ("row_id", "r001"), ("verdict", "accept")])
            .unwrap()
    };
    let review = |origin: Option<&str>, csrf: &str| {
        let mut b = Request::post("/review")
            .header(header::HOST, HOST)
            .header(header::COOKIE, jar.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(Body::from(form(csrf))).unwrap()
    };
    assert_eq!(send(&r, review(None, &token)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&r, review(Some("http://evil.example"), &token)).await.status, StatusCode::FORBIDDEN);
    let origin = format!("http://{HOST}");
    assert_eq!(send(&r, review(Some(&origin), "")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&r, review(Some(&origin), "0".repeat(64).as_str())).await.status, StatusCode::FORBIDDEN);
    assert!(Verdicts::load(&repo).await.unwrap().is_empty(), "a refused request wrote nothing");
    let done = send(&r, review(Some(&origin), &token)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(Verdicts::load(&repo).await.unwrap().of("r001"), Some(Verdict::Accept));
}

#[tokio::test]
async fn pages_follow_the_keyset_under_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 120).await;
    let r = router(&repo, None).await;
    let first = page(&r, "/browse").await;
    let ids = listed(&first.body);
    assert_eq!(ids.len(), 50);
    assert_eq!(ids[0], "hostile");
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut all = ids.clone();
    let mut next = format!("/browse?after={}", ids.last().unwrap());
    loop {
        let p = page(&r, &next).await;
        let got = listed(&p.body);
        all.extend(got.iter().cloned());
        if !p.body.contains("rel=\"next\"") {
            break;
        }
        next = format!("/browse?after={}", got.last().unwrap());
    }
    assert_eq!(all.len(), 121, "every row once");
    // Back from the second page is the first.
    let second = listed(&page(&r, &format!("/browse?after={}", ids[49])).await.body);
    assert_eq!(listed(&page(&r, &format!("/browse?before={}", second[0])).await.body), ids);
    // Filters narrow, and links keep them.
    let typed = page(&r, "/browse?error_type=ToolMismatch&verified=true").await;
    let got = listed(&typed.body);
    assert_eq!(got.len(), 40, "odd i, i % 3 != 0");
    assert!(text(&typed.body).contains("/record/rot/r001?error_type=ToolMismatch&verified=true"));
    // j/k within the filter: r001 → r005 (r003 is unverified).
    let rec = page(&r, "/record/rot/r001?error_type=ToolMismatch&verified=true").await;
    assert!(
        text(&rec.body).contains("href=\"/record/rot/r005?error_type=ToolMismatch&verified=true\""),
        "{}",
        rec.body
    );
    let near = page(&r, "/browse?kind=near_misses&operator=arg.typo").await;
    assert_eq!(listed(&near.body).len(), 50);
    assert_eq!(page(&r, "/record/rot/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reviews_append_versions_and_undo_and_bulk_respect_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 10).await;
    let r = router(&repo, None).await;
    let token = csrf(&page(&r, "/record/rot/r000").await.body);
    let token = token.as_str();
    let review = |row: &'static str, verdict: &'static str, reason: &'static str| {
        post("/review", &[("csrf", token), ("table", "rot"), ("row_id", row), ("verdict", verdict), ("reason", reason)])
    };
    assert_eq!(send(&r, review("r000", "accept", "")).await.status, StatusCode::SEE_OTHER);
    assert_eq!(send(&r, review("r001", "reject", "")).await.status, StatusCode::BAD_REQUEST, "a reject needs a reason");
    let rejected = send(&r, review("r001", "reject", "fix plan names the wrong file")).await;
    assert_eq!(rejected.headers.get(header::LOCATION).unwrap(), "/record/rot/r002", "on to the next row");
    let v = Verdicts::load(&repo).await.unwrap();
    assert_eq!((v.of("r000"), v.of("r001")), (Some(Verdict::Accept), Some(Verdict::Reject)));
    // From htmx: the CSRF token as a header, the verdict back as a fragment.
    let quick = Request::post("/review")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header("hx-request", "true")
        .header("x-csrf-token", token)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("table=rot&row_id=r002&verdict=flag"))
        .unwrap();
    let quick = send(&r, quick).await;
    assert_eq!((quick.status, quick.body.as_str()), (StatusCode::OK, "<span class=\"verdict flag\">flag</span>"));
    // Undo takes back the latest review (r002's flag), then the one before (r001's reject), by
    // appending, never editing; an undo is never itself undone.
    let undo = send(&r, post("/review/undo", &[("csrf", token)])).await;
    assert_eq!(undo.headers.get(header::LOCATION).unwrap(), "/record/rot/r002");
    let undo = send(&r, post("/review/undo", &[("csrf", token)])).await;
    assert_eq!(undo.headers.get(header::LOCATION).unwrap(), "/record/rot/r001");
    let v = Verdicts::load(&repo).await.unwrap();
    assert_eq!((v.of("r000"), v.of("r001"), v.of("r002")), (Some(Verdict::Accept), None, None));
    assert_eq!(regrpo_datasets::reviews::all(&repo).await.unwrap().len(), 5);
    let rec = page(&r, "/record/rot/r001").await;
    let shown = text(&rec.body);
    assert!(shown.contains("fix plan names the wrong file") && shown.contains("undo of "));

    // Bulk: the count first; the action covers exactly what the filter matches.
    let confirm = page(&r, "/bulk?error_type=ToolMismatch&verdict=reject").await;
    assert!(confirm.body.contains("<b id=\"bulk-count\">5</b>"), "{}", confirm.body);
    let back = "error_type=ToolMismatch";
    let stale = send(
        &r,
        post("/bulk", &[("csrf", token), ("verdict", "reject"), ("reason", "bad"), ("back", back), ("expected", "4")]),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    let bulk = send(
        &r,
        post("/bulk", &[("csrf", token), ("verdict", "reject"), ("reason", "bad"), ("back", back), ("expected", "5")]),
    )
    .await;
    assert_eq!(bulk.status, StatusCode::SEE_OTHER, "{}", bulk.body);
    let v = Verdicts::load(&repo).await.unwrap();
    let rejected: Vec<&str> = ["r000", "r001", "r002", "r003", "r005", "r007", "r009"]
        .into_iter()
        .filter(|id| v.of(id) == Some(Verdict::Reject))
        .collect();
    assert_eq!(rejected, vec!["r001", "r003", "r005", "r007", "r009"]);
    assert_eq!(v.of("r000"), Some(Verdict::Accept));
    // Each review action was one new version of the table.
    assert_eq!(repo.load("reviews", None).await.unwrap().version(), Some(6));
    // The review filter sees them.
    assert_eq!(listed(&page(&r, "/browse?review=reject").await.body).len(), 5);
    assert_eq!(listed(&page(&r, "/browse?review=unreviewed").await.body).len(), 11 - 6);
}

#[tokio::test]
async fn the_overview_links_bars_to_filters_and_the_sql_box_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 6).await;
    regrpo_datasets::snapshot::create(&repo, "v1", None).await.unwrap();
    let r = router(&repo, None).await;
    let o = page(&r, "/").await;
    assert_eq!(o.status, StatusCode::OK, "{}", o.body);
    assert!(text(&o.body).contains("href=\"/browse?error_type=ArgInvalid\" data-bar=\"ArgInvalid\""), "{}", o.body);
    assert!(o.body.contains("<option value=\"v1\">v1</option>"));
    let q = page(&r, "/sql?q=SELECT%20count(*)%20AS%20n%20FROM%20rot").await;
    assert!(q.body.contains("<td>7</td>"), "{}", q.body);
    let del = page(&r, "/sql?q=DELETE%20FROM%20rot").await;
    assert!(del.body.contains("id=\"sql-error\""), "{}", del.body);
    let named = page(&r, "/sql?name=failures_by_error_type").await;
    assert!(named.body.contains("ArgInvalid"), "{}", named.body);
    let csv = page(&r, "/sql.csv?q=SELECT%20rot_id%20FROM%20rot%20ORDER%20BY%201%20LIMIT%202").await;
    assert_eq!(csv.headers.get(header::CONTENT_TYPE).unwrap(), "text/csv; charset=utf-8");
    assert_eq!(csv.body, "rot_id\nhostile\nr000\n");
    let at_v1 = page(&r, "/browse?s=v1").await;
    assert_eq!(listed(&at_v1.body).len(), 7);
    assert_eq!(page(&r, "/browse?s=nope").await.status, StatusCode::NOT_FOUND);
}
