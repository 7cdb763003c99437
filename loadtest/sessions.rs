//! The `sessions` scenario: simulated tagents holding heartbeat sessions.
//!
//! The parent process splits the tagents over `--workers` child processes
//! (each far below the 20,000-file limit), which register their tagents,
//! connect them all at once (the connect storm), then heartbeat for `--hold`
//! seconds: every `--interval` seconds with ±10% jitter (steady), or back to
//! back with `--interval 0` (saturate). Tagent `n` connects from loopback
//! source address `127.1.x.y` and registers that address as its `mgmtIp`, so
//! every session has its own identity and no address outside 127/8 is used.
//!
//! Between the phases the parent samples the hub's RSS: before any session,
//! and with every session held but idle. The difference per session is the
//! headline memory figure. With `--reconnect`, sessions the hub drops are
//! reconnected at once, and the parent reports how long the hub took to show
//! all of them again (restart the hub during `--hold` to measure that).

use std::io::{BufRead, BufReader as StdBufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};
use tagent_hub::heartbeat::client::{Event, Identity, NativeClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::client::{Conn, Target};
use crate::outcomes::{Live, Outcomes};
use crate::procstat::{Watcher, sample};
use crate::report::Report;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// JSON lines, as real tagents send them.
    Compat,
    /// Framed MessagePack with challenge-response authentication.
    Native,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The hub's HTTP base URL (registration, metrics; loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8084")]
    pub url: String,
    /// The hub's heartbeat address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub heartbeat: SocketAddr,
    #[arg(long, value_enum, default_value = "native")]
    pub protocol: Proto,
    /// Simulated tagents, one session each.
    #[arg(long)]
    pub sessions: usize,
    /// Seconds between one session's heartbeats; 0 sends the next as soon as
    /// the reply is in (saturate).
    #[arg(long, default_value_t = 180.0)]
    pub interval: f64,
    /// Seconds to keep heartbeating once every session is up.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Seconds to hold every session idle before heartbeating starts (RSS is
    /// sampled at the end of it).
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Worker processes (default: one per 9,000 sessions).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Index of the first tagent (to run several generators side by side).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    #[arg(long, default_value = "load")]
    pub tenant: String,
    /// Reconnect dropped sessions at once, and report when the hub shows them all again.
    #[arg(long)]
    pub reconnect: bool,
    /// Other runners of the group (repeatable): with --reconnect, a dropped
    /// session tries the next runner in turn, as a tagent walks its
    /// `proxy.group` (loopback only).
    #[arg(long)]
    pub failover: Vec<SocketAddr>,
    /// The hub's pid: report its CPU and memory.
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

/// The loopback address tagent `n` connects from and registers as its ip.
fn source_ip(n: usize) -> Ipv4Addr {
    let k = n % SOURCES;
    Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn credential(n: usize) -> String {
    format!("load-credential-{n}")
}

impl Args {
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
    fn spawn(args: &Args, range: (usize, usize)) -> anyhow::Result<Worker> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("sessions")
            .arg("--url")
            .arg(&args.url)
            .arg("--heartbeat")
            .arg(args.heartbeat.to_string())
            .arg("--protocol")
            .arg(match args.protocol {
                Proto::Compat => "compat",
                Proto::Native => "native",
            })
            .arg("--sessions")
            .arg(args.sessions.to_string())
            .arg("--interval")
            .arg(args.interval.to_string())
            .arg("--hold")
            .arg(args.hold.to_string())
            .arg("--tenant")
            .arg(&args.tenant)
            .arg("--worker")
            .arg(format!("{}..{}", range.0, range.1));
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
            for line in StdBufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
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

    /// Wait for a line starting with `word`; returns the rest.
    fn expect(&self, word: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("a worker did not say '{word}' in time"))?;
            if let Some(rest) = line.strip_prefix(word) {
                return Ok(rest.trim().to_owned());
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

/// Sum of `tagent_hub_sessions{...}` on the hub, if it answers.
async fn hub_sessions(target: &Arc<Target>) -> Option<f64> {
    let body = crate::client::get(target, "/metrics").await.ok()?;
    let text = std::str::from_utf8(&body).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("tagent_hub_sessions{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum(),
    )
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
        return runtime.block_on(worker(args, range));
    }
    let json = args.json;
    let bound = Duration::from_secs_f64(args.hold + args.settle) + Duration::from_secs(900);
    let report = runtime.block_on(async {
        tokio::time::timeout(bound, run(args))
            .await
            .map_err(|_| anyhow::anyhow!("the run did not stop within {bound:?}"))?
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let target = Arc::new(Target::parse(&args.url)?);
    let n = args.sessions;
    let workers = args.workers.unwrap_or(n.div_ceil(PER_WORKER)).clamp(1, 64);
    let per = n.div_ceil(workers);
    let mut procs = Vec::new();
    for w in 0..workers {
        let a = args.first + w * per;
        let b = (args.first + ((w + 1) * per).min(n)).max(a + 1);
        if a >= args.first + n {
            break;
        }
        procs.push(Worker::spawn(&args, (a, b))?);
    }
    let slow = Duration::from_secs(600);
    for p in &procs {
        p.expect("registered", slow)?;
    }
    let rss_before = rss_kib(args.server_pid);
    let storm_started = Instant::now();
    for p in &mut procs {
        p.say("connect")?;
    }
    let mut established = 0usize;
    for p in &procs {
        established += p.expect("ready", slow)?.parse::<usize>().unwrap_or(0);
    }
    let storm_secs = storm_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_held = rss_kib(args.server_pid);
    let hub_view = hub_sessions(&target).await;

    let live = Arc::new(Live::default());
    let watcher = Watcher::start(args.server_pid, live.clone(), args.quiet)?;
    let started = Instant::now();
    for p in &mut procs {
        p.say("go")?;
    }
    // With --reconnect, watch the hub's own count of sessions: an outage
    // begins when it cannot be read or falls short, and ends when it shows
    // every session again.
    let mut outage: Option<Instant> = None;
    let mut back_up: Option<Instant> = None;
    let mut recovered: Option<(f64, f64)> = None;
    let mut results = Vec::new();
    let mut pending: Vec<&Worker> = procs.iter().collect();
    let hold_end = started + Duration::from_secs_f64(args.hold) + Duration::from_secs(120);
    while !pending.is_empty() {
        if args.reconnect && recovered.is_none() {
            // The outage starts when the hub stops answering, and ends when,
            // answering again, it holds every session.
            let seen = hub_sessions(&target).await;
            let now = Instant::now();
            match (seen, outage, back_up) {
                (None, None, _) => outage = Some(now),
                (Some(_), Some(_), None) => back_up = Some(now),
                _ => {}
            }
            if let (Some(s), Some(t0), Some(up)) = (seen, outage, back_up)
                && s >= established as f64
            {
                recovered = Some((
                    now.duration_since(t0).as_secs_f64(),
                    now.duration_since(up).as_secs_f64(),
                ));
            }
        }
        pending.retain(|p| match p.lines.try_recv() {
            Ok(line) => match line.strip_prefix("result ") {
                Some(json) => {
                    results.push(json.to_owned());
                    false
                }
                None => true,
            },
            Err(std::sync::mpsc::TryRecvError::Empty) => true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => false,
        });
        if Instant::now() > hold_end {
            bail!("workers did not finish within the hold time and 120 s");
        }
        tokio::time::sleep(Duration::from_millis(if args.reconnect { 50 } else { 200 })).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (server, generator_self) = watcher.finish();

    let mut outcomes = Outcomes::default();
    let mut generator_cpu = generator_self.cpu_secs;
    for r in &results {
        let v: Value = serde_json::from_str(r).context("a worker's result is not JSON")?;
        outcomes.merge(outcomes_from_json(&v));
        generator_cpu += v["cpu_secs"].as_f64().unwrap_or(0.0);
    }
    let mut generator = generator_self;
    generator.cpu_secs = generator_cpu;
    let mut params = vec![
        ("protocol", format!("{:?}", args.protocol).to_lowercase()),
        ("sessions", n.to_string()),
        ("established", established.to_string()),
        ("workers", procs.len().to_string()),
        ("interval_secs", args.interval.to_string()),
        ("hold_secs", args.hold.to_string()),
        ("connect_storm_secs", format!("{storm_secs:.2}")),
    ];
    if let Some(s) = hub_view {
        params.push(("hub_sessions_seen", format!("{s}")));
    }
    if let (Some(a), Some(b)) = (rss_before, rss_held) {
        let per = (b.saturating_sub(a) as f64 * 1024.0) / established.max(1) as f64;
        params.push(("server_rss_before_kib", a.to_string()));
        params.push(("server_rss_held_kib", b.to_string()));
        params.push(("server_bytes_per_session", format!("{per:.0}")));
    }
    if let (Some(usage), true) = (&server, outcomes.ok > 0) {
        let us = usage.cpu_secs * 1e6 / outcomes.ok as f64;
        params.push(("server_cpu_us_per_heartbeat", format!("{us:.2}")));
    }
    if args.reconnect {
        match recovered {
            Some((total, since_up)) => {
                params.push(("outage_to_all_connected_secs", format!("{total:.2}")));
                params.push(("hub_up_to_all_connected_secs", format!("{since_up:.2}")));
            }
            None => params.push((
                "recovered",
                "no (was the hub restarted during --hold?)".into(),
            )),
        }
    }
    Ok(Report {
        scenario: "sessions",
        params,
        elapsed_secs: elapsed,
        outcomes,
        server,
        server_view: None,
        generator,
        generator_threads: procs.len(),
    })
}

fn outcomes_from_json(v: &Value) -> Outcomes {
    let mut o = Outcomes {
        ok: v["ok"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    if let Some(errors) = v["errors"].as_object() {
        for (k, n) in errors {
            let k: &'static str = Box::leak(k.clone().into_boxed_str());
            o.errors.insert(k, n.as_u64().unwrap_or(0));
        }
    }
    if let Some(extra) = v["extra"].as_object() {
        for (k, n) in extra {
            let k: &'static str = Box::leak(k.clone().into_boxed_str());
            o.extra.insert(k, n.as_u64().unwrap_or(0));
        }
    }
    if let Some(h) = v["latency"].as_array() {
        for pair in h {
            if let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) {
                let _ = o.latency.record_n(value, count);
            }
        }
    }
    o
}

// ---------------------------------------------------------------- worker

/// A worker: register [a, b), connect on "connect", heartbeat on "go", print
/// "result {json}" and exit.
async fn worker(args: Args, (a, b): (usize, usize)) -> anyhow::Result<()> {
    let target = Arc::new(Target::parse(&args.url)?);
    let ids = register_all(&target, &args.tenant, a, b).await?;
    println!("registered {}", ids.len());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    wait_for(&mut stdin, "connect").await?;

    let tally = Arc::new(Tally::default());
    let go = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let args = Arc::new(args);
    let mut tasks = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let n = a + i;
        let (args, tally, go, ready) = (args.clone(), tally.clone(), go.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            session(n, id, &args, &tally, &go, ready).await
        }));
    }
    drop(ready_tx);
    let mut up = 0usize;
    while let Some(ok) = ready_rx.recv().await {
        up += ok as usize;
    }
    println!("ready {up}");
    wait_for(&mut stdin, "go").await?;
    let cpu_start = sample(None).map(|s| s.cpu_secs).unwrap_or(0.0);
    go.notify_waiters();
    let mut outcomes = Outcomes::default();
    for t in tasks {
        if let Ok(o) = t.await {
            outcomes.merge(o);
        }
    }
    let cpu = sample(None).map(|s| s.cpu_secs).unwrap_or(0.0) - cpu_start;
    let latency: Vec<[u64; 2]> = outcomes
        .latency
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect();
    let result = json!({
        "ok": outcomes.ok,
        "errors": outcomes.errors,
        "extra": outcomes.extra,
        "latency": latency,
        "cpu_secs": cpu,
        "reconnects": tally.reconnects.load(Ordering::Relaxed),
    });
    println!("result {result}");
    std::process::exit(0);
}

async fn wait_for(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    word: &str,
) -> anyhow::Result<()> {
    while let Some(line) = lines.next_line().await? {
        if line.trim() == word {
            return Ok(());
        }
    }
    bail!("the parent went away before '{word}'")
}

#[derive(Default)]
struct Tally {
    reconnects: AtomicU64,
}

/// Register tagents [a, b) over 64 connections; their ids in order.
async fn register_all(
    target: &Arc<Target>,
    tenant: &str,
    a: usize,
    b: usize,
) -> anyhow::Result<Vec<u64>> {
    let next = Arc::new(AtomicU64::new(a as u64));
    let ids = Arc::new(parking_lot::Mutex::new(vec![0u64; b - a]));
    let mut clients = Vec::new();
    for _ in 0..64.min(b - a) {
        let (target, next, ids, tenant) =
            (target.clone(), next.clone(), ids.clone(), tenant.to_owned());
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::new(target);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= b {
                    return Ok::<(), anyhow::Error>(());
                }
                let ip = source_ip(n).to_string();
                let body = json!({"tagentId":"","port":"3939","ipString":ip,"mgmtIp":ip,
                    "name":format!("load-{n}"),"user":"root","version":"1.5.4","osType":"linux",
                    "osVersion":"load","osbit":"x86_64","credential":credential(n)});
                let path = format!("/register?tenant={tenant}");
                let mut tries = 0;
                let id = loop {
                    tries += 1;
                    let reply = conn
                        .send(Method::POST, &path, Some(Bytes::from(body.to_string())))
                        .await;
                    let parsed = reply
                        .ok()
                        .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok());
                    match parsed.as_ref().and_then(|v| v["Data"]["tagentId"].as_u64()) {
                        Some(id) => break id,
                        None if tries < 50 => tokio::time::sleep(Duration::from_millis(200)).await,
                        None => bail!("cannot register tagent {n}: {parsed:?}"),
                    }
                };
                ids.lock()[n - a] = id;
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    let ids = std::mem::take(&mut *ids.lock());
    Ok(ids)
}

/// One session for tagent `n` (registered as `id`): returns what it counted.
async fn session(
    n: usize,
    id: u64,
    args: &Args,
    tally: &Tally,
    go: &tokio::sync::Notify,
    ready: tokio::sync::mpsc::UnboundedSender<bool>,
) -> Outcomes {
    let mut o = Outcomes::default();
    let live = Live::default();
    let started = go.notified();
    tokio::pin!(started);
    started.as_mut().enable();
    // The runners this tagent knows, its own first; it moves to the next
    // when its session is dropped.
    let runners: Vec<SocketAddr> = std::iter::once(args.heartbeat)
        .chain(args.failover.iter().copied())
        .collect();
    let mut runner = 0;
    let mut s = match connect(n, id, args, runners[runner]).await {
        Ok(s) => {
            let _ = ready.send(true);
            s
        }
        Err(kind) => {
            o.error(kind, &live);
            let _ = ready.send(false);
            return o;
        }
    };
    drop(ready);
    started.await;
    let hold = Duration::from_secs_f64(args.hold);
    let end = tokio::time::Instant::now() + hold;
    let interval = Duration::from_secs_f64(args.interval);
    // Spread the first heartbeats over one interval.
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rand::random::<f64>());
    loop {
        // Between heartbeats a session listens, as a real tagent does: a
        // command is answered with a heartbeat at once, and a closed
        // connection is noticed at once (and, with --reconnect, redialled).
        let mut woken: Result<(), &'static str> = Ok(());
        if !interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    next += interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
                }
                _ = tokio::time::sleep_until(end) => break,
                r = s.wait_event() => woken = r,
            }
        } else if tokio::time::Instant::now() >= end {
            break;
        }
        let t0 = Instant::now();
        let beat = match woken {
            Ok(()) => s.heartbeat().await,
            Err(e) => Err(e),
        };
        match beat {
            Ok(()) => o.ok(t0.elapsed(), &live),
            Err(kind) => {
                o.error(kind, &live);
                if !args.reconnect {
                    break;
                }
                // Redial at once, then back off (100 ms doubling to 500 ms)
                // while the hub is away, so the generator does not swamp the
                // machine it shares with the hub.
                let mut pause = Duration::from_millis(100);
                s = loop {
                    if tokio::time::Instant::now() >= end {
                        return o;
                    }
                    runner = (runner + 1) % runners.len();
                    match connect(n, id, args, runners[runner]).await {
                        Ok(s) => break s,
                        Err(_) => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(500));
                        }
                    }
                };
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                o.count("reconnects");
            }
        }
    }
    o
}

