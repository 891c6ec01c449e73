//! `report.json`: every figure of a demo run, the seed and the options, as a typed value.
//!
//! The JSON keeps the shape other tools and the README read (`arms.<arm>.recovery`,
//! `paired.regrpo_vs_sft_rot.sampled_p`, `regrpo_steps.<arm>[i]`, `options.regrpo.group_size`,
//! …). JSON has no NaN: a figure that is not a number (a rate over no states, a KL that was not
//! measured) is written as `null` and read back as `None` (or NaN inside the trainer's types).
//! Every key is required when reading, `null` or not.

use std::collections::BTreeMap;

use regrpo_trainer::eval::stats::{Paired, SignedRank, wilcoxon};
use regrpo_trainer::eval::{EvalReport, Rate};
use regrpo_trainer::regrpo::RegrpoConfig;
use regrpo_trainer::regrpo::RegrpoStep;
use regrpo_trainer::regrpo::rollout::{SelfCheck, StateKind};
use regrpo_trainer::text::window::{Truncations, WindowConfig};
use serde::{Deserialize, Serialize, Serializer};

use super::DemoConfig;
use super::arm::{Arm, PerArm};

/// What `options.reward_shaping` says.
const REWARD_SHAPING: &str =
    "none (the reference's reward: λ_exec·success − η·C + λ_val·V, format penalty for unparseable completions)";

/// What `paired.test` says.
const PAIRED_TEST: &str = "McNemar's exact test on greedy recovery; Wilcoxon signed-rank (normal approximation, tie and continuity corrections) on each failure state's share of sampled completions that succeed";

/// The whole report of a demo run (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    /// The seed of every job.
    pub seed: u64,
    /// The settings of the run.
    pub options: Options,
    /// The scorer checked on the held-out states before any policy met them.
    pub self_check: SelfCheck,
    /// The held-out states and tasks every arm met.
    pub eval_set: EvalSetSize,
    /// Each arm's figures on the held-out states and tasks.
    pub arms: PerArm<ArmReport>,
    /// McNemar's exact test on paired greedy outcomes.
    pub mcnemar: McnemarTests,
    /// Paired tests between arms on the same failure states.
    pub paired: PairedTests,
    /// How far η = 0.1 leans less towards reflecting than η = 0, per clean state.
    pub sign_test: SignTest,
    /// What the context window cut.
    pub truncations: TruncationReport,
    /// Each ReGRPO arm's record of its steps.
    pub regrpo_steps: BTreeMap<Arm, Vec<RegrpoStep>>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
}

/// The settings of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// The demo's sizes.
    pub demo: DemoOptions,
    /// The context window every job used.
    pub window: WindowConfig,
    /// The ReGRPO settings of the η = 0.1 arm (the control differs only in η).
    #[serde(serialize_with = "through_json_value")]
    pub regrpo: RegrpoConfig,
    /// The reward shaping used, in words.
    pub reward_shaping: String,
}

/// The demo's sizes ([`DemoConfig`] less the seed, which is the report's, and the device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoOptions {
    /// toolworld tasks generated.
    pub tasks: usize,
    /// The policies' shape.
    pub model: String,
    /// Clean SFT steps both SFT arms share.
    pub warmup_steps: u64,
    /// SFT steps of each SFT arm after the warm-up.
    pub branch_steps: u64,
    /// Steps of each ReGRPO run.
    pub regrpo_steps: u64,
    /// States with signal per ReGRPO step.
    pub regrpo_states: usize,
    /// SFT learning rate (peak).
    pub lr: f64,
    /// Held-out failure states and clean states per policy (each, at most).
    pub eval_states: usize,
    /// Held-out toolworld tasks per policy.
    pub eval_tasks: usize,
    /// Completions sampled per held-out failure state.
    pub eval_samples: usize,
    /// Decoding under the tools' grammar.
    pub constrained: bool,
}

impl From<&DemoConfig> for DemoOptions {
    fn from(c: &DemoConfig) -> Self {
        DemoOptions {
            tasks: c.tasks,
            model: c.model.clone(),
            warmup_steps: c.warmup_steps,
            branch_steps: c.branch_steps,
            regrpo_steps: c.regrpo_steps,
            regrpo_states: c.regrpo_states,
            lr: c.lr,
            eval_states: c.eval_states,
            eval_tasks: c.eval_tasks,
            eval_samples: c.eval_samples,
            constrained: c.constrained,
        }
    }
}

