//! The typed report against the `json!` report the demo built before it had a type (issue 30):
//! the same bytes for the same figures, NaN included, and read back.

use std::collections::BTreeMap;

use regrpo_trainer::eval::stats::{Paired, wilcoxon};
use regrpo_trainer::eval::{EvalReport, Rate, StateOutcome};
use regrpo_trainer::regrpo::RegrpoStep;
use regrpo_trainer::regrpo::rollout::{SelfCheck, StateKind};
use regrpo_trainer::text::window::Truncations;
use serde_json::{Value, json};

use super::*;
use crate::demo::design::{regrpo_config, window};

fn outcome(kind: StateKind, i: usize, success: bool, sampled: Option<usize>, lean: Option<f64>) -> StateOutcome {
    StateOutcome {
        state_id: format!("{}-{i}", kind.as_str()),
        kind: kind.as_str().to_string(),
        error_type: (kind == StateKind::Failure).then(|| ["ArgInvalid", "ToolMismatch"][i % 2].to_string()),
        derivable: Some(!i.is_multiple_of(3)),
        success,
        reflected: kind == StateKind::Clean && !success,
        parsed: true,
        reflection_tokens: 3 * i,
        reflection_probability: lean,
        completion: String::new(),
        sampled_successes: sampled,
    }
}

/// An arm's evaluation on 6 failure and 5 clean states; `seed` varies what it solves, and arm
/// 0 has no samples and no tasks (its sampled figures and answer accuracy are NaN).
fn eval(seed: usize) -> EvalReport {
    let samples = if seed == 0 { 0 } else { 8 };
    let mut outcomes: Vec<StateOutcome> = (0..6)
        .map(|i| {
            let sampled = (samples > 0).then_some((i * seed) % 9);
            outcome(StateKind::Failure, i, (i + seed).is_multiple_of(3), sampled, None)
        })
        .collect();
    outcomes
        .extend((0..5).map(|i| outcome(StateKind::Clean, i, (i * seed) % 4 != 1, None, Some(0.1 * (i + seed) as f64))));
    let nan_if_unsampled = |v: f64| if samples == 0 { f64::NAN } else { v };
    EvalReport {
        failure_states: 6,
        clean_states: 5,
        tasks: if seed == 0 { 0 } else { 1 },
        recovery: Rate::of(seed, 6),
        recovery_derivable: Rate::of(0, if seed == 1 { 0 } else { 4 }),
        first_try: Rate::of(5 - seed, 5),
        unnecessary_reflection: Rate::of(seed % 2, 5),
        sampled_unnecessary_reflection: nan_if_unsampled(0.25 / seed as f64),
        mean_reflection_tokens: 1.5 * seed as f64,
        error_type_accuracy: 0.5,
        evidence_grounding_rate: f64::NAN,
        parse: Rate::of(11, 11),
        answer_accuracy: if seed == 0 { f64::NAN } else { 1.0 },
        recovery_by_error_type: BTreeMap::from([
            ("ArgInvalid".to_string(), Rate::of(seed % 3, 3)),
            ("ToolMismatch".to_string(), Rate::of(0, 3)),
        ]),
        samples,
        sampled_recovery: nan_if_unsampled(0.1 * seed as f64),
        pass_at_k: nan_if_unsampled(0.5),
        truncations: Truncations { windows: 11, ..Default::default() },
        outcomes,
    }
}

fn steps(eta: f64) -> Vec<RegrpoStep> {
    (1..=2)
        .map(|step| RegrpoStep {
            step,
            mean_reward: 0.25 - eta,
            success_rate: 0.5,
            kl: if step == 1 { f64::NAN } else { 0.003 },
            loss: if step == 1 { f64::NAN } else { -0.01 },
            groups: 2,
            skipped_groups: 1,
            sample_s: 1.5,
            ..Default::default()
        })
        .collect()
}

fn cfg() -> DemoConfig {
    DemoConfig { tasks: 40, model: "tiny".into(), regrpo_steps: 2, eval_samples: 8, ..Default::default() }
}

const CHECK: SelfCheck = SelfCheck { states: 11, gold_success: 11, failure_states: 6, repeat_success: 0, kept: 11 };

fn training_truncations() -> BTreeMap<String, Truncations> {
    ["sft_warmup", "sft_clean", "sft_rot", "regrpo", "regrpo_eta0"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), Truncations { windows: 100 + i, targets: i, ..Default::default() }))
        .collect()
}

/// The four arms' evaluations, in table order.
pub(crate) fn evals() -> [EvalReport; 4] {
    [eval(0), eval(1), eval(2), eval(3)]
}

