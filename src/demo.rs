//! `regrpo demo`: the whole pipeline on the embedded default, in a fresh folder.
//!
//! 1. a dataset repository; the embedded fixtures of every input format ingested;
//! 2. toolworld tasks generated (files, question, executed ground truth);
//! 3. the data engine: executed near-misses → grounded, verified RoT rows;
//! 4. a snapshot, and failures by ErrorType through SQL;
//! 5. a tokenizer trained on the snapshot;
//! 6. three tiny policies from the same snapshot — SFT on clean trajectories, SFT on clean +
//!    RoT, and that followed by ReGRPO — evaluated on the same held-out split;
//! 7. a comparison table and PNG plots.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use regrpo_datasets::ingest::{self, Format, IngestOptions};
use regrpo_datasets::plot::bar_chart;
use regrpo_datasets::{Repository, snapshot};
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_queries::{At, OutputFormat, Session};
use regrpo_trainer::data::DataConfig;
use regrpo_trainer::eval::{EvalConfig, EvalReport};
use regrpo_trainer::job::{self, ModelSource, RegrpoJob, SftJob};
use regrpo_trainer::regrpo::RegrpoConfig;
use regrpo_trainer::sampling::SampleConfig;
use regrpo_trainer::sft::SftConfig;

/// The fixtures compiled into the binary: (format, file name, contents).
const FIXTURES: &[(Format, &str, &str)] = &[
    (Format::Regrpo, "regrpo/rot_sample.json", include_str!("../fixtures/regrpo/rot_sample.json")),
    (Format::Regrpo, "regrpo/clean_sample.json", include_str!("../fixtures/regrpo/clean_sample.json")),
    (Format::Mat, "mat/trajectories.json", include_str!("../fixtures/mat/trajectories.json")),
    (Format::Bfcl, "bfcl/questions.json", include_str!("../fixtures/bfcl/questions.json")),
    (Format::Bfcl, "bfcl/questions.answers.json", include_str!("../fixtures/bfcl/questions.answers.json")),
    (Format::Gta, "gta/dataset.json", include_str!("../fixtures/gta/dataset.json")),
    (Format::Openai, "openai/chat.jsonl", include_str!("../fixtures/openai/chat.jsonl")),
];

/// Sizes of the demo; the defaults fit a 2-core laptop CPU in minutes.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub tasks: usize,
    pub sft_steps: u64,
    pub regrpo_steps: u64,
    /// Held-out failure states and clean states evaluated per policy (each).
    pub eval_states: usize,
    /// Held-out toolworld tasks the agent loop runs per policy.
    pub eval_tasks: usize,
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { tasks: 210, sft_steps: 400, regrpo_steps: 12, eval_states: 24, eval_tasks: 8, seed: 7 }
    }
}

fn say(quiet: bool, line: &str) {
    if !quiet {
        println!("{line}");
    }
}

