//! Heartbeat metrics, with handles resolved once so the per-heartbeat path
//! does no registry lookup. Their names and HELP texts are in
//! `crate::metrics::FAMILIES`.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::proto::CommandKind;
use super::session::ProtocolKind;
use crate::model::DisconnectReason;

pub struct HbMetrics {
    pub heartbeats_compat: Counter,
    pub heartbeats_native: Counter,
    /// Sampled: one heartbeat in [`LATENCY_SAMPLE`].
    pub latency: Histogram,
    pub sessions_compat: Gauge,
    pub sessions_native: Gauge,
    pub unregistered_heartbeats: Counter,
    /// Sessions with no task: their state waits in the session.
    pub parked: Gauge,
    pub ignored_lines: Counter,
}

/// Record the handling latency of one heartbeat in this many.
pub const LATENCY_SAMPLE: u64 = 64;

impl Default for HbMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HbMetrics {
    pub fn new() -> Self {
        HbMetrics {
            heartbeats_compat: counter!("tagent_hub_heartbeats_total", "protocol" => "compat"),
            heartbeats_native: counter!("tagent_hub_heartbeats_total", "protocol" => "native"),
            latency: histogram!("tagent_hub_heartbeat_duration_seconds"),
            sessions_compat: gauge!("tagent_hub_sessions", "protocol" => "compat"),
            sessions_native: gauge!("tagent_hub_sessions", "protocol" => "native"),
            unregistered_heartbeats: counter!("tagent_hub_unregistered_sessions_total"),
            parked: gauge!("tagent_hub_parked_sessions"),
            ignored_lines: counter!("tagent_hub_ignored_lines_total"),
        }
    }

    pub fn heartbeat(&self, p: ProtocolKind) {
        match p {
            ProtocolKind::Compat => self.heartbeats_compat.increment(1),
            ProtocolKind::Native => self.heartbeats_native.increment(1),
        }
    }

    pub fn session_opened(&self, p: ProtocolKind) {
        match p {
            ProtocolKind::Compat => self.sessions_compat.increment(1.0),
            ProtocolKind::Native => self.sessions_native.increment(1.0),
        }
    }

    pub fn session_closed(&self, p: ProtocolKind, reason: DisconnectReason) {
        match p {
            ProtocolKind::Compat => self.sessions_compat.decrement(1.0),
            ProtocolKind::Native => self.sessions_native.decrement(1.0),
        }
        counter!("tagent_hub_sessions_closed_total", "reason" => reason.as_str()).increment(1);
    }

    pub fn command(&self, kind: CommandKind, result: &'static str) {
        counter!("tagent_hub_commands_total", "command" => kind.as_str(), "result" => result)
            .increment(1);
    }

    /// A connection refused or closed for bad input, by kind.
    pub fn rejected(kind: &'static str) {
        counter!("tagent_hub_connection_errors_total", "kind" => kind).increment(1);
    }

    /// A reload sent to an unregistered session.
    pub fn reload_sent() {
        counter!("tagent_hub_reloads_sent_total").increment(1);
    }

    /// A heartbeat refused for what it claimed (see `identity.rs`).
    pub fn identity_refused(reason: &'static str) {
        counter!("tagent_hub_identity_refused_total", "reason" => reason).increment(1);
    }

    pub fn auth_failure(reason: &'static str) {
        counter!("tagent_hub_auth_failures_total", "reason" => reason).increment(1);
    }
}