/// A report of the figures above, as a run would have made it.
pub(crate) fn typed() -> DemoReport {
    let cfg = cfg();
    let [sft_clean, sft_rot, regrpo, regrpo_eta0] = evals();
    let mut report = DemoReport::new(Measured {
        options: Options::new(&cfg, window(), regrpo_config(&cfg, 0.1)),
        seed: cfg.seed,
        self_check: CHECK,
        eval_set: EvalSetSize { failure_states: 6, derivable_failure_states: 4, clean_states: 5, tasks: 1 },
        evals: PerArm { sft_clean, sft_rot, regrpo, regrpo_eta0 },
        regrpo_steps: BTreeMap::from([(Arm::Regrpo, steps(0.1)), (Arm::RegrpoEta0, steps(0.0))]),
        truncations: training_truncations(),
    });
    report.seconds = 12.5;
    report
}

/// The report as `regrpo demo` built it before issue 30 (src/cmd/demo.rs, `json!`), from the
/// same figures.
fn untyped() -> Value {
    const ARMS: [(&str, &str); 4] = [
        ("sft_clean", "SFT clean"),
        ("sft_rot", "SFT clean+RoT"),
        ("regrpo", "+ ReGRPO"),
        ("regrpo_eta0", "+ ReGRPO η=0"),
    ];
    fn finite(v: f64) -> Value {
        if v.is_finite() { json!(v) } else { Value::Null }
    }
    fn rate_json(r: &Rate) -> Value {
        json!({"rate": if r.rate.is_nan() { Value::Null } else { json!(r.rate) }, "k": r.k, "n": r.n, "ci": [r.ci.0, r.ci.1]})
    }
    let cfg = cfg();
    let reports = evals();
    let rl_runs = [("regrpo", steps(0.1)), ("regrpo_eta0", steps(0.0))];
    let mut truncations = training_truncations();
    for ((key, _), r) in ARMS.iter().zip(&reports) {
        truncations.insert(format!("eval_{key}"), r.truncations);
    }
    let recov = |i: usize| reports[i].successes(StateKind::Failure);
    let rot_vs_clean = Paired::of(&recov(1), &recov(0));
    let rl_vs_rot = Paired::of(&recov(2), &recov(1));
    let rates =
        |i: usize| -> Vec<f64> { reports[i].sampled_rates().into_iter().map(|r| r.unwrap_or(f64::NAN)).collect() };
    let sampled_rl_vs_rot = wilcoxon(&rates(2), &rates(1));
    let sampled_rot_vs_clean = wilcoxon(&rates(1), &rates(0));
    let sampled_rl_vs_eta0 = wilcoxon(&rates(2), &rates(3));
    let eta_refl = Paired::of(&reports[2].clean_reflections(), &reports[3].clean_reflections());
    let eta_leaning =
        lower_per_state(&reports[2].clean_reflection_probabilities(), &reports[3].clean_reflection_probabilities());
    let cut_total: usize = truncations.values().map(Truncations::total).sum();
    let arms: serde_json::Map<String, Value> = ARMS
        .iter()
        .zip(&reports)
        .map(|((key, label), r)| {
            (
                key.to_string(),
                json!({
                    "label": label,
                    "recovery": r.recovery.rate,
                    "recovery_ci": [r.recovery.ci.0, r.recovery.ci.1],
                    "recovery_derivable": rate_json(&r.recovery_derivable),
                    "sampled_recovery": finite(r.sampled_recovery),
                    "pass_at_k": finite(r.pass_at_k),
                    "first_try_success": r.first_try.rate,
                    "first_try_success_ci": [r.first_try.ci.0, r.first_try.ci.1],
                    "unnecessary_reflection": r.unnecessary_reflection.rate,
                    "unnecessary_reflection_ci": [r.unnecessary_reflection.ci.0, r.unnecessary_reflection.ci.1],
                    "sampled_unnecessary_reflection": if r.sampled_unnecessary_reflection.is_nan() { Value::Null } else { json!(r.sampled_unnecessary_reflection) },
                    "mean_reflection_tokens": r.mean_reflection_tokens,
                    "error_type_accuracy": if r.error_type_accuracy.is_nan() { Value::Null } else { json!(r.error_type_accuracy) },
                    "evidence_grounding_rate": if r.evidence_grounding_rate.is_nan() { Value::Null } else { json!(r.evidence_grounding_rate) },
                    "parse_rate": r.parse.rate,
                    "answer_accuracy": if r.answer_accuracy.is_nan() { Value::Null } else { json!(r.answer_accuracy) },
                    "recovery_by_error_type": r.recovery_by_error_type.iter().map(|(t, x)| (t.clone(), rate_json(x))).collect::<serde_json::Map<_, _>>(),
                }),
            )
        })
        .collect();
    json!({
        "seed": cfg.seed,
        "options": {
            "demo": {
                "tasks": cfg.tasks,
                "model": cfg.model,
                "warmup_steps": cfg.warmup_steps,
                "branch_steps": cfg.branch_steps,
                "regrpo_steps": cfg.regrpo_steps,
                "regrpo_states": cfg.regrpo_states,
                "lr": cfg.lr,
                "eval_states": cfg.eval_states,
                "eval_tasks": cfg.eval_tasks,
                "eval_samples": cfg.eval_samples,
                "constrained": cfg.constrained,
            },
            "window": window(),
            "regrpo": regrpo_config(&cfg, 0.1),
            "reward_shaping": "none (the reference's reward: λ_exec·success − η·C + λ_val·V, format penalty for unparseable completions)",
        },
        "self_check": CHECK,
        "eval_set": {
            "failure_states": 6,
            "derivable_failure_states": 4,
            "clean_states": 5,
            "tasks": 1,
        },
        "arms": arms,
        "mcnemar": {
            "sft_rot_vs_sft_clean": rot_vs_clean.p_value(),
            "regrpo_vs_sft_rot": rl_vs_rot.p_value(),
            "unnecessary_reflection_regrpo_vs_regrpo_eta0": eta_refl.p_value(),
            "discordant": {
                "sft_rot_vs_sft_clean": [rot_vs_clean.only_a, rot_vs_clean.only_b],
                "regrpo_vs_sft_rot": [rl_vs_rot.only_a, rl_vs_rot.only_b],
                "unnecessary_reflection_regrpo_vs_regrpo_eta0": [eta_refl.only_a, eta_refl.only_b],
            },
        },
        "paired": {
            "regrpo_vs_sft_rot": {
                "mcnemar_p": rl_vs_rot.p_value(),
                "discordant": [rl_vs_rot.only_a, rl_vs_rot.only_b],
                "sampled_p": sampled_rl_vs_rot.p,
                "sampled_higher_lower": [sampled_rl_vs_rot.positive, sampled_rl_vs_rot.n - sampled_rl_vs_rot.positive],
            },
            "sft_rot_vs_sft_clean": {
                "mcnemar_p": rot_vs_clean.p_value(),
                "discordant": [rot_vs_clean.only_a, rot_vs_clean.only_b],
                "sampled_p": sampled_rot_vs_clean.p,
                "sampled_higher_lower": [sampled_rot_vs_clean.positive, sampled_rot_vs_clean.n - sampled_rot_vs_clean.positive],
            },
            "regrpo_vs_regrpo_eta0": {
                "sampled_p": sampled_rl_vs_eta0.p,
                "sampled_higher_lower": [sampled_rl_vs_eta0.positive, sampled_rl_vs_eta0.n - sampled_rl_vs_eta0.positive],
            },
            "test": "McNemar's exact test on greedy recovery; Wilcoxon signed-rank (normal approximation, tie and continuity corrections) on each failure state's share of sampled completions that succeed",
        },
        "sign_test": {
            "sampled_unnecessary_reflection_regrpo_vs_regrpo_eta0": eta_leaning.p_value(),
            "lower_higher": [eta_leaning.only_a, eta_leaning.only_b],
        },
        "truncations": {"total": cut_total, "by_job": truncations},
        "regrpo_steps": rl_runs.iter().map(|(k, s)| (k.to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
        "seconds": 12.5,
    })
}

#[test]
fn the_typed_report_writes_the_bytes_the_json_macro_wrote() {
    let want = serde_json::to_string_pretty(&untyped()).unwrap() + "\n";
    let got = typed().to_json().unwrap();
    assert_eq!(got, want);
    // The figures exercise what the byte comparison is for: nulls, and the widened f32.
    for needle in ["\"pass_at_k\": null", "\"kl\": null", "\"rate\": null", "\"weight_decay\": 0.009999999776482582"] {
        assert!(got.contains(needle), "no `{needle}` in\n{got}");
    }
}

/// Equal values, numbers to a relative 1e-12: serde_json's default float parser may land an
/// ulp away from the number written.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kx, x), (ky, y))| kx == ky && same(x, y))
        }
        _ => a == b,
    }
}

