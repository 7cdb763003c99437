//! The `sessions` scenario: simulated tagents (or MQTT / NATS clients)
//! holding sessions, driven from worker processes.
//!
//! The parent splits the sessions over `--workers` child processes
//! ([`crate::worker`], each far below the 20,000-file limit; the parent
//! holds each as a [`WorkerProcess`] and they speak [`crate::wire`]), which register
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
//! Session `n` connects from loopback source address `127.a.x.y` (a from 1 to 4; and
//! registers it as its `mgmtIp`), so ports never run out and no address
//! outside 127/8 is used. The parent samples the server's RSS before any
//! session and with every session held idle: the difference per session is
//! the memory figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::client::{Target, get, get_authorized};
use crate::outcomes::{Live, Outcomes};
use crate::procstat::{Watcher, sample};
use crate::progress::Progress;
use crate::report::Report;
use crate::server::Server;
use crate::session_args::{Args, Mode};
use crate::wire::ToWorker;
use crate::worker_process::WorkerProcess;

/// Most sessions one worker process holds (each is a file descriptor).
const PER_WORKER: usize = 9_000;
/// Longest any phase may take before the run gives up.
const PHASE_MAX: Duration = Duration::from_secs(600);

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

/// Run the scenario as the parent, on a single-threaded runtime: a report
/// on stdout.
pub fn main(args: Args) -> anyhow::Result<()> {
    args.validate()?;
    let runtime = crate::runtime(1)?;
    let json = args.json;
    runtime.block_on(run(args))?.report.print(json)
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
    progress.phase(if args.registers() {
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
        procs.push(WorkerProcess::spawn(&args, (a, b), live.clone())?);
    }
    for p in &procs {
        p.registered(PHASE_MAX).await?;
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
        p.tell(ToWorker::Connect)?;
    }
    let mut established = 0usize;
    let mut storm_cpu = Vec::new();
    for p in &procs {
        let (up, cpu) = p.ready(PHASE_MAX).await?;
        established += up;
        storm_cpu.push(cpu);
    }
    let storm_secs = storm_started.elapsed().as_secs_f64();
    let storm_busiest = storm_cpu.iter().fold(0.0f64, |m, c| m.max(c / storm_secs));
    let storm_generator: f64 = storm_cpu.iter().sum::<f64>() / storm_secs;

    progress.phase("settle");
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_held = rss_kib(args.server_pid);
    let hub_view = if args.registers() {
        hub_connected(&target, token.as_deref()).await
    } else {
        None
    };

    progress.phase(args.mode.name());
    let watcher = Watcher::start(args.server_pid, live.clone(), true)?;
    let started = Instant::now();
    for p in &mut procs {
        p.tell(ToWorker::Go)?;
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
            let _ = p.tell(ToWorker::Stop);
        }
    }

    let mut tallies = Vec::new();
    let hold_end = started + Duration::from_secs_f64(args.hold()) + Duration::from_secs(120);
    for p in &procs {
        let left = hold_end.saturating_duration_since(Instant::now());
        tallies.push(p.done(left).await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (server, generator_self) = watcher.finish();
    progress.finish();

    let mut outcomes = Outcomes::default();
    let mut generator_cpu = generator_self.cpu_secs;
    let mut busiest = 0.0f64;
    for t in &tallies {
        outcomes.merge(t.outcomes());
        generator_cpu += t.cpu_secs;
        busiest = busiest.max(t.cpu_secs / t.wall_secs.max(1e-3));
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
