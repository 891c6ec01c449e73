//! Writes a synthetic repository for the query benchmark (`bench/queries.sh`): N near-miss rows
//! and M RoT rows with the engine's shapes and a skewed ErrorType mix (NonCommit is rare, 0.5%),
//! through the repository's own writer (so the files have regrpo's layout: clustered by
//! error_type and tool, page statistics, dictionaries on low-cardinality columns).
//!
//!     cargo run --release --example gen_query_bench -- DIR NEAR_MISSES ROT
//!
//! Rows are committed in chunks of 500k (one Delta commit and file each).

use std::time::Instant;

use regrpo_datasets::Repository;
use regrpo_schemas::id::content_id;
use regrpo_schemas::react::{Reflection, format_observation};
use regrpo_schemas::{ActionRecord, Execution, Message, NearMiss, Rot};

const TYPES: [(&str, f64); 6] = [
    ("ArgInvalid", 0.30),
    ("ToolMismatch", 0.25),
    ("GroundingDrift", 0.25),
    ("InfoInsufficient", 0.12),
    ("CodeError", 0.075),
    ("NonCommit", 0.005),
];
const TOOLS: [&str; 8] = [
    "calculator",
    "inspect_file_as_text",
    "sql_query",
    "search_text",
    "image_crop",
    "ocr",
    "visualizer",
    "final_answer",
];
const CHUNK: usize = 500_000;

/// A cheap deterministic generator (SplitMix64).
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn error_type(&mut self) -> &'static str {
        let mut u = self.unit();
        for (t, p) in TYPES {
            if u < p {
                return t;
            }
            u -= p;
        }
        TYPES[0].0
    }
}

fn action(tool: &str, i: u64) -> ActionRecord {
    let arguments = format!("{{\"path\":\"files/doc_{}.txt\",\"query\":\"value of item {}\"}}", i % 5000, i % 977);
    ActionRecord {
        tool: tool.into(),
        raw: format!("{{\"name\": \"{tool}\", \"arguments\": {arguments}}}"),
        arguments,
        surface: "json".into(),
    }
}

fn near_miss(rng: &mut Mix, i: u64) -> NearMiss {
    let error_type = rng.error_type();
    let tool = TOOLS[(rng.next() % TOOLS.len() as u64) as usize];
    let traj = format!("traj-{}", i / 4);
    NearMiss {
        near_miss_id: content_id([b"nm".as_slice(), &i.to_le_bytes()]),
        trajectory_id: content_id([traj.as_bytes()]),
        step_index: (i % 6) as i32,
        error_type: error_type.into(),
        tool: tool.into(),
        operator: format!("{}.op{}", error_type.to_lowercase(), rng.next() % 3),
        change: format!("argument `path` changed from files/doc_{}.txt to files/doc_{}.txt", i % 5000, (i + 7) % 5000),
        source: "engine".into(),
        original_action: action(tool, i),
        failed_action: action(tool, i + 7),
        execution: Execution {
            status: regrpo_schemas::ExecStatus::ToolError,
            text: format!(
                "Error: {error_type} while running {tool}: no such entry `doc_{}` (checked {} rows)",
                (i + 7) % 5000,
                rng.next() % 10_000
            ),
            error_code: Some("not_found".into()),
            duration_us: (rng.next() % 50_000) as i64,
            tool_version: "1".into(),
        },
        is_failure: rng.unit() < 0.93,
        verdict: "failure".into(),
        reason: None,
        engine_run_id: "bench".into(),
        seed: 0,
    }
}

fn rot(rng: &mut Mix, i: u64) -> Rot {
    let n = near_miss(rng, i);
    let obs = n.execution.text.clone();
    Rot {
        rot_id: content_id([b"rot".as_slice(), &i.to_le_bytes()]),
        near_miss_id: Some(n.near_miss_id.clone()),
        trajectory_id: n.trajectory_id.clone(),
        step_index: n.step_index,
        error_type: n.error_type.clone(),
        tool: n.tool.clone(),
        evidence: format!("The tool said \"{}\"", &obs[..obs.len().min(60)]),
        evidence_start: Some(0),
        evidence_end: Some(60),
        fix_plan: format!("Call {} again with the path the task names (files/doc_{}.txt).", n.tool, i % 5000),
        failed_observation: obs.clone(),
        corrected_observation: Some(format!("row {}: 42", i % 977)),
        verified: rng.unit() < 0.8,
        derivable: None,
        // The layout the engine writes: the failed step, its observation, the reflection with
        // the corrected action (so SFT trains on these rows too).
        conversation: vec![
            Message { role: "user".into(), content: format!("Task {i}: find the value of item {}", i % 977) },
            Message { role: "assistant".into(), content: format!("Code:\n```py\n{}\n```", n.failed_action.raw) },
            Message { role: "user".into(), content: format_observation(0, &obs) },
            Message {
                role: "assistant".into(),
                content: format!(
                    "{}Code:\n```py\n{}\n```",
                    Reflection {
                        error_type: n.error_type.clone(),
                        evidence: format!("The tool said \"{}\"", &obs[..obs.len().min(60)]),
                        fix_plan: format!("Use files/doc_{}.txt.", i % 5000),
                    }
                    .to_text(),
                    n.original_action.raw
                ),
            },
        ],
        gates: vec![],
        generator: "template-v1".into(),
        engine_run_id: "bench".into(),
        failed_action: n.failed_action,
        corrected_action: n.original_action,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, near_misses, rots] = &args[..] else {
        anyhow::bail!("usage: gen_query_bench DIR NEAR_MISSES ROT");
    };
    let (near_misses, rots): (u64, u64) = (near_misses.parse()?, rots.parse()?);
    let repo = Repository::init(dir).await?;
    let started = Instant::now();
    let mut rng = Mix(7);
    let mut i = 0;
    while i < near_misses {
        let n = (near_misses - i).min(CHUNK as u64);
        let rows: Vec<NearMiss> = (i..i + n).map(|k| near_miss(&mut rng, k)).collect();
        repo.commit(&rows, "bench").await?;
        i += n;
        eprintln!("near_misses {i}/{near_misses} ({:.0}s)", started.elapsed().as_secs_f64());
    }
    let mut i = 0;
    while i < rots {
        let n = (rots - i).min(CHUNK as u64);
        let rows: Vec<Rot> = (i..i + n).map(|k| rot(&mut rng, k)).collect();
        repo.commit(&rows, "bench").await?;
        i += n;
        eprintln!("rot {i}/{rots} ({:.0}s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}
