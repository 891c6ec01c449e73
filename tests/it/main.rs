//! End-to-end tests of the real `regrpo` binary, and of the crates working together.

mod cluster;
mod one_split;
mod reliability;
mod s3;
mod shards;
mod ui_browser;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use regrpo::demo::{Arm, DemoReport, Layout, table};

/// Kills a child process when the test ends, however it ends.
pub(crate) struct Killed(pub(crate) std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free at the time of asking.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regrpo"));
    c.arg("--quiet");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("regrpo runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "regrpo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "regrpo {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel).display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `SELECT …` through the CLI as CSV, without the header.
fn sql(repo: &Path, snapshot: Option<&str>, q: &str) -> Vec<String> {
    let mut args = vec!["sql", s(repo), q, "--format", "csv"];
    if let Some(name) = snapshot {
        args.extend(["--snapshot", name]);
    }
    ok(&args).lines().skip(1).map(str::to_string).collect()
}

#[test]
fn demo_runs_from_an_empty_folder_and_refuses_a_used_one() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    // The whole pipeline at toy sizes (the default sizes are for release builds).
    let out = ok(&[
        "demo",
        "--dir",
        s(&out_dir),
        "--tasks",
        "40",
        "--model",
        "tiny",
        "--warmup-steps",
        "2",
        "--sft-steps",
        "2",
        "--regrpo-steps",
        "1",
        "--regrpo-states",
        "2",
        "--eval-states",
        "3",
        "--eval-tasks",
        "1",
    ]);
    let layout = Layout::new(&out_dir);
    assert!(layout.repo.join("regrpo.json").exists());
    assert!(layout.plots.paths().iter().all(|p| p.exists()), "plots: {:?}", layout.plots);
    assert!(layout.runs.join("regrpo/model/model.safetensors").exists());
    assert!(layout.runs.join("regrpo-eta0/model/model.safetensors").exists());
    // report.json carries every figure other tools need: reading it as the typed report
    // requires every key of every arm (`sampled_recovery` and `pass_at_k` included, null or
    // not), the paired tests and each ReGRPO step's timings and group counts.
    let text = std::fs::read_to_string(&layout.report).unwrap();
    let report: DemoReport = serde_json::from_str(&text).unwrap_or_else(|e| panic!("report.json: {e}\n{text}"));
    assert_eq!(report.seed, 7);
    assert_eq!(report.options.regrpo.group_size, 16);
    for (arm, a) in report.arms.iter() {
        assert_eq!(a.label, arm.label());
        for (name, (lo, hi)) in [
            ("recovery", a.recovery_ci),
            ("first_try_success", a.first_try_success_ci),
            ("unnecessary_reflection", a.unnecessary_reflection_ci),
        ] {
            assert!(0.0 <= lo && lo <= hi && hi <= 1.0, "{arm:?}: {name} interval ({lo}, {hi})");
        }
        // Failure states get 8 sampled completions each (the default): both sampled figures exist.
        if report.eval_set.failure_states > 0 {
            assert!(a.recovery.is_some() && a.sampled_recovery.is_some() && a.pass_at_k.is_some(), "{arm:?}: {a:?}");
        }
    }
    let m = &report.mcnemar;
    for (name, p) in [("sft_rot_vs_sft_clean", m.sft_rot_vs_sft_clean), ("regrpo_vs_sft_rot", m.regrpo_vs_sft_rot)] {
        assert!((0.0..=1.0).contains(&p), "mcnemar.{name} = {p}");
    }
    let rl_vs_rot = &report.paired.regrpo_vs_sft_rot;
    assert_eq!(rl_vs_rot.mcnemar_p, m.regrpo_vs_sft_rot);
    assert!((0.0..=1.0).contains(&rl_vs_rot.sampled_p), "paired.regrpo_vs_sft_rot.sampled_p = {}", rl_vs_rot.sampled_p);
    let states = report.options.demo.regrpo_states;
    assert_eq!(report.regrpo_steps.keys().copied().collect::<Vec<_>>(), Arm::REGRPO);
    for (arm, steps) in &report.regrpo_steps {
        assert_eq!(steps.len(), 1, "{arm:?}: one step was asked for");
        let s = &steps[0];
        assert!(s.sample_s >= 0.0 && s.exec_s >= 0.0 && s.update_s >= 0.0, "{arm:?}: {s:?}");
        assert!(s.groups <= states && s.groups + s.skipped_groups <= 3 * states, "{arm:?}: {s:?}");
    }
    // `--quiet` keeps the results: the comparison table (the one the report renders), where
    // things went, and the failures by ErrorType that step 4 queries from the snapshot.
    assert!(out.contains(&table::render(&report)), "the table of report.json is not in:\n{out}");
    for line in [
        format!("report (every figure, the seed, the options): {}", layout.report.display()),
        format!("demo finished in {:.0}s", report.seconds),
    ] {
        assert!(out.contains(&line), "missing `{line}` in:\n{out}");
    }
    assert!(out.contains(&layout.plots.rates.display().to_string()), "{out}");
    let types = sql(&layout.repo, Some("demo-v1"), "SELECT DISTINCT error_type FROM rot ORDER BY 1");
    assert!(types.iter().any(|t| t == "ArgInvalid"), "{types:?}");
    assert!(out.contains("ArgInvalid"), "the failures by ErrorType are not in:\n{out}");
    let err = fails(&["demo", "--dir", s(&out_dir)]);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn sql_answers_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    ok(&["ingest", s(&repo), "--format", "regrpo", &fixture("regrpo/rot_sample.json")]);
    let rows = sql(&repo, None, "SELECT error_type, count(*) FROM rot GROUP BY 1 ORDER BY 1");
    assert_eq!(rows, ["ArgInvalid,2", "GroundingDrift,1", "ToolMismatch,1"]);
    for write in [
        "DROP TABLE rot",
        "INSERT INTO rot (rot_id) VALUES ('x')",
        "CREATE TABLE t AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/regrpo-copy.csv'",
    ] {
        let err = fails(&["sql", s(&repo), write]);
        assert!(err.contains("refused"), "{write}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line cause: {err}");
    }
    let err = fails(&["sql", s(&dir.path().join("nowhere")), "SELECT 1"]);
    assert!(err.contains("regrpo init"), "{err}");
}

#[test]
fn snapshot_commands_pin_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    ok(&["ingest", s(&repo), "-f", "mat", &fixture("mat/trajectories.json")]);
    ok(&["snapshot", "create", s(&repo), "v1", "--note", "three"]);
    ok(&["ingest", s(&repo), "-f", "openai", &fixture("openai/chat.jsonl")]);
    ok(&["snapshot", "create", s(&repo), "v2"]);
    assert_eq!(sql(&repo, Some("v1"), "SELECT count(*) FROM trajectories"), ["3"]);
    assert_eq!(sql(&repo, Some("v2"), "SELECT count(*) FROM trajectories"), ["5"]);
    let list = ok(&["snapshot", "list", s(&repo)]);
    assert!(list.contains("v1") && list.contains("parent=v1"), "{list}");
    let diff = ok(&["snapshot", "diff", s(&repo), "v1", "v2"]);
    assert!(diff.contains("trajectories"), "{diff}");
    assert!(ok(&["snapshot", "verify", s(&repo), "v1"]).contains("verified"));
    ok(&["gc", s(&repo), "--min-age", "0"]);
    assert!(ok(&["snapshot", "verify", s(&repo), "v1"]).contains("verified"));
    assert!(fails(&["snapshot", "create", s(&repo), "v1"]).contains("immutable"));
}

