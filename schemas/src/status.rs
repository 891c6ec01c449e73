//! How an execution ended: one closed set of statuses shared by the tool suite, the engine's
//! judge, the trainer's scorer and the agent loop.
//!
//! A status is stored as its snake_case name (`ok`, `tool_error`, …) in the `execution.status`,
//! `observation.status` and `rollouts.exec_status` columns, so SQL filters on the same strings
//! as before the enum existed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExecStatus {
    /// The tool answered with non-empty output.
    Ok,
    /// The tool ran and reported an error.
    ToolError,
    /// The arguments failed the tool's JSON Schema; the validator's message is the observation.
    SchemaError,
    /// The call ran out of time.
    Timeout,
    /// A sandboxed tool trapped (or exhausted its fuel or memory).
    Trap,
    /// The tool answered with nothing.
    Empty,
    /// No executor is configured for the tool: nothing was run, nothing is invented.
    NoExecutor,
    /// The policy's text held no action that parses, so nothing could run.
    Unparseable,
}

impl ExecStatus {
    pub const ALL: [ExecStatus; 8] = [
        ExecStatus::Ok,
        ExecStatus::ToolError,
        ExecStatus::SchemaError,
        ExecStatus::Timeout,
        ExecStatus::Trap,
        ExecStatus::Empty,
        ExecStatus::NoExecutor,
        ExecStatus::Unparseable,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Ok => "ok",
            ExecStatus::ToolError => "tool_error",
            ExecStatus::SchemaError => "schema_error",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Trap => "trap",
            ExecStatus::Empty => "empty",
            ExecStatus::NoExecutor => "no_executor",
            ExecStatus::Unparseable => "unparseable",
        }
    }

    pub fn is_ok(self) -> bool {
        self == ExecStatus::Ok
    }

    /// Whether the call failed in a way the agent can observe (nothing ran for `NoExecutor`,
    /// so there is nothing to observe).
    pub fn is_failure(self) -> bool {
        !matches!(self, ExecStatus::Ok | ExecStatus::NoExecutor)
    }

    /// Whether the agent sees an error (empty output is not one).
    pub fn is_error(self) -> bool {
        !matches!(self, ExecStatus::Ok | ExecStatus::Empty)
    }

    /// The execution ran out of its time or sandbox limits.
    pub fn is_limit(self) -> bool {
        matches!(self, ExecStatus::Timeout | ExecStatus::Trap)
    }
}

impl fmt::Display for ExecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An execution status name that is not one of [`ExecStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown execution status `{0}` (expected one of ok, tool_error, schema_error, timeout, trap, empty, no_executor, unparseable)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for ExecStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        ExecStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

// By hand rather than derived: serde_arrow then sees a plain string and keeps the Utf8
// columns the tables have always had.
impl Serialize for ExecStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ExecStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in ExecStatus::ALL {
            assert_eq!(s.as_str().parse::<ExecStatus>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<ExecStatus>(&json).unwrap(), s);
        }
        assert!("fine".parse::<ExecStatus>().unwrap_err().to_string().contains("`fine`"));
    }

    #[test]
    fn failure_and_error_classes() {
        assert!(!ExecStatus::Ok.is_failure() && !ExecStatus::NoExecutor.is_failure());
        assert!(ExecStatus::Empty.is_failure() && !ExecStatus::Empty.is_error());
        assert!(ExecStatus::Unparseable.is_error() && ExecStatus::SchemaError.is_error());
    }
}