enum Session {
    Compat {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: tokio::net::tcp::OwnedWriteHalf,
        line: Vec<u8>,
        reply: String,
    },
    Native(Box<NativeClient>),
}

async fn connect_from(n: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source_ip(n)), 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connect, identify and get the first heartbeat answered.
async fn connect(n: usize, id: u64, args: &Args, to: SocketAddr) -> Result<Session, &'static str> {
    let stream = match connect_from(n, to).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err("connect_refused");
        }
        Err(_) => return Err("connect"),
    };
    let mut s = match args.protocol {
        Proto::Compat => {
            let ip = source_ip(n).to_string();
            let line = json!({"type":"monitor","tenant":args.tenant,"agentId":id,"port":3939,
                "ipString":ip,"proxyGroup":"","proxyGroupId":"1","proxyIp":to.ip().to_string(),
                "proxyPort":to.port(),"pcpu":0.3,"mem":41,"status":"working",
                "version":"1.5.4","mgmtIp":ip});
            let (r, w) = stream.into_split();
            Session::Compat {
                reader: BufReader::with_capacity(512, r),
                writer: w,
                line: format!("{line}\n").into_bytes(),
                reply: String::with_capacity(128),
            }
        }
        Proto::Native => {
            let identity = Identity {
                tenant: args.tenant.clone(),
                agent_id: id,
                ip: Some(IpAddr::V4(source_ip(n))),
                port: 3939,
                version: Some("load".into()),
            };
            match NativeClient::handshake(stream, &identity, &credential(n)).await {
                Ok(c) => Session::Native(Box::new(c)),
                Err(_) => return Err("handshake"),
            }
        }
    };
    s.heartbeat().await?;
    Ok(s)
}

