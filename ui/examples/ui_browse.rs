//! Browse-page latency of the web view over a large RoT table (`bench/ui.sh`).
//!
//! Writes N synthetic RoT rows (default 2,000,000; 8 ErrorTypes × 12 tools, a third
//! unverified, text the size of the engine's) into a repository once, in commits of 200,000
//! (each commit's files sorted by ErrorType and tool, as every append is; no `optimize`),
//! reviews 1% of the rows, then
//! serves `regrpo ui`'s router on loopback and times each browse page (then a record and the
//! overview) over real HTTP: N runs per page after one warm-up, p50 / p95 / max in
//! milliseconds. The worst p95 is over the browse pages, which the goal is about.
//!
//!   cargo run --release -p regrpo-ui --example ui_browse -- [ROWS] [DIR] [RUNS]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Instant;

use regrpo_datasets::Repository;
use regrpo_schemas::{ActionRecord, Review, Rot, Verdict};
use regrpo_ui::UiConfig;

// The allocator the `regrpo` binary serves `regrpo ui` with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ERROR_TYPES: [&str; 8] = [
    "ArgInvalid",
    "ToolMismatch",
    "GroundingDrift",
    "InfoInsufficient",
    "PathNotFound",
    "FormatError",
    "Timeout",
    "PermissionDenied",
];
const TOOLS: [&str; 12] = [
    "calculator",
    "inspect_file_as_text",
    "list_files",
    "ocr",
    "search",
    "sql_query",
    "image_crop",
    "image_zoom",
    "read_json",
    "grep",
    "web_fetch",
    "python",
];

