//! `regrpo engine run`: the Structured Reflective Data Engine over the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::ProgressBar;
use regrpo_datasets::Repository;
use regrpo_engine::reflect::TeacherConfig;
use regrpo_engine::tool::remote::{self, RemoteConfig};
use regrpo_engine::tool::wasm::{WasmLimits, WasmTool};
use regrpo_engine::{EngineConfig, EngineProgress, EngineReport, Mix, Shard, ToolSuite};
use regrpo_schemas::ErrorType;

use crate::progress;

/// The Structured Reflective Data Engine: executed near-misses → grounded RoT rows.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build near-misses of the trajectories, execute them, judge, reflect, verify, commit.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    dir: PathBuf,
    /// Tool sources: builtin, wasm:DIR (modules + JSON specs), remote:URL (OpenAPI tool server).
    #[arg(long, default_value = "builtin")]
    tools: String,
    /// Target ErrorType mix: paper, uniform, or four weights (GroundingDrift,ToolMismatch,ArgInvalid,InfoInsufficient).
    #[arg(long, default_value = "paper")]
    mix: String,
    /// Share of CodeError + NonCommit examples on top of the main four.
    #[arg(long, default_value_t = 0.1)]
    extra: f64,
    /// Near-misses per trajectory (K).
    #[arg(long, default_value_t = 2)]
    per_trajectory: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tool calls in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// OpenAI-compatible endpoint that writes the reflections (model: REGRPO_TEACHER_MODEL, key: OPENAI_API_KEY).
    #[arg(long)]
    teacher: Option<String>,
    /// Read trajectories as this snapshot pinned them.
    #[arg(long, short)]
    snapshot: Option<String>,
    /// Only trajectories of these sources (comma-separated: toolworld, bfcl, mat, …).
    #[arg(long, value_delimiter = ',')]
    source: Option<Vec<String>>,
    /// Wasm tools: wall-clock deadline per call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    wasm_deadline_ms: u64,
    /// Wasm tools: memory cap per call, in MiB.
    #[arg(long, default_value_t = 64)]
    wasm_memory_mib: usize,
    /// Trajectories per commit. The planner settles its ErrorType mix batch by batch, so the
    /// rows depend on it as on the seed.
    #[arg(long, default_value_t = EngineConfig::default().batch)]
    batch: usize,
    /// Split the run into this many shards: trajectories go to shards by a hash of their id.
    /// Without --shard (or a scheduler's index) this process runs every shard in turn.
    #[arg(long)]
    shards: Option<usize>,
    /// The shard this process runs, from 0; defaults to JOB_COMPLETION_INDEX (a Kubernetes
    /// Indexed Job) or SLURM_ARRAY_TASK_ID (a Slurm array, less SLURM_ARRAY_TASK_MIN).
    #[arg(long, requires = "shards")]
    shard: Option<usize>,
}

/// The shard index a scheduler gave this process, if it runs under one.
fn scheduler_index() -> Result<Option<usize>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let parse = |name: &str, v: String| {
        v.trim().parse::<usize>().with_context(|| format!("{name}={v}: expected a shard index (0, 1, 2, …)"))
    };
    if let Some(v) = var("JOB_COMPLETION_INDEX") {
        return parse("JOB_COMPLETION_INDEX", v).map(Some);
    }
    if let Some(v) = var("SLURM_ARRAY_TASK_ID") {
        let id = parse("SLURM_ARRAY_TASK_ID", v)?;
        let min = var("SLURM_ARRAY_TASK_MIN").map(|m| parse("SLURM_ARRAY_TASK_MIN", m)).transpose()?.unwrap_or(0);
        return id
            .checked_sub(min)
            .map(Some)
            .with_context(|| format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"));
    }
    Ok(None)
}