/// How many held-out states and tasks every arm was evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSetSize {
    /// Failure states (recovery).
    pub failure_states: usize,
    /// Failure states whose fix the engine found derivable from the prompt.
    pub derivable_failure_states: usize,
    /// Clean states (first-try success, unnecessary reflection).
    pub clean_states: usize,
    /// Toolworld tasks of the agent loop (answer accuracy).
    pub tasks: usize,
}

/// One arm's figures. Rates are `None` where they are undefined (no states of their kind, no
/// samples, unconstrained decoding for the sampled reflection rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// The arm's column header.
    pub label: String,
    /// Greedy recovery at failure states, and its 95% Wilson interval.
    #[serde(deserialize_with = "Option::deserialize")]
    pub recovery: Option<f64>,
    /// The 95% Wilson interval of `recovery`.
    pub recovery_ci: (f64, f64),
    /// Recovery at failure states whose fix is derivable from the prompt.
    pub recovery_derivable: RateReport,
    /// The mean share of sampled completions (temperature 1) that succeed, per failure state.
    #[serde(deserialize_with = "Option::deserialize")]
    pub sampled_recovery: Option<f64>,
    /// The share of failure states where at least one sampled completion succeeds.
    #[serde(deserialize_with = "Option::deserialize")]
    pub pass_at_k: Option<f64>,
    /// Greedy success at clean states.
    #[serde(deserialize_with = "Option::deserialize")]
    pub first_try_success: Option<f64>,
    /// The 95% Wilson interval of `first_try_success`.
    pub first_try_success_ci: (f64, f64),
    /// Clean states whose greedy turn opened with a reflection.
    #[serde(deserialize_with = "Option::deserialize")]
    pub unnecessary_reflection: Option<f64>,
    /// The 95% Wilson interval of `unnecessary_reflection`.
    pub unnecessary_reflection_ci: (f64, f64),
    /// The mean probability over clean states that a sampled turn opens with a reflection.
    #[serde(deserialize_with = "Option::deserialize")]
    pub sampled_unnecessary_reflection: Option<f64>,
    /// The mean length of the reflections written, over every state.
    #[serde(deserialize_with = "Option::deserialize")]
    pub mean_reflection_tokens: Option<f64>,
    /// Failure states with a reflection: it names the right ErrorType.
    #[serde(deserialize_with = "Option::deserialize")]
    pub error_type_accuracy: Option<f64>,
    /// Failure states with a reflection: its evidence quotes the observation.
    #[serde(deserialize_with = "Option::deserialize")]
    pub evidence_grounding_rate: Option<f64>,
    /// Completions at every state that parse into an action.
    #[serde(deserialize_with = "Option::deserialize")]
    pub parse_rate: Option<f64>,
    /// Answer accuracy of the agent loop on held-out tasks.
    #[serde(deserialize_with = "Option::deserialize")]
    pub answer_accuracy: Option<f64>,
    /// Greedy recovery by the failure's ErrorType.
    pub recovery_by_error_type: BTreeMap<String, RateReport>,
}

impl ArmReport {
    /// The figures of `arm`'s evaluation.
    pub fn new(arm: Arm, r: &EvalReport) -> ArmReport {
        ArmReport {
            label: arm.label().to_string(),
            recovery: finite(r.recovery.rate),
            recovery_ci: r.recovery.ci,
            recovery_derivable: RateReport::from(&r.recovery_derivable),
            sampled_recovery: finite(r.sampled_recovery),
            pass_at_k: finite(r.pass_at_k),
            first_try_success: finite(r.first_try.rate),
            first_try_success_ci: r.first_try.ci,
            unnecessary_reflection: finite(r.unnecessary_reflection.rate),
            unnecessary_reflection_ci: r.unnecessary_reflection.ci,
            sampled_unnecessary_reflection: finite(r.sampled_unnecessary_reflection),
            mean_reflection_tokens: finite(r.mean_reflection_tokens),
            error_type_accuracy: finite(r.error_type_accuracy),
            evidence_grounding_rate: finite(r.evidence_grounding_rate),
            parse_rate: finite(r.parse.rate),
            answer_accuracy: finite(r.answer_accuracy),
            recovery_by_error_type: r.recovery_by_error_type.iter().map(|(t, x)| (t.clone(), x.into())).collect(),
        }
    }
}

/// `k` of `n` with the rate (`None` when `n` is 0) and its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateReport {
    /// `k / n`, `None` when `n` is 0.
    #[serde(deserialize_with = "Option::deserialize")]
    pub rate: Option<f64>,
    /// Successes.
    pub k: usize,
    /// Trials.
    pub n: usize,
    /// The 95% Wilson interval.
    pub ci: (f64, f64),
}

