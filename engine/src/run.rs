//! An engine run: trajectories → near-misses → executions → verdicts → RoT rows, committed in
//! batches.
//!
//! Determinism: trajectories are processed in id order, in batches; the plan of a batch
//! depends only on the seed, the trajectory and the examples accepted in earlier batches;
//! executions run concurrently but their results are assembled in plan order. Ids are content
//! hashes and rows carry no timestamps, so the same input and seed give the same `rot` rows,
//! and a rerun after a crash recomputes everything and adds only what is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use regrpo_datasets::{AppTransaction, Repository};
use regrpo_schemas::id::content_id;
use regrpo_schemas::react::reflection_turn;
use regrpo_schemas::{ActionRecord, ErrorType, ExecStatus, NearMiss, Record, Rot, Trajectory};
use serde_json::json;

use crate::error::Result;
use crate::executor::{declared_specs, execute_action};
use crate::gates;
use crate::judge::judge;
use crate::perturb::PerturbContext;
use crate::planner::{Candidate, Mix, Planned, Planner};
use crate::reflect::{self, Failure, Reflected, TeacherConfig};
use crate::tool::{CallContext, ToolSpec, ToolSuite};
use crate::toolworld::sandbox_of;
use crate::verify;

/// What an engine run does.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub mix: Mix,
    /// Near-misses planned per trajectory (K).
    pub per_trajectory: usize,
    pub seed: u64,
    /// Tool calls in flight at once.
    pub concurrency: usize,
    pub call_timeout: Duration,
    /// Trajectories per commit.
    pub batch: usize,
    pub teacher: Option<TeacherConfig>,
    /// Read trajectories as this snapshot pinned them (default: latest).
    pub snapshot: Option<String>,
    /// Only trajectories of these sources.
    pub sources: Option<Vec<String>>,
    /// The part of the run this process does.
    pub shard: Shard,
}

/// One shard of a run: the trajectories whose id hashes to `index` of `count`.
///
/// Shards share the run id (it names every trajectory of the run, not only the shard's) and
/// each plans its own trajectories with its own planner, so a shard's rows depend on the seed,
/// the input and the shard count only: the union of the shards run as N processes anywhere
/// equals the same shards run one after another in one process. `count = 1` is the whole run,
/// as before sharding existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole run in one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(crate::Error::Config(format!(
                "shard {index} of {count}: the index must be below the number of shards (0 ≤ index < shards)"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard takes the trajectory.
    pub fn holds(&self, trajectory_id: &str) -> bool {
        if self.count == 1 {
            return true;
        }
        let h = content_id([trajectory_id.as_bytes()]);
        let bucket = u64::from_str_radix(&h[..16], 16).unwrap_or(0) % self.count as u64;
        bucket == self.index as u64
    }

    /// The Delta application id a shard's commits carry: its batches (of `batch` trajectories)
    /// are its versions. The batch size is in the id because batch numbers mean nothing
    /// across sizes (the plan, too, is settled batch by batch).
    pub fn app_id(&self, run_id: &str, batch: usize) -> String {
        format!("regrpo-engine/{run_id}/batch-{batch}/shard-{}-of-{}", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mix: Mix::parse("paper", 0.1).expect("the paper mix is valid"),
            per_trajectory: 2,
            seed: 0,
            concurrency: 16,
            call_timeout: Duration::from_secs(10),
            batch: 256,
            teacher: None,
            snapshot: None,
            sources: None,
            shard: Shard::ALL,
        }
    }
}

/// Receives progress.
pub trait EngineProgress: Send + Sync {
    fn start(&self, _trajectories: u64) {}
    fn executed(&self, _calls: u64) {}
    fn trajectories_done(&self, _n: u64) {}
    fn accepted(&self, _t: ErrorType) {}
}

/// What a run produced and why things were dropped.
#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    pub run_id: String,
    pub shard: Option<Shard>,
    /// The shard's trajectories.
    pub trajectories: usize,
    /// Commits (batches of trajectories) of the shard, and how many of them an earlier run of
    /// the same shard had already committed (their rows were recomputed, not written again).
    pub batches: usize,
    pub batches_already_committed: usize,
    pub planned: usize,
    pub executions: usize,
    pub accepted: BTreeMap<ErrorType, usize>,
    pub verified: usize,
    /// Reason → count (reasons are grouped by their leading words).
    pub rejected: BTreeMap<String, usize>,
    /// Tool → calls that had no executor.
    pub missing_executors: BTreeMap<String, usize>,
    pub near_misses_added: usize,
    pub rot_added: usize,
    pub elapsed: Duration,
}

impl EngineReport {
    pub fn accepted_total(&self) -> usize {
        self.accepted.values().sum()
    }
}

