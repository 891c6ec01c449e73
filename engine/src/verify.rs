//! Verification: the corrected action of a RoT row is executed again, and the row is
//! `verified` only when that succeeds with the observation the trajectory recorded. A row whose
//! correction cannot be reproduced is kept (curators may want it) but marked, and training reads
//! verified rows by default.

use regrpo_schemas::Execution;

/// Whether re-executing the corrected action reproduced the recorded observation.
pub fn verified(recorded: Option<&str>, reexecuted: &Execution) -> bool {
    reexecuted.status.is_ok() && recorded.is_some_and(|s| s == reexecuted.text)
}

/// The observation a RoT row shows after its corrected action: the recorded one, else what the
/// re-execution gave when it succeeded; `None` when neither exists (the chat then ends at the
/// corrected action rather than show an invented observation).
pub fn observation<'a>(recorded: Option<&'a str>, reexecuted: &'a Execution) -> Option<&'a str> {
    recorded.or(reexecuted.status.is_ok().then_some(reexecuted.text.as_str()))
}
