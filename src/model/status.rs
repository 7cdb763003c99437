//! A tagent's connection status and why it is not connected (SPEC §3.4).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a tagent is not connected. Persisted as its name, so the names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DisconnectReason {
    NeverConnected,
    Eof,
    Reset,
    IdleTimeout,
    ProtocolError,
    AuthFailed,
    Replaced,
    Shutdown,
    Restart,
    RunnerLost,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 10] = [
        Self::NeverConnected,
        Self::Eof,
        Self::Reset,
        Self::IdleTimeout,
        Self::ProtocolError,
        Self::AuthFailed,
        Self::Replaced,
        Self::Shutdown,
        Self::Restart,
        Self::RunnerLost,
    ];

    /// The reasons a session's own end reports (the others the hub writes for
    /// tagents that have no live session: never connected, a hub's restart,
    /// its runner lost).
    /// `ALL` lists them first after `NeverConnected`, so they are `ALL[1..8]`.
    pub const SESSION_ENDS: [DisconnectReason; 7] = {
        let mut out = [Self::Eof; 7];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::ALL[i + 1];
            i += 1;
        }
        out
    };

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NeverConnected => "never-connected",
            Self::Eof => "eof",
            Self::Reset => "reset",
            Self::IdleTimeout => "idle-timeout",
            Self::ProtocolError => "protocol-error",
            Self::AuthFailed => "auth-failed",
            Self::Replaced => "replaced",
            Self::Shutdown => "shutdown",
            Self::Restart => "restart",
            Self::RunnerLost => "runner-lost",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The persisted connection status of a tagent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum Status {
    Connected,
    Disconnected(DisconnectReason),
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::Disconnected(_) => "disconnected",
        }
    }

    pub fn reason(self) -> Option<DisconnectReason> {
        match self {
            Status::Connected => None,
            Status::Disconnected(r) => Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DisconnectReason as R;

    #[test]
    fn session_ends_are_every_reason_but_the_hubs_own() {
        let hubs_own = |r: &&R| matches!(r, R::NeverConnected | R::Restart | R::RunnerLost);
        let ends: Vec<R> = R::ALL.iter().filter(|r| !hubs_own(r)).copied().collect();
        assert_eq!(ends, R::SESSION_ENDS);
    }
}
