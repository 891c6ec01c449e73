//! The split of a trajectory: train, validation or test.
//!
//! A snapshot owns its split: it records a [`SplitSpec`] (three fractions and a seed) when it is
//! created, and a trajectory's split is a function of its id and that spec alone — a seeded hash
//! of the id cut at the fractions. SFT trains on `train`, reports its held-out loss on
//! `validation`, `regrpo eval` measures on `test`, and `regrpo publish` writes the same three
//! splits, so a published test split is exactly the set evaluation holds out. All the rows of a
//! trajectory (its clean chat, its RoT rows, its states) go to the same split, so nothing leaks.
//!
//! The assignment depends on nothing but the id: it needs no pass over the data (rows can be
//! split as they stream by), and a trajectory keeps its split in every later snapshot with the
//! same spec, so a model trained on one snapshot is not evaluated on its own training rows in
//! the next. Splits are proportional in expectation for every ErrorType rather than cut exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::content_id;

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    /// Position in [`Split::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown split `{s}` (train, validation, test)"))
    }
}

/// How a snapshot divides its trajectories.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    /// Shares of train, validation and test (non-negative, summing to 1).
    pub fractions: [f64; 3],
    pub seed: u64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec { fractions: [0.8, 0.1, 0.1], seed: 0 }
    }
}

impl SplitSpec {
    /// A spec, checked: three non-negative fractions that sum to 1.
    pub fn new(fractions: [f64; 3], seed: u64) -> Result<SplitSpec, String> {
        if fractions.iter().any(|f| !f.is_finite() || *f < 0.0) || (fractions.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err(format!(
                "split fractions {} {} {} must be non-negative and sum to 1",
                fractions[0], fractions[1], fractions[2]
            ));
        }
        Ok(SplitSpec { fractions, seed })
    }

    /// Parses `train,validation,test` fractions, e.g. `0.8,0.1,0.1`.
    pub fn parse_fractions(text: &str, seed: u64) -> Result<SplitSpec, String> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|f| f.trim().parse::<f64>().map_err(|_| format!("split `{text}`: `{f}` is not a number")))
            .collect::<Result<_, _>>()?;
        let [train, validation, test] = parts[..] else {
            return Err(format!("split `{text}`: give three fractions, train,validation,test"));
        };
        SplitSpec::new([train, validation, test], seed)
    }

    /// The split of a trajectory: a seeded hash of its id, as a number in [0, 1), cut at the
    /// fractions.
    pub fn of(&self, trajectory_id: &str) -> Split {
        let h = content_id([&b"split"[..], &self.seed.to_le_bytes(), trajectory_id.as_bytes()]);
        let u = u64::from_str_radix(&h[..13], 16).unwrap_or(0) as f64 / (1u64 << 52) as f64;
        if u < self.fractions[0] {
            Split::Train
        } else if u < self.fractions[0] + self.fractions[1] {
            Split::Validation
        } else {
            Split::Test
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_follow_the_fractions_and_the_seed() {
        let spec = SplitSpec::new([0.7, 0.2, 0.1], 3).unwrap();
        let mut n = [0usize; 3];
        for i in 0..20_000 {
            n[spec.of(&format!("t{i}")).index()] += 1;
        }
        // Binomial: 4 standard deviations of 20,000 draws is under 0.013 of the total.
        for (k, f) in spec.fractions.iter().enumerate() {
            assert!((n[k] as f64 / 20_000.0 - f).abs() < 0.013, "{n:?}");
        }
        let other = SplitSpec { seed: 4, ..spec };
        assert!((0..100).any(|i| spec.of(&format!("t{i}")) != other.of(&format!("t{i}"))));
        assert_eq!(spec.of("abc"), spec.of("abc"));
    }

    #[test]
    fn bad_fractions_are_refused() {
        assert!(SplitSpec::new([0.5, 0.5, 0.5], 0).is_err());
        assert!(SplitSpec::new([1.2, -0.1, -0.1], 0).is_err());
        assert!(SplitSpec::parse_fractions("0.8,0.2", 0).unwrap_err().contains("three"));
        assert_eq!(SplitSpec::parse_fractions("1,0,0", 0).unwrap().of("x"), Split::Train);
    }
}
