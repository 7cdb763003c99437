//! One worker process of the `sessions` scenario: it holds the sessions of
//! simulated tagents [a, b) on a single-threaded runtime.
//!
//! It hears the parent on stdin and answers on stdout, in [`crate::wire`]
//! messages.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};
use tagent_hub::heartbeat::client::{Event, Identity, NativeClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::client::{Conn, Target};
use crate::outcomes::{Live, Outcomes};
use crate::peers::{Mqtt, Nats};
use crate::procstat::sample;
use crate::session_args::{Args, Mode, Proto};
use crate::wire::{self, FromWorker, Tally, ToWorker};

/// Loopback source addresses per second octet: 127.a.0.1 ..= 127.a.239.250.
const PER_OCTET: usize = 240 * 250;
/// Second octets used: 127.1.x.y ..= 127.4.x.y, 240,000 addresses, enough
/// for a runner group of 10 x 17,000 tagents, each with its own ip.
const SOURCES: usize = 4 * PER_OCTET;

/// The loopback address tagent `n` connects from and registers as its ip.
fn source_ip(n: usize) -> Ipv4Addr {
    let k = n % SOURCES;
    let (a, k) = (1 + k / PER_OCTET, k % PER_OCTET);
    Ipv4Addr::new(127, a as u8, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn credential(n: usize) -> String {
    format!("load-credential-{n}")
}

/// What every session of the worker shares.
struct Ctx {
    args: Args,
    live: Live,
    /// Heartbeating starts when this turns true ("go").
    go: watch::Receiver<bool>,
    /// The parent said "stop": end before `--hold`.
    stop: watch::Receiver<bool>,
}

/// Run as a worker over tagents [a, b), on a single-threaded runtime; exits
/// the process when done.
pub fn main(args: Args, range: (usize, usize)) -> anyhow::Result<()> {
    args.validate()?;
    crate::runtime(1)?.block_on(run(args, range))
}

async fn run(args: Args, (a, b): (usize, usize)) -> anyhow::Result<()> {
    let ids = if args.registers() {
        let target = Arc::new(Target::parse(&args.url)?);
        register_all(&target, &args.tenant, a, b).await?
    } else {
        vec![0; b - a]
    };
    tell_parent(&FromWorker::Registered {
        sessions: ids.len(),
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    wait_for(&mut stdin, ToWorker::Connect).await?;

    let (go_tx, go) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        args,
        live: Live::default(),
        go,
        stop,
    });
    let ticker = tokio::spawn(tick(ctx.clone()));
    let storm_cpu = cpu_secs();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut tasks = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let (ctx, ready) = (ctx.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            session(a + i, id, &ctx, ready).await
        }));
    }
    drop(ready_tx);
    let mut up = 0usize;
    while let Some(ok) = ready_rx.recv().await {
        up += ok as usize;
    }
    tell_parent(&FromWorker::Ready {
        up,
        storm_cpu_secs: cpu_secs() - storm_cpu,
    });
    wait_for(&mut stdin, ToWorker::Go).await?;
    let cpu_start = cpu_secs();
    let started = Instant::now();
    let _ = go_tx.send(true);
    tokio::spawn(async move {
        if wait_for(&mut stdin, ToWorker::Stop).await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let mut outcomes = Outcomes::default();
    for t in tasks {
        if let Ok(o) = t.await {
            outcomes.merge(o);
        }
    }
    ticker.abort();
    let cpu = cpu_secs() - cpu_start;
    let tally = Tally::new(&outcomes, cpu, started.elapsed().as_secs_f64());
    tell_parent(&FromWorker::Done(tally));
    std::process::exit(0);
}

/// One message on stdout, where the parent reads them.
fn tell_parent(message: &FromWorker) {
    println!("{}", wire::encode(message));
}

fn cpu_secs() -> f64 {
    sample(None).map(|s| s.cpu_secs).unwrap_or(0.0)
}

/// Tell the parent the running totals, twice a second.
async fn tick(ctx: Arc<Ctx>) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let l = &ctx.live;
        tell_parent(&FromWorker::Tick {
            ok: l.ok.load(Ordering::Relaxed),
            errors: l.errors.load(Ordering::Relaxed),
            up: l.up.load(Ordering::Relaxed),
        });
    }
}

/// Wait until the parent says `awaited`.
async fn wait_for(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    awaited: ToWorker,
) -> anyhow::Result<()> {
    match lines.next_line().await? {
        Some(line) => match wire::decode::<ToWorker>(&line)? {
            said if said == awaited => Ok(()),
            said => bail!("the parent said {said:?} where {awaited:?} was due"),
        },
        None => bail!("the parent went away before {awaited:?}"),
    }
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

/// Whether the parent said stop (the guard is not held past this call).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Keeps `Live::up` right: one while the session is open.
struct Up<'a>(&'a Live);

impl<'a> Up<'a> {
    fn new(live: &'a Live) -> Self {
        live.up.fetch_add(1, Ordering::Relaxed);
        Up(live)
    }
}

impl Drop for Up<'_> {
    fn drop(&mut self) {
        self.0.up.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open tagent `n`'s session to its `attempt`-th runner: its own first, then
/// each `--failover` runner in turn, as a tagent walks its `proxy.group`.
/// Tagent `n` starts its walk at failover runner `n mod len`, so a dead
/// runner's tagents spread over the others instead of all landing on the
/// first of the list (which could not hold them all under its file limit).
async fn open(
    n: usize,
    id: u64,
    ctx: &Ctx,
    attempt: &mut usize,
    o: &mut Outcomes,
) -> Result<Session, &'static str> {
    let args = &ctx.args;
    let runners = 1 + args.failover.len();
    let to = match *attempt % runners {
        0 => args.heartbeat,
        k => args.failover[(k - 1 + n) % args.failover.len()],
    };
    *attempt += 1;
    let t0 = Instant::now();
    let s = connect(n, id, args, to).await?;
    o.connected(t0.elapsed());
    Ok(s)
}