/// A JSON Lines corpus of `n` distinct chat records, about 1.5 kB each.
fn chat_corpus(path: &Path, n: usize) {
    chat_records(path, 0..n);
}

/// Chat records number `range` of the corpus [`chat_corpus`] writes.
fn chat_records(path: &Path, range: std::ops::Range<usize>) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let filler = "lorem ipsum dolor sit amet ".repeat(40);
    for i in range {
        let rec = serde_json::json!({
            "id": format!("rec-{i}"),
            "messages": [
                {"role": "user", "content": format!("question {i}: {filler}")},
                {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": format!("{{\"expression\": \"{i} * 2\"}}")}}]},
                {"role": "tool", "content": format!("{}", i * 2)},
                {"role": "assistant", "content": format!("{}", i * 2)},
            ]
        });
        writeln!(w, "{rec}").unwrap();
    }
}

fn delta_commits(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("tables/trajectories/_delta_log"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

#[test]
fn sigkill_mid_ingest_leaves_the_last_version_and_a_rerun_completes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("chat.jsonl");
    let n = 30_000;
    chat_corpus(&corpus, n);

    // The uninterrupted run, for reference.
    let clean = dir.path().join("clean");
    ok(&["init", s(&clean)]);
    ok(&["ingest", s(&clean), "-f", "openai", "--chunk-rows", "1000", s(&corpus)]);
    let want = sql(&clean, None, "SELECT trajectory_id FROM trajectories ORDER BY 1");
    assert_eq!(want.len(), n);

    let repo = dir.path().join("killed");
    ok(&["init", s(&repo)]);
    let mut child = bin()
        .args(["ingest", s(&repo), "-f", "openai", "--chunk-rows", "1000", s(&corpus)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a few commits landed (version 0 is the empty table), then kill -9 while the
    // writer is busy with the next one.
    kill_when(&mut child, "ingest", Duration::from_secs(120), || delta_commits(&repo) >= 4, Duration::from_millis(30));

    // The repository opens at a committed version whose rows are whole chunks.
    let rows: usize = sql(&repo, None, "SELECT count(*) FROM trajectories")[0].parse().unwrap();
    assert!(rows > 0 && rows < n && rows.is_multiple_of(1000), "{rows} rows after the kill");
    ok(&["snapshot", "create", s(&repo), "after-kill"]);
    assert!(ok(&["snapshot", "verify", s(&repo), "after-kill"]).contains("verified"));

    // A rerun ends with exactly the uninterrupted run's rows.
    ok(&["ingest", s(&repo), "-f", "openai", "--chunk-rows", "1000", s(&corpus)]);
    assert_eq!(sql(&repo, None, "SELECT trajectory_id FROM trajectories ORDER BY 1"), want);
    assert!(ok(&["snapshot", "verify", s(&repo), "after-kill"]).contains("verified"));
}

/// Waits until `ready()` (polled every 5 ms, for at most `limit`), waits `then` more, and
/// SIGKILLs `child`: kill points chosen from what the run has written, not from sleeps. Fails
/// when the run ends first or `ready` never holds.
pub(crate) fn kill_when(
    child: &mut std::process::Child,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
    then: Duration,
) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what} made no progress in {limit:?}");
        assert!(child.try_wait().unwrap().is_none(), "{what} finished before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(then);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

/// A `regrpo` process stopped at a pause point (see `regrpo_schemas::pause_point`): it waits
/// for a line on its stdin, which [`Paused::go_on`] sends.
pub(crate) struct Paused {
    child: std::process::Child,
    stderr: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    said: Vec<String>,
    point: String,
    args: Vec<String>,
}

impl Paused {
    /// Runs `regrpo ARGS` until it reaches the pause point `point`. Fails when the run ends
    /// without reaching it.
    pub(crate) fn start(args: &[&str], point: &str) -> Paused {
        use std::io::BufRead;
        let mut child = bin()
            .args(args)
            .env("REGRPO_PAUSE_AT", point)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut p = Paused {
            child,
            stderr,
            said: Vec::new(),
            point: point.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        assert!(p.wait_pause(), "regrpo {:?} ended without reaching {point}: {}", p.args, p.said.join("\n"));
        p
    }

    /// Reads stderr until the next pause (true) or the end of the run (false).
    fn wait_pause(&mut self) -> bool {
        let want = format!("regrpo: paused at {}", self.point);
        for line in self.stderr.by_ref() {
            let line = line.unwrap();
            if line == want {
                return true;
            }
            self.said.push(line);
        }
        false
    }

    /// SIGKILLs it where it waits.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }

    /// Lets it go on, through every later pass of the same point, to its end; fails unless it
    /// succeeds.
    pub(crate) fn go_on(mut self) {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().unwrap();
        loop {
            stdin.write_all(b"\n").unwrap();
            if !self.wait_pause() {
                break;
            }
        }
        drop(stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "regrpo {:?} failed ({status}): {}", self.args, self.said.join("\n"));
    }
}

/// Runs `regrpo ARGS` until it reaches the pause point `point`, then SIGKILLs it: a kill at an
/// exact point of a write. Fails when the run ends without reaching the point.
pub(crate) fn kill_at(args: &[&str], point: &str) {
    Paused::start(args, point).kill();
}

fn table_commits(repo: &Path, table: &str) -> usize {
    std::fs::read_dir(repo.join("tables").join(table).join("_delta_log"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

#[test]
fn sigkill_mid_engine_run_then_rerun_gives_the_uninterrupted_rot_table() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, killed) = (dir.path().join("clean"), dir.path().join("killed"));
    for repo in [&clean, &killed] {
        ok(&["init", s(repo)]);
        ok(&["toolworld", "generate", s(repo), "--tasks", "1200", "--seed", "21"]);
    }
    ok(&["engine", "run", s(&clean), "--seed", "3"]);
    let want = sql(&clean, None, "SELECT rot_id, evidence, fix_plan FROM rot ORDER BY rot_id");
    assert!(want.len() > 1500, "{} rows", want.len());

    let mut child = bin()
        .args(["engine", "run", s(&killed), "--seed", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Version 0 is the empty table: wait for the first batch commit, then kill.
    let committed = || table_commits(&killed, "rot") >= 2;
    kill_when(&mut child, "the engine run", Duration::from_secs(300), committed, Duration::ZERO);
    let partial = sql(&killed, None, "SELECT count(*) FROM rot")[0].parse::<usize>().unwrap();
    assert!(partial < want.len(), "{partial} rows after the kill");

    ok(&["engine", "run", s(&killed), "--seed", "3"]);
    assert_eq!(sql(&killed, None, "SELECT rot_id, evidence, fix_plan FROM rot ORDER BY rot_id"), want);
}

#[test]
fn every_fixture_format_runs_through_the_engine_publishes_and_reads_back_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, back, out) = (dir.path().join("repo"), dir.path().join("back"), dir.path().join("pub"));
    ok(&["init", s(&repo)]);
    for (format, files) in [
        ("regrpo", vec!["regrpo/rot_sample.json", "regrpo/clean_sample.json"]),
        ("mat", vec!["mat/trajectories.json"]),
        ("bfcl", vec!["bfcl/questions.json"]),
        ("gta", vec!["gta/dataset.json"]),
        ("openai", vec!["openai/chat.jsonl", "openai/sharegpt.jsonl"]),
    ] {
        let mut args = vec!["ingest".to_string(), s(&repo).into(), "--format".into(), format.into()];
        args.extend(files.iter().map(|f| fixture(f)));
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    ok(&["engine", "run", s(&repo), "--seed", "5"]);
    ok(&["snapshot", "create", s(&repo), "v1"]);
    let sources = sql(
        &repo,
        Some("v1"),
        "SELECT DISTINCT t.source FROM rot r JOIN trajectories t USING (trajectory_id) ORDER BY 1",
    );
    assert!(sources.len() >= 4, "RoT rows from most formats: {sources:?}");
    ok(&["publish", s(&repo), "--snapshot", "v1", "--out", s(&out), "--format", "regrpo-json", "--include-unverified"]);
    // `export` is `publish --format regrpo-json`: the same files, byte for byte.
    let exported = dir.path().join("exported");
    ok(&["export", s(&repo), "--snapshot", "v1", "--out", s(&exported), "--include-unverified"]);
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(exported.join(p.file_name().unwrap())).unwrap(), "{p:?}");
    }
    let published: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("provenance.json"))
        .map(|p| p.display().to_string())
        .collect();
    let mut rot_records = 0;
    for f in &published {
        let v: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        for r in &v {
            let text = r.to_string();
            assert!(!text.contains("no executor for"), "an engine message in {f}: {text}");
            if let Some(c) = r["rot_meta"]["corrected_action"].as_str() {
                rot_records += 1;
                assert!(!c.contains("Reflection:"), "{f}: {c}");
            }
        }
    }
    ok(&["init", s(&back)]);
    let mut args = vec!["ingest", s(&back), "--format", "regrpo"];
    args.extend(published.iter().map(String::as_str));
    ok(&args);
    assert_eq!(sql(&back, None, "SELECT count(*) FROM rejects"), ["0"], "every published record reads back");
    let conversations = |r: &Path, snapshot: Option<&str>| {
        let mut args = vec!["sql", s(r), "SELECT conversation FROM rot", "--format", "json"];
        if let Some(name) = snapshot {
            args.extend(["--snapshot", name]);
        }
        let text = ok(&args);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text)
            .unwrap_or_else(|_| text.lines().map(|l| serde_json::from_str(l).unwrap()).collect());
        let mut v: Vec<String> = rows.iter().map(|r| r["conversation"].to_string()).collect();
        v.sort();
        v
    };
    let sent = conversations(&repo, Some("v1"));
    assert_eq!(sent.len(), rot_records);
    assert_eq!(conversations(&back, None), sent, "every RoT row reads back as it was");
}
