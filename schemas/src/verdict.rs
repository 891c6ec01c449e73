//! A curator's verdict on a generated row, and the review record that carries it.

use std::fmt;
use std::str::FromStr;

use crate::id::content_id;
use crate::records::Review;

/// What a curator said about a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Fit to publish.
    Accept,
    /// Wrong: `publish --exclude-rejected` leaves it out.
    Reject,
    /// Worth a second look; publishes as unreviewed.
    Flag,
    /// Back to unreviewed (what undoing a row's first verdict appends).
    Clear,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Accept, Verdict::Reject, Verdict::Flag, Verdict::Clear];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject => "reject",
            Verdict::Flag => "flag",
            Verdict::Clear => "clear",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Verdict, String> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a verdict (accept, reject, flag, clear)"))
    }
}

impl Review {
    /// A review of row `row_id` of `row_table`, its id a hash of everything it says (the same
    /// review appended twice is one row).
    pub fn new(
        row_table: &str,
        row_id: &str,
        verdict: Verdict,
        reason: Option<String>,
        reviewer: &str,
        reviewed_at: i64,
        snapshot: Option<String>,
    ) -> Review {
        let at = reviewed_at.to_le_bytes();
        let review_id = content_id([
            row_table.as_bytes(),
            row_id.as_bytes(),
            verdict.as_str().as_bytes(),
            reason.as_deref().unwrap_or("").as_bytes(),
            reviewer.as_bytes(),
            &at[..],
            snapshot.as_deref().unwrap_or("").as_bytes(),
        ]);
        Review {
            review_id,
            row_table: row_table.to_string(),
            row_id: row_id.to_string(),
            verdict: verdict.as_str().to_string(),
            reason,
            reviewer: reviewer.to_string(),
            reviewed_at,
            snapshot,
        }
    }

    /// The verdict, where the column holds one this build knows.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_and_ids_follow_content() {
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
        }
        assert!("maybe".parse::<Verdict>().is_err());
        let a = Review::new("rot", "r1", Verdict::Reject, Some("wrong fix".into()), "ann", 1, None);
        let b = Review::new("rot", "r1", Verdict::Reject, Some("wrong fix".into()), "ann", 1, None);
        let c = Review::new("rot", "r1", Verdict::Reject, Some("wrong fix".into()), "ann", 2, None);
        assert_eq!(a.review_id, b.review_id);
        assert_ne!(a.review_id, c.review_id);
        assert_eq!(a.verdict(), Some(Verdict::Reject));
    }
}
