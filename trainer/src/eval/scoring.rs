//! Published scoring rules, as library functions.
//!
//! - GTA (open-compass/GTA, `GTABenchEvaluator`): step-by-step InstAcc, ToolAcc, ArgAcc,
//!   SummAcc, and the AnsAcc whitelist/blacklist match (every whitelist group must have one
//!   alias present as a whole word, case-insensitively; no blacklist alias may be).
//! - GAIA (`question_scorer`): numbers compare as floats after removing `$ % ,`; answers with
//!   `,` or `;` compare element by element; strings compare lower-cased without whitespace
//!   and punctuation.
//!
//! GTA scores list-type references (`gt_answer` as a list of strings) with sentence-embedding
//! similarity; we have no embedding model here, so [`summ_score`] uses the best token-F1 against
//! the references instead, and says so in its name of the metric (`summ_acc_lexical`).

use regex::RegexBuilder;
use serde_json::Value;

/// GTA's `iscorrect`: all whitelist groups present, no blacklist alias present.
pub fn gta_is_correct(pred: &str, whitelist: &[Vec<String>], blacklist: Option<&[Vec<String>]>) -> bool {
    let any = |aliases: &[String]| -> bool {
        let alts: Vec<String> = aliases.iter().map(|a| regex::escape(a)).collect();
        if alts.is_empty() {
            return false;
        }
        RegexBuilder::new(&format!(r"\b(?:{})\b", alts.join("|")))
            .case_insensitive(true)
            .build()
            .is_ok_and(|re| re.is_match(pred))
    };
    let all_white = whitelist.iter().all(|g| any(g));
    let black: Vec<String> = blacklist.map(|b| b.iter().flatten().cloned().collect()).unwrap_or_default();
    all_white && (black.is_empty() || !any(&black))
}

/// AnsAcc of a prediction against a GTA `gt_answer` JSON (`{whitelist, blacklist}`, a list of
/// reference strings, or null). `None` when the query has no reference.
pub fn gta_answer_score(pred: &str, gt: &Value) -> Option<f64> {
    match gt {
        Value::Object(o) => {
            let groups = |v: Option<&Value>| -> Option<Vec<Vec<String>>> {
                v?.as_array().map(|gs| {
                    gs.iter()
                        .map(|g| {
                            g.as_array()
                                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                                .unwrap_or_default()
                        })
                        .collect()
                })
            };
            let white = groups(o.get("whitelist")).unwrap_or_default();
            let black = groups(o.get("blacklist"));
            Some(f64::from(u8::from(gta_is_correct(pred, &white, black.as_deref()))))
        }
        Value::Array(refs) => {
            Some(summ_score(pred, &refs.iter().filter_map(|r| r.as_str().map(str::to_string)).collect::<Vec<_>>()))
        }
        _ => None,
    }
}

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Best token-F1 of `pred` against any reference (our lexical stand-in for GTA's embedding
/// similarity).
pub fn summ_score(pred: &str, refs: &[String]) -> f64 {
    let p = tokens(pred);
    refs.iter()
        .map(|r| {
            let r = tokens(r);
            let mut rest = r.clone();
            let common =
                p.iter().filter(|w| rest.iter().position(|x| x == *w).map(|i| rest.remove(i)).is_some()).count() as f64;
            if common == 0.0 {
                return 0.0;
            }
            let (pr, rc) = (common / p.len() as f64, common / r.len() as f64);
            2.0 * pr * rc / (pr + rc)
        })
        .fold(0.0, f64::max)
}

/// One step of GTA's step-by-step mode: what was predicted and what the reference step was.
#[derive(Debug, Clone, PartialEq)]
pub enum GtaStep {
    Tool { name: String, arguments: Value, error: bool },
    Answer(String),
    Malformed,
}

/// GTA step-by-step metrics, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GtaStepMetrics {
    pub inst_acc: f64,
    pub tool_acc: f64,
    pub arg_acc: f64,
    pub summ_acc: f64,
}