fn action(tool: &str, path: &str) -> ActionRecord {
    let arguments = format!(r#"{{"path":"{path}","encoding":"utf-8","max_bytes":4096}}"#);
    ActionRecord { tool: tool.into(), raw: format!("{tool}({arguments})"), arguments, surface: "json".into() }
}

fn row(i: u64) -> Rot {
    // A well-mixed id (splitmix64), as content hashes are.
    let mut z = i.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    let id = format!("{:016x}{:016x}", z ^ (z >> 31), i);
    let (et, tool) = (ERROR_TYPES[(z % 8) as usize], TOOLS[((z >> 8) % 12) as usize]);
    let path = format!("data/files/report_{}.csv", i % 9973);
    let observation = format!(
        "Error: file '{path}' not found. The folder holds: report_{}.csv, notes_{}.md, summary.txt (3 files). Check the path and retry.",
        (i + 1) % 9973,
        i % 311
    );
    Rot {
        rot_id: id,
        near_miss_id: None,
        trajectory_id: format!("t{:08}", i / 3),
        step_index: (i % 4) as i32,
        error_type: et.into(),
        tool: tool.into(),
        evidence: format!("The tool returned \"file '{path}' not found\", so the path argument is wrong."),
        evidence_start: None,
        evidence_end: None,
        fix_plan: "Use the file name the folder listing shows; keep the other arguments.".into(),
        failed_action: action(tool, &path),
        failed_observation: observation,
        corrected_action: action(tool, &format!("data/files/report_{}.csv", (i + 1) % 9973)),
        corrected_observation: Some("id,value\n1,3.5\n2,4.0".into()),
        verified: !i.is_multiple_of(3),
        derivable: Some(!i.is_multiple_of(5)),
        conversation: vec![],
        gates: vec!["grounded".into(), "executes".into(), "fixes".into()],
        generator: "template-v1".into(),
        engine_run_id: "bench".into(),
    }
}

/// One GET over a fresh connection; returns the status line and the body's length.
fn get(addr: SocketAddr, path: &str) -> (String, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or("").to_string();
    (status, buf.len())
}

/// This process's resident memory (Linux), in MiB; 0 where it cannot be read.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = args.get(1).map_or(Ok(2_000_000), |s| s.parse())?;
    let dir = PathBuf::from(args.get(2).cloned().unwrap_or_else(|| format!("/tmp/regrpo-bench-ui-{rows}")));
    let runs: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let repo = match Repository::open(&dir).await {
        Ok(r) => r,
        Err(_) => {
            let repo = Repository::init(&dir).await?;
            let t = Instant::now();
            let chunk = 200_000;
            for start in (0..rows).step_by(chunk) {
                let batch: Vec<Rot> = (start..(start + chunk as u64).min(rows)).map(row).collect();
                repo.commit(&batch, "bench").await?;
                eprint!("\rwrote {} rows", (start + chunk as u64).min(rows));
            }
            eprintln!("\nwrote {rows} RoT rows in {:.0}s", t.elapsed().as_secs_f64());
            let reviews: Vec<Review> = (0..rows / 100)
                .map(|i| {
                    let r = row(i * 100);
                    let v = if i.is_multiple_of(4) { Verdict::Reject } else { Verdict::Accept };
                    Review::new("rot", &r.rot_id, v, Some("bench".into()), "bench", i as i64, None)
                })
                .collect();
            regrpo_datasets::reviews::append(&repo, reviews).await?;
            repo
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cfg = UiConfig { repo, snapshot: None, addr, token: None, reviewer: "bench".into(), allowed_hosts: vec![] };
    let rss_before = rss_mib();
    let router = regrpo_ui::router(cfg).await?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let Rot { rot_id: middle, error_type: middle_type, .. } = row(rows / 2);
    let pages = [
        ("first page", "/browse".to_string()),
        ("keyset page (after the middle id)", format!("/browse?after={middle}")),
        ("previous page (before the middle id)", format!("/browse?before={middle}")),
        ("ErrorType", "/browse?error_type=GroundingDrift".into()),
        ("ErrorType + tool", "/browse?error_type=ArgInvalid&tool=ocr".into()),
        ("unverified", "/browse?verified=false".into()),
        ("review = reject", "/browse?review=reject".into()),
        ("review = unreviewed", "/browse?review=unreviewed".into()),
        ("free text", "/browse?q=report_4242.csv".into()),
        ("ErrorType + free text, keyset", format!("/browse?error_type=ToolMismatch&q=notes_7.md&after={middle}")),
        // Words in every row: the index cannot narrow these, the scan answers.
        ("free text, words in every row", "/browse?q=not%20found".into()),
        // Not a browse page: one row with its neighbours in the filter, siblings and history.
        ("record (within an ErrorType filter)", format!("/record/rot/{middle}?error_type={middle_type}")),
        ("overview", "/".into()),
    ];
    // The word indexes behind free text are built when the server opens its session; the first
    // free-text request waits for the build. Timed here so the pages below measure the served
    // state, and reported: it is what a curator's first search after a start costs.
    let first_search = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let (status, _) = get(addr, "/browse?q=warm-up");
        assert!(status.contains("200"), "{status}");
        t.elapsed().as_secs_f64()
    })
    .await?;
    println!(
        "first free-text request after the start (waits for the word indexes): {first_search:.1} s; \
         process RSS {rss_before:.0} MiB before the server, {:.0} MiB after the search",
        rss_mib()
    );
    println!("browse pages over {rows} RoT rows, {runs} runs each after a warm-up, real HTTP on loopback (ms)");
    println!("| page | p50 | p95 | max | bytes |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut worst: f64 = 0.0;
    for (name, path) in pages {
        let run_one = move |path: &str| {
            let t = Instant::now();
            let (status, bytes) = get(addr, path);
            assert!(status.contains("200"), "{path}: {status}");
            (t.elapsed().as_secs_f64() * 1000.0, bytes)
        };
        let path2 = path.clone();
        let (times, bytes) = tokio::task::spawn_blocking(move || {
            run_one(&path2);
            let mut times = Vec::new();
            let mut bytes = 0;
            for _ in 0..runs {
                let (ms, b) = run_one(&path2);
                times.push(ms);
                bytes = b;
            }
            (times, bytes)
        })
        .await?;
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let p95 = percentile(&sorted, 0.95);
        if path.starts_with("/browse") {
            worst = worst.max(p95);
        }
        println!("| {name} | {:.0} | {:.0} | {:.0} | {bytes} |", percentile(&sorted, 0.5), p95, sorted.last().unwrap());
    }
    println!("worst p95: {worst:.0} ms over the browse pages (goal 200 ms)");
    Ok(())
}