#[test]
fn a_written_report_reads_back_with_nulls_as_none_or_nan() {
    let json = typed().to_json().unwrap();
    let back: DemoReport = serde_json::from_str(&json).unwrap();
    let (got, want) = (serde_json::to_value(&back).unwrap(), serde_json::from_str::<Value>(&json).unwrap());
    assert!(same(&got, &want), "read back:\n{got:#}\nwritten:\n{want:#}");
    assert_eq!(back.arms.sft_clean.sampled_recovery, None);
    assert_eq!(back.arms.regrpo.sampled_recovery, Some(0.2));
    assert!(back.regrpo_steps[&Arm::Regrpo][0].kl.is_nan());
    assert_eq!(back.options.regrpo, regrpo_config(&cfg(), 0.1));
    assert_eq!(back.arms.get(Arm::RegrpoEta0).label, "+ ReGRPO η=0");
}

#[test]
fn a_report_without_a_nullable_key_is_refused() {
    let mut v: Value = serde_json::from_str(&typed().to_json().unwrap()).unwrap();
    v["arms"]["regrpo"].as_object_mut().unwrap().remove("pass_at_k");
    let err = serde_json::from_value::<DemoReport>(v).unwrap_err().to_string();
    assert!(err.contains("pass_at_k"), "{err}");
}
