//! Configuration: a TOML file, overridden by environment variables and flags
//! (see `main.rs`), with defaults that work with no file at all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

pub use crate::model::parse_host_port;
use crate::model::{Policies, Policy, Runner, RunnerGroup, RunnerGroups};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Registration, admin API and metrics.
    pub http_addr: SocketAddr,
    /// The heartbeat listener tagents hold their sessions on.
    pub heartbeat_addr: SocketAddr,
    /// Where the store and the generated keys live.
    pub data_dir: PathBuf,
    /// The heartbeat `host:port` told to tagents, when the hub is the only
    /// runner of the default group. Defaults to the heartbeat listener's
    /// address (a local interface's if it listens on all of them).
    pub advertise: Option<String>,
    /// 64 hex digits: the key credentials are sealed with. Without it the hub
    /// uses `<data_dir>/credential.key`, generating it on first start.
    pub credential_key: Option<String>,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest registration body accepted.
    pub max_body_bytes: usize,
    /// redb's page cache.
    pub store_cache_bytes: usize,
    /// `[store]`: which engine holds the registry.
    pub store: StoreConfig,
    /// Seeds the store's runner groups on first start; after that the
    /// admin API changes them.
    #[serde(rename = "runner_group")]
    pub runner_groups: Vec<RunnerGroupConfig>,
    /// Bearer tokens of the admin API. With none here nor in
    /// `TAGENT_HUB_ADMIN_TOKEN`, one is generated into `<data_dir>/admin-token`.
    #[serde(rename = "admin_token")]
    pub admin_tokens: Vec<AdminTokenConfig>,
    pub heartbeat: HeartbeatConfig,
    pub http: HttpConfig,
    pub listener: ListenerConfig,
    pub registration: RegistrationConfig,
    pub upgrade: UpgradeConfig,
}

/// `[upgrade]`: installation packages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// The largest package accepted (an upload also has `[http]
    /// body_timeout_secs` to arrive whole).
    pub max_package_bytes: u64,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            max_package_bytes: 512 * 1024 * 1024,
        }
    }
}

/// `[registration]`: what a registration needs (SPEC §6).
///
/// ```toml
/// [registration]
/// policy = "token"        # open (the default), token or approve
/// max_pending = 10000
/// [registration.tenants]  # tenants with a policy of their own
/// lab = "open"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// The policy of every tenant not listed in `tenants`.
    pub policy: Policy,
    pub tenants: HashMap<String, Policy>,
    /// The most registrations pending approval at once.
    pub max_pending: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            policy: Policy::Open,
            tenants: HashMap::new(),
            max_pending: 10_000,
        }
    }
}

impl RegistrationConfig {
    pub fn policies(&self) -> Policies {
        Policies {
            default: self.policy,
            tenants: self.tenants.clone(),
        }
    }
}

