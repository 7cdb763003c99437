//! The `sessions` scenario: simulated tagents (or MQTT / NATS clients)
//! holding sessions, driven from worker processes.
//!
//! The parent splits the sessions over `--workers` child processes
//! ([`crate::worker`], each far below the 20,000-file limit), which register
//! their tagents (tagent-hub only), connect them all at once (the connect
//! storm: time until every session is established and acknowledged), then
//! run the mode for `--hold` seconds:
//!
//! - `steady`: a heartbeat every `--interval` seconds with ±10% jitter;
//! - `saturate`: the next heartbeat as soon as the reply is in;
//! - `storm`: nothing after the storm (memory per idle session, storm time);
//! - `churn`: steady, and each second every session drops and reconnects
//!   with probability `--churn`%;
//! - `restart`: steady with reconnects; the parent stops the hub (which it
//!   started itself, `--spawn-hub`), starts it again, and times until the
//!   hub's own admin view counts every tagent `connected` again.
//!
//! Session `n` connects from loopback source address `127.1.x.y` (and
//! registers it as its `mgmtIp`), so ports never run out and no address
//! outside 127/8 is used. The parent samples the server's RSS before any
//! session and with every session held idle: the difference per session is
//! the memory figure.

use std::io::{BufRead, BufReader as StdBufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::client::{Target, get, get_authorized};
use crate::outcomes::{Live, Outcomes};
use crate::procstat::{Watcher, sample};
use crate::progress::Progress;
use crate::report::Report;
use crate::server::Server;

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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Steady,
    Saturate,
    Storm,
    Churn,
    Restart,
}

impl Mode {
    fn name(self) -> &'static str {
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

/// Most sessions one worker process holds (each is a file descriptor).
const PER_WORKER: usize = 9_000;
/// Loopback source addresses used: 127.1.0.1 ..= 127.1.239.250.
const SOURCES: usize = 240 * 250;
/// Longest any phase may take before the run gives up.
const PHASE_MAX: Duration = Duration::from_secs(600);

/// The loopback address tagent `n` connects from and registers as its ip.
pub fn source_ip(n: usize) -> Ipv4Addr {
    let k = n % SOURCES;
    Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8)
}

pub fn credential(n: usize) -> String {
    format!("load-credential-{n}")
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

    fn validate(&self) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------- parent

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Worker {
    /// Start a worker over sessions `range`; its `tick` lines feed `live`.
    fn spawn(args: &Args, range: (usize, usize), live: Arc<Live>) -> anyhow::Result<Worker> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("sessions")
            .args(["--url", &args.url])
            .args(["--heartbeat", &args.heartbeat.to_string()])
            .args(["--protocol", args.protocol.name()])
            .args(["--mode", args.mode.name()])
            .args(["--sessions", &args.sessions.to_string()])
            .args(["--interval", &args.interval.to_string()])
            .args(["--hold", &args.hold.to_string()])
            .args(["--churn", &args.churn.to_string()])
            .args(["--tenant", &args.tenant])
            .args(["--worker", &format!("{}..{}", range.0, range.1)]);
        if args.reconnect {
            cmd.arg("--reconnect");
        }
        for a in &args.failover {
            cmd.arg("--failover").arg(a.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a worker process")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The worker's running totals; what changed goes into `live`.
            let mut last = [0u64; 3];
            for line in StdBufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("tick ") {
                    let now: Vec<u64> = rest
                        .split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect();
                    if let [ok, errors, up] = now[..] {
                        let counters = [&live.ok, &live.errors, &live.up];
                        for (i, v) in [ok, errors, up].into_iter().enumerate() {
                            // Wrapping: `up` may go down.
                            counters[i].fetch_add(v.wrapping_sub(last[i]), Ordering::Relaxed);
                            last[i] = v;
                        }
                    }
                } else if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            lines: rx,
        })
    }

    /// Wait for a line starting with `word`; returns the rest. Polls, so
    /// the runtime (and the progress line) keeps going meanwhile.
    async fn expect(&self, word: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(word) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => bail!("a worker did not say '{word}' in time ({e})"),
            }
        }
    }

    fn say(&mut self, word: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{word}")?;
        Ok(self.stdin.flush()?)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| sample(Some(p)).ok()).map(|s| s.rss_kib)
}

