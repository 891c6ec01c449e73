//! The web view in a real headless Chromium, driven over WebDriver (chromedriver), against the
//! real `regrpo ui` binary: a curator filters by clicking a bar, reads a record, reviews from the
//! keyboard, bulk-rejects a filter, and `publish --exclude-rejected` honours it all.
//!
//! Needs Debian's `chromium` and `chromium-driver`; where they are missing the test is ignored
//! with that reason (build.rs looks for them), and `.ci/run` installs them and requires them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{Killed, free_port, ok, s};

/// Starts `regrpo ui` and returns it with the address it printed.
fn start_ui(repo: &Path) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regrpo"))
        .args(["ui", s(repo), "--snapshot", "v1", "--addr", "127.0.0.1:0", "--reviewer", "browser-test"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("regrpo ui starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url =
        line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no address in `{line}`"));
    (Killed(child), url.trim_end_matches('/').trim_end_matches(';').trim_end_matches('/').to_string())
}

fn start_chromedriver() -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), port)
}

async fn browser(port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let mut options = json!({
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,1000", format!("--user-data-dir={}", profile.display()),
        ]
    });
    if let Some(bin) = chromium {
        options["binary"] = json!(bin);
    }
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// Presses one key on the page, as a person would (not into an element).
async fn press(c: &Client, key: char) {
    let keys =
        KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.unwrap();
}

