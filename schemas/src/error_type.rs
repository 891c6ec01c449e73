//! The ErrorType taxonomy of ReGRPO, spelled exactly as the reference spells it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Why a tool call failed. The first four are the "main" types the planner mixes; `CodeError`
/// and `NonCommit` come from code tools and from trajectories that never commit an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ErrorType {
    /// Right tool, wrong region, object, column or file.
    GroundingDrift,
    /// A different, unsuitable tool.
    ToolMismatch,
    /// A corrupted or malformed argument: typo, wrong type, missing, out of range, bad format.
    ArgInvalid,
    /// Context dropped or underspecified.
    InfoInsufficient,
    /// A code tool raised a real error.
    CodeError,
    /// The final step did not call `final_answer`.
    NonCommit,
}

impl ErrorType {
    /// All six, in the order of the taxonomy.
    pub const ALL: [ErrorType; 6] = [
        ErrorType::GroundingDrift,
        ErrorType::ToolMismatch,
        ErrorType::ArgInvalid,
        ErrorType::InfoInsufficient,
        ErrorType::CodeError,
        ErrorType::NonCommit,
    ];

    /// The four types the reference's target mix is defined over.
    pub const MAIN: [ErrorType; 4] =
        [ErrorType::GroundingDrift, ErrorType::ToolMismatch, ErrorType::ArgInvalid, ErrorType::InfoInsufficient];

    /// The reference's name, e.g. `"ArgInvalid"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::GroundingDrift => "GroundingDrift",
            ErrorType::ToolMismatch => "ToolMismatch",
            ErrorType::ArgInvalid => "ArgInvalid",
            ErrorType::InfoInsufficient => "InfoInsufficient",
            ErrorType::CodeError => "CodeError",
            ErrorType::NonCommit => "NonCommit",
        }
    }

    /// The coarse family curators group by: what the agent got wrong.
    pub fn family(self) -> &'static str {
        match self {
            ErrorType::GroundingDrift | ErrorType::InfoInsufficient => "perception",
            ErrorType::ToolMismatch => "planning",
            ErrorType::ArgInvalid | ErrorType::CodeError => "execution",
            ErrorType::NonCommit => "termination",
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ErrorType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorType::ALL
            .into_iter()
            .find(|t| t.as_str() == s.trim())
            .ok_or_else(|| Error::UnknownErrorType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_reference_spelling() {
        for t in ErrorType::ALL {
            assert_eq!(t.as_str().parse::<ErrorType>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        assert!("argInvalid".parse::<ErrorType>().is_err());
    }
}