impl Session {
    /// Wait for something from the hub while idle: `Ok` for a command (it
    /// is answered), `Err` when the connection ends.
    async fn wait_event(&mut self) -> Result<(), &'static str> {
        match self {
            Session::Compat { reader, reply, .. } => {
                reply.clear();
                match reader.read_line(reply).await {
                    Ok(0) | Err(_) => Err("closed"),
                    Ok(_) => Ok(()),
                }
            }
            Session::Native(c) => match c.next_event().await {
                Ok(Event::Command { id, .. }) => {
                    c.command_result(id, true, None).await.map_err(|_| "closed")
                }
                Ok(Event::Goodbye(_)) | Err(_) => Err("closed"),
            },
        }
    }

    async fn heartbeat(&mut self) -> Result<(), &'static str> {
        match self {
            Session::Compat {
                reader,
                writer,
                line,
                reply,
            } => {
                writer.write_all(line).await.map_err(|_| "write")?;
                reply.clear();
                match reader.read_line(reply).await {
                    Ok(0) => Err("closed"),
                    Ok(_) if reply.contains("\"Status\":\"OK\"") => Ok(()),
                    Ok(_) => Err("error_reply"),
                    Err(_) => Err("read"),
                }
            }
            Session::Native(c) => match c.heartbeat(Some(0.3), Some(41.0)).await {
                Ok(_) => Ok(()),
                Err(tagent_hub::heartbeat::client::ClientError::Goodbye(_)) => Err("goodbye"),
                Err(_) => Err("closed"),
            },
        }
    }
}