/// Scores queries: each a list of `(prediction, reference)` steps and the query's `gt_answer`.
/// InstAcc counts predictions of the reference's kind (tool call vs answer) without error over
/// all reference tool steps plus answered queries; ToolAcc and ArgAcc count same-name calls and
/// same-name-and-identical-argument calls over reference tool steps; SummAcc averages the
/// answer score over queries with a reference.
pub fn gta_step_metrics(queries: &[(Vec<(GtaStep, GtaStep)>, Value)]) -> GtaStepMetrics {
    let (mut tool_total, mut answer_total) = (0usize, 0usize);
    let (mut inst, mut tool, mut arg, mut summ) = (0usize, 0usize, 0usize, 0.0);
    for (steps, gt) in queries {
        if !gt.is_null() {
            answer_total += 1;
        }
        for (pred, reference) in steps {
            let same_kind = matches!(
                (pred, reference),
                (GtaStep::Tool { error: false, .. }, GtaStep::Tool { .. }) | (GtaStep::Answer(_), GtaStep::Answer(_))
            );
            inst += usize::from(same_kind);
            if let GtaStep::Tool { .. } = reference {
                tool_total += 1;
            }
            match (pred, reference) {
                (GtaStep::Tool { name: pn, arguments: pa, .. }, GtaStep::Tool { name: gn, arguments: ga, .. })
                    if pn == gn =>
                {
                    tool += 1;
                    arg += usize::from(pa == ga);
                }
                (GtaStep::Answer(p), GtaStep::Answer(_)) => summ += gta_answer_score(p, gt).unwrap_or(0.0),
                _ => {}
            }
        }
    }
    let pct = |n: f64, d: usize| if d == 0 { 0.0 } else { n / d as f64 * 100.0 };
    GtaStepMetrics {
        inst_acc: pct(inst as f64, tool_total + answer_total),
        tool_acc: pct(tool as f64, tool_total),
        arg_acc: pct(arg as f64, tool_total),
        summ_acc: pct(summ, answer_total),
    }
}

fn gaia_number(s: &str) -> f64 {
    let cleaned: String = s.chars().filter(|c| !matches!(c, '$' | '%' | ',')).collect();
    cleaned.trim().parse::<f64>().unwrap_or(f64::INFINITY)
}

fn gaia_is_float(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok()
}

fn gaia_str(s: &str, remove_punct: bool) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .filter(|c| !remove_punct || !c.is_ascii_punctuation())
        .collect::<String>()
        .to_lowercase()
}

/// GAIA's `question_scorer`.
pub fn gaia_score(model_answer: &str, ground_truth: &str) -> bool {
    if gaia_is_float(ground_truth) {
        return gaia_number(model_answer) == ground_truth.trim().parse::<f64>().unwrap_or(f64::NAN);
    }
    if ground_truth.contains([',', ';']) {
        let split = |s: &str| -> Vec<String> { s.split([',', ';']).map(str::to_string).collect() };
        let (gt, ma) = (split(ground_truth), split(model_answer));
        if gt.len() != ma.len() {
            return false;
        }
        return ma.iter().zip(&gt).all(|(m, g)| {
            if gaia_is_float(g) {
                gaia_number(m) == g.trim().parse::<f64>().unwrap_or(f64::NAN)
            } else {
                gaia_str(m, false) == gaia_str(g, false)
            }
        });
    }
    gaia_str(model_answer, true) == gaia_str(ground_truth, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter().map(|g| g.iter().map(|x| x.to_string()).collect()).collect()
    }

    #[test]
    fn gta_whitelist_blacklist_follow_the_published_rule() {
        let white = s(&[&["5.75", "5.75 dollars"], &["coffee"]]);
        assert!(gta_is_correct("The total is 5.75 for Coffee and bagel", &white, None));
        assert!(!gta_is_correct("The total is 5.75", &white, None), "every group must match");
        assert!(!gta_is_correct("Total 15.75 coffee", &white, None), "aliases match whole words only");
        let black = s(&[&["not"]]);
        assert!(!gta_is_correct("It is not 5.75 coffee", &white, Some(&black)));
        assert_eq!(gta_answer_score("No rain", &json!({"whitelist": [["no"]], "blacklist": null})), Some(1.0));
        assert_eq!(gta_answer_score("anything", &Value::Null), None);
    }

    #[test]
    fn gta_step_metrics_count_like_the_evaluator() {
        let tool = |n: &str, a: Value| GtaStep::Tool { name: n.into(), arguments: a, error: false };
        let q = vec![(
            vec![
                (tool("OCR", json!({"image": "a.jpg"})), tool("OCR", json!({"image": "a.jpg"}))),
                (tool("Calculator", json!({"expression": "1+2"})), tool("Calculator", json!({"expression": "1 + 2"}))),
                (GtaStep::Answer("It is 3".into()), GtaStep::Answer("3".into())),
            ],
            json!({"whitelist": [["3"]], "blacklist": null}),
        )];
        let m = gta_step_metrics(&q);
        assert!((m.inst_acc - 100.0).abs() < 1e-9, "{m:?}");
        assert!((m.tool_acc - 100.0).abs() < 1e-9);
        assert!((m.arg_acc - 50.0).abs() < 1e-9, "arguments must be identical");
        assert!((m.summ_acc - 100.0).abs() < 1e-9);
    }

    #[test]
    fn gaia_normalisation() {
        assert!(gaia_score("$1,000", "1000"));
        assert!(gaia_score("17%", "17"));
        assert!(!gaia_score("seventeen", "17"));
        assert!(gaia_score("Paris; 3", "paris;3"));
        assert!(!gaia_score("Paris, 3, x", "Paris, 3"));
        assert!(gaia_score("  The Eiffel-Tower! ", "the eiffel tower"));
        assert!(!gaia_score("Eiffel", "the eiffel tower"));
    }
}
