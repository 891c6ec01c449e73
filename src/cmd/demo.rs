//! `regrpo demo`: the whole pipeline on the embedded default, in a fresh folder, and the
//! comparison that is the method's claim. The experiment is the library's ([`regrpo::demo`]);
//! this parses its sizes and prints the table and where everything went.

use std::path::PathBuf;

use anyhow::Result;
use regrpo::demo::{self, DemoConfig, Layout};

use crate::args::DeviceArgs;

/// Run the whole pipeline on the embedded default in a fresh folder.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to put everything (must be empty or absent).
    #[arg(long, default_value = "regrpo-demo")]
    dir: PathBuf,
    /// toolworld tasks to generate.
    #[arg(long, default_value_t = DemoConfig::default().tasks)]
    tasks: usize,
    /// The policies' shape: `tiny` or `tiny:HIDDENxLAYERS`.
    #[arg(long, default_value_t = DemoConfig::default().model)]
    model: String,
    /// Clean SFT steps both arms share.
    #[arg(long, default_value_t = DemoConfig::default().warmup_steps)]
    warmup_steps: u64,
    /// SFT steps of each arm after the warm-up.
    #[arg(long, default_value_t = DemoConfig::default().branch_steps)]
    sft_steps: u64,
    /// ReGRPO steps (of each of the two ReGRPO runs).
    #[arg(long, default_value_t = DemoConfig::default().regrpo_steps)]
    regrpo_steps: u64,
    /// States whose groups carry signal per ReGRPO step (up to three times as many are drawn).
    #[arg(long, default_value_t = DemoConfig::default().regrpo_states)]
    regrpo_states: usize,
    /// Held-out failure states and clean states evaluated per policy (each, at most).
    #[arg(long, default_value_t = DemoConfig::default().eval_states)]
    eval_states: usize,
    /// Held-out toolworld tasks the agent loop runs per policy.
    #[arg(long, default_value_t = DemoConfig::default().eval_tasks)]
    eval_tasks: usize,
    /// Completions sampled per held-out failure state (temperature 1) for sampled recovery and
    /// pass@k (0: greedy only).
    #[arg(long, default_value_t = DemoConfig::default().eval_samples)]
    eval_samples: usize,
    #[arg(long, default_value_t = DemoConfig::default().seed)]
    seed: u64,
    /// Decode freely instead of under the tools' grammar (rollouts and evaluation).
    #[arg(long)]
    unconstrained: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    fn config(self) -> DemoConfig {
        DemoConfig {
            device: self.device.device,
            tasks: self.tasks,
            model: self.model,
            warmup_steps: self.warmup_steps,
            branch_steps: self.sft_steps,
            regrpo_steps: self.regrpo_steps,
            regrpo_states: self.regrpo_states,
            eval_states: self.eval_states,
            eval_tasks: self.eval_tasks,
            eval_samples: self.eval_samples,
            seed: self.seed,
            constrained: !self.unconstrained,
            ..Default::default()
        }
    }
}

/// Runs the demo, then prints its table and where everything went (even when quiet: these are
/// the results).
pub async fn run(a: Args, quiet: bool) -> Result<()> {
    let layout = Layout::new(&a.dir);
    let report = demo::run(&layout, &a.config(), quiet).await?;
    print!("{}", demo::table::render(&report));
    let plots: Vec<String> = layout.plots.paths().iter().map(|p| p.display().to_string()).collect();
    println!("plots: {}", plots.join(", "));
    println!("report (every figure, the seed, the options): {}", layout.report.display());
    println!("runs (checkpoints, curves, exported models): {}", layout.runs.display());
    println!(
        "the tables (runs, metrics, rollouts, near_misses with source = 'policy') are queryable: regrpo sql {} \"SELECT kind, count(*) FROM runs GROUP BY 1\"",
        layout.repo.display()
    );
    println!("demo finished in {:.0}s; everything is under {}", report.seconds, layout.dir.display());
    Ok(())
}
