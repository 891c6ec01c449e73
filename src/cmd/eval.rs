//! `regrpo eval`: a policy on a split of the snapshot — recovery, first-try success, reflection
//! use, answers.

use std::path::{Path, PathBuf};

use anyhow::Result;
use regrpo_datasets::Repository;
use regrpo_schemas::Split;
use regrpo_trainer::eval::{EvalConfig, EvalReport};
use regrpo_trainer::job;

use crate::args::{DeviceArgs, WindowArgs};
use crate::progress;

/// Evaluate a policy on the held-out split: recovery, first-try success, reflection use, answers.
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
    #[arg(long, short)]
    snapshot: Option<String>,
    /// A run folder or a model folder.
    #[arg(long)]
    model: PathBuf,
    /// The snapshot's split to draw states from. `test`: the held-out split (what every
    /// reported figure uses); `validation`: held out from training, for tuning; `train`: to see
    /// whether training moved its own objective.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// Where the eval run goes (default: MODEL/eval).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Failure states and clean states evaluated (each, at most).
    #[arg(long, default_value_t = 120)]
    max_states: usize,
    #[arg(long, default_value_t = 20)]
    max_tasks: usize,
    /// Only trajectories of these sources (comma-separated).
    #[arg(long, value_delimiter = ',')]
    source: Option<Vec<String>>,
    /// Decode freely instead of under the tools' grammar.
    #[arg(long)]
    unconstrained: bool,
    #[command(flatten)]
    window: WindowArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub async fn run(a: Args, quiet: bool) -> Result<()> {
    let out = a.out.unwrap_or_else(|| a.model.join("eval"));
    let cfg = EvalConfig {
        max_failure_states: a.max_states,
        max_clean_states: a.max_states,
        max_tasks: a.max_tasks,
        sources: a.source,
        window: a.window.config(),
        constrained: !a.unconstrained,
        split: a.split,
        device: a.device.device,
        ..Default::default()
    };
    eval(&a.dir, a.snapshot.as_deref(), &a.model, &out, &cfg, quiet).await.map(|_| ())
}

async fn eval(
    dir: &Path,
    snapshot: Option<&str>,
    model: &Path,
    out: &Path,
    cfg: &EvalConfig,
    quiet: bool,
) -> Result<EvalReport> {
    let repo = Repository::open(dir)?;
    let suite = regrpo_engine::ToolSuite::builtin();
    let bar = progress::steps(quiet, (cfg.max_failure_states + cfg.max_clean_states) as u64, "eval");
    let r = job::run_eval(&repo, snapshot, model, out, cfg, &suite, &model.display().to_string(), || bar.inc(1)).await;
    bar.finish_and_clear();
    let r = r?;
    println!(
        "evaluation of {} on the {} ({} failure states, {} clean states, {} tasks):",
        model.display(),
        match cfg.split {
            Split::Test => "held-out test split",
            Split::Validation => "validation split (held out from training; tune here, not on test)",
            Split::Train => "training split (not held out: a diagnostic, not a result)",
        },
        r.failure_states,
        r.clean_states,
        r.tasks
    );
    for (name, v) in r.rows() {
        println!("  {name:<30} {v:>8.3}");
    }
    for (name, rate) in [("recovery", &r.recovery), ("first-try success", &r.first_try)] {
        println!("  {name} 95% interval: [{:.3}, {:.3}] ({} of {})", rate.ci.0, rate.ci.1, rate.k, rate.n);
    }
    if r.truncations.total() > 0 {
        println!("  context-window cuts: {:?}", r.truncations);
    }
    println!(
        "written to the runs and metrics tables, {} and {}",
        out.join("run.json").display(),
        out.join("report.json").display()
    );
    Ok(r)
}
