//! Evidence quoting: a reflection's Evidence must quote its failed observation, and the quote's
//! byte span is stored with the row (`evidence_start`, `evidence_end`) so a gate, a curator or
//! a reward can check it.

/// The byte span in `observation` of the first quoted passage of `evidence` ('…' or "…")
/// that really occurs there.
pub fn quote_span(evidence: &str, observation: &str) -> Option<(usize, usize)> {
    for quote in ['\'', '"'] {
        let mut rest = evidence;
        while let Some(a) = rest.find(quote) {
            let after = &rest[a + 1..];
            let Some(b) = after.find(quote) else { break };
            let q = &after[..b];
            if !q.is_empty()
                && let Some(at) = observation.find(q)
            {
                return Some((at, at + q.len()));
            }
            rest = &after[b + 1..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_span_finds_the_quoted_part() {
        let obs = "Error: File not found: reciept.pdf";
        let ev = "The observation says 'File not found: reciept.pdf', so the path was wrong.";
        let (a, b) = quote_span(ev, obs).unwrap();
        assert_eq!(&obs[a..b], "File not found: reciept.pdf");
        assert_eq!(quote_span("it's 'nowhere'", obs), None);
    }
}
