//! Integration tests of the data engine: toolworld replay, the engine on toolworld, BFCL and
//! MAT, wasm and remote tools, the teacher path, determinism and export.

mod remote;
mod tools;
mod wasm;

use regrpo_schemas::ExecStatus;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regrpo_datasets::Repository;
use regrpo_engine::executor::{declared_specs, execute_action};
use regrpo_engine::{CallContext, EngineConfig, Mix, ToolSuite, toolworld};
use regrpo_formats::ingest::{self, Format, IngestOptions};
use regrpo_formats::publish::{PublishFormat, PublishOptions, publish};
use regrpo_schemas::{ErrorType, NearMiss, Rot, Trajectory};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn shared_data() -> Option<PathBuf> {
    let dir =
        std::env::var_os("REGRPO_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| workspace().join("../shared/data"));
    if dir.join("bfcl").is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped the shared-data part: no shared data at {} (set REGRPO_SHARED_DATA)", dir.display());
        None
    }
}

async fn world(dir: &tempfile::TempDir, name: &str, tasks: usize, seed: u64) -> Repository {
    let repo = Repository::init(dir.path().join(name)).await.unwrap();
    toolworld::generate_into(&repo, tasks, seed, 8, || {}).await.unwrap();
    repo
}

fn cfg(seed: u64) -> EngineConfig {
    EngineConfig { seed, ..EngineConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_toolworld_trajectory_replays() {
    let dir = tempfile::tempdir().unwrap();
    let repo = world(&dir, "r", 1050, 3).await;
    let ts = repo.read::<Trajectory>(None).await.unwrap();
    assert_eq!(ts.len(), 1050);
    let suite = ToolSuite::builtin();
    let mut families = BTreeMap::new();
    for t in &ts {
        let meta: serde_json::Value = serde_json::from_str(t.meta.as_deref().unwrap()).unwrap();
        *families.entry(meta["family"].as_str().unwrap().to_string()).or_insert(0) += 1;
        assert!((2..=6).contains(&t.steps.len()), "{}", t.source_id);
        let ctx = CallContext::new(toolworld::sandbox_of(repo.workdir(), t));
        for (i, s) in t.steps.iter().enumerate() {
            let action = s.action.as_ref().unwrap().parse().unwrap();
            let e = execute_action(&suite, &action, &declared_specs(t), &ctx, i + 1 == t.steps.len()).await;
            assert_eq!(e.status, ExecStatus::Ok, "{} step {i}", t.source_id);
            assert_eq!(
                Some(e.text.as_str()),
                s.observation.as_ref().map(|o| o.text.as_str()),
                "{} step {i}",
                t.source_id
            );
        }
        let last = t.steps.last().unwrap().observation.as_ref().unwrap();
        assert_eq!(last.text, format!("Final answer: {}", t.final_answer.as_deref().unwrap()));
    }
    assert_eq!(families.len(), toolworld::FAMILIES.len(), "{families:?}");
    // Every builtin tool is exercised by some trajectory.
    let used: std::collections::BTreeSet<String> =
        ts.iter().flat_map(|t| t.steps.iter().map(|s| s.action.as_ref().unwrap().tool.clone())).collect();
    for name in suite.names() {
        assert!(used.contains(&name), "no trajectory uses {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_on_2000_tasks_meets_the_mix_and_grounds_every_quote() {
    let dir = tempfile::tempdir().unwrap();
    let repo = world(&dir, "r", 2000, 11).await;
    let report = regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &cfg(11), None).await.unwrap();
    let rots = repo.read::<Rot>(None).await.unwrap();
    assert_eq!(rots.len(), report.rot_added);
    let mut by_type: BTreeMap<ErrorType, usize> = BTreeMap::new();
    for r in &rots {
        *by_type.entry(r.error_type.parse().unwrap()).or_insert(0) += 1;
        let (a, b) = (r.evidence_start.unwrap() as usize, r.evidence_end.unwrap() as usize);
        let quote = &r.failed_observation[a..b];
        assert!(!quote.is_empty() && r.evidence.contains(quote), "evidence of {} quotes nothing", r.rot_id);
        assert_ne!(r.failed_action.raw, r.corrected_action.raw);
        assert!(r.conversation.iter().any(|m| m.content.starts_with("Reflection:\n- ErrorType: ")));
    }
    for t in ErrorType::ALL {
        assert!(by_type.get(&t).copied().unwrap_or(0) > 0, "no {t} rows: {by_type:?}");
    }
    let main: usize = ErrorType::MAIN.iter().map(|t| by_type[t]).sum();
    for (t, target) in ErrorType::MAIN.iter().zip(regrpo_engine::planner::PAPER_MIX) {
        let share = by_type[t] as f64 / main as f64;
        assert!((share - target).abs() <= 0.03, "{t}: {share:.3} vs {target}");
    }
    let verified = rots.iter().filter(|r| r.verified).count();
    assert!(verified as f64 >= 0.95 * rots.len() as f64, "{verified} of {} verified", rots.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_gives_identical_rot_rows_and_a_rerun_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = world(&dir, "a", 120, 5).await;
    let b = world(&dir, "b", 120, 5).await;
    regrpo_engine::run::run(&a, &ToolSuite::builtin(), &cfg(9), None).await.unwrap();
    regrpo_engine::run::run(&b, &ToolSuite::builtin(), &cfg(9), None).await.unwrap();
    let sorted = |mut v: Vec<Rot>| {
        v.sort_by(|x, y| x.rot_id.cmp(&y.rot_id));
        v
    };
    let (ra, rb) = (sorted(a.read::<Rot>(None).await.unwrap()), sorted(b.read::<Rot>(None).await.unwrap()));
    assert!(!ra.is_empty());
    assert_eq!(ra, rb);
    let again = regrpo_engine::run::run(&a, &ToolSuite::builtin(), &cfg(9), None).await.unwrap();
    assert_eq!((again.rot_added, again.near_misses_added), (0, 0));
    // Another seed plans differently.
    let other = regrpo_engine::run::run(&b, &ToolSuite::builtin(), &cfg(10), None).await.unwrap();
    assert!(other.rot_added > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bfcl_failures_are_the_schema_validators_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("r")).await.unwrap();
    let shared = shared_data();
    let file = match &shared {
        Some(d) => d.join("bfcl/simple_python.json"),
        None => workspace().join("fixtures/bfcl/questions.json"),
    };
    ingest::ingest(&repo, Format::Bfcl, &[file], &IngestOptions::default()).await.unwrap();
    // A question that offers two functions (BFCL's `multiple` category): the only kind where a
    // tool mismatch is realistic.
    let multiple = r#"{"id": "fx_multiple_0", "question": [[{"role": "user", "content": "Convert 20 USD to EUR."}]], "function": [{"name": "convert_currency", "description": "Convert money.", "parameters": {"type": "dict", "properties": {"amount": {"type": "integer", "description": "Amount."}, "from_currency": {"type": "string", "description": "From."}, "to_currency": {"type": "string", "description": "To."}}, "required": ["amount", "from_currency", "to_currency"]}}, {"name": "exchange_rate", "description": "The rate between two currencies.", "parameters": {"type": "dict", "properties": {"from_currency": {"type": "string", "description": "From."}, "to_currency": {"type": "string", "description": "To."}}, "required": ["from_currency", "to_currency"]}}]}"#;
    let answer = r#"{"id": "fx_multiple_0", "ground_truth": [{"convert_currency": {"amount": [20], "from_currency": ["USD"], "to_currency": ["EUR"]}}]}"#;
    // An answer whose only value names an argument the function does not declare: the call
    // its own schema refuses can never be a corrected action.
    let undeclared = r#"{"id": "fx_undeclared_0", "question": [[{"role": "user", "content": "Book table 4 at 7pm."}]], "function": [{"name": "book_table", "description": "Book a table.", "parameters": {"type": "dict", "properties": {"table": {"type": "integer", "description": "Table."}, "time": {"type": "string", "description": "Time."}}, "required": ["table", "time"]}}]}"#;
    let undeclared_answer =
        r#"{"id": "fx_undeclared_0", "ground_truth": [{"book_table": {"table": [4], "time": ["7pm"], "party": [2]}}]}"#;
    std::fs::write(dir.path().join("multiple.json"), format!("{multiple}\n{undeclared}\n")).unwrap();
    std::fs::write(dir.path().join("multiple.answers.json"), format!("{answer}\n{undeclared_answer}\n")).unwrap();
    ingest::ingest(&repo, Format::Bfcl, &[dir.path().join("multiple.json")], &IngestOptions::default()).await.unwrap();
    let mut c = cfg(1);
    c.mix = Mix::parse("1,1,1,1", 0.0).unwrap();
    c.per_trajectory = 3;
    let report = regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &c, None).await.unwrap();
    let rots = repo.read::<Rot>(None).await.unwrap();
    let types: std::collections::BTreeSet<&str> = rots.iter().map(|r| r.error_type.as_str()).collect();
    assert!(types.contains("ArgInvalid") && types.contains("ToolMismatch"), "{types:?}");
    // A tool mismatch calls a function its own question offered, never one from elsewhere.
    let trajectories: std::collections::HashMap<String, Trajectory> =
        repo.read::<Trajectory>(None).await.unwrap().into_iter().map(|t| (t.trajectory_id.clone(), t)).collect();
    for r in rots.iter().filter(|r| r.error_type == "ToolMismatch") {
        let offered: Vec<String> =
            declared_specs(&trajectories[&r.trajectory_id]).into_iter().map(|s| s.name).collect();
        assert!(offered.len() > 1, "a one-function question got a tool mismatch");
        assert!(offered.contains(&r.failed_action.tool), "{} not in {offered:?}", r.failed_action.tool);
    }
    let refused: Vec<&Trajectory> = trajectories.values().filter(|t| t.source_id == "fx_undeclared_0").collect();
    assert!(rots.iter().all(|r| r.trajectory_id != refused[0].trajectory_id));
    let near = repo.read::<NearMiss>(None).await.unwrap();
    assert!(
        near.iter().any(|n| n.trajectory_id == refused[0].trajectory_id
            && n.reason.as_deref().is_some_and(|r| r.starts_with("gate corrected_valid:") && r.contains("party"))),
        "{:?}",
        near.iter().filter(|n| n.trajectory_id == refused[0].trajectory_id).map(|n| &n.reason).collect::<Vec<_>>()
    );
    for r in &rots {
        assert!(r.gates.contains(&"corrected_valid".to_string()), "{:?}", r.gates);
        assert!(r.failed_observation.starts_with("Error: invalid arguments for "), "{}", r.failed_observation);
        assert!(
            ["is a required property", "is not of type", "Additional properties are not allowed", "is not one of"]
                .iter()
                .any(|m| r.failed_observation.contains(m)),
            "{}",
            r.failed_observation
        );
        assert!(!r.verified, "BFCL functions have no executor, nothing can be re-executed");
        // The corrected call could not run: the sample ends at it, and no engine message
        // stands in for its observation.
        for m in &r.conversation {
            assert!(!m.content.contains("no executor") && !m.content.contains("configure a wasm"), "{}", m.content);
        }
        let last = r.conversation.last().unwrap();
        assert_eq!(last.role, "assistant");
        assert!(last.content.starts_with("Reflection:"), "{}", last.content);
        assert_eq!(r.corrected_observation, None);
    }
    // The valid near-misses could not be run, and the report says so instead of inventing.
    // (The 400 real BFCL questions always yield some; our 3-question fixture's near-misses
    // are all caught by the schema validator, so there is nothing to report there.)
    if shared.is_some() {
        assert!(!report.missing_executors.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mat_reports_missing_executors_and_invents_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("r")).await.unwrap();
    let file = match shared_data() {
        Some(d) => d.join("mat/mm_traj_subset.json"),
        None => workspace().join("fixtures/mat/trajectories.json"),
    };
    ingest::ingest(&repo, Format::Mat, &[file], &IngestOptions::default()).await.unwrap();
    // Enough near-misses per trajectory that one which validates reaches a tool without an
    // executor (a tool mismatch only swaps in tools the trajectory declared, all of which
    // validate against their own schema or fail it).
    let mut c = cfg(2);
    c.per_trajectory = 6;
    let report = regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &c, None).await.unwrap();
    assert!(
        report.missing_executors.keys().any(|t| t == "visualizer" || t == "ask_search_agent"),
        "{:?}",
        report.missing_executors
    );
    let near = repo.read::<NearMiss>(None).await.unwrap();
    assert!(!near.is_empty());
    for n in &near {
        // Only what really ran (the schema validator, the episode) can be an observation.
        assert!(
            matches!(n.execution.status, ExecStatus::NoExecutor | ExecStatus::SchemaError)
                || n.execution.tool_version.starts_with("builtin")
                || n.execution.tool_version == "episode/1",
            "{} {:?}",
            n.operator,
            n.execution
        );
        if n.execution.status == ExecStatus::NoExecutor {
            assert_eq!(n.verdict, "rejected");
        }
    }
    for r in repo.read::<Rot>(None).await.unwrap() {
        assert!(!r.verified);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reads_back_with_identical_content() {
    let dir = tempfile::tempdir().unwrap();
    let repo = world(&dir, "r", 60, 4).await;
    regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &cfg(4), None).await.unwrap();
    // Every trajectory in `train`, every row published: the whole table goes out.
    let split = regrpo_schemas::SplitSpec::new([1.0, 0.0, 0.0], 0).unwrap();
    regrpo_datasets::snapshot::create_with_split(&repo, "s", None, split).await.unwrap();
    let out = dir.path().join("export");
    let opts = PublishOptions { format: PublishFormat::RegrpoJson, verified_only: false, ..PublishOptions::default() };
    publish(&repo, "s", &out, &opts).await.unwrap();
    let (rot_file, clean_file) = (out.join("rot_train.json"), out.join("clean_train.json"));
    let records = |p: &std::path::Path| {
        serde_json::from_str::<Vec<serde_json::Value>>(&std::fs::read_to_string(p).unwrap()).unwrap().len()
    };
    assert!(records(&rot_file) > 0 && records(&clean_file) == 60);
    let back = Repository::init(dir.path().join("back")).await.unwrap();
    let sum = ingest::ingest(&back, Format::Regrpo, &[rot_file, clean_file], &IngestOptions::default()).await.unwrap();
    assert_eq!(sum.rejected, 0);
    // Everything but the ids (which hash where a row came from) must survive the trip.
    let content = |r: &Rot| {
        let mut v = serde_json::to_value(r).unwrap();
        for k in ["rot_id", "near_miss_id", "trajectory_id", "engine_run_id", "corrected_observation"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v.to_string()
    };
    let mut a: Vec<_> = repo.read::<Rot>(None).await.unwrap().iter().map(content).collect();
    let mut b: Vec<_> = back.read::<Rot>(None).await.unwrap().iter().map(content).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}
