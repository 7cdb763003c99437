//! What the `sessions` scenario takes: the protocol, the mode and the
//! flags. The parent parses them; each worker process gets them again on
//! its command line, with `--worker A..B`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;

use crate::client::Target;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// tagent-hub: JSON lines, as real tagents send them.
    Compat,
    /// tagent-hub: framed MessagePack with challenge-response authentication.
    Native,
    /// An MQTT 3.1.1 broker: CONNECT, then PINGREQ as the heartbeat.
    Mqtt,
    /// A NATS server: CONNECT, then PING as the heartbeat.
    Nats,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Compat => "compat",
            Proto::Native => "native",
            Proto::Mqtt => "mqtt",
            Proto::Nats => "nats",
        }
    }

    /// tagent-hub's protocols need registered tagents; the peers do not.
    pub fn registers(self) -> bool {
        matches!(self, Proto::Compat | Proto::Native)
    }
}

impl Args {
    /// Whether the target wants its tagents registered (tagent-hub does;
    /// the peers and the floor do not).
    pub fn registers(&self) -> bool {
        self.protocol.registers() && !self.floor
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Steady,
    Saturate,
    Storm,
    Churn,
    Restart,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Steady => "steady",
            Mode::Saturate => "saturate",
            Mode::Storm => "storm",
            Mode::Churn => "churn",
            Mode::Restart => "restart",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// tagent-hub's HTTP base URL (registration, metrics, admin; loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8084")]
    pub url: String,
    /// Where sessions connect: the hub's heartbeat address, or the MQTT /
    /// NATS port (loopback only).
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub heartbeat: SocketAddr,
    #[arg(long, value_enum, default_value = "native")]
    pub protocol: Proto,
    #[arg(long, value_enum, default_value = "steady")]
    pub mode: Mode,
    /// Simulated tagents, one session each.
    #[arg(long)]
    pub sessions: usize,
    /// Seconds between one session's heartbeats (steady, churn, restart).
    #[arg(long, default_value_t = 180.0)]
    pub interval: f64,
    /// Seconds to run the mode once every session is up (at most; restart
    /// ends when the hub has every session back).
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Seconds to let the server settle before the storm and to hold every
    /// session idle after it (its RSS is sampled at the end of each).
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Churn: percent of the sessions that drop and reconnect each second.
    #[arg(long, default_value_t = 1.0)]
    pub churn: f64,
    /// Worker processes (default: one per 9,000 sessions).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Index of the first tagent (to run several generators side by side).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    #[arg(long, default_value = "load")]
    pub tenant: String,
    /// Reconnect dropped sessions at once (always on in churn and restart).
    #[arg(long)]
    pub reconnect: bool,
    /// Start this tagent-hub binary on free loopback ports in a temporary
    /// directory and drive it (overrides --url, --heartbeat, --server-pid).
    /// Needed by `--mode restart`, which stops and starts it.
    #[arg(long)]
    pub spawn_hub: Option<PathBuf>,
    /// Bearer token for the hub's admin API (a spawned hub gets its own).
    #[arg(long, env = "TAGENT_HUB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Other runners of the group (repeatable): with --reconnect, a dropped
    /// session tries the next runner in turn, as a tagent walks its
    /// `proxy.group` (loopback only).
    #[arg(long)]
    pub failover: Vec<SocketAddr>,
    /// The target is a `tagent-load floor` answering --protocol compat or
    /// native: nothing to register, no admin view to ask.
    #[arg(long)]
    pub floor: bool,
    /// The server's pid: report its CPU and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub quiet: bool,
    /// Internal: run as a worker over tagents [a, b).
    #[arg(long, hide = true, value_parser = parse_range)]
    pub worker: Option<(usize, usize)>,
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B")?;
    let a = a.parse().map_err(|_| "bad start")?;
    let b = b.parse().map_err(|_| "bad end")?;
    if a < b {
        Ok((a, b))
    } else {
        Err("empty range".into())
    }
}

impl Args {
    /// Seconds between heartbeats; 0 is back to back.
    pub fn interval(&self) -> f64 {
        if self.mode == Mode::Saturate {
            0.0
        } else {
            self.interval
        }
    }

    /// Seconds of the mode after the storm.
    pub fn hold(&self) -> f64 {
        if self.mode == Mode::Storm {
            0.0
        } else {
            self.hold
        }
    }

    pub fn reconnects(&self) -> bool {
        self.reconnect || matches!(self.mode, Mode::Churn | Mode::Restart)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.sessions == 0 || self.sessions > 200_000 {
            bail!("--sessions must be between 1 and 200000");
        }
        if !((0.0..=3600.0).contains(&self.hold) && (0.0..=600.0).contains(&self.settle)) {
            bail!("--hold must be 0..=3600 s and --settle 0..=600 s");
        }
        if !(0.0..=3600.0).contains(&self.interval) {
            bail!("--interval must be 0..=3600 s");
        }
        if self.mode == Mode::Churn && !(self.interval > 0.0 && self.churn > 0.0) {
            bail!("--mode churn needs --interval above 0 and --churn above 0");
        }
        if !(0.0..=100.0).contains(&self.churn) {
            bail!("--churn is a percentage, 0..=100");
        }
        // (A worker is told the mode; the parent does the restarting.)
        if self.mode == Mode::Restart
            && self.worker.is_none()
            && (self.spawn_hub.is_none() || !self.protocol.registers())
        {
            bail!(
                "--mode restart needs --spawn-hub (it stops and starts the hub) and --protocol compat or native"
            );
        }
        if !self.heartbeat.ip().is_loopback() || self.failover.iter().any(|a| !a.ip().is_loopback())
        {
            bail!("--heartbeat and --failover must be loopback addresses");
        }
        Target::parse(&self.url)?;
        Ok(())
    }
}
