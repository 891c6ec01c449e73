//! The demo's PNG plots, drawn from a [`DemoReport`] alone: the arms' rates with their
//! intervals, recovery by ErrorType, and the two ReGRPO runs' curves.

use std::path::{Path, PathBuf};

use anyhow::Result;
use regrpo_formats::plot::{BarSeries, Series, grouped_bars, line_chart};
use regrpo_trainer::regrpo::RegrpoStep;

use super::arm::Arm;
use super::report::{ArmReport, DemoReport};

/// Where the plots of a run go (its `runs/` folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plots {
    /// Every arm's headline rates with their 95% intervals.
    pub rates: PathBuf,
    /// Every arm's recovery by ErrorType with its 95% interval.
    pub recovery_by_error_type: PathBuf,
    /// ReGRPO's mean reward and success per step, both runs.
    pub reward: PathBuf,
    /// ReGRPO's reflection tokens per completion per step, both runs.
    pub reflection: PathBuf,
}

impl Plots {
    /// The plots under `runs`.
    pub fn under(runs: &Path) -> Plots {
        Plots {
            rates: runs.join("recovery.png"),
            recovery_by_error_type: runs.join("recovery_by_error_type.png"),
            reward: runs.join("regrpo_reward.png"),
            reflection: runs.join("regrpo_reflection.png"),
        }
    }

    /// Every plot, in the order the demo lists them.
    pub fn paths(&self) -> [&Path; 4] {
        [&self.rates, &self.recovery_by_error_type, &self.reward, &self.reflection]
    }
}

/// A bar: its height and its error bar.
type Bar = (f64, Option<(f64, f64)>);

/// A group of bars: its name, and an arm's bar in it.
type Group = (&'static str, fn(&ArmReport) -> Bar);

/// The rates of the first plot.
const RATES: [Group; 4] = [
    ("recovery", |a| bar(a.recovery, a.recovery_ci)),
    ("recovery (derivable)", |a| bar(a.recovery_derivable.rate, a.recovery_derivable.ci)),
    ("first-try success", |a| bar(a.first_try_success, a.first_try_success_ci)),
    ("unnecessary reflection", |a| bar(a.unnecessary_reflection, a.unnecessary_reflection_ci)),
];

/// A rate as a bar (an undefined one has no height).
fn bar(rate: Option<f64>, ci: (f64, f64)) -> Bar {
    (rate.unwrap_or(f64::NAN), Some(ci))
}

/// Draws every plot of `r` to `to`.
pub fn draw(r: &DemoReport, to: &Plots) -> Result<()> {
    let arms: Vec<&ArmReport> = r.arms.iter().map(|(_, a)| a).collect();

    let groups: Vec<String> = RATES.iter().map(|(n, _)| n.to_string()).collect();
    let series: Vec<BarSeries<'_>> =
        arms.iter().map(|a| BarSeries { name: &a.label, values: RATES.iter().map(|(_, f)| f(a)).collect() }).collect();
    grouped_bars(&to.rates, "Held-out states: rates with 95% intervals", "rate", &groups, &series)?;

    let types: Vec<String> = r.arms.sft_clean.recovery_by_error_type.keys().cloned().collect();
    let type_series: Vec<BarSeries<'_>> = arms
        .iter()
        .map(|a| BarSeries {
            name: &a.label,
            values: types
                .iter()
                .map(|t| a.recovery_by_error_type.get(t).map_or((f64::NAN, None), |x| bar(x.rate, x.ci)))
                .collect(),
        })
        .collect();
    grouped_bars(
        &to.recovery_by_error_type,
        "Recovery by ErrorType (95% intervals)",
        "recovery",
        &types,
        &type_series,
    )?;

    let curve = |arm: Arm, pick: fn(&RegrpoStep) -> f64| -> Vec<(f64, f64)> {
        r.regrpo_steps.get(&arm).map_or(&[][..], Vec::as_slice).iter().map(|s| (s.step as f64, pick(s))).collect()
    };
    let (rl, eta0) = (Arm::Regrpo, Arm::RegrpoEta0);
    line_chart(
        &to.reward,
        "ReGRPO: mean reward and success of sampled completions",
        "step",
        "",
        &[
            Series { name: "reward η=0.1", points: curve(rl, |s| s.mean_reward) },
            Series { name: "reward η=0", points: curve(eta0, |s| s.mean_reward) },
            Series { name: "success η=0.1", points: curve(rl, |s| s.success_rate) },
            Series { name: "success η=0", points: curve(eta0, |s| s.success_rate) },
        ],
    )?;
    line_chart(
        &to.reflection,
        "ReGRPO: reflection tokens per completion",
        "step",
        "tokens",
        &[
            Series { name: "clean states η=0.1", points: curve(rl, |s| s.clean_reflection_tokens) },
            Series { name: "clean states η=0", points: curve(eta0, |s| s.clean_reflection_tokens) },
            Series { name: "failure states η=0.1", points: curve(rl, |s| s.failure_reflection_tokens) },
            Series { name: "failure states η=0", points: curve(eta0, |s| s.failure_reflection_tokens) },
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::report::tests::typed;

    #[test]
    fn every_plot_is_drawn_from_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let plots = Plots::under(dir.path());
        draw(&typed(), &plots).unwrap();
        for p in plots.paths() {
            let png = std::fs::read(p).unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{}", p.display());
        }
    }
}