/// `[http]`: limits of the HTTP server against slow and bloated clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Most headers in one request; more gets 431.
    pub max_headers: usize,
    /// A request's head must arrive within this time, else the connection
    /// is closed (slowloris).
    pub header_timeout_secs: u64,
    /// A request's whole body must arrive within this time, else it is
    /// refused.
    pub body_timeout_secs: u64,
    /// Most HTTP connections open at once; beyond it a new one is closed at
    /// once. The heartbeat listener's default `max_sessions` leaves these
    /// descriptors free, so idle HTTP clients cannot starve sessions or the
    /// store.
    pub max_connections: usize,
    /// Most HTTP connections from one source (an IPv4 address, an IPv6 /64)
    /// outside `unlimited_networks`.
    pub max_connections_per_ip: usize,
    /// Registrations per second one source may make (0: no limit), and how
    /// many it may make at once; beyond, 429.
    pub register_rate_per_ip: u32,
    pub register_burst_per_ip: u32,
    /// Registrations per second the hub takes from all limited sources
    /// together (0: no limit), and its burst.
    pub register_rate: u32,
    pub register_burst: u32,
    /// Sources neither the per-source connection cap nor the registration
    /// rates apply to: loopback by default (the host itself); add a NAT
    /// that many tagents share.
    pub unlimited_networks: Vec<IpNet>,
    /// TLS on this port: a PEM certificate chain (leaf first) and its PEM
    /// private key; both or neither. Without them the port is plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 512,
            max_connections_per_ip: 64,
            register_rate_per_ip: 50,
            register_burst_per_ip: 500,
            register_rate: 5_000,
            register_burst: 20_000,
            unlimited_networks: vec![
                "127.0.0.0/8".parse().expect("a network"),
                "::1/128".parse().expect("a network"),
            ],
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[listener]`: the hub as a client of tagents' own listeners (SPEC §5):
/// how long it waits and how much it takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// A tagent's listener must accept the connection within this.
    pub connect_timeout_ms: u64,
    /// Each read and write on a listener connection within this.
    pub read_timeout_ms: u64,
    /// A whole operation (each of its connections) within this.
    pub operation_timeout_secs: u64,
    /// The most bytes one download (a log file) may bring.
    pub max_download_bytes: u64,
    /// The most bytes of a command's output kept (a config file, a list).
    pub max_output_bytes: usize,
    /// Operations running at once on this hub; one per tagent at most.
    pub max_operations: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            connect_timeout_ms: 3000,
            read_timeout_ms: 30_000,
            operation_timeout_secs: 120,
            max_download_bytes: 256 * 1024 * 1024,
            max_output_bytes: 4 * 1024 * 1024,
            max_operations: 64,
        }
    }
}

impl ListenerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout_ms == 0
            || self.read_timeout_ms == 0
            || self.operation_timeout_secs == 0
            || self.max_operations == 0
            || self.max_output_bytes < 1024
            || self.max_download_bytes < 1024
        {
            return Err(ConfigError::Invalid(
                "listener timeouts and max_operations must be at least 1, \
                 max_output_bytes and max_download_bytes at least 1024"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `[store]`: the embedded redb file (one hub), or a PostgreSQL database
/// shared by the hubs of a runner group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub engine: Engine,
    /// PostgreSQL connection URL (`postgres://user:pass@host:5432/db`),
    /// needed by `engine = "postgres"`. Never logged. `--database-url` /
    /// `TAGENT_HUB_DATABASE_URL` sets it and selects `postgres`.
    pub url: Option<String>,
    /// The schema of the registry's tables (created at start).
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// A hub renews its lease every third of this; when it stops renewing,
    /// another hub marks its tagents `runner-lost` once it expires.
    pub lease_secs: u64,
    /// TLS to PostgreSQL, the server's certificate verified against the CA
    /// certificates (PEM) in this file. Without it: plain TCP.
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Redb,
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            engine: Engine::Redb,
            url: None,
            schema: "tagent_hub".into(),
            pool_size: 8,
            lease_secs: 10,
            tls_ca: None,
        }
    }
}

/// `[[admin_token]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    pub token: String,
    #[serde(default)]
    pub scope: Scope,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read-only: every `GET`.
    Read,
    /// Everything: changes and commands too.
    #[default]
    Admin,
}