struct Job {
    trajectory: Arc<Trajectory>,
    declared: Arc<Vec<ToolSpec>>,
    planned: Planned,
    sandbox: Option<PathBuf>,
    is_final: bool,
    /// The trajectory's system message, rendered by the first of its jobs that needs it.
    system: Arc<OnceLock<String>>,
}

/// What every job of a run shares, owned, so jobs can run as tasks on every worker thread.
struct Shared {
    suite: ToolSuite,
    cfg: EngineConfig,
    client: reqwest::Client,
    run_id: String,
}

struct Outcome {
    near_miss: NearMiss,
    rot: Option<Rot>,
    accepted: Option<ErrorType>,
    verified: bool,
    missing: Option<String>,
}

/// Runs the engine over the repository's trajectories and commits near-misses and RoT rows.
pub async fn run(
    repo: &Repository,
    suite: &ToolSuite,
    cfg: &EngineConfig,
    progress: Option<Arc<dyn EngineProgress>>,
) -> Result<EngineReport> {
    let started = Instant::now();
    let version = match &cfg.snapshot {
        Some(name) => Some(regrpo_datasets::snapshot::table_version(repo, name, "trajectories").await?),
        None => None,
    };
    let mut trajectories: Vec<Trajectory> = repo.read::<Trajectory>(version).await?;
    if let Some(sources) = &cfg.sources {
        trajectories.retain(|t| sources.contains(&t.source));
    }
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));

    let mut params = json!({
        "mix": cfg.mix.shares.iter().map(|(k, v)| (k.as_str(), v)).collect::<BTreeMap<_, _>>(),
        "k": cfg.per_trajectory,
        "seed": cfg.seed,
        "teacher": cfg.teacher.as_ref().map(|t| t.model.clone()),
        "tools": suite.names(),
    });
    if cfg.shard.count > 1 {
        // A sharded run plans per shard, so its rows differ from an unsharded run's.
        params["shards"] = json!(cfg.shard.count);
    }
    let run_id = content_id([
        params.to_string().as_bytes(),
        trajectories.iter().map(|t| t.trajectory_id.as_str()).collect::<Vec<_>>().join(",").as_bytes(),
    ]);
    trajectories.retain(|t| cfg.shard.holds(&t.trajectory_id));
    let batch_size = cfg.batch.max(1);
    let batches = trajectories.len().div_ceil(batch_size);
    let mut report = EngineReport {
        run_id: run_id.clone(),
        shard: (cfg.shard.count > 1).then_some(cfg.shard),
        trajectories: trajectories.len(),
        batches,
        ..Default::default()
    };

    // Batch b (from 1) of the shard is committed with the mark (app id, b) on each table; a
    // rerun recomputes every batch, the planner needing the earlier ones, and writes only the
    // batches past the marks. A shard whose batches all landed has nothing to do.
    let app_id = cfg.shard.app_id(&run_id, batch_size);
    let (near_done, rot_done) = tokio::try_join!(
        repo.transaction_version(NearMiss::TABLE, &app_id),
        repo.transaction_version(Rot::TABLE, &app_id)
    )?;
    let (near_done, rot_done) = (near_done.unwrap_or(0), rot_done.unwrap_or(0));
    report.batches_already_committed = near_done.min(rot_done).clamp(0, batches as i64) as usize;
    if batches > 0 && report.batches_already_committed == batches {
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    if let Some(p) = &progress {
        p.start(trajectories.len() as u64);
    }

    let mut planner = Planner::new(cfg.mix.clone());
    let (near_app, rot_app) = tokio::try_join!(repo.appender::<NearMiss>(), repo.appender::<Rot>())?;
    let root = repo.sandboxes().await?;
    let shared = Arc::new(Shared {
        suite: suite.clone(),
        cfg: cfg.clone(),
        client: reqwest::Client::new(),
        run_id: run_id.clone(),
    });
    // Commits run beside execution: batch i is written while batch i + 1 executes, in order,
    // each append one Delta commit as before.
    let (to_writer, mut committed) = tokio::sync::mpsc::channel::<(i64, Vec<NearMiss>, Vec<Rot>)>(1);
    let message = match report.shard {
        Some(shard) => format!("engine {run_id} shard {shard}"),
        None => format!("engine {run_id}"),
    };
    let writer = tokio::spawn(async move {
        let (mut near_app, mut rot_app) = (near_app, rot_app);
        let (mut near_added, mut rot_added) = (0, 0);
        while let Some((b, near, rots)) = committed.recv().await {
            let mark = AppTransaction { app_id: app_id.clone(), version: b };
            if b > near_done {
                near_added += near_app.append_as(near, &message, Some(&mark)).await?.added;
            }
            if b > rot_done {
                rot_added += rot_app.append_as(rots, &message, Some(&mark)).await?.added;
            }
        }
        Ok::<_, crate::Error>((near_added, rot_added))
    });
    let trajectories: Vec<Arc<Trajectory>> = trajectories.into_iter().map(Arc::new).collect();

    for (b, chunk) in (1i64..).zip(trajectories.chunks(batch_size)) {
        // Plan the batch (sequential, deterministic).
        let mut jobs = Vec::new();
        let declared: Vec<Arc<Vec<ToolSpec>>> = chunk.iter().map(|t| Arc::new(declared_specs(t))).collect();
        for (ti, t) in chunk.iter().enumerate() {
            let sandbox = sandbox_of(&root, t);
            let system = Arc::new(OnceLock::new());
            let last = t.steps.len().saturating_sub(1);
            let mut candidates = Vec::new();
            for (i, step) in t.steps.iter().enumerate() {
                let Some(record) = step.action.as_ref() else { continue };
                let Ok(action) = record.parse() else { continue };
                let tool = action.tool().to_string();
                let spec = suite.spec_of(&tool, &declared[ti]);
                candidates.push(Candidate {
                    step_index: i,
                    action,
                    record,
                    spec,
                    ctx: PerturbContext {
                        spec,
                        alternatives: &declared[ti],
                        sandbox: sandbox.as_deref(),
                        is_final: i == last,
                    },
                });
            }
            for planned in planner.plan(&t.trajectory_id, &candidates, cfg.per_trajectory, cfg.seed) {
                let is_final = planned.step_index == last;
                jobs.push(Job {
                    trajectory: Arc::clone(t),
                    declared: Arc::clone(&declared[ti]),
                    planned,
                    sandbox: sandbox.clone(),
                    is_final,
                    system: Arc::clone(&system),
                });
            }
        }
        report.planned += jobs.len();

        // Execute concurrently, each job a task on the runtime's workers (every core); the
        // outcomes come back in plan order, so the rows do not depend on the schedule.
        let outcomes: Vec<Outcome> = futures::stream::iter(jobs.into_iter().map(|job| {
            let shared = Arc::clone(&shared);
            let progress = progress.clone();
            tokio::spawn(async move {
                let out = process(&shared, &job).await;
                if let Some(p) = &progress {
                    p.executed(2);
                    if let Some(et) = out.accepted {
                        p.accepted(et);
                    }
                }
                out
            })
        }))
        .buffered(cfg.concurrency.max(1))
        .map(|joined| joined.map_err(|e| crate::Error::Internal(format!("an engine job failed: {e}"))))
        .try_collect()
        .await?;

        let mut accepted = BTreeMap::new();
        let mut near = Vec::new();
        let mut rots = Vec::new();
        for o in outcomes {
            report.executions += 2;
            if let Some(t) = o.accepted {
                *accepted.entry(t).or_insert(0) += 1;
            }
            report.verified += usize::from(o.verified && o.rot.is_some());
            if let Some(tool) = o.missing {
                *report.missing_executors.entry(tool).or_insert(0) += 1;
            }
            if let Some(reason) = &o.near_miss.reason {
                *report.rejected.entry(reason_key(reason)).or_insert(0) += 1;
            }
            near.push(o.near_miss);
            rots.extend(o.rot);
        }
        for (t, n) in &accepted {
            *report.accepted.entry(*t).or_insert(0) += n;
        }
        planner.settle(&accepted);
        if to_writer.send((b, near, rots)).await.is_err() {
            break; // The writer stopped on an error; joining it below reports the error.
        }
        if let Some(p) = &progress {
            p.trajectories_done(chunk.len() as u64);
        }
    }
    drop(to_writer);
    let (near_added, rot_added) =
        writer.await.map_err(|e| crate::Error::Internal(format!("the engine's writer failed: {e}")))??;
    report.near_misses_added = near_added;
    report.rot_added = rot_added;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Groups reasons by their stable head (`gate no_leak`, `not executed`, `judge found …`).
fn reason_key(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("not executed: ") {
        return format!("not executed: {}", rest.split(':').next().unwrap_or(rest));
    }
    reason.split(':').next().unwrap_or(reason).to_string()
}

/// Executes, judges and (when it is a real failure) reflects, gates and verifies one near-miss.
async fn process(shared: &Shared, job: &Job) -> Outcome {
    let Shared { suite, cfg, client, run_id } = shared;
    let (t, declared) = (job.trajectory.as_ref(), job.declared.as_slice());
    let step = &t.steps[job.planned.step_index];
    let (original, original_rec) = (&job.planned.original, &job.planned.original_record);
    let failed = &job.planned.perturbed.action;
    let ctx = CallContext { sandbox: job.sandbox.clone(), timeout: cfg.call_timeout };
    // A swapped tool is one the trajectory declared, so its schema validates the call.
    let failed_exec = execute_action(suite, failed, declared, &ctx, job.is_final).await;
    // Re-executing the corrected (= original) action is both the judge's reference and the
    // verification of the RoT row.
    let original_exec = execute_action(suite, original, declared, &ctx, job.is_final).await;
    let stored = step.observation.as_ref().map(|o| o.text.as_str());
    let verified = verify::verified(stored, &original_exec);

    let claimed = job.planned.perturbed.error_type;
    let verdict = judge(original, &original_exec, failed, &failed_exec);
    let near_miss_id = content_id([
        t.trajectory_id.as_bytes(),
        &(job.planned.step_index as u64).to_le_bytes(),
        job.planned.perturbed.operator.as_bytes(),
        failed.to_text().as_bytes(),
        &cfg.seed.to_le_bytes(),
    ]);
    let missing = (failed_exec.status == ExecStatus::NoExecutor).then(|| failed.tool().to_string());
    let mut reason = verdict.reason.clone();
    let mut rot = None;
    if verdict.is_failure && verdict.error_type != Some(claimed) {
        reason = Some(format!(
            "judge found {} where the operator claimed {claimed}",
            verdict.error_type.map_or("no failure".into(), |e| e.to_string())
        ));
    }
    if reason.is_none() {
        let failure = Failure {
            trajectory: t,
            system: job.system.get_or_init(|| regrpo_schemas::react::system_message(t)),
            step_index: job.planned.step_index,
            original,
            failed,
            failed_observation: &failed_exec.text,
            failed_error_code: failed_exec.error_code.as_deref(),
            original_observation: verify::observation(stored, &original_exec),
            corrected_schema_error: (original_exec.status == ExecStatus::SchemaError)
                .then_some(original_exec.text.as_str()),
            error_type: claimed,
        };
        let reflected: std::result::Result<Reflected, String> = match &cfg.teacher {
            Some(tc) => reflect::teacher(client, tc, &failure).await,
            None => Ok(reflect::template(&failure)),
        };
        match reflected.and_then(|r| gates::check(&failure, &r).map(|g| (r, g))) {
            Ok((r, gates)) => {
                let conversation = reflect::conversation(&failure, &r.reflection);
                // What the policy sees before it writes the reflection: can the fix be read there?
                let before = reflection_turn(&conversation).unwrap_or(conversation.len());
                let seen: Vec<&str> = conversation[..before].iter().map(|m| m.content.as_str()).collect();
                let spec = suite.spec_of(original.tool(), declared);
                let derivable = crate::derivable::is_derivable(original, spec, &seen.join("\n"));
                let rot_id = content_id([
                    near_miss_id.as_bytes(),
                    r.generator.as_bytes(),
                    r.reflection.evidence.as_bytes(),
                    r.reflection.fix_plan.as_bytes(),
                ]);
                rot = Some(Rot {
                    rot_id,
                    near_miss_id: Some(near_miss_id.clone()),
                    trajectory_id: t.trajectory_id.clone(),
                    step_index: job.planned.step_index as i32,
                    error_type: claimed.as_str().into(),
                    tool: original.tool().into(),
                    evidence: r.reflection.evidence.clone(),
                    evidence_start: r.evidence_span.map(|s| s.0 as i32),
                    evidence_end: r.evidence_span.map(|s| s.1 as i32),
                    fix_plan: r.reflection.fix_plan.clone(),
                    failed_action: ActionRecord::from(failed),
                    failed_observation: failed_exec.text.clone(),
                    corrected_action: original_rec.clone(),
                    corrected_observation: failure.original_observation.map(str::to_string),
                    verified,
                    derivable: Some(derivable),
                    conversation,
                    gates,
                    generator: r.generator,
                    engine_run_id: run_id.to_string(),
                });
            }
            Err(e) => reason = Some(e),
        }
    }
    let accepted = rot.as_ref().map(|_| claimed);
    let near_miss = NearMiss {
        near_miss_id,
        trajectory_id: t.trajectory_id.clone(),
        step_index: job.planned.step_index as i32,
        error_type: claimed.as_str().into(),
        tool: original.tool().into(),
        operator: job.planned.perturbed.operator.into(),
        change: job.planned.perturbed.change.clone(),
        source: "engine".into(),
        original_action: original_rec.clone(),
        failed_action: ActionRecord::from(failed),
        execution: failed_exec,
        is_failure: verdict.is_failure,
        verdict: if rot.is_some() { "accepted".into() } else { "rejected".into() },
        reason,
        engine_run_id: run_id.to_string(),
        seed: cfg.seed as i64,
    };
    Outcome { near_miss, rot, accepted, verified, missing }
}