impl From<&Rate> for RateReport {
    fn from(r: &Rate) -> Self {
        RateReport { rate: finite(r.rate), k: r.k, n: r.n, ci: r.ci }
    }
}

/// McNemar's exact test on paired greedy outcomes: p-values, and the discordant pairs
/// `(only the first arm, only the second)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McnemarTests {
    /// Greedy recovery, RoT SFT vs clean SFT.
    pub sft_rot_vs_sft_clean: f64,
    /// Greedy recovery, ReGRPO vs RoT SFT.
    pub regrpo_vs_sft_rot: f64,
    /// Unnecessary reflection at clean states, η = 0.1 vs η = 0.
    pub unnecessary_reflection_regrpo_vs_regrpo_eta0: f64,
    /// The discordant pairs of each test.
    pub discordant: Discordant,
}

/// The discordant pairs of each McNemar test: `(only the first arm, only the second)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discordant {
    /// RoT SFT vs clean SFT.
    pub sft_rot_vs_sft_clean: (usize, usize),
    /// ReGRPO vs RoT SFT.
    pub regrpo_vs_sft_rot: (usize, usize),
    /// Unnecessary reflection, η = 0.1 vs η = 0.
    pub unnecessary_reflection_regrpo_vs_regrpo_eta0: (usize, usize),
}

/// Paired comparisons of recovery on the same failure states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTests {
    /// ReGRPO vs RoT SFT.
    pub regrpo_vs_sft_rot: RecoveryComparison,
    /// RoT SFT vs clean SFT.
    pub sft_rot_vs_sft_clean: RecoveryComparison,
    /// ReGRPO η = 0.1 vs η = 0 (sampled recovery only).
    pub regrpo_vs_regrpo_eta0: SampledComparison,
    /// The tests, in words.
    pub test: String,
}

/// Greedy (McNemar) and sampled (Wilcoxon signed-rank) recovery of one arm against another.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecoveryComparison {
    /// McNemar's exact p-value on greedy recovery.
    pub mcnemar_p: f64,
    /// States only the first arm recovers, and only the second.
    pub discordant: (usize, usize),
    /// The Wilcoxon signed-rank p-value on sampled recovery per state.
    pub sampled_p: f64,
    /// States where the first arm's sampled recovery is higher, and lower.
    pub sampled_higher_lower: (usize, usize),
}

/// Sampled recovery (Wilcoxon signed-rank) of one arm against another.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampledComparison {
    /// The Wilcoxon signed-rank p-value on sampled recovery per state.
    pub sampled_p: f64,
    /// States where the first arm's sampled recovery is higher, and lower.
    pub sampled_higher_lower: (usize, usize),
}

impl RecoveryComparison {
    fn new(greedy: &Paired, sampled: &SignedRank) -> Self {
        let s = SampledComparison::new(sampled);
        RecoveryComparison {
            mcnemar_p: greedy.p_value(),
            discordant: (greedy.only_a, greedy.only_b),
            sampled_p: s.sampled_p,
            sampled_higher_lower: s.sampled_higher_lower,
        }
    }
}

impl SampledComparison {
    fn new(s: &SignedRank) -> Self {
        SampledComparison { sampled_p: s.p, sampled_higher_lower: (s.positive, s.n - s.positive) }
    }
}

/// A sign test, per clean state, of the probability of opening with a reflection: η = 0.1
/// against η = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SignTest {
    /// Its p-value.
    pub sampled_unnecessary_reflection_regrpo_vs_regrpo_eta0: f64,
    /// Clean states where η = 0.1 leans less towards reflecting, and more.
    pub lower_higher: (usize, usize),
}

/// What the context window cut, in every job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncationReport {
    /// Cuts of every kind in every job.
    pub total: usize,
    /// By job: `sft_warmup`, each arm's key, and `eval_<arm key>`.
    pub by_job: BTreeMap<String, Truncations>,
}

/// What a demo run measured, from which its report is built.
pub(crate) struct Measured {
    pub options: Options,
    pub seed: u64,
    pub self_check: SelfCheck,
    pub eval_set: EvalSetSize,
    pub evals: PerArm<EvalReport>,
    pub regrpo_steps: BTreeMap<Arm, Vec<RegrpoStep>>,
    /// Every training job's cuts, by job (the evaluations' are added from `evals`).
    pub truncations: BTreeMap<String, Truncations>,
}

impl Options {
    pub(crate) fn new(cfg: &DemoConfig, window: WindowConfig, regrpo: RegrpoConfig) -> Options {
        Options { demo: cfg.into(), window, regrpo, reward_shaping: REWARD_SHAPING.to_string() }
    }
}