/// `[heartbeat]`: the session server on the heartbeat port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Most concurrent connections; beyond it new ones are closed at once.
    /// Default: the process's open-file limit less a reserve for the store,
    /// HTTP and listeners.
    pub max_sessions: Option<usize>,
    /// A session with no message for this long is closed (idle-timeout).
    pub idle_timeout_secs: u64,
    /// A connection must identify itself (first heartbeat, or native
    /// hello + proof) within this time.
    pub first_message_timeout_secs: u64,
    /// Longest JSON line; longer closes the connection.
    pub max_line_bytes: usize,
    /// Largest native frame; larger closes the connection.
    pub max_frame_bytes: usize,
    /// Accept real tagents' JSON lines.
    pub compat: bool,
    /// Only these peers may use the unauthenticated JSON-line protocol
    /// (empty: any).
    pub compat_networks: Vec<IpNet>,
    /// Accept the native framed protocol.
    pub native: bool,
    /// Reloads sent to unregistered tagents, at most per second.
    pub reload_rate_per_sec: u32,
    /// A command goes down a JSON-line session only this long after the last
    /// reply, with no heartbeat in flight (SPEC §3.2).
    pub command_quiet_ms: u64,
    /// How long a command waits for a quiet session before it is given up.
    pub command_timeout_secs: u64,
    /// Status transitions are group-committed at this interval.
    pub status_flush_ms: u64,
    // Trust on the heartbeat port (issue 13).
    /// NAT or proxy ranges whose compat connections may claim any tagent.
    /// Anywhere else a compat line must come from an ip of the tagent it
    /// names (its primary or a contained ip), or the connection is closed.
    pub compat_trusted_networks: Vec<IpNet>,
    /// A compat connection that leaves more reply bytes unread than this
    /// (a real tagent reads each reply before its next line) is closed.
    pub compat_max_unsent_bytes: usize,
    /// Most connections from one source (an IPv4 address, an IPv6 /64)
    /// outside `unlimited_networks` and `compat_trusted_networks`; beyond,
    /// a new one is closed at once.
    pub max_sessions_per_ip: usize,
    /// Sources `max_sessions_per_ip` does not apply to: loopback by
    /// default; add the NATs many tagents connect through.
    pub unlimited_networks: Vec<IpNet>,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            max_sessions: None,
            idle_timeout_secs: 300,
            first_message_timeout_secs: 10,
            max_line_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
            compat: true,
            compat_networks: Vec::new(),
            native: true,
            reload_rate_per_sec: 200,
            command_quiet_ms: 1000,
            command_timeout_secs: 15,
            status_flush_ms: 100,
            compat_trusted_networks: Vec::new(),
            compat_max_unsent_bytes: 16 * 1024,
            max_sessions_per_ip: 1024,
            unlimited_networks: vec![
                "127.0.0.0/8".parse().expect("a network"),
                "::1/128".parse().expect("a network"),
            ],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: "0.0.0.0:8084".parse().expect("valid default"),
            heartbeat_addr: "0.0.0.0:8888".parse().expect("valid default"),
            data_dir: PathBuf::from("./data"),
            advertise: None,
            credential_key: None,
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            store_cache_bytes: 64 * 1024 * 1024,
            store: StoreConfig::default(),
            runner_groups: Vec::new(),
            admin_tokens: Vec::new(),
            heartbeat: HeartbeatConfig::default(),
            http: HttpConfig::default(),
            listener: ListenerConfig::default(),
            registration: RegistrationConfig::default(),
            upgrade: UpgradeConfig::default(),
        }
    }
}

/// `[[runner_group]]` as operators write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerGroupConfig {
    pub id: u32,
    pub name: String,
    /// CIDRs, scanned in order: the first match wins.
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(rename = "runner", default)]
    pub runners: Vec<RunnerConfig>,
}

/// `[[runner_group.runner]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    pub id: u32,
    pub name: String,
    /// The runner's heartbeat address, `host:port`.
    pub heartbeat: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A TOML error as its message and position, never the text it quotes:
/// the file holds secrets (`credential_key`, tokens, the database URL), and
/// the error goes to the log.
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = start - line_start + 1;
    let key = text[line_start..]
        .split(['=', '\n'])
        .next()
        .unwrap_or("")
        .trim();
    // serde's messages quote the value ("invalid type: integer `1234`").
    if SECRET_KEYS.contains(&key) {
        format!("line {line_no}: the value of `{key}` is malformed (not shown: it is a secret)")
    } else {
        format!("line {line_no}, column {column}: {message}")
    }
}

