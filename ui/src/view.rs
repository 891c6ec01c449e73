//! How a record is shown: the evidence found in its observation, tool-call arguments
//! pretty-printed, and the corrected action as a line diff against the failed one.
//!
//! Everything here returns plain pieces of text; the templates escape each piece, so a record
//! holding markup is shown as text, never run.

use regrpo_schemas::ActionRecord;
use regrpo_schemas::evidence::quote_span;
use similar::{ChangeTag, TextDiff};

/// An observation split around the evidence it quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Highlighted {
    pub before: String,
    pub quote: String,
    pub after: String,
    /// Whether the quote was found verbatim (else the whole observation is in `before`).
    pub found: bool,
}

/// Splits `observation` around the quote: at the stored offsets when they hold the quote, else
/// where the evidence's quoted words are found verbatim.
pub(crate) fn highlight(observation: &str, evidence: &str, start: Option<i32>, end: Option<i32>) -> Highlighted {
    let stored = match (start, end) {
        (Some(s), Some(e)) if s >= 0 && e > s => Some((s as usize, e as usize)),
        _ => None,
    };
    let span = stored
        .filter(|&(s, e)| observation.get(s..e).is_some_and(|q| evidence.contains(q)))
        .or_else(|| quote_span(evidence, observation));
    match span {
        Some((s, e)) => Highlighted {
            before: observation[..s].to_string(),
            quote: observation[s..e].to_string(),
            after: observation[e..].to_string(),
            found: true,
        },
        None => {
            Highlighted { before: observation.to_string(), quote: String::new(), after: String::new(), found: false }
        }
    }
}

/// An action's arguments pretty-printed (the stored JSON text when it is not JSON).
pub(crate) fn pretty_arguments(a: &ActionRecord) -> String {
    serde_json::from_str::<serde_json::Value>(&a.arguments)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| a.arguments.clone())
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiffLine {
    /// `del`, `add` or `same`.
    pub kind: &'static str,
    pub text: String,
}

/// The corrected action against the failed one, line by line (tool name, then arguments).
pub(crate) fn action_diff(failed: &ActionRecord, corrected: &ActionRecord) -> Vec<DiffLine> {
    let render = |a: &ActionRecord| format!("tool: {}\n{}\n", a.tool, pretty_arguments(a));
    let (old, new) = (render(failed), render(corrected));
    TextDiff::from_lines(&old, &new)
        .iter_all_changes()
        .map(|c| DiffLine {
            kind: match c.tag() {
                ChangeTag::Delete => "del",
                ChangeTag::Insert => "add",
                ChangeTag::Equal => "same",
            },
            text: c.value().trim_end_matches('\n').to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(tool: &str, args: &str) -> ActionRecord {
        ActionRecord { tool: tool.into(), arguments: args.into(), surface: "json".into(), raw: String::new() }
    }

    #[test]
    fn the_quote_is_found_by_offsets_or_by_its_words_and_missing_quotes_are_told() {
        let obs = "Error: file 'data/x.csv' not found";
        let ev = "The tool said 'data/x.csv' not found";
        let by_offsets = highlight(obs, ev, Some(12), Some(24));
        assert_eq!((by_offsets.quote.as_str(), by_offsets.found), ("'data/x.csv'", true));
        let by_words = highlight(obs, "\"file 'data/x.csv' not found\"", None, None);
        assert!(by_words.found, "{by_words:?}");
        assert_eq!(format!("{}{}{}", by_words.before, by_words.quote, by_words.after), obs);
        let missing = highlight(obs, "\"permission denied\"", Some(500), Some(600));
        assert!(!missing.found);
        assert_eq!(missing.before, obs);
    }

    #[test]
    fn the_diff_marks_the_changed_argument_only() {
        let d = action_diff(&action("read", r#"{"path":"a.txt","n":1}"#), &action("read", r#"{"path":"b.txt","n":1}"#));
        let changed: Vec<_> = d.iter().filter(|l| l.kind != "same").map(|l| (l.kind, l.text.trim())).collect();
        assert_eq!(changed, vec![("del", "\"path\": \"a.txt\","), ("add", "\"path\": \"b.txt\",")]);
        assert!(d.iter().any(|l| l.kind == "same" && l.text == "tool: read"));
    }
}
