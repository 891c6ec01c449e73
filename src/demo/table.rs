//! The comparison table `regrpo demo` prints, rendered from a [`DemoReport`] alone: one column
//! per arm, rates with their 95% Wilson intervals, then the paired tests and recovery by
//! ErrorType.

use super::report::{ArmReport, DemoReport, RateReport};

/// A row of the table: its name and how an arm's cell reads.
type Row = (&'static str, fn(&ArmReport) -> String);

/// The rows, in order.
const ROWS: [Row; 12] = [
    ("recovery", |a| rate_cell(a.recovery, a.recovery_ci)),
    ("recovery (derivable)", |a| cell(&a.recovery_derivable)),
    ("sampled recovery", |a| num(a.sampled_recovery)),
    ("pass@k", |a| num(a.pass_at_k)),
    ("first-try success", |a| rate_cell(a.first_try_success, a.first_try_success_ci)),
    ("unnecessary reflection", |a| rate_cell(a.unnecessary_reflection, a.unnecessary_reflection_ci)),
    ("  sampled (temperature 1)", |a| num(a.sampled_unnecessary_reflection)),
    ("mean reflection tokens", |a| num(a.mean_reflection_tokens)),
    ("ErrorType accuracy", |a| num(a.error_type_accuracy)),
    ("evidence grounding", |a| num(a.evidence_grounding_rate)),
    ("parse rate", |a| num(a.parse_rate)),
    ("answer accuracy (tasks)", |a| num(a.answer_accuracy)),
];

/// The table, every line ending in a newline.
pub fn render(r: &DemoReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let arms: Vec<&ArmReport> = r.arms.iter().map(|(_, a)| a).collect();
    line(format!("{:<28}{}", "metric", arms.iter().map(|a| format!("{:>22}", a.label)).collect::<String>()));
    for (name, f) in ROWS {
        line(format!("{name:<28}{}", arms.iter().map(|a| format!("{:>22}", f(a))).collect::<String>()));
    }
    let (m, p) = (&r.mcnemar, &r.paired);
    line(format!(
        "McNemar (paired, exact): recovery RoT SFT vs clean SFT p = {} ({} vs {} discordant); ReGRPO vs RoT SFT p = {} ({} vs {}); unnecessary reflection η=0.1 vs η=0 p = {} ({} vs {})",
        p_value(m.sft_rot_vs_sft_clean),
        m.discordant.sft_rot_vs_sft_clean.0,
        m.discordant.sft_rot_vs_sft_clean.1,
        p_value(m.regrpo_vs_sft_rot),
        m.discordant.regrpo_vs_sft_rot.0,
        m.discordant.regrpo_vs_sft_rot.1,
        p_value(m.unnecessary_reflection_regrpo_vs_regrpo_eta0),
        m.discordant.unnecessary_reflection_regrpo_vs_regrpo_eta0.0,
        m.discordant.unnecessary_reflection_regrpo_vs_regrpo_eta0.1,
    ));
    if r.options.demo.eval_samples > 0 {
        // `(higher, lower)` → "higher on H of H + L states that differ".
        let of = |(higher, lower): (usize, usize)| (higher, higher + lower);
        let (rl_rot, rot_clean, rl_eta0) = (
            of(p.regrpo_vs_sft_rot.sampled_higher_lower),
            of(p.sft_rot_vs_sft_clean.sampled_higher_lower),
            of(p.regrpo_vs_regrpo_eta0.sampled_higher_lower),
        );
        line(format!(
            "Wilcoxon signed-rank (paired, per failure state, share of {} sampled completions that succeed): ReGRPO vs RoT SFT p = {} (higher on {} of {} states that differ); RoT SFT vs clean SFT p = {} ({} of {}); ReGRPO η=0.1 vs η=0 p = {} ({} of {})",
            r.options.demo.eval_samples,
            p_value(p.regrpo_vs_sft_rot.sampled_p),
            rl_rot.0,
            rl_rot.1,
            p_value(p.sft_rot_vs_sft_clean.sampled_p),
            rot_clean.0,
            rot_clean.1,
            p_value(p.regrpo_vs_regrpo_eta0.sampled_p),
            rl_eta0.0,
            rl_eta0.1,
        ));
    }
    line(format!(
        "sign test, per clean state, probability of opening with a reflection: η=0.1 lower on {} states, higher on {}, p = {}",
        r.sign_test.lower_higher.0,
        r.sign_test.lower_higher.1,
        p_value(r.sign_test.sampled_unnecessary_reflection_regrpo_vs_regrpo_eta0),
    ));
    line("recovery by ErrorType:".to_string());
    let first = &r.arms.sft_clean.recovery_by_error_type;
    for (t, rate) in first {
        let cells: String = arms
            .iter()
            .map(|a| format!("{:>22}", a.recovery_by_error_type.get(t).map_or("n/a".into(), cell)))
            .collect();
        line(format!("  {:<26}{cells}", format!("{t} ({})", rate.n)));
    }
    line(format!("context-window cuts across every job: {}", r.truncations.total));
    out
}

/// A rate with its interval, or `n/a` where it is undefined.
fn rate_cell(rate: Option<f64>, ci: (f64, f64)) -> String {
    match rate {
        Some(rate) => format!("{rate:.3} [{:.2},{:.2}]", ci.0, ci.1),
        None => "n/a".into(),
    }
}

fn cell(r: &RateReport) -> String {
    if r.n == 0 { "n/a".into() } else { rate_cell(r.rate, r.ci) }
}

fn num(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

/// A p-value: four decimals, or scientific notation below 1e-4.
fn p_value(p: f64) -> String {
    if p < 1e-4 { format!("{p:.1e}") } else { format!("{p:.4}") }
}

#[cfg(test)]
mod tests {
    use regrpo_trainer::eval::stats::{Paired, wilcoxon};
    use regrpo_trainer::eval::{EvalReport, Rate};
    use regrpo_trainer::regrpo::rollout::StateKind;

    use super::*;
    use crate::demo::report::tests::{evals, typed};

    /// The table as `regrpo demo` printed it before issue 30, from the arms' evaluations.
    fn printed_from_evaluations(reports: &[EvalReport; 4], eval_samples: usize, cut_total: usize) -> String {
        fn cell(r: &Rate) -> String {
            if r.n == 0 || r.rate.is_nan() {
                return "n/a".into();
            }
            format!("{:.3} [{:.2},{:.2}]", r.rate, r.ci.0, r.ci.1)
        }
        fn num(v: f64) -> String {
            if v.is_nan() { "n/a".into() } else { format!("{v:.3}") }
        }
        type Cell = Box<dyn Fn(&EvalReport) -> String>;
        let labels = ["SFT clean", "SFT clean+RoT", "+ ReGRPO", "+ ReGRPO η=0"];
        let recov = |i: usize| reports[i].successes(StateKind::Failure);
        let rot_vs_clean = Paired::of(&recov(1), &recov(0));
        let rl_vs_rot = Paired::of(&recov(2), &recov(1));
        let rates =
            |i: usize| -> Vec<f64> { reports[i].sampled_rates().into_iter().map(|r| r.unwrap_or(f64::NAN)).collect() };
        let sampled_rl_vs_rot = wilcoxon(&rates(2), &rates(1));
        let sampled_rot_vs_clean = wilcoxon(&rates(1), &rates(0));
        let sampled_rl_vs_eta0 = wilcoxon(&rates(2), &rates(3));
        let eta_refl = Paired::of(&reports[2].clean_reflections(), &reports[3].clean_reflections());
        let eta_leaning = crate::demo::report::lower_per_state(
            &reports[2].clean_reflection_probabilities(),
            &reports[3].clean_reflection_probabilities(),
        );
        let mut out = String::new();
        out += &format!("{:<28}{}\n", "metric", labels.iter().map(|l| format!("{l:>22}")).collect::<String>());
        let rows: Vec<(&str, Cell)> = vec![
            ("recovery", Box::new(|r| cell(&r.recovery))),
            ("recovery (derivable)", Box::new(|r| cell(&r.recovery_derivable))),
            ("sampled recovery", Box::new(|r| num(r.sampled_recovery))),
            ("pass@k", Box::new(|r| num(r.pass_at_k))),
            ("first-try success", Box::new(|r| cell(&r.first_try))),
            ("unnecessary reflection", Box::new(|r| cell(&r.unnecessary_reflection))),
            ("  sampled (temperature 1)", Box::new(|r| num(r.sampled_unnecessary_reflection))),
            ("mean reflection tokens", Box::new(|r| num(r.mean_reflection_tokens))),
            ("ErrorType accuracy", Box::new(|r| num(r.error_type_accuracy))),
            ("evidence grounding", Box::new(|r| num(r.evidence_grounding_rate))),
            ("parse rate", Box::new(|r| num(r.parse.rate))),
            ("answer accuracy (tasks)", Box::new(|r| num(r.answer_accuracy))),
        ];
        for (name, f) in &rows {
            out += &format!("{name:<28}{}\n", reports.iter().map(|r| format!("{:>22}", f(r))).collect::<String>());
        }
        out += &format!(
            "McNemar (paired, exact): recovery RoT SFT vs clean SFT p = {} ({} vs {} discordant); ReGRPO vs RoT SFT p = {} ({} vs {}); unnecessary reflection η=0.1 vs η=0 p = {} ({} vs {})\n",
            p_value(rot_vs_clean.p_value()),
            rot_vs_clean.only_a,
            rot_vs_clean.only_b,
            p_value(rl_vs_rot.p_value()),
            rl_vs_rot.only_a,
            rl_vs_rot.only_b,
            p_value(eta_refl.p_value()),
            eta_refl.only_a,
            eta_refl.only_b,
        );
        if eval_samples > 0 {
            out += &format!(
                "Wilcoxon signed-rank (paired, per failure state, share of {} sampled completions that succeed): ReGRPO vs RoT SFT p = {} (higher on {} of {} states that differ); RoT SFT vs clean SFT p = {} ({} of {}); ReGRPO η=0.1 vs η=0 p = {} ({} of {})\n",
                eval_samples,
                p_value(sampled_rl_vs_rot.p),
                sampled_rl_vs_rot.positive,
                sampled_rl_vs_rot.n,
                p_value(sampled_rot_vs_clean.p),
                sampled_rot_vs_clean.positive,
                sampled_rot_vs_clean.n,
                p_value(sampled_rl_vs_eta0.p),
                sampled_rl_vs_eta0.positive,
                sampled_rl_vs_eta0.n,
            );
        }
        out += &format!(
            "sign test, per clean state, probability of opening with a reflection: η=0.1 lower on {} states, higher on {}, p = {}\n",
            eta_leaning.only_a,
            eta_leaning.only_b,
            p_value(eta_leaning.p_value()),
        );
        let types: Vec<String> = reports[0].recovery_by_error_type.keys().cloned().collect();
        out += "recovery by ErrorType:\n";
        for t in &types {
            let cells: String = reports
                .iter()
                .map(|r| format!("{:>22}", r.recovery_by_error_type.get(t).map_or("n/a".into(), cell)))
                .collect();
            let n = reports[0].recovery_by_error_type.get(t).map_or(0, |r| r.n);
            out += &format!("  {:<26}{cells}\n", format!("{t} ({n})"));
        }
        out += &format!("context-window cuts across every job: {cut_total}\n");
        out
    }

    #[test]
    fn the_table_from_the_report_is_the_table_printed_from_the_evaluations() {
        let report = typed();
        let want = printed_from_evaluations(&evals(), report.options.demo.eval_samples, report.truncations.total);
        assert_eq!(render(&report), want);
        assert!(want.contains("n/a") && want.contains("Wilcoxon"), "{want}");
    }

    #[test]
    fn without_samples_the_table_has_no_wilcoxon_line() {
        let mut report = typed();
        report.options.demo.eval_samples = 0;
        let want = printed_from_evaluations(&evals(), 0, report.truncations.total);
        assert_eq!(render(&report), want);
        assert!(!want.contains("Wilcoxon"));
    }
}
