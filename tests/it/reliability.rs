//! Writers killed mid-write and writers side by side, on the real binary. SFT and ReGRPO
//! (checkpoints, `--resume`), publish, optimize and gc are SIGKILLed at an exact point they
//! report on stderr (`kill_at`: a folder written but not yet renamed, one table of several
//! optimized, one file of many deleted), never after a sleep; then resumed or rerun, and what
//! they leave is checked against an uninterrupted run. Concurrent writers are held at such a
//! point (`Paused`) while another runs, then let go on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

/// A repository of toolworld tasks with engine RoT rows, snapshotted as `s1`.
fn repo_with_rot(dir: &Path, tasks: &str) -> PathBuf {
    let repo = dir.join("r");
    ok(&["init", s(&repo)]);
    ok(&["toolworld", "generate", s(&repo), "--tasks", tasks, "--seed", "5"]);
    ok(&["engine", "run", s(&repo), "--seed", "1"]);
    ok(&["snapshot", "create", s(&repo), "s1"]);
    repo
}

/// Names in a folder, sorted (hidden ones included).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn refs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// `args`, with `--resume` when `resume`.
fn resuming(args: &[&str], resume: bool) -> Vec<String> {
    let mut a: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if resume {
        a.push("--resume".into());
    }
    a
}

/// The run folder's checkpoints are exactly those of `steps`, each whole, and no temporary
/// folder is left beside them or the run's exports.
fn assert_checkpoints_whole(run: &Path, steps: impl IntoIterator<Item = u64>) {
    let checkpoints = run.join("checkpoints");
    let want: Vec<String> = steps.into_iter().map(|s| format!("step-{s:06}")).collect();
    assert_eq!(names(&checkpoints), want);
    for c in &want {
        assert_eq!(names(&checkpoints.join(c)), ["model.mpk", "optim.mpk", "state.json"], "{c}");
    }
    assert!(names(run).iter().all(|n| !n.ends_with(".tmp")), "{:?}", names(run));
}

#[test]
fn sigkill_mid_sft_then_resume_ends_with_the_uninterrupted_model() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_rot(dir.path(), "40");
    let sft = |out: &Path, resume: bool| -> Vec<String> {
        resuming(
            &[
                "train",
                "sft",
                s(&repo),
                "--snapshot",
                "s1",
                "--model",
                "tiny",
                "--out",
                s(out),
                "--steps",
                "12",
                "--batch-size",
                "2",
                "--warmup",
                "1",
                "--checkpoint-every",
                "2",
                "--seed",
                "3",
            ],
            resume,
        )
    };
    let clean = dir.path().join("clean");
    ok(&refs(&sft(&clean, false)));

    // Killed with step 4's checkpoint written but not yet renamed into place, and then,
    // resumed (from step 2), with step 8's in the same state (resumed from step 6).
    let killed = dir.path().join("killed");
    let checkpoints = killed.join("checkpoints");
    for (resume, step) in [(false, 4), (true, 8)] {
        kill_at(&refs(&sft(&killed, resume)), &format!("write_folder:step-{step:06}"));
        assert!(checkpoints.join(format!(".step-{step:06}.tmp")).is_dir());
        assert!(!checkpoints.join(format!("step-{step:06}")).exists());
        assert!(!killed.join("model").exists(), "a killed run exported a model");
    }
    ok(&refs(&sft(&killed, true)));

    // Every checkpoint is whole, no temporary folder is left, and the run ends at step 12 with
    // the model the uninterrupted run ended with, byte for byte.
    assert_checkpoints_whole(&killed, (1..=6).map(|i| 2 * i));
    assert_eq!(tree(&killed.join("model")), tree(&clean.join("model")));
}

/// A run's id, from its `run.json`.
fn run_id(run: &Path) -> String {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    doc["run_id"].as_str().unwrap().to_string()
}