pub async fn run(dir: &Path, cfg: &DemoConfig, quiet: bool) -> Result<()> {
    let started = Instant::now();
    if dir.join("regrpo.json").exists() || dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
        bail!("{} is not empty; the demo starts from a fresh folder (pass --dir NEW_DIR)", dir.display());
    }
    let repo_dir = dir.join("repo");
    let inputs = dir.join("inputs");
    let repo = Repository::init(&repo_dir).await?;
    say(quiet, &format!("[1/7] dataset repository at {}", repo.root().display()));
    for (_, name, text) in FIXTURES {
        let path = inputs.join(name);
        std::fs::create_dir_all(path.parent().expect("fixture paths have a folder"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    for format in Format::ALL {
        let paths: Vec<PathBuf> = FIXTURES
            .iter()
            .filter(|(f, name, _)| *f == format && !name.ends_with(".answers.json"))
            .map(|(_, name, _)| inputs.join(name))
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

    let bar = crate::train_cmd::step_bar(quiet, cfg.tasks as u64, "toolworld");
    let (added, _) = regrpo_engine::toolworld::generate_into(&repo, cfg.tasks, cfg.seed, 8, || bar.inc(1)).await?;
    bar.finish_and_clear();
    say(quiet, &format!("[2/7] toolworld: {added} tasks with executed ground-truth trajectories"));

    let suite = ToolSuite::builtin();
    let engine_cfg = EngineConfig { seed: cfg.seed, per_trajectory: 2, ..EngineConfig::default() };
    let report = regrpo_engine::run::run(&repo, &suite, &engine_cfg, None).await?;
    say(quiet, "[3/7] data engine: executed near-misses → grounded RoT rows");
    if !quiet {
        crate::engine_cmd::print_report(&report, &engine_cfg.mix, repo.root());
    }

    let snap = snapshot::create(&repo, "demo-v1", Some("regrpo demo")).await?;
    let session = Session::open(&repo, At::Snapshot(snap.name.clone())).await?;
    let sql = "SELECT error_type, count(*) AS rows, sum(CAST(verified AS INT)) AS verified FROM rot GROUP BY error_type ORDER BY rows DESC, error_type";
    say(
        quiet,
        &format!(
            "[4/7] snapshot `{}`; failures by ErrorType:  regrpo sql {} -s {} \"{sql}\"",
            snap.name,
            repo_dir.display(),
            snap.name
        ),
    );
    crate::data::emit(&session.query(sql).await?, OutputFormat::Table, None)?;

    let runs = dir.join("runs");
    let tk_path = runs.join("tokenizer.json");
    let tk = job::train_tokenizer(&repo, Some(&snap.name), 1024, &tk_path).await?;
    say(quiet, &format!("[5/7] tokenizer: byte-level BPE of {} tokens → {}", tk.vocab_size(), tk_path.display()));

    let sft = |name: &str, rot_fraction: f64| SftJob {
        snapshot: Some(snap.name.clone()),
        model: ModelSource::Tiny,
        tokenizer: Some(tk_path.clone()),
        vocab: 1024,
        out: runs.join(name),
        sft: SftConfig {
            steps: cfg.sft_steps,
            batch_size: 8,
            lr: 3e-3,
            warmup_steps: 10,
            max_len: 384,
            eval_every: cfg.sft_steps,
            checkpoint_every: cfg.sft_steps,
            seed: cfg.seed,
            ..Default::default()
        },
        data: DataConfig { rot_fraction, sources: Some(vec!["toolworld".into()]), ..Default::default() },
        resume: false,
        device: job::DeviceKind::Cpu,
    };
    let mut policies: Vec<(String, PathBuf)> = Vec::new();
    for (name, frac, label) in [("sft-clean", 0.0, "SFT (clean only)"), ("sft-rot", 0.5, "SFT (clean + RoT)")] {
        let bar = crate::train_cmd::step_bar(quiet, cfg.sft_steps, name);
        let o = job::run_sft(&repo, &sft(name, frac), |l| {
            bar.set_position(l.step);
            bar.set_message(format!("loss {:.3}", l.loss));
        })
        .await?;
        bar.finish_and_clear();
        say(
            quiet,
            &format!(
                "[6/7] {label}: loss {:.3} → {:.3} in {:.0}s ({} samples) → {}",
                o.first_loss.unwrap_or(f64::NAN),
                o.final_loss.unwrap_or(f64::NAN),
                o.seconds,
                o.train_samples,
                o.model_dir.display()
            ),
        );
        policies.push((label.into(), o.model_dir));
    }
    let rl_cfg = RegrpoConfig {
        steps: cfg.regrpo_steps,
        group_size: 5,
        states_per_step: 4,
        lr: 5e-4,
        sample: SampleConfig { temperature: 1.0, top_p: 0.95, max_new_tokens: 160 },
        max_prompt_tokens: 384,
        seed: cfg.seed,
        ..Default::default()
    };
    let rl_job = RegrpoJob {
        snapshot: Some(snap.name.clone()),
        init: runs.join("sft-rot"),
        out: runs.join("regrpo"),
        cfg: rl_cfg,
        eval_fraction: 0.1,
    };
    let bar = crate::train_cmd::step_bar(quiet, cfg.regrpo_steps, "regrpo");
    let rl = job::run_regrpo(&repo, &rl_job, &suite, |s| {
        bar.set_position(s.step);
        bar.set_message(format!("reward {:.3}", s.mean_reward));
    })
    .await?;
    bar.finish_and_clear();
    say(
        quiet,
        &format!(
            "[6/7] SFT + RoT + ReGRPO: {} steps in {:.0}s, mean reward {:.3} → {:.3}, {} rollouts logged",
            rl.steps.len(),
            rl.seconds,
            job::quarter(&rl.steps, true),
            job::quarter(&rl.steps, false),
            rl.rollouts_added
        ),
    );
    policies.push(("SFT + RoT + ReGRPO".into(), rl.model_dir.clone()));

    let eval_cfg = EvalConfig {
        max_failure_states: cfg.eval_states,
        max_clean_states: cfg.eval_states,
        max_tasks: cfg.eval_tasks,
        max_new_tokens: 160,
        max_prompt_tokens: 384,
        ..Default::default()
    };
    let mut reports: Vec<(String, EvalReport)> = Vec::new();
    for (label, model) in &policies {
        let out = model.parent().unwrap_or(model).join("eval");
        let r = job::run_eval(&repo, Some(&snap.name), model, &out, &eval_cfg, &suite, label).await?;
        reports.push((label.clone(), r));
    }
    let (_, first) = &reports[0];
    say(
        quiet,
        &format!(
            "[7/7] evaluation on the held-out split ({} failure states, {} clean states, {} toolworld tasks):",
            first.failure_states, first.clean_states, first.tasks
        ),
    );
    println!("{:<30} {:>18} {:>18} {:>20}", "metric", reports[0].0, reports[1].0, reports[2].0);
    for (i, (name, _)) in first.rows().iter().enumerate() {
        let cell = |r: &EvalReport| {
            let v = r.rows()[i].1;
            if v.is_nan() { "n/a".to_string() } else { format!("{v:.3}") }
        };
        println!("{name:<30} {:>18} {:>18} {:>20}", cell(&reports[0].1), cell(&reports[1].1), cell(&reports[2].1));
    }
    let bars: Vec<(String, f64)> = reports
        .iter()
        .map(|(l, r)| (l.clone(), if r.recovery_rate.is_nan() { 0.0 } else { r.recovery_rate }))
        .collect();
    let recovery_png = runs.join("recovery.png");
    bar_chart(&recovery_png, "Recovery rate on held-out failure states", "recovery rate", &bars)?;
    println!(
        "plots: {}, {}, {}",
        runs.join("regrpo/reward.png").display(),
        runs.join("regrpo/reflection.png").display(),
        recovery_png.display()
    );
    println!("runs (checkpoints, curves, exported models): {}", runs.display());
    println!(
        "the tables (runs, metrics, rollouts, near_misses with source = 'policy') are queryable: regrpo sql {} \"SELECT kind, count(*) FROM runs GROUP BY 1\"",
        repo_dir.display()
    );
    println!("demo finished in {:.0}s; everything is under {}", started.elapsed().as_secs_f64(), dir.display());
    Ok(())
}
