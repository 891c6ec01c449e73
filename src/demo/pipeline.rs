//! The run: steps 1–7 in order, independent jobs side by side, each with a progress bar.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressDrawTarget};
use regrpo_datasets::{Repository, snapshot};
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_formats::ingest::{self, Format, IngestOptions};
use regrpo_queries::{At, OutputFormat, Session};
use regrpo_trainer::eval::{EvalReport, EvalSet};
use regrpo_trainer::jobs::{self, EvalJob, ModelSource, RegrpoJob, RegrpoOutcome, SftJob, SftOutcome};
use regrpo_trainer::regrpo::rollout;
use regrpo_trainer::text::window::Truncations;

use super::arm::{Arm, PerArm};
use super::design::{self, Jobs};
use super::report::{DemoReport, EvalSetSize, Measured, Options};
use super::{DemoConfig, Layout, plots};
use crate::{output, progress};

/// The fixtures compiled into the binary: (format, file name, contents).
const FIXTURES: &[(Format, &str, &str)] = &[
    (Format::Regrpo, "regrpo/rot_sample.json", include_str!("../../fixtures/regrpo/rot_sample.json")),
    (Format::Regrpo, "regrpo/clean_sample.json", include_str!("../../fixtures/regrpo/clean_sample.json")),
    (Format::Mat, "mat/trajectories.json", include_str!("../../fixtures/mat/trajectories.json")),
    (Format::Bfcl, "bfcl/questions.json", include_str!("../../fixtures/bfcl/questions.json")),
    (Format::Bfcl, "bfcl/questions.answers.json", include_str!("../../fixtures/bfcl/questions.answers.json")),
    (Format::Gta, "gta/dataset.json", include_str!("../../fixtures/gta/dataset.json")),
    (Format::Openai, "openai/chat.jsonl", include_str!("../../fixtures/openai/chat.jsonl")),
];

/// The SQL of step 4: failures by ErrorType.
const FAILURES_BY_TYPE: &str = "SELECT error_type, count(*) AS rows, sum(CAST(verified AS INT)) AS verified, sum(CAST(derivable AS INT)) AS derivable FROM rot GROUP BY error_type ORDER BY rows DESC, error_type";

fn say(quiet: bool, line: &str) {
    if !quiet {
        println!("{line}");
    }
}

