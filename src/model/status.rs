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
    pub const SESSION_ENDS: [DisconnectReason; 7] = [
        Self::Eof,
        Self::Reset,
        Self::IdleTimeout,
        Self::ProtocolError,
        Self::AuthFailed,
        Self::Replaced,
        Self::Shutdown,
    ];

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
