//! The registry's data model: tagents, their connection status, and runner groups.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::intern::Sym;

/// A tagent's id: positive, below 2^53 so that every JSON parser keeps it exact.
/// Ids are handed out densely from 1, which lets the index keep records in a `Vec`.
pub type TagentId = u64;

/// The largest id the hub hands out (the index addresses records by `u32`).
pub const MAX_TAGENT_ID: TagentId = u32::MAX as TagentId;

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

    pub fn as_str(self) -> &'static str {
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

/// One registered tagent as the index holds it. Repeated strings are interned
/// ([`Sym`]); the credential is not here at all (it lives encrypted in the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Tagent {
    pub id: TagentId,
    pub tenant: Sym,
    pub port: u16,
    /// The primary ip: `mgmtIp`, or the peer address of the registration.
    pub ip: IpAddr,
    /// The contained ips (the host's NICs, from `ipString`), deduplicated, in order.
    pub ips: Box<[IpAddr]>,
    pub name: Box<str>,
    pub user: Sym,
    pub version: Sym,
    pub os_type: Sym,
    pub os_version: Sym,
    pub osbit: Sym,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub status: Status,
    pub runner_group: u32,
    /// The runner that last held its heartbeat session; none until the first one.
    pub runner: Option<u32>,
    /// Unix milliseconds.
    pub first_registered: u64,
    pub last_registered: u64,
    pub last_status_change: u64,
}

impl Tagent {
    /// The distinct ips this tagent answers for: the primary first, then the
    /// contained ones that differ from it. `pos` 0 is the primary, `i + 1` is `ips[i]`.
    pub fn all_ips(&self) -> impl Iterator<Item = (u16, IpAddr)> + '_ {
        std::iter::once((0u16, self.ip)).chain(
            self.ips
                .iter()
                .enumerate()
                .filter(move |(_, ip)| **ip != self.ip)
                .map(|(i, ip)| ((i + 1) as u16, *ip)),
        )
    }

    /// The ip at `pos`, as numbered by [`Tagent::all_ips`].
    pub fn ip_at(&self, pos: u16) -> Option<IpAddr> {
        match pos {
            0 => Some(self.ip),
            n => self.ips.get(n as usize - 1).copied(),
        }
    }

    /// Whether `ip` is the primary ip or one of the contained ones.
    pub fn answers_for(&self, ip: IpAddr) -> bool {
        self.ip == ip || self.ips.contains(&ip)
    }
}

/// The name of the account of an (ip, port): `<ip>_<port>_tagent`.
pub fn account_name(ip: IpAddr, port: u16) -> String {
    format!("{ip}_{port}_tagent")
}

/// A runner: a heartbeat address tagents are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runner {
    pub id: u32,
    pub name: String,
    /// The heartbeat host (ip or name) and port, as given to tagents.
    pub host: String,
    pub port: u16,
    /// The address is whatever this hub advertises (the built-in default
    /// group's runner): stored without an address, resolved at each start.
    pub this_hub: bool,
}

impl Runner {
    /// `host:port` as a tagent writes it into `proxy.group`.
    /// An IPv6 host is bracketed (`[fd00::1]:8888`).
    pub fn heartbeat(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// `host:port`, an IPv6 host bracketed (`[fd00::1]:8888`).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A runner group: ordered networks (first match wins) and its runners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerGroup {
    pub id: u32,
    pub name: String,
    pub networks: Vec<IpNet>,
    /// Ordered by runner id.
    pub runners: Vec<Runner>,
}

impl RunnerGroup {
    /// The runner list as the tagent's `proxy.group` holds it: `ip:port,ip:port`, by runner id.
    pub fn proxy_group(&self) -> String {
        self.runners
            .iter()
            .map(Runner::heartbeat)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// All runner groups, in configured order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerGroups {
    pub groups: Vec<RunnerGroup>,
}

impl RunnerGroups {
    /// Rule 4: scan every group's networks in order; the first network that
    /// contains `ip` and whose group has a runner wins.
    pub fn match_ip(&self, ip: IpAddr) -> Option<&RunnerGroup> {
        self.groups
            .iter()
            .flat_map(|g| g.networks.iter().map(move |n| (g, n)))
            .find(|(g, n)| !g.runners.is_empty() && n.contains(&ip))
            .map(|(g, _)| g)
    }

    pub fn get(&self, id: u32) -> Option<&RunnerGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// Each group's runners in id order, as `proxy.group` lists them.
    pub fn sorted_runners(mut self) -> Self {
        for g in &mut self.groups {
            g.runners.sort_by_key(|r| r.id);
        }
        self
    }

    /// Check what the rules rely on: ids unique, a network listed once per
    /// group (overlap between groups is allowed: the first match wins), a
    /// runner listed once per group and one address per runner id.
    pub fn validate(&self) -> Result<(), String> {
        for (i, g) in self.groups.iter().enumerate() {
            if g.id == 0 {
                return Err("runner group ids start at 1".into());
            }
            if g.name.trim().is_empty() {
                return Err(format!("runner group {} has no name", g.id));
            }
            if self.groups[..i].iter().any(|x| x.id == g.id) {
                return Err(format!("runner group id {} is used twice", g.id));
            }
            for (j, n) in g.networks.iter().enumerate() {
                if g.networks[..j].contains(n) {
                    return Err(format!(
                        "runner group {}: network {n} is listed twice",
                        g.id
                    ));
                }
            }
            for (j, r) in g.runners.iter().enumerate() {
                if r.id == 0 {
                    return Err(format!("runner group {}: runner ids start at 1", g.id));
                }
                if g.runners[..j].iter().any(|x| x.id == r.id) {
                    return Err(format!(
                        "runner group {}: runner id {} is listed twice",
                        g.id, r.id
                    ));
                }
                let elsewhere = self.groups[..i]
                    .iter()
                    .flat_map(|x| &x.runners)
                    .any(|x| x.id == r.id && x.heartbeat() != r.heartbeat());
                if elsewhere {
                    return Err(format!("runner id {} names two addresses", r.id));
                }
            }
        }
        Ok(())
    }
}

/// `host:port` or `[v6]:port`, with a port from 1 to 65535.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ',') {
        return Err(format!("'{s}' has no usable host"));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "'{s}' is not host:port (write IPv6 as [addr]:port)"
        ));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{s}' has no port between 1 and 65535"))?;
    Ok((host.to_owned(), port))
}

/// Unix time in milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