/// The shards this process runs: `--shard i --shards N` (or a scheduler's index) is one;
/// `--shards N` alone is all N, one after another; neither is the whole, unsharded run.
fn shards_of(a: &RunArgs) -> Result<Vec<Shard>> {
    let Some(count) = a.shards else { return Ok(vec![Shard::ALL]) };
    let index = match a.shard {
        Some(i) => Some(i),
        None => scheduler_index()?,
    };
    match index {
        Some(i) => Ok(vec![Shard::new(i, count)?]),
        None => (0..count).map(|i| Shard::new(i, count).map_err(Into::into)).collect(),
    }
}

pub async fn run(c: Command, quiet: bool) -> Result<Vec<EngineReport>> {
    let Command::Run(a) = c;
    let shards = shards_of(&a)?;
    let repo = Repository::open(&a.dir).await?;
    let limits = WasmLimits {
        deadline: Duration::from_millis(a.wasm_deadline_ms),
        memory_bytes: a.wasm_memory_mib << 20,
        ..Default::default()
    };
    let suite = suite_from(&a.tools, limits).await?;
    let cfg = EngineConfig {
        mix: Mix::parse(&a.mix, a.extra)?,
        per_trajectory: a.per_trajectory,
        seed: a.seed,
        concurrency: a.concurrency,
        teacher: a.teacher.as_deref().map(TeacherConfig::from_env),
        snapshot: a.snapshot,
        sources: a.source,
        batch: a.batch,
        ..EngineConfig::default()
    };
    let mut reports = Vec::new();
    for shard in shards {
        let cfg = EngineConfig { shard, ..cfg.clone() };
        let label = if shard.count > 1 { format!("engine {shard}") } else { "engine".to_string() };
        let progress = Arc::new(Bar { bar: progress::steps(quiet, 0, &label), counts: Mutex::new(BTreeMap::new()) });
        let report =
            regrpo_engine::run::run(&repo, &suite, &cfg, Some(progress.clone() as Arc<dyn EngineProgress>)).await?;
        progress.bar.finish_and_clear();
        crate::output::print_engine_report(&report, &cfg.mix, repo.location());
        reports.push(report);
    }
    Ok(reports)
}

/// Builds the tool suite from `--tools builtin,wasm:DIR,remote:URL`.
pub async fn suite_from(spec: &str, wasm_limits: WasmLimits) -> Result<ToolSuite> {
    let mut suite = ToolSuite::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "builtin" {
            for t in regrpo_engine::tool::builtin::all() {
                suite.add(t);
            }
        } else if let Some(dir) = part.strip_prefix("wasm:") {
            for t in WasmTool::load_dir(Path::new(dir), wasm_limits)
                .with_context(|| format!("loading wasm tools from {dir}"))?
            {
                suite.add(t);
            }
        } else if let Some(url) = part.strip_prefix("remote:") {
            match remote::connect(RemoteConfig::new(url)).await {
                Ok(tools) => {
                    for t in tools {
                        suite.add(t);
                    }
                }
                Err(e) => {
                    eprintln!("warning: remote tool server {url} is unavailable ({e}); its tools will have no executor")
                }
            }
        } else {
            bail!("unknown tool source `{part}` (expected builtin, wasm:DIR or remote:URL)");
        }
    }
    Ok(suite)
}

struct Bar {
    bar: ProgressBar,
    counts: Mutex<BTreeMap<ErrorType, usize>>,
}

impl EngineProgress for Bar {
    fn start(&self, n: u64) {
        self.bar.set_length(n);
    }
    fn executed(&self, _calls: u64) {}
    fn trajectories_done(&self, n: u64) {
        self.bar.inc(n);
    }
    fn accepted(&self, t: ErrorType) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry(t).or_insert(0) += 1;
        let total: usize = c.values().sum();
        if total.is_multiple_of(25) {
            let secs = self.bar.elapsed().as_secs_f64().max(1e-3);
            let parts: Vec<String> = c.iter().map(|(t, n)| format!("{}:{n}", &t.as_str()[..4])).collect();
            self.bar.set_message(format!("{total} RoT ({:.0}/s) {}", total as f64 / secs, parts.join(" ")));
        }
    }
}