/// How many tagents the hub itself counts as connected: its admin API's
/// `GET /api/v1/tagents/counts` (`connected`, or `by_status.connected`), or,
/// from a hub without that API, the sum of its `tagent_hub_sessions` gauges.
/// Also says which.
async fn hub_connected(target: &Arc<Target>, token: Option<&str>) -> Option<(f64, &'static str)> {
    if let Ok(body) = get_authorized(target, "/api/v1/tagents/counts", token).await
        && let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Some(n) = v["connected"]
            .as_f64()
            .or_else(|| v["by_status"]["connected"].as_f64())
    {
        return Some((n, "admin counts"));
    }
    let body = get(target, "/metrics").await.ok()?;
    let text = std::str::from_utf8(&body).ok()?;
    let n = text
        .lines()
        .filter(|l| l.starts_with("tagent_hub_sessions{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    Some((n, "metrics tagent_hub_sessions"))
}

/// Poll the hub until it counts `n` connected; when that happened.
async fn until_connected(
    target: &Arc<Target>,
    token: Option<&str>,
    n: usize,
    within: Duration,
) -> Option<(Instant, &'static str)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some((seen, source)) = hub_connected(target, token).await
            && seen >= n as f64
        {
            return Some((Instant::now(), source));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Run the scenario: as the parent (a report on stdout) or, with
/// `--worker`, as one of its workers (on a single-threaded runtime each).
pub fn main(args: Args) -> anyhow::Result<()> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(range) = args.worker {
        return runtime.block_on(crate::worker::run(args, range));
    }
    let json = args.json;
    let out = runtime.block_on(run(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out.report.to_json())?);
    } else {
        print!("{}", out.report.table());
    }
    Ok(())
}

/// The figures `compare` puts side by side.
#[derive(Debug, Clone)]
pub struct Figures {
    pub established: usize,
    pub storm_secs: f64,
    /// The busiest worker's share of its core during the storm.
    pub storm_generator_busiest: f64,
    pub bytes_per_session: Option<f64>,
    pub heartbeats_per_sec: f64,
    pub p99_ms: f64,
    pub cpu_us_per_heartbeat: Option<f64>,
    pub server_cores: Option<f64>,
    pub generator_cores: f64,
    pub generator_saturated: bool,
    pub machine_saturated: bool,
    pub errors: u64,
    /// Errors by kind, as `kind count, …`.
    pub error_kinds: String,
}

pub struct Outcome {
    pub report: Report,
    pub figures: Figures,
}

/// The parent's run, bounded: every phase and the hold have their limit.
pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    args.validate()?;
    let bound = PHASE_MAX * 3 + Duration::from_secs_f64(args.hold + args.settle);
    tokio::time::timeout(bound, parent(args))
        .await
        .map_err(|_| anyhow::anyhow!("the run did not stop within {bound:?}"))?
}

async fn parent(mut args: Args) -> anyhow::Result<Outcome> {
    // A hub of our own, if asked: it lives (and is killed) with this run.
    let scratch;
    let mut hub = None;
    if let Some(bin) = &args.spawn_hub {
        scratch = tempfile::Builder::new().prefix("tagent-load-").tempdir()?;
        let s = Server::hub(bin, scratch.path())?;
        args.url = s.url.clone().expect("a hub has a URL");
        args.heartbeat = s.addr;
        args.server_pid = Some(s.pid());
        args.admin_token = s.admin_token.clone();
        hub = Some(s);
    }
    let target = Arc::new(Target::parse(&args.url)?);
    let token = args.admin_token.clone();
    let n = args.sessions;
    let live = Arc::new(Live::default());
    let progress = Progress::start(live.clone(), args.server_pid, Some(n as u64), args.quiet);
    progress.phase(if args.protocol.registers() {
        "register"
    } else {
        "start"
    });

    let workers = args.workers.unwrap_or(n.div_ceil(PER_WORKER)).clamp(1, 64);
    let per = n.div_ceil(workers);
    let mut procs = Vec::new();
    for w in 0..workers {
        let a = args.first + w * per;
        let b = (args.first + ((w + 1) * per).min(n)).max(a + 1);
        if a >= args.first + n {
            break;
        }
        procs.push(Worker::spawn(&args, (a, b), live.clone())?);
    }
    for p in &procs {
        p.expect("registered", PHASE_MAX).await?;
    }
    // The "before" figure gets the same quiet time as the "held" one: right
    // after the registrations the allocator is still returning their
    // garbage, and the RSS moves by megabytes.
    progress.phase("settle");
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_before = rss_kib(args.server_pid);

    progress.phase("connect");
    let storm_started = Instant::now();
    for p in &mut procs {
        p.say("connect")?;
    }
    let mut established = 0usize;
    let mut storm_cpu = Vec::new();
    for p in &procs {
        let ready = p.expect("ready", PHASE_MAX).await?;
        let mut words = ready.split_whitespace();
        established += words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        storm_cpu.push(words.next().and_then(|v| v.parse().ok()).unwrap_or(0.0));
    }
    let storm_secs = storm_started.elapsed().as_secs_f64();
    let storm_busiest = storm_cpu.iter().fold(0.0f64, |m, c| m.max(c / storm_secs));
    let storm_generator: f64 = storm_cpu.iter().sum::<f64>() / storm_secs;

    progress.phase("settle");
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_held = rss_kib(args.server_pid);
    let hub_view = if args.protocol.registers() {
        hub_connected(&target, token.as_deref()).await
    } else {
        None
    };

    progress.phase(args.mode.name());
    let watcher = Watcher::start(args.server_pid, live.clone(), true)?;
    let started = Instant::now();
    for p in &mut procs {
        p.say("go")?;
    }
    let mut restart_params = Vec::new();
    if args.mode == Mode::Restart
        && let Some(server) = hub.take()
    {
        let hold = Duration::from_secs_f64(args.hold);
        let (server, params) =
            restart(server, &target, token.as_deref(), established, hold).await?;
        hub = Some(server);
        restart_params = params;
        for p in &mut procs {
            // A worker whose hold is over has gone already.
            let _ = p.say("stop");
        }
    }

    let mut results = Vec::new();
    let hold_end = started + Duration::from_secs_f64(args.hold()) + Duration::from_secs(120);
    for p in &procs {
        let left = hold_end.saturating_duration_since(Instant::now());
        results.push(p.expect("result", left).await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (server, generator_self) = watcher.finish();
    progress.finish();

    let mut outcomes = Outcomes::default();
    let mut generator_cpu = generator_self.cpu_secs;
    let mut busiest = 0.0f64;
    for r in &results {
        let v: Value = serde_json::from_str(r).context("a worker's result is not JSON")?;
        outcomes.merge(outcomes_from_json(&v));
        let cpu = v["cpu_secs"].as_f64().unwrap_or(0.0);
        generator_cpu += cpu;
        busiest = busiest.max(cpu / v["wall_secs"].as_f64().unwrap_or(elapsed).max(1e-3));
    }
    let mut generator = generator_self;
    generator.cpu_secs = generator_cpu;

    let mut params = vec![
        ("protocol", args.protocol.name().to_owned()),
        ("mode", args.mode.name().to_owned()),
        ("sessions", n.to_string()),
        ("established", established.to_string()),
        ("workers", procs.len().to_string()),
        ("interval_secs", args.interval().to_string()),
        ("hold_secs", args.hold().to_string()),
        ("connect_storm_secs", format!("{storm_secs:.2}")),
        (
            "storm_generator",
            format!(
                "{storm_generator:.2} cores, busiest worker {storm_busiest:.2} of a core{}",
                if storm_busiest >= 0.9 {
                    " (SATURATED)"
                } else {
                    ""
                }
            ),
        ),
    ];
    if args.mode == Mode::Churn {
        params.push(("churn_percent_per_sec", args.churn.to_string()));
    }
    if let Some((s, source)) = hub_view {
        params.push(("hub_connected_seen", format!("{s} ({source})")));
    }
    let bytes_per_session = match (rss_before, rss_held) {
        (Some(a), Some(b)) => {
            let per = (b.saturating_sub(a) as f64 * 1024.0) / established.max(1) as f64;
            params.push(("server_rss_before_kib", a.to_string()));
            params.push(("server_rss_held_kib", b.to_string()));
            params.push(("server_bytes_per_session", format!("{per:.0}")));
            Some(per)
        }
        _ => None,
    };
    let cpu_us_per_heartbeat = match (&server, outcomes.ok) {
        (Some(usage), ok) if ok > 0 => {
            let us = usage.cpu_secs * 1e6 / ok as f64;
            params.push(("server_cpu_us_per_heartbeat", format!("{us:.2}")));
            Some(us)
        }
        _ => None,
    };
    params.extend(restart_params);
    let report = Report {
        scenario: "sessions",
        params,
        elapsed_secs: elapsed,
        outcomes,
        server,
        server_view: None,
        generator,
        generator_threads: procs.len(),
        generator_busiest: Some(busiest),
    };
    let figures = Figures {
        established,
        storm_secs,
        storm_generator_busiest: storm_busiest,
        bytes_per_session,
        heartbeats_per_sec: report.ok_per_sec(),
        p99_ms: report.latency_ms(0.99),
        cpu_us_per_heartbeat,
        server_cores: report.server.as_ref().map(|u| u.cores()),
        generator_cores: report.generator.cores(),
        generator_saturated: report.generator_saturated(),
        machine_saturated: report.machine_saturated(),
        errors: report.outcomes.error_total(),
        error_kinds: report
            .outcomes
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    drop(hub);
    Ok(Outcome { report, figures })
}

/// The restart mode's part: wait until the hub counts every session
/// connected, stop it (SIGTERM), start it again on the same directory and
/// ports, and time until it counts them all connected again.
async fn restart(
    mut server: Server,
    target: &Arc<Target>,
    token: Option<&str>,
    n: usize,
    hold: Duration,
) -> anyhow::Result<(Server, Vec<(&'static str, String)>)> {
    let Some((_, source)) = until_connected(target, token, n, Duration::from_secs(60)).await else {
        bail!("the hub never counted all {n} sessions connected before the restart");
    };
    // A moment of steady state before the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t_stop = Instant::now();
    let (mut server, stopped) = tokio::task::spawn_blocking(move || {
        let r = server.stop(Duration::from_secs(10));
        (server, r)
    })
    .await?;
    let stopped = stopped?;
    server.restart()?;
    let (server, listening) = tokio::task::spawn_blocking(move || {
        let r = server.wait_up(Duration::from_secs(60));
        (server, r)
    })
    .await?;
    let listening = listening?;
    let t_up = Instant::now();
    let mut params = vec![
        ("hub_view", source.to_owned()),
        ("stop_secs", format!("{:.2}", stopped.as_secs_f64())),
        (
            "start_to_listening_secs",
            format!("{:.2}", listening.as_secs_f64()),
        ),
    ];
    match until_connected(target, token, n, hold).await {
        Some((t_all, _)) => {
            params.push((
                "listening_to_all_connected_secs",
                format!("{:.2}", t_all.duration_since(t_up).as_secs_f64()),
            ));
            params.push((
                "sigterm_to_all_connected_secs",
                format!("{:.2}", t_all.duration_since(t_stop).as_secs_f64()),
            ));
        }
        None => params.push((
            "recovered",
            format!("no: not all {n} connected within --hold {hold:?}"),
        )),
    }
    Ok((server, params))
}

fn outcomes_from_json(v: &Value) -> Outcomes {
    let mut o = Outcomes {
        ok: v["ok"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    for (field, into) in [("errors", &mut o.errors), ("extra", &mut o.extra)] {
        if let Some(map) = v[field].as_object() {
            for (k, n) in map {
                let k: &'static str = Box::leak(k.clone().into_boxed_str());
                into.insert(k, n.as_u64().unwrap_or(0));
            }
        }
    }
    for (field, into) in [("latency", &mut o.latency), ("connect", &mut o.connect)] {
        if let Some(h) = v[field].as_array() {
            for pair in h {
                if let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) {
                    let _ = into.record_n(value, count);
                }
            }
        }
    }
    o
}