/// One session for tagent `n` (registered as `id`): returns what it counted.
async fn session(
    n: usize,
    id: u64,
    ctx: &Ctx,
    ready: tokio::sync::mpsc::UnboundedSender<bool>,
) -> Outcomes {
    let args = &ctx.args;
    let live = &ctx.live;
    let mut o = Outcomes::default();
    // Which runner the next (re)connection goes to.
    let mut attempt = 0;
    let mut s = match open(n, id, ctx, &mut attempt, &mut o).await {
        Ok(s) => {
            let _ = ready.send(true);
            s
        }
        Err(kind) => {
            o.error(kind, live);
            let _ = ready.send(false);
            return o;
        }
    };
    let mut up = Some(Up::new(live));
    drop(ready);
    let mut go = ctx.go.clone();
    let mut stop = ctx.stop.clone();
    if go.wait_for(|g| *g).await.map(|_| ()).is_err() {
        return o;
    }
    if args.hold() == 0.0 {
        // Storm: the sessions were only to be opened and held.
        return o;
    }
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(args.hold());
    let interval = Duration::from_secs_f64(args.interval());
    let churn = args.mode == Mode::Churn;
    let second = Duration::from_secs(1);
    // Spread the first heartbeats over one interval, churn draws over a second.
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rand::random::<f64>());
    let mut churn_at = tokio::time::Instant::now() + second.mul_f64(rand::random::<f64>());
    loop {
        // Between heartbeats a session listens, as a real tagent does: a
        // command is answered with a heartbeat at once, and a closed
        // connection is noticed at once (and, with reconnects, redialled).
        let mut woken: Result<bool, &'static str> = Ok(true);
        if !interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    next += interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
                }
                _ = tokio::time::sleep_until(end) => break,
                _ = async { stop.wait_for(|stopped| *stopped).await.map(|_| ()) } => break,
                _ = tokio::time::sleep_until(churn_at), if churn => {
                    churn_at += second;
                    if rand::random::<f64>() < args.churn / 100.0 {
                        // Drop the session and open it again at once.
                        drop(up.take());
                        drop(s);
                        o.count("churned");
                        // A churned session comes back to the same runner.
                        attempt -= 1;
                        match open(n, id, ctx, &mut attempt, &mut o).await {
                            Ok(again) => {
                                s = again;
                                up = Some(Up::new(live));
                                continue;
                            }
                            Err(kind) => {
                                o.error(kind, live);
                                return o;
                            }
                        }
                    }
                    continue;
                }
                r = s.wait_event() => woken = r,
            }
        } else if tokio::time::Instant::now() >= end || stopped(&stop) {
            break;
        }
        let t0 = Instant::now();
        let beat = match woken {
            Ok(true) => s.heartbeat().await,
            Ok(false) => continue,
            Err(e) => Err(e),
        };
        match beat {
            Ok(()) => o.ok(t0.elapsed(), live),
            Err(kind) => {
                o.error(kind, live);
                drop(up.take());
                if !args.reconnects() {
                    break;
                }
                // Redial at once, then back off (100 ms doubling to 500 ms)
                // while the server is away, so the generator does not swamp
                // the machine it shares with the server.
                let mut pause = Duration::from_millis(100);
                s = loop {
                    if tokio::time::Instant::now() >= end || stopped(&stop) {
                        return o;
                    }
                    match open(n, id, ctx, &mut attempt, &mut o).await {
                        Ok(s) => break s,
                        Err(_) => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(500));
                        }
                    }
                };
                up = Some(Up::new(live));
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
    Mqtt(Mqtt),
    Nats(Nats),
}

async fn connect_from(n: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source_ip(n)), 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connect, identify, and get the session acknowledged: the first heartbeat
/// answered (tagent-hub), CONNACK (MQTT), PONG after CONNECT (NATS).
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
        Proto::Mqtt => {
            // The broker drops a client silent for 1.5 keep-alives: keep
            // it well above the heartbeat interval.
            let keepalive = (args.interval() * 2.0).clamp(60.0, 65535.0) as u16;
            Session::Mqtt(Mqtt::connect(stream, &format!("load-{n}"), keepalive).await?)
        }
        Proto::Nats => Session::Nats(Nats::connect(stream).await?),
    };
    if args.protocol.registers() {
        // The session's first heartbeat answered: acknowledged (the floor
        // answers it too).
        s.heartbeat().await?;
    }
    Ok(s)
}

impl Session {
    /// Wait for something from the server while idle: `Ok(true)` for a
    /// command (answered with a heartbeat), `Ok(false)` for something
    /// already answered (a NATS server's PING), `Err` when the connection ends.
    async fn wait_event(&mut self) -> Result<bool, &'static str> {
        match self {
            Session::Compat { reader, reply, .. } => {
                reply.clear();
                match reader.read_line(reply).await {
                    Ok(0) | Err(_) => Err("closed"),
                    Ok(_) => Ok(true),
                }
            }
            Session::Native(c) => match c.next_event().await {
                Ok(Event::Command { id, .. }) => c
                    .command_result(id, true, None)
                    .await
                    .map(|_| true)
                    .map_err(|_| "closed"),
                Ok(Event::Goodbye(_)) | Err(_) => Err("closed"),
            },
            Session::Mqtt(m) => m.wait_event().await,
            Session::Nats(n) => n.wait_event().await,
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
            Session::Mqtt(m) => m.ping().await,
            Session::Nats(n) => n.ping().await,
        }
    }
}