/// Runs the whole demo into `layout.dir` (empty or absent): prints the progress of each step
/// (unless `quiet`; the failures by ErrorType always), draws the plots, writes `report.json`
/// and returns the report.
///
/// # Errors
/// When the folder is not empty, and when any step fails.
pub async fn run(layout: &Layout, cfg: &DemoConfig, quiet: bool) -> Result<DemoReport> {
    let started = Instant::now();
    let dir = &layout.dir;
    if dir.join("regrpo.json").exists() || dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
        bail!("{} is not empty; the demo starts from a fresh folder (pass --dir NEW_DIR)", dir.display());
    }
    let repo = Repository::init(&layout.repo).await?;
    say(quiet, &format!("[1/7] dataset repository at {}", repo.location()));
    for (_, name, text) in FIXTURES {
        let path = layout.inputs.join(name);
        std::fs::create_dir_all(path.parent().expect("fixture paths have a folder"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    for format in Format::ALL {
        let paths: Vec<PathBuf> = FIXTURES
            .iter()
            .filter(|(f, name, _)| *f == format && !name.ends_with(".answers.json"))
            .map(|(_, name, _)| layout.inputs.join(name))
            .collect();
        let s = ingest::ingest(&repo, format, &paths, &IngestOptions::default()).await?;
        say(
            quiet,
            &format!(
                "      ingest {format:<7} {} records → {} trajectories, {} RoT rows, {} rejected",
                s.records_read, s.trajectories_added, s.rot_added, s.rejected
            ),
        );
    }

    let bar = progress::steps(quiet, cfg.tasks as u64, "toolworld");
    let (added, _) = regrpo_engine::toolworld::generate_into(&repo, cfg.tasks, cfg.seed, 8, || bar.inc(1)).await?;
    bar.finish_and_clear();
    say(quiet, &format!("[2/7] toolworld: {added} tasks with executed ground-truth trajectories"));

    let suite = ToolSuite::builtin();
    let engine_cfg = EngineConfig { seed: cfg.seed, per_trajectory: 2, ..EngineConfig::default() };
    let engine_report = regrpo_engine::run::run(&repo, &suite, &engine_cfg, None).await?;
    say(quiet, "[3/7] data engine: executed near-misses → grounded RoT rows");
    if !quiet {
        output::print_engine_report(&engine_report, &engine_cfg.mix, repo.location());
    }

    let snap = snapshot::create(&repo, "demo-v1", Some("regrpo demo")).await?;
    let session = Session::open(&repo, At::Snapshot(snap.name.clone())).await?;
    say(
        quiet,
        &format!(
            "[4/7] snapshot `{}`; failures by ErrorType:  regrpo sql {} -s {} \"{FAILURES_BY_TYPE}\"",
            snap.name,
            layout.repo.display(),
            snap.name
        ),
    );
    output::emit(&session.query(FAILURES_BY_TYPE).await?, OutputFormat::Table, None)?;

    let tk_path = layout.runs.join("tokenizer.json");
    let tk = jobs::train_tokenizer(&repo, Some(&snap.name), design::VOCAB, &tk_path).await?;
    let eval_cfg = design::eval_config(cfg);
    let rows = regrpo_trainer::data::snapshot_rows(&repo, Some(&snap.name)).await?;
    let candidates = regrpo_trainer::eval::held_out(&rows, &repo.sandboxes().await?, &eval_cfg);
    let (states, check) = rollout::self_check(candidates.states, &suite).await;
    let eval_set = EvalSet { states, tasks: candidates.tasks };
    let eval_size = EvalSetSize {
        failure_states: eval_set.states.failures.len(),
        derivable_failure_states: eval_set.states.failures.iter().filter(|s| s.derivable == Some(true)).count(),
        clean_states: eval_set.states.cleans.len(),
        tasks: eval_set.tasks.len(),
    };
    say(
        quiet,
        &format!(
            "[5/7] tokenizer: byte-level BPE of {} tokens → {}\n      held-out evaluation: {} failure states ({} with a derivable fix), {} clean states, {} tasks\n      scorer self-check: gold completions {}/{} succeed; repeating the failed action {}/{} succeeds",
            tk.vocab_size(),
            tk_path.display(),
            eval_size.failure_states,
            eval_size.derivable_failure_states,
            eval_size.clean_states,
            eval_size.tasks,
            check.gold_success,
            check.states,
            check.repeat_success,
            check.failure_states,
        ),
    );

    // SFT: a shared clean warm-up, then two arms with the same steps and the same clean batches.
    // Independent jobs run side by side: each keeps one core busy.
    let bars = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let plan = Jobs { cfg, snapshot: snap.name.clone(), tokenizer: tk_path.clone(), runs: layout.runs.clone() };
    let mut truncations: BTreeMap<String, Truncations> = BTreeMap::new();
    let warm = spawn_sft(&repo, &bars, design::WARMUP, plan.warmup()).await?;
    truncations.insert("sft_warmup".into(), warm.truncations);
    say(quiet, &format!("[6/7] SFT warm-up (clean): {}", sft_line(&warm)));
    let from_warm = ModelSource::Dir(warm.model_dir.clone());
    let (clean, rot) = tokio::try_join!(
        spawn_sft(&repo, &bars, Arm::SftClean.run_name(), plan.sft_branch(Arm::SftClean, from_warm.clone())),
        spawn_sft(&repo, &bars, Arm::SftRot.run_name(), plan.sft_branch(Arm::SftRot, from_warm)),
    )?;
    truncations.insert(Arm::SftClean.key().into(), clean.truncations);
    truncations.insert(Arm::SftRot.key().into(), rot.truncations);
    say(quiet, &format!("      SFT clean: {}", sft_line(&clean)));
    say(quiet, &format!("      SFT clean+RoT (each batch: the same 8 clean rows + 8 RoT rows): {}", sft_line(&rot)));

    let (with_cost, control) = tokio::try_join!(
        spawn_regrpo(&repo, &bars, &suite, Arm::Regrpo.run_name(), plan.regrpo(Arm::Regrpo, rot.model_dir.clone())),
        spawn_regrpo(
            &repo,
            &bars,
            &suite,
            Arm::RegrpoEta0.run_name(),
            plan.regrpo(Arm::RegrpoEta0, rot.model_dir.clone())
        ),
    )?;
    for (arm, rl) in [(Arm::Regrpo, &with_cost), (Arm::RegrpoEta0, &control)] {
        truncations.insert(arm.key().into(), rl.truncations);
        say(
            quiet,
            &format!(
                "      ReGRPO η={}: {} steps in {:.0}s, mean reward {:.3} → {:.3}, success {:.3} → {:.3}, parse rate {:.3}, {} groups without signal skipped, {} rollouts logged",
                arm.eta().unwrap_or(0.0),
                rl.steps.len(),
                rl.seconds,
                jobs::quarter(&rl.steps, true),
                jobs::quarter(&rl.steps, false),
                rl.steps.first().map_or(f64::NAN, |s| s.success_rate),
                rl.steps.last().map_or(f64::NAN, |s| s.success_rate),
                rl.steps.iter().map(|s| s.parse_rate).sum::<f64>() / rl.steps.len().max(1) as f64,
                rl.steps.iter().map(|s| s.skipped_groups).sum::<usize>(),
                rl.rollouts_added
            ),
        );
    }

    let models = PerArm {
        sft_clean: clean.model_dir,
        sft_rot: rot.model_dir,
        regrpo: with_cost.model_dir,
        regrpo_eta0: control.model_dir,
    };
    let eval_set = Arc::new(eval_set);
    let eval_arm = |arm: Arm| {
        let model = models.get(arm).clone();
        let n = (eval_set.states.failures.len() + eval_set.states.cleans.len()) as u64;
        let bar = bars.add(progress::steps(quiet, n, &format!("eval {}", arm.key())));
        let (repo, suite, set, cfg, snap, versions) =
            (repo.clone(), suite.clone(), eval_set.clone(), eval_cfg.clone(), snap.name.clone(), rows.versions.clone());
        async move {
            let out = model.parent().unwrap_or(&model).join("eval");
            let label = arm.label();
            let r = tokio::spawn(async move {
                let job = EvalJob { snapshot: Some(&snap), model: &model, out: &out, cfg: &cfg, label };
                jobs::eval_on(&repo, &job, versions, &set, &suite, || bar.inc(1)).await
            })
            .await
            .context("an evaluation task panicked")??;
            anyhow::Ok(r)
        }
    };
    let (sft_clean, sft_rot) = tokio::try_join!(eval_arm(Arm::SftClean), eval_arm(Arm::SftRot))?;
    let (regrpo, regrpo_eta0) = tokio::try_join!(eval_arm(Arm::Regrpo), eval_arm(Arm::RegrpoEta0))?;
    let evals: PerArm<EvalReport> = PerArm { sft_clean, sft_rot, regrpo, regrpo_eta0 };

    let first = &evals.sft_clean;
    say(
        quiet,
        &format!(
            "[7/7] held-out evaluation, greedy{} decoding ({} failure states, {} clean states, {} tasks; 95% Wilson intervals):",
            if cfg.constrained { ", grammar-constrained" } else { "" },
            first.failure_states,
            first.clean_states,
            first.tasks
        ),
    );
    let mut report = DemoReport::new(Measured {
        options: Options::new(cfg, design::window(), design::regrpo_config(cfg, 0.1)),
        seed: cfg.seed,
        self_check: check,
        eval_set: eval_size,
        evals,
        regrpo_steps: BTreeMap::from([(Arm::Regrpo, with_cost.steps), (Arm::RegrpoEta0, control.steps)]),
        truncations,
    });
    plots::draw(&report, &layout.plots)?;
    report.seconds = started.elapsed().as_secs_f64();
    std::fs::write(&layout.report, report.to_json()?)
        .with_context(|| format!("writing {}", layout.report.display()))?;
    Ok(report)
}

/// Runs an SFT job as a task of its own (so two can run side by side), with a progress bar.
async fn spawn_sft(repo: &Repository, bars: &MultiProgress, name: &str, job: SftJob) -> Result<SftOutcome> {
    let bar = bars.add(progress::steps(false, job.sft.steps, name));
    let repo = repo.clone();
    let o = tokio::spawn(async move {
        let o = jobs::run_sft(&repo, &job, |l| {
            bar.set_position(l.step);
            bar.set_message(format!("loss {:.3}", l.loss));
        })
        .await;
        bar.finish_and_clear();
        o
    })
    .await
    .context("an SFT task panicked")??;
    Ok(o)
}

/// Runs a ReGRPO job as a task of its own, with a progress bar.
async fn spawn_regrpo(
    repo: &Repository,
    bars: &MultiProgress,
    suite: &ToolSuite,
    name: &str,
    job: RegrpoJob,
) -> Result<RegrpoOutcome> {
    let bar = bars.add(progress::steps(false, job.cfg.steps, name));
    let (repo, suite) = (repo.clone(), suite.clone());
    let o = tokio::spawn(async move {
        let o = jobs::run_regrpo(&repo, &job, &suite, |s| {
            bar.set_position(s.step);
            bar.set_message(format!("reward {:.3}, {} skipped", s.mean_reward, s.skipped_groups));
        })
        .await;
        bar.finish_and_clear();
        o
    })
    .await
    .context("a ReGRPO task panicked")??;
    Ok(o)
}

fn sft_line(o: &SftOutcome) -> String {
    format!(
        "{} steps, loss {:.3} → {:.3} in {:.0}s ({} sequences) → {}",
        o.steps,
        o.first_loss.unwrap_or(f64::NAN),
        o.final_loss.unwrap_or(f64::NAN),
        o.seconds,
        o.train_samples,
        o.model_dir.display()
    )
}
