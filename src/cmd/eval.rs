//! `regrpo eval`: a policy on a split of the snapshot — recovery, first-try success, reflection
//! use, answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use regrpo_datasets::Repository;
use regrpo_schemas::Split;
use regrpo_trainer::eval::stats::{Paired, wilcoxon};
use regrpo_trainer::eval::{EvalConfig, EvalReport, StateOutcome};
use regrpo_trainer::jobs::{self, EvalJob};
use regrpo_trainer::regrpo::rollout::StateKind;

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
    #[arg(long, value_enum, default_value_t = EvalConfig::default().split)]
    split: Split,
    /// Where the eval run goes (default: MODEL/eval).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Failure states and clean states evaluated (each, at most).
    #[arg(long, default_value_t = EvalConfig::default().max_failure_states)]
    max_states: usize,
    #[arg(long, default_value_t = EvalConfig::default().max_tasks)]
    max_tasks: usize,
    /// Only trajectories of these sources (comma-separated).
    #[arg(long, value_delimiter = ',')]
    source: Option<Vec<String>>,
    /// Decode freely instead of under the tools' grammar.
    #[arg(long)]
    unconstrained: bool,
    /// Another evaluation's report.json on the same split (e.g. the policy this one started
    /// from): print paired tests against it — McNemar on greedy recovery, Wilcoxon signed-rank on
    /// each failure state's sampled success rate.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Completions sampled per failure state (temperature 1) for sampled recovery and pass@k (0: off).
    #[arg(long, default_value_t = EvalConfig::default().samples)]
    samples: usize,
    /// Seed of the sampled completions (the same seed gives two policies the same random numbers).
    #[arg(long, default_value_t = EvalConfig::default().sample_seed)]
    sample_seed: u64,
    #[command(flatten)]
    window: WindowArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    /// The evaluation these flags describe.
    fn config(&self) -> EvalConfig {
        EvalConfig {
            max_failure_states: self.max_states,
            max_clean_states: self.max_states,
            max_tasks: self.max_tasks,
            sources: self.source.clone(),
            window: self.window.config(),
            constrained: !self.unconstrained,
            split: self.split,
            device: self.device.device,
            samples: self.samples,
            sample_seed: self.sample_seed,
            ..Default::default()
        }
    }
}

pub async fn run(a: Args, quiet: bool) -> Result<()> {
    let cfg = a.config();
    let out = a.out.unwrap_or_else(|| a.model.join("eval"));
    let baseline = match &a.compare {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let r: EvalReport = serde_json::from_str(&text).with_context(|| {
                format!("{}: not an evaluation report (report.json of `regrpo eval`)", path.display())
            })?;
            Some((path.clone(), r))
        }
        None => None,
    };
    let r = eval(&a.dir, a.snapshot.as_deref(), &a.model, &out, &cfg, quiet).await?;
    if let Some((path, base)) = baseline {
        compare(&r, &base, &path)?;
    }
    Ok(())
}

/// Paired tests of `r` against `base` on the failure states both evaluated.
fn compare(r: &EvalReport, base: &EvalReport, path: &Path) -> Result<()> {
    let theirs: HashMap<&str, &StateOutcome> = base.outcomes.iter().map(|o| (o.state_id.as_str(), o)).collect();
    let pairs: Vec<(&StateOutcome, &StateOutcome)> = r
        .outcomes
        .iter()
        .filter(|o| o.kind == StateKind::Failure.as_str())
        .filter_map(|o| Some((o, *theirs.get(o.state_id.as_str())?)))
        .collect();
    if pairs.is_empty() {
        bail!("{} shares no failure state with this evaluation (same snapshot and split?)", path.display());
    }
    let (a, b): (Vec<bool>, Vec<bool>) = pairs.iter().map(|(x, y)| (x.success, y.success)).unzip();
    let p = Paired::of(&a, &b);
    println!(
        "against {} ({} failure states in both): greedy recovery {:.3} vs {:.3}, {} gained, {} lost, McNemar p = {:.4}",
        path.display(),
        pairs.len(),
        a.iter().filter(|x| **x).count() as f64 / a.len() as f64,
        b.iter().filter(|x| **x).count() as f64 / b.len() as f64,
        p.only_a,
        p.only_b,
        p.p_value()
    );
    let rate = |o: &StateOutcome, n: usize| o.sampled_successes.map(|k| k as f64 / n.max(1) as f64);
    let sampled: Vec<(f64, f64)> =
        pairs.iter().filter_map(|(x, y)| Some((rate(x, r.samples)?, rate(y, base.samples)?))).collect();
    if !sampled.is_empty() {
        let (x, y): (Vec<f64>, Vec<f64>) = sampled.iter().copied().unzip();
        let w = wilcoxon(&x, &y);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "  sampled recovery {:.3} vs {:.3} ({} states): higher on {} of {} states that differ, Wilcoxon p = {:.4}",
            mean(&x),
            mean(&y),
            sampled.len(),
            w.positive,
            w.n,
            w.p
        );
    }
    Ok(())
}

async fn eval(
    dir: &Path,
    snapshot: Option<&str>,
    model: &Path,
    out: &Path,
    cfg: &EvalConfig,
    quiet: bool,
) -> Result<EvalReport> {
    let repo = Repository::open(dir).await?;
    let suite = regrpo_engine::ToolSuite::builtin();
    let bar = progress::steps(quiet, (cfg.max_failure_states + cfg.max_clean_states) as u64, "eval");
    let label = model.display().to_string();
    let job = EvalJob { snapshot, model, out, cfg, label: &label };
    let r = jobs::run_eval(&repo, &job, &suite, || bar.inc(1)).await;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Serialised, so that every field is compared (`EvalConfig` has no `PartialEq`).
    fn json(c: &EvalConfig) -> serde_json::Value {
        serde_json::to_value(c).unwrap()
    }

    #[test]
    fn no_flags_give_the_configs_defaults() {
        let cli = Cli::try_parse_from(["eval", "repo", "--model", "m"]).unwrap();
        let defaults = EvalConfig::default();
        // One flag sets both caps, so the default needs them equal.
        assert_eq!(defaults.max_failure_states, defaults.max_clean_states);
        assert_eq!(json(&cli.args.config()), json(&defaults));
    }
}