/// The keys whose values are secrets.
const SECRET_KEYS: &[&str] = &["credential_key", "token", "url"];

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Invalid(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            e => e,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(parse_error(text, &e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Check everything that does not depend on the bound addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for tenant in self.registration.tenants.keys() {
            let ok = !tenant.is_empty()
                && tenant.len() <= 64
                && tenant
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "[registration.tenants] {tenant:?} is not a tenant name \
                     (1 to 64 of letters, digits, '_', '-' or '.'; matched exactly)"
                )));
            }
        }
        if self.registration.max_pending == 0 {
            return Err(ConfigError::Invalid(
                "registration max_pending must be at least 1".into(),
            ));
        }
        if let Some(a) = &self.advertise {
            parse_host_port(a).map_err(ConfigError::Invalid)?;
        }
        let hb = &self.heartbeat;
        if hb.idle_timeout_secs == 0 || hb.first_message_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat timeouts must be at least 1 second".into(),
            ));
        }
        if !(256..=16 * 1024 * 1024).contains(&hb.max_line_bytes)
            || !(256..=16 * 1024 * 1024).contains(&hb.max_frame_bytes)
        {
            return Err(ConfigError::Invalid(
                "heartbeat max_line_bytes and max_frame_bytes must be between 256 and 16777216"
                    .into(),
            ));
        }
        if hb.max_sessions_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat max_sessions_per_ip must be at least 1".into(),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&hb.compat_max_unsent_bytes) {
            return Err(ConfigError::Invalid(
                "heartbeat compat_max_unsent_bytes must be between 1024 and 16777216".into(),
            ));
        }
        if hb.reload_rate_per_sec == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat reload_rate_per_sec must be at least 1".into(),
            ));
        }
        if self.store.lease_secs < 3 || self.store.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "store lease_secs must be at least 3 and pool_size at least 1".into(),
            ));
        }
        let http = &self.http;
        if !(1024..=1024 * 1024).contains(&http.max_header_bytes)
            || !(8..=1024).contains(&http.max_headers)
            || http.header_timeout_secs == 0
            || http.body_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "http max_header_bytes must be 1024..=1048576, max_headers 8..=1024, \
                 header_timeout_secs and body_timeout_secs at least 1"
                    .into(),
            ));
        }
        if http.tls_cert.is_some() != http.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "http tls_cert and tls_key go together: set both, or neither".into(),
            ));
        }
        if http.max_connections < 8 || http.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "http max_connections must be at least 8 and max_connections_per_ip at least 1"
                    .into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        self.listener.validate()?;
        for t in &self.admin_tokens {
            check_token(&t.token).map_err(ConfigError::Invalid)?;
        }
        self.build_groups(("127.0.0.1".into(), 1)).map(|_| ())
    }

    /// The heartbeat address told to tagents: `advertise`, else the bound
    /// heartbeat address, with an unspecified ip replaced by a local interface's.
    pub fn advertised(&self, bound: SocketAddr) -> (String, u16) {
        if let Some(a) = &self.advertise
            && let Ok((host, port)) = parse_host_port(a)
        {
            return (host, port);
        }
        let ip = if bound.ip().is_unspecified() {
            local_ip().unwrap_or(IpAddr::from([127, 0, 0, 1]))
        } else {
            bound.ip()
        };
        (ip.to_string(), bound.port())
    }

    /// The runner groups, in configured order. With none configured: one
    /// group `default` (id 1, every IPv4 and IPv6 address) whose only runner
    /// (id 1) is this hub at `advertised`.
    pub fn build_groups(&self, advertised: (String, u16)) -> Result<RunnerGroups, ConfigError> {
        if self.runner_groups.is_empty() {
            return Ok(RunnerGroups {
                groups: vec![RunnerGroup {
                    id: 1,
                    name: "default".into(),
                    networks: vec![
                        "0.0.0.0/0".parse().expect("valid"),
                        "::/0".parse().expect("valid"),
                    ],
                    runners: vec![Runner {
                        id: 1,
                        name: "this-hub".into(),
                        host: advertised.0,
                        port: advertised.1,
                        this_hub: true,
                    }],
                }],
            });
        }
        let mut groups: Vec<RunnerGroup> = Vec::new();
        for g in &self.runner_groups {
            let mut networks: Vec<IpNet> = Vec::new();
            for n in &g.networks {
                let net: IpNet = n.trim().parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "runner group {}: '{n}' is not a CIDR network",
                        g.id
                    ))
                })?;
                networks.push(net);
            }
            let mut runners: Vec<Runner> = Vec::new();
            for r in &g.runners {
                let (host, port) = parse_host_port(&r.heartbeat).map_err(|e| {
                    ConfigError::Invalid(format!("runner {} ({}): {e}", r.id, r.name))
                })?;
                runners.push(Runner {
                    id: r.id,
                    name: r.name.clone(),
                    host,
                    port,
                    this_hub: false,
                });
            }
            groups.push(RunnerGroup {
                id: g.id,
                name: g.name.clone(),
                networks,
                runners,
            });
        }
        let groups = RunnerGroups { groups };
        groups.validate().map_err(ConfigError::Invalid)?;
        Ok(groups.sorted_runners())
    }
}

