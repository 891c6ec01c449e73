//! The demo: the whole pipeline on the embedded default, in a fresh folder, and the comparison
//! that is the method's claim: does failure data make a better agent?
//!
//! 1. a dataset repository; the embedded fixtures of every input format ingested;
//! 2. toolworld tasks generated (files, question, executed ground truth);
//! 3. the data engine: executed near-misses → grounded RoT rows, each marked `derivable`;
//! 4. a snapshot, and failures by ErrorType through SQL;
//! 5. a tokenizer trained on the snapshot; the held-out evaluation states, and the scorer's
//!    self-check on them (gold completions succeed, repeating the failed action does not);
//! 6. policies from the same snapshot, arms made fair: one clean SFT warm-up, then two branches
//!    with equal steps and the same clean batches — clean only, and clean + RoT rows — then
//!    ReGRPO from the RoT branch, and a second ReGRPO run with η = 0 as the control for the
//!    reflection cost (the four [`Arm`]s);
//! 7. every arm decoded greedily by one decoder (grammar-constrained by default) on the same
//!    held-out states; paired McNemar and Wilcoxon tests between arms.
//!
//! ```text
//!  DemoConfig ─▶ run ─▶ DemoReport ─┬─▶ report.json   (serde)
//!   (design:        (pipeline)      ├─▶ the table     (table::render)
//!    the jobs)                      └─▶ PNG plots     (plots::draw)
//! ```
//!
//! [`run`] prints the progress lines of steps 1–7 as it goes (unless quiet), writes the plots and
//! `report.json`, and returns the report; `regrpo demo` prints the table from it.

pub mod arm;
mod design;
mod pipeline;
pub mod plots;
pub mod report;
pub mod table;

use std::path::{Path, PathBuf};

pub use arm::{Arm, PerArm};
pub use design::{regrpo_config, window};
pub use pipeline::run;
pub use plots::Plots;
pub use report::{ArmReport, DemoReport};

use regrpo_trainer::jobs::DeviceKind;

/// Sizes of the demo; the defaults fit a 2-core laptop CPU in about a quarter of an hour.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// toolworld tasks to generate.
    pub tasks: usize,
    /// The policies' shape (`tiny`, `tiny:HIDDENxLAYERS`).
    pub model: String,
    /// Clean SFT steps both arms share.
    pub warmup_steps: u64,
    /// SFT steps of each arm after the warm-up.
    pub branch_steps: u64,
    /// Steps of each of the two ReGRPO runs.
    pub regrpo_steps: u64,
    /// States with signal per ReGRPO step.
    pub regrpo_states: usize,
    /// SFT learning rate (peak).
    pub lr: f64,
    /// Held-out failure states and clean states evaluated per policy (each, at most).
    pub eval_states: usize,
    /// Held-out toolworld tasks the agent loop runs per policy.
    pub eval_tasks: usize,
    /// Completions sampled per held-out failure state for sampled recovery and pass@k.
    pub eval_samples: usize,
    /// Seeds the tasks, the engine, every job and the evaluations' sampling.
    pub seed: u64,
    /// Decode under the tools' grammar (rollouts and evaluation).
    pub constrained: bool,
    /// Where every job of the demo runs.
    pub device: DeviceKind,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            tasks: 6000,
            model: "tiny:64x2x2".into(),
            warmup_steps: 1000,
            branch_steps: 300,
            regrpo_steps: 32,
            regrpo_states: 8,
            lr: 1e-2,
            eval_states: 200,
            eval_tasks: 14,
            eval_samples: 8,
            seed: 7,
            constrained: true,
            device: DeviceKind::Cpu,
        }
    }
}

/// Where a demo run puts everything, under its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The demo's folder (empty or absent before the run).
    pub dir: PathBuf,
    /// The dataset repository (`repo/`).
    pub repo: PathBuf,
    /// The embedded fixtures, written out to be ingested (`inputs/`).
    pub inputs: PathBuf,
    /// The tokenizer, every job's run folder and the plots (`runs/`).
    pub runs: PathBuf,
    /// `report.json`.
    pub report: PathBuf,
    /// The PNG plots (under `runs/`).
    pub plots: Plots,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Layout {
        let runs = dir.join("runs");
        Layout {
            dir: dir.to_path_buf(),
            repo: dir.join("repo"),
            inputs: dir.join("inputs"),
            plots: Plots::under(&runs),
            runs,
            report: dir.join("report.json"),
        }
    }
}