#[test]
fn sigkill_mid_regrpo_then_resume_ends_with_the_uninterrupted_model_and_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_rot(dir.path(), "40");
    let sft = dir.path().join("sft");
    ok(&[
        "train",
        "sft",
        s(&repo),
        "--snapshot",
        "s1",
        "--model",
        "tiny",
        "--out",
        s(&sft),
        "--steps",
        "12",
        "--batch-size",
        "2",
        "--warmup",
        "1",
        "--seed",
        "3",
    ]);
    let rl = |out: &Path, resume: bool| -> Vec<String> {
        resuming(
            &[
                "train",
                "regrpo",
                s(&repo),
                "--snapshot",
                "s1",
                "--model",
                s(&sft),
                "--out",
                s(out),
                "--steps",
                "6",
                "--checkpoint-every",
                "2",
                "--states",
                "2",
                "--group-size",
                "4",
                "--max-new-tokens",
                "96",
                // Groups whose rewards differ are trained on (partial credit and the reflection cost
                // tell apart the failures of a barely trained policy), so every step updates.
                "--filter",
                "reward",
                "--partial-credit",
                "0.5",
                "--lr",
                "1e-3",
                "--seed",
                "3",
            ],
            resume,
        )
    };
    let clean = dir.path().join("clean");
    ok(&refs(&rl(&clean, false)));

    // Killed with step 4's checkpoint written but not renamed; resumed (from step 2) and killed
    // the same way at step 6; resumed (from 4) and killed while exporting the model; resumed
    // (from 6, the last step: nothing left to train) to the end.
    let killed = dir.path().join("killed");
    for (resume, point) in
        [(false, "write_folder:step-000004"), (true, "write_folder:step-000006"), (true, "write_folder:model")]
    {
        kill_at(&refs(&rl(&killed, resume)), point);
        assert!(!killed.join("model").exists(), "a killed run exported a model");
        assert!(!killed.join("run.json").exists(), "a killed run wrote its run row");
    }
    ok(&refs(&rl(&killed, true)));

    assert_checkpoints_whole(&killed, (1..=3).map(|i| 2 * i));
    // The policy moved, and the resumed run ends where the uninterrupted one did, byte for byte.
    let weights = |run: &Path| {
        let f = run.join("model").join("model.safetensors");
        std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e} (the run folder holds {:?})", f.display(), names(run)))
    };
    assert_ne!(weights(&clean), weights(&sft), "ReGRPO did not update the policy");
    assert_eq!(tree(&killed.join("model")), tree(&clean.join("model")));

    // Same rollouts, step by step, under one run id per run; six steps of metrics each.
    let rollouts = |run: &Path| {
        let q = format!(
            "SELECT step, state_id, group_index, completion, reward, advantage FROM rollouts WHERE run_id = '{}' \
             ORDER BY step, state_id, group_index",
            run_id(run)
        );
        sql(&repo, None, &q)
    };
    let (a, b) = (rollouts(&clean), rollouts(&killed));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    let steps = |run: &Path| {
        sql(&repo, None, &format!("SELECT max(step), count(*) FROM metrics WHERE run_id = '{}'", run_id(run)))
    };
    assert_eq!(steps(&killed), steps(&clean));
    assert!(steps(&clean)[0].starts_with("6,"), "{:?}", steps(&clean));

    // Resuming the finished run again adds nothing: no rollout, metric or run row twice.
    let count = || {
        sql(
            &repo,
            None,
            "SELECT (SELECT count(*) FROM rollouts) AS r, (SELECT count(*) FROM metrics) AS m, (SELECT count(*) FROM runs) AS n",
        )
    };
    let before = count();
    ok(&refs(&rl(&killed, true)));
    assert_eq!(count(), before);
}

#[test]
fn sigkill_mid_publish_leaves_no_half_folder_and_a_rerun_publishes_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_rot(dir.path(), "40");
    let publish = |out: &Path| -> Vec<String> {
        ["publish", s(&repo), "--snapshot", "s1", "--out", s(out), "--format", "regrpo-json", "--include-unverified"]
            .map(String::from)
            .to_vec()
    };
    let clean = dir.path().join("clean");
    ok(&refs(&publish(&clean)));

    let out = dir.path().join("pub");
    let tmp = dir.path().join(".pub.tmp");
    // Killed with every file written (into the temporary folder) but the folder not renamed.
    kill_at(&refs(&publish(&out)), "write_folder:pub");
    assert_eq!(names(&tmp), names(&clean));
    assert!(!out.exists(), "a killed publish left {:?}", names(&out));
    ok(&refs(&publish(&out)));
    assert!(!tmp.exists());
    assert_eq!(tree(&out), tree(&clean));
}

/// Data files of every table (relative paths), and the rows each snapshot reads.
fn state_of(repo: &Path) -> (Vec<String>, Vec<String>) {
    let counts = sql(
        repo,
        Some("s1"),
        "SELECT (SELECT count(*) FROM rot) AS r, (SELECT count(*) FROM near_misses) AS n, (SELECT count(*) FROM trajectories) AS t",
    );
    let rows = sql(repo, Some("s1"), "SELECT rot_id FROM rot ORDER BY rot_id");
    (counts, rows)
}

fn parquet_files(repo: &Path) -> usize {
    tree(&repo.join("tables")).keys().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
}