/// An admin token must be long enough not to be guessed, and printable.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.len() < 16 {
        return Err("an admin token must be at least 16 characters".into());
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("an admin token must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// The first non-loopback IPv4 address of this host, else the first IPv6.
fn local_ip() -> Option<IpAddr> {
    let ifs = if_addrs::get_if_addrs().ok()?;
    let ips: Vec<IpAddr> = ifs
        .iter()
        .filter(|i| !i.is_loopback())
        .map(|i| i.ip())
        .collect();
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| ips.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line_but_never_a_secret() {
        for text in [
            "credential_key = 0af3deadbeef\n",
            "credential_key = 12345\n",
            "[[admin_token]]\ntoken = 0af3deadbeef\n",
            "[store]\nurl = postgres://u:0af3deadbeef@h/db\n",
        ] {
            let e = Config::from_toml(text).unwrap_err().to_string();
            assert!(!e.contains("0af3deadbeef") && !e.contains("12345"), "{e}");
            assert!(e.contains("is malformed (not shown"), "{e}");
        }
        let e = Config::from_toml("\n\nmax_body_bytes = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3, column"), "{e}");
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.http_addr.port(), 8084);
        assert_eq!(c.heartbeat_addr.port(), 8888);
        let groups = c.build_groups(("10.0.0.21".into(), 8888)).unwrap();
        let g = &groups.groups[0];
        assert_eq!((g.id, g.name.as_str()), (1, "default"));
        assert_eq!(g.proxy_group(), "10.0.0.21:8888");
        assert!(groups.match_ip("192.168.1.1".parse().unwrap()).is_some());
        assert!(groups.match_ip("fd00::1".parse().unwrap()).is_some());
    }

    #[test]
    fn runner_groups_keep_file_order() {
        let c = Config::from_toml(
            r#"
            [[runner_group]]
            id = 2
            name = "dc2"
            networks = ["10.1.0.0/16"]
            [[runner_group.runner]]
            id = 9
            name = "b"
            heartbeat = "10.1.0.2:8888"
            [[runner_group.runner]]
            id = 3
            name = "a"
            heartbeat = "[fd00::3]:8888"

            [[runner_group]]
            id = 1
            name = "dc1"
            networks = ["10.0.0.0/8", "fd00::/8"]
            [[runner_group.runner]]
            id = 1
            name = "hub-a"
            heartbeat = "10.0.0.21:8888"
        "#,
        )
        .unwrap();
        let groups = c.build_groups(("x".into(), 1)).unwrap();
        assert_eq!(groups.match_ip("10.1.2.3".parse().unwrap()).unwrap().id, 2);
        assert_eq!(groups.match_ip("10.2.2.3".parse().unwrap()).unwrap().id, 1);
        assert_eq!(
            groups.get(2).unwrap().proxy_group(),
            "[fd00::3]:8888,10.1.0.2:8888"
        );
    }

    #[test]
    fn bad_groups_are_refused() {
        for bad in [
            "[[runner_group]]\nid=1\nname='a'\nnetworks=['10.0.0.0/33']",
            "[[runner_group]]\nid=1\nname='a'\nnetworks=['10.0.0.0/8','10.0.0.0/8']",
            "[[runner_group]]\nid=1\nname='a'\n[[runner_group]]\nid=1\nname='b'",
            "[[runner_group]]\nid=1\nname='a'\n[[runner_group.runner]]\nid=1\nname='r'\nheartbeat='nohost'",
            "unknown_key = 1",
        ] {
            assert!(Config::from_toml(bad).is_err(), "accepted: {bad}");
        }
    }
}
