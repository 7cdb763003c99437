//! What became of a command an operator sent a tagent (SPEC §3.2: "each
//! command gets a result for the caller: delivered, or why not").

use serde::{Deserialize, Serialize};

/// A command's outcome, as the admin API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandOutcome {
    /// Written to the session (compat), or acknowledged by the agent (native).
    Delivered,
    /// `status-check`: the tagent holds a live session.
    Connected,
    /// No live session here (nor, for a command, on another hub).
    NotConnected,
    /// The session closed before the command was delivered.
    SessionClosed,
    /// No quiet moment in the session in time, or no answer from the hub holding it.
    Timeout,
    /// The agent refused the command, or the hub holding it could not be asked.
    Failed,
    /// No tagent with this id.
    NotFound,
}

impl CommandOutcome {
    pub const ALL: [CommandOutcome; 7] = [
        Self::Delivered,
        Self::Connected,
        Self::NotConnected,
        Self::SessionClosed,
        Self::Timeout,
        Self::Failed,
        Self::NotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Connected => "connected",
            Self::NotConnected => "not-connected",
            Self::SessionClosed => "session-closed",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
            Self::NotFound => "not-found",
        }
    }

    /// The outcome named `s` (as [`CommandOutcome::as_str`] writes it).
    pub fn parse(s: &str) -> Option<CommandOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The HTTP status of a reply carrying this outcome alone.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Delivered | Self::Connected => 200,
            Self::NotFound => 404,
            Self::Timeout => 504,
            Self::Failed => 502,
            Self::NotConnected | Self::SessionClosed => 409,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for o in CommandOutcome::ALL {
            assert_eq!(CommandOutcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        assert_eq!(CommandOutcome::parse("session_closed"), None);
    }
}