#[test]
fn sigkill_mid_optimize_and_mid_gc_keeps_every_snapshot_whole() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    ok(&["toolworld", "generate", s(&repo), "--tasks", "300", "--seed", "5"]);
    // Many small commits (20 trajectories each): many files for optimize to compact.
    ok(&["engine", "run", s(&repo), "--seed", "1", "--batch", "20"]);
    ok(&["snapshot", "create", s(&repo), "s1"]);
    let before = state_of(&repo);
    // optimize, killed after its first table (near_misses) is rewritten and before the rest.
    kill_at(&["optimize", s(&repo)], "optimize:near_misses");
    assert!(ok(&["snapshot", "verify", s(&repo), "s1"]).contains("verified"));
    assert_eq!(state_of(&repo), before);
    ok(&["optimize", s(&repo)]);
    assert!(ok(&["snapshot", "verify", s(&repo), "s1"]).contains("verified"));
    assert_eq!(state_of(&repo), before);

    // More small commits after s1, then optimize: their small files are read by no snapshot
    // and no latest version, so gc (files of any age) removes them; it is killed after its
    // first deletion.
    ok(&["engine", "run", s(&repo), "--seed", "2", "--batch", "20"]);
    ok(&["optimize", s(&repo)]);
    ok(&["snapshot", "create", s(&repo), "s2"]);
    let s2 = sql(&repo, Some("s2"), "SELECT rot_id FROM rot ORDER BY rot_id");
    let files = parquet_files(&repo);
    kill_at(&["gc", s(&repo), "--min-age", "0"], "gc:deleted");
    assert_eq!(parquet_files(&repo), files - 1);
    for snap in ["s1", "s2"] {
        assert!(ok(&["snapshot", "verify", s(&repo), snap]).contains("verified"), "{snap}");
    }
    assert_eq!(state_of(&repo), before);
    ok(&["gc", s(&repo), "--min-age", "0"]);
    assert!(parquet_files(&repo) < files - 1);
    for snap in ["s1", "s2"] {
        assert!(ok(&["snapshot", "verify", s(&repo), snap]).contains("verified"), "{snap}");
    }
    assert_eq!(sql(&repo, Some("s2"), "SELECT rot_id FROM rot ORDER BY rot_id"), s2);
    assert_eq!(state_of(&repo), before);
}

#[test]
fn gc_keeps_a_file_that_optimize_removed_moments_ago_however_old_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    ok(&["ingest", s(&repo), "-f", "mat", &fixture("mat/trajectories.json")]);
    ok(&["ingest", s(&repo), "-f", "openai", &fixture("openai/chat.jsonl")]);
    // Written two hours ago, by their clocks: older than gc's default one hour.
    let tables = repo.join("tables");
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    for p in tree(&tables).keys().filter(|p| p.extension().is_some_and(|e| e == "parquet")) {
        std::fs::File::options().write(true).open(tables.join(p)).unwrap().set_modified(old).unwrap();
    }
    ok(&["optimize", s(&repo)]);
    // optimize has just compacted them away, but a reader that opened the previous version may
    // still be reading them: gc (default --min-age, 3600 s) keeps them.
    let files = parquet_files(&repo);
    let out = ok(&["gc", s(&repo)]);
    assert!(out.contains("gc: 0 unreferenced file(s) removed"), "{out}");
    assert_eq!(parquet_files(&repo), files);
    let out = ok(&["gc", s(&repo), "--min-age", "0"]);
    assert!(!out.contains("gc: 0 unreferenced"), "{out}");
    assert!(parquet_files(&repo) < files);
}

// Concurrent writers. Each race is made exact with pause points: one writer stops where it is
// about to commit (its table read, its rows chosen), another runs to its end meanwhile, and then
// the first goes on — the interleaving that loses or doubles rows when a writer trusts what it
// read.