impl DemoReport {
    /// The report of what a run measured; `seconds` is left for the caller to set last.
    pub(crate) fn new(m: Measured) -> DemoReport {
        let e = &m.evals;
        let recovered = |a: Arm| e.get(a).successes(StateKind::Failure);
        let rot_vs_clean = Paired::of(&recovered(Arm::SftRot), &recovered(Arm::SftClean));
        let rl_vs_rot = Paired::of(&recovered(Arm::Regrpo), &recovered(Arm::SftRot));
        let sampled =
            |a: Arm| -> Vec<f64> { e.get(a).sampled_rates().into_iter().map(|r| r.unwrap_or(f64::NAN)).collect() };
        let sampled_rl_vs_rot = wilcoxon(&sampled(Arm::Regrpo), &sampled(Arm::SftRot));
        let sampled_rot_vs_clean = wilcoxon(&sampled(Arm::SftRot), &sampled(Arm::SftClean));
        let sampled_rl_vs_eta0 = wilcoxon(&sampled(Arm::Regrpo), &sampled(Arm::RegrpoEta0));
        let eta_refl = Paired::of(&e.regrpo.clean_reflections(), &e.regrpo_eta0.clean_reflections());
        let eta_leaning = lower_per_state(
            &e.regrpo.clean_reflection_probabilities(),
            &e.regrpo_eta0.clean_reflection_probabilities(),
        );

        let mut by_job = m.truncations;
        for (arm, r) in e.iter() {
            by_job.insert(format!("eval_{}", arm.key()), r.truncations);
        }
        DemoReport {
            seed: m.seed,
            options: m.options,
            self_check: m.self_check,
            eval_set: m.eval_set,
            arms: e.map(ArmReport::new),
            mcnemar: McnemarTests {
                sft_rot_vs_sft_clean: rot_vs_clean.p_value(),
                regrpo_vs_sft_rot: rl_vs_rot.p_value(),
                unnecessary_reflection_regrpo_vs_regrpo_eta0: eta_refl.p_value(),
                discordant: Discordant {
                    sft_rot_vs_sft_clean: (rot_vs_clean.only_a, rot_vs_clean.only_b),
                    regrpo_vs_sft_rot: (rl_vs_rot.only_a, rl_vs_rot.only_b),
                    unnecessary_reflection_regrpo_vs_regrpo_eta0: (eta_refl.only_a, eta_refl.only_b),
                },
            },
            paired: PairedTests {
                regrpo_vs_sft_rot: RecoveryComparison::new(&rl_vs_rot, &sampled_rl_vs_rot),
                sft_rot_vs_sft_clean: RecoveryComparison::new(&rot_vs_clean, &sampled_rot_vs_clean),
                regrpo_vs_regrpo_eta0: SampledComparison::new(&sampled_rl_vs_eta0),
                test: PAIRED_TEST.to_string(),
            },
            sign_test: SignTest {
                sampled_unnecessary_reflection_regrpo_vs_regrpo_eta0: eta_leaning.p_value(),
                lower_higher: (eta_leaning.only_a, eta_leaning.only_b),
            },
            truncations: TruncationReport { total: by_job.values().map(Truncations::total).sum(), by_job },
            regrpo_steps: m.regrpo_steps,
            seconds: 0.0,
        }
    }

    /// The report as `report.json` holds it: pretty-printed, with a final newline.
    pub fn to_json(&self) -> serde_json::Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }
}

/// A sign test of paired per-state values: `only_a` counts the states where `a` is lower
/// (by more than 1e-6), `only_b` those where `b` is; states without both values are left out.
pub(super) fn lower_per_state(a: &[Option<f64>], b: &[Option<f64>]) -> Paired {
    let (a_lower, b_lower): (Vec<bool>, Vec<bool>) = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some((x.as_ref()?, y.as_ref()?)))
        .map(|(x, y)| (*x < *y - 1e-6, *y < *x - 1e-6))
        .unzip();
    Paired::of(&a_lower, &b_lower)
}

/// A number, or `None` where it is not one.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Serialises through a `serde_json::Value`, as the report did when it was built with `json!`:
/// an `f32` (the ReGRPO config's weight decay) is widened to `f64` there, so `0.01f32` reads
/// `0.009999999776482582`, not `0.01`.
fn through_json_value<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(v).map_err(serde::ser::Error::custom)?.serialize(s)
}

#[cfg(test)]
#[path = "report_tests.rs"]
pub(super) mod tests;
