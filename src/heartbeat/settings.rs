//! The heartbeat server's settings, resolved once from [`HeartbeatConfig`].

use std::time::Duration;

use super::conn::Framing;
use super::session::ProtocolKind;
use crate::config::HeartbeatConfig;

/// Settings resolved from [`HeartbeatConfig`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_sessions: usize,
    /// A session silent this long is closed (reason: idle-timeout); see `sweeper.rs`.
    pub idle_timeout: Duration,
    pub first_message_timeout: Duration,
    pub max_line: usize,
    pub max_frame: usize,
    pub compat: bool,
    pub compat_networks: Vec<ipnet::IpNet>,
    pub native: bool,
    pub reload_rate: u32,
    pub command_quiet: Duration,
    pub command_timeout: Duration,
    pub status_flush: Duration,
    /// Peers (NAT, proxies) whose compat lines may claim any identity.
    pub compat_trusted_networks: Vec<ipnet::IpNet>,
    /// A compat connection is closed once it leaves this many reply bytes
    /// unread (see `conn.rs`); its kernel send buffer is sized to it too.
    pub compat_max_unsent: usize,
    /// Most connections from one source, and the sources exempt.
    pub max_per_source: usize,
    pub unlimited_sources: Vec<ipnet::IpNet>,
}

/// File descriptors kept back from `max_sessions` for the store, the
/// listeners and the runtime (the HTTP server's are kept besides).
const FD_RESERVE: usize = 100;

impl Settings {
    /// `http_connections`: the HTTP server's cap, whose descriptors the
    /// default `max_sessions` leaves free.
    pub fn from_config(c: &HeartbeatConfig, http_connections: usize) -> Settings {
        let max_sessions = c.max_sessions.unwrap_or_else(|| {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            (soft as usize)
                .saturating_sub(FD_RESERVE + http_connections)
                .max(16)
        });
        Settings {
            max_sessions,
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            first_message_timeout: Duration::from_secs(c.first_message_timeout_secs),
            max_line: c.max_line_bytes,
            max_frame: c.max_frame_bytes,
            compat: c.compat,
            compat_networks: c.compat_networks.clone(),
            native: c.native,
            reload_rate: c.reload_rate_per_sec,
            command_quiet: Duration::from_millis(c.command_quiet_ms),
            command_timeout: Duration::from_secs(c.command_timeout_secs),
            status_flush: Duration::from_millis(c.status_flush_ms.max(1)),
            compat_trusted_networks: c.compat_trusted_networks.clone(),
            compat_max_unsent: c.compat_max_unsent_bytes,
            max_per_source: c.max_sessions_per_ip,
            unlimited_sources: c
                .unlimited_networks
                .iter()
                .chain(&c.compat_trusted_networks)
                .copied()
                .collect(),
        }
    }

    /// How a protocol's units are cut, with their configured maximum.
    pub fn framing(&self, kind: ProtocolKind) -> Framing {
        match kind {
            ProtocolKind::Compat => Framing::Lines { max: self.max_line },
            ProtocolKind::Native => Framing::Frames {
                max: self.max_frame,
            },
        }
    }
}