/// Rows of a table and its distinct ids, through SQL.
fn rows_and_ids(repo: &Path, table: &str, id: &str) -> (usize, usize) {
    let r = sql(repo, None, &format!("SELECT count(*), count(DISTINCT {id}) FROM {table}"));
    let (a, b) = r[0].split_once(',').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn two_ingests_of_overlapping_files_at_once_land_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    // `more` holds every record of `some` and 300 others.
    let (some, more) = (dir.path().join("some.jsonl"), dir.path().join("more.jsonl"));
    chat_corpus(&some, 500);
    chat_corpus(&more, 800);
    let ingest = |file: &Path| ["ingest", s(&repo), "-f", "openai", "--chunk-rows", "200", s(file)].map(String::from);

    // The first ingest stops before its first commit, its ids read; the second runs to its end;
    // the first's commit then races the second's and loses (both carry the appenders' mark), so
    // it re-reads the ids and adds only what is still missing: nothing.
    let first = Paused::start(&refs(&ingest(&some)), "append:trajectories");
    ok(&refs(&ingest(&more)));
    first.go_on();
    assert_eq!(rows_and_ids(&repo, "trajectories", "trajectory_id"), (800, 800));

    // Two different files racing the same way both land whole.
    let other = dir.path().join("other.jsonl");
    chat_records(&other, 2000..2300);
    let mixed = dir.path().join("mixed.jsonl");
    chat_corpus(&mixed, 900); // 100 new records beside the 800
    let first = Paused::start(&refs(&ingest(&other)), "append:trajectories");
    ok(&refs(&ingest(&mixed)));
    first.go_on();
    assert_eq!(rows_and_ids(&repo, "trajectories", "trajectory_id"), (1200, 1200));
    ok(&["snapshot", "create", s(&repo), "s1"]);
    assert!(ok(&["snapshot", "verify", s(&repo), "s1"]).contains("verified"));
}

#[test]
fn ingest_during_optimize_and_engine_during_gc_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    ok(&["toolworld", "generate", s(&repo), "--tasks", "200", "--seed", "5"]);
    ok(&["engine", "run", s(&repo), "--seed", "1", "--batch", "20"]);
    ok(&["snapshot", "create", s(&repo), "s1"]);
    let before = state_of(&repo);
    let corpus = dir.path().join("chat.jsonl");
    chat_corpus(&corpus, 400);
    let trajectories = rows_and_ids(&repo, "trajectories", "trajectory_id").0;

    // An ingest stopped before its first commit while optimize rewrites every table; then
    // optimize stopped after its first table while an ingest runs to its end.
    let ingest =
        Paused::start(&["ingest", s(&repo), "-f", "openai", "--chunk-rows", "100", s(&corpus)], "append:trajectories");
    ok(&["optimize", s(&repo)]);
    ingest.go_on();
    assert_eq!(rows_and_ids(&repo, "trajectories", "trajectory_id"), (trajectories + 400, trajectories + 400));
    let more = dir.path().join("more.jsonl");
    chat_corpus(&more, 600);
    let optimize = Paused::start(&["optimize", s(&repo)], "optimize:trajectories");
    ok(&["ingest", s(&repo), "-f", "openai", "--chunk-rows", "100", s(&more)]);
    optimize.go_on();
    assert_eq!(rows_and_ids(&repo, "trajectories", "trajectory_id"), (trajectories + 600, trajectories + 600));
    assert!(ok(&["snapshot", "verify", s(&repo), "s1"]).contains("verified"));
    assert_eq!(state_of(&repo), before);

    // An engine run (a new seed: new near-misses) stopped before its first RoT commit while gc
    // deletes every file nothing reads; then gc stopped after its first deletion while an engine
    // run goes to its end. Every row stays readable and each id is there once.
    ok(&["engine", "run", s(&repo), "--seed", "2", "--batch", "20"]);
    ok(&["optimize", s(&repo)]);
    let engine = Paused::start(&["engine", "run", s(&repo), "--seed", "3", "--batch", "20"], "append:rot");
    ok(&["gc", s(&repo), "--min-age", "0"]);
    engine.go_on();
    ok(&["engine", "run", s(&repo), "--seed", "4", "--batch", "20"]);
    ok(&["optimize", s(&repo)]);
    let gc = Paused::start(&["gc", s(&repo), "--min-age", "0"], "gc:deleted");
    ok(&["engine", "run", s(&repo), "--seed", "5", "--batch", "20"]);
    gc.go_on();
    let (rot, rot_ids) = rows_and_ids(&repo, "rot", "rot_id");
    assert_eq!(rot, rot_ids);
    let (near, near_ids) = rows_and_ids(&repo, "near_misses", "near_miss_id");
    assert_eq!(near, near_ids);
    // A rerun of every seed adds nothing: all of it landed.
    for seed in ["2", "3", "4", "5"] {
        ok(&["engine", "run", s(&repo), "--seed", seed, "--batch", "20"]);
    }
    assert_eq!(rows_and_ids(&repo, "rot", "rot_id"), (rot, rot));
    ok(&["snapshot", "create", s(&repo), "s2"]);
    for snap in ["s1", "s2"] {
        assert!(ok(&["snapshot", "verify", s(&repo), snap]).contains("verified"), "{snap}");
    }
    assert_eq!(state_of(&repo), before);
}