/// Waits until the browser's address satisfies `done`.
async fn wait_url(c: &Client, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = c.current_url().await.unwrap().to_string();
        if done(&url) {
            return url;
        }
        assert!(Instant::now() < deadline, "waited for {what}; the browser is at {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

fn record_id(url: &str) -> String {
    let path = url.split("/record/rot/").nth(1).unwrap();
    path.split('?').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_browser),
    ignore = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run installs them"
)]
async fn a_curator_reviews_in_a_real_browser_and_publish_honours_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    ok(&["init", s(&repo)]);
    ok(&["toolworld", "generate", s(&repo), "--tasks", "40", "--seed", "11"]);
    ok(&["engine", "run", s(&repo), "--seed", "4"]);
    ok(&["snapshot", "create", s(&repo), "v1"]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let (_ui, base) = start_ui(&repo);
    let (_driver, port) = start_chromedriver();
    let c = browser(port, &dir.path().join("profile")).await;

    // Overview: click the first ErrorType bar.
    c.goto(&format!("{base}/")).await.unwrap();
    shot(&c, &shots, "overview.png").await;
    let bar = c.find(Locator::Css("section.bars a[data-bar]")).await.unwrap();
    let error_type = bar.attr("data-bar").await.unwrap().unwrap();
    bar.click().await.unwrap();
    let browse_url = wait_url(&c, "the filtered list", |u| u.contains(&format!("error_type={error_type}"))).await;
    shot(&c, &shots, "browse.png").await;
    let rows = c.find_all(Locator::Css("a[data-row]")).await.unwrap();
    assert!(rows.len() >= 3, "{error_type} has rows to review");

    // A record: the evidence is highlighted in the executed observation.
    rows[0].click().await.unwrap();
    let first = wait_url(&c, "a record", |u| u.contains("/record/rot/")).await;
    let mark = c.find(Locator::Css("#evidence-quote")).await.expect("the evidence quote is highlighted");
    assert!(!mark.text().await.unwrap().trim().is_empty());
    shot(&c, &shots, "record.png").await;

    // Keyboard review: `a` accepts and moves on; `r`, a reason and Enter reject.
    let accepted = record_id(&first);
    press(&c, 'a').await;
    let second = wait_url(&c, "the next record", |u| u.contains("/record/rot/") && record_id(u) != accepted).await;
    let rejected = record_id(&second);
    press(&c, 'r').await;
    let reason = c.active_element().await.unwrap();
    assert_eq!(reason.attr("name").await.unwrap().as_deref(), Some("reason"), "r focuses the reason");
    reason.send_keys("the fix plan names the wrong file\u{E007}").await.unwrap();
    wait_url(&c, "the record after the rejected one", |u| u.contains("/record/rot/") && record_id(u) != rejected).await;
    c.goto(&format!("{base}/record/rot/{rejected}")).await.unwrap();
    assert_eq!(c.find(Locator::Css("#verdict")).await.unwrap().text().await.unwrap(), "reject");
    shot(&c, &shots, "reviewed.png").await;

    // A quick accept from the list, through htmx (its CSRF header, under the page's CSP).
    c.goto(&browse_url).await.unwrap();
    let quick = c.find(Locator::Css("#rows button.accept")).await.unwrap();
    let cell = quick.find(Locator::XPath("..")).await.unwrap().attr("id").await.unwrap().unwrap();
    quick.click().await.unwrap();
    let badge =
        c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(&format!("#{cell} .verdict.accept"))).await;
    assert!(badge.is_ok(), "htmx swapped in the verdict");
    let quick_accepted = cell.trim_start_matches("v-").to_string();

    // Bulk: reject every row of another tool, the count shown first.
    c.goto(&browse_url).await.unwrap();
    let tool = c.find(Locator::Css("#rows tr:nth-child(3) td:nth-child(3)")).await.unwrap().text().await.unwrap();
    c.goto(&format!("{base}/browse?kind=&error_type=&tool={tool}&review=unreviewed")).await.unwrap();
    c.find(Locator::Css("a[data-bulk=reject]")).await.unwrap().click().await.unwrap();
    wait_url(&c, "the bulk confirmation", |u| u.contains("/bulk?")).await;
    let count: usize = c.find(Locator::Css("#bulk-count")).await.unwrap().text().await.unwrap().parse().unwrap();
    assert!(count > 0);
    c.find(Locator::Css("[data-bulk-reason]")).await.unwrap().send_keys("tool outputs are stale").await.unwrap();
    shot(&c, &shots, "bulk.png").await;
    c.find(Locator::Css("[data-bulk-confirm]")).await.unwrap().click().await.unwrap();
    wait_url(&c, "the list after the bulk reject", |u| u.contains("/browse?")).await;
    c.goto(&format!("{base}/browse?tool={tool}&review=unreviewed")).await.unwrap();
    assert!(c.find_all(Locator::Css("a[data-row]")).await.unwrap().is_empty(), "the bulk covered the whole filter");
    c.goto(&format!("{base}/sql?name=failures_by_error_type")).await.unwrap();
    shot(&c, &shots, "sql.png").await;
    c.close().await.unwrap();

    // What the reviews table holds now, and what publish makes of it.
    let verdicts = super::sql(
        &repo,
        None,
        "SELECT row_id, verdict FROM (SELECT row_id, verdict, row_number() OVER (PARTITION BY row_id ORDER BY reviewed_at DESC, review_id DESC) AS n FROM reviews) WHERE n = 1 AND verdict = 'reject' ORDER BY row_id",
    );
    let rejected_ids: Vec<String> = verdicts.iter().map(|l| l.split(',').next().unwrap().to_string()).collect();
    assert!(rejected_ids.contains(&rejected), "{rejected_ids:?}");
    assert!(!rejected_ids.contains(&accepted));
    assert_eq!(rejected_ids.len(), 1 + count, "one keyboard reject plus the bulk (which saw only unreviewed rows)");
    let total: usize = super::sql(&repo, Some("v1"), "SELECT count(*) FROM rot")[0].parse().unwrap();
    let out = dir.path().join("published");
    let said = ok(&[
        "publish",
        s(&repo),
        "-s",
        "v1",
        "--out",
        s(&out),
        "--format",
        "regrpo-json",
        "--include-unverified",
        "--exclude-rejected",
    ]);
    assert!(said.contains(&format!("{} rejected", rejected_ids.len())), "{said}");
    let mut published = String::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap().starts_with("rot_") {
            published += &std::fs::read_to_string(p).unwrap();
        }
    }
    for id in &rejected_ids {
        assert!(!published.contains(&format!("\"{id}_rot\"")), "rejected {id} was published");
    }
    assert!(published.contains(&format!("\"{accepted}_rot\"")), "the accepted row is published");
    assert!(!rejected_ids.contains(&quick_accepted) && published.contains(&format!("\"{quick_accepted}_rot\"")));
    assert_eq!(published.matches("_rot\"").count(), total - rejected_ids.len());
    eprintln!("screenshots in {}", shots.display());
}
