//! The `register` scenario: simulated tagents registering over HTTP the way
//! a real one does at every start (SPEC §2.1–2.2, the Perl tagent's body).
//!
//! Simulated tagent `n` (from 0) has mgmtIp `first_ip + n` and ipString
//! `"<mgmtIp>,<mgmtIp one /8 up>"` (10.0.0.5 -> "10.0.0.5,11.0.0.5"), port
//! "3939" as a string, tagentId "" on its first registration and the id it
//! was given afterwards. Each client registers new tagents, and, with
//! probability `--reregister-fraction`, re-registers one of its own instead.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;

use crate::RunArgs;
use crate::client::{Conn, Target};
use crate::outcomes::{Live, Outcomes};
use crate::procstat::Watcher;
use crate::report::Report;
use crate::scrape::Scrape;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// The hub's HTTP base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8084")]
    pub url: String,
    /// The registration path (the long one a real tagent is configured with,
    /// or its alias `/register`).
    #[arg(
        long,
        default_value = "/autoexecrunner/public/api/rest/tagent/register"
    )]
    pub path: String,
    #[arg(long, default_value = "t")]
    pub tenant: String,
    /// mgmtIp of the first simulated tagent; the next ones count up from it.
    #[arg(long, default_value = "10.0.0.1")]
    pub first_ip: Ipv4Addr,
    /// The tagents' listen port, sent as a string as a real tagent does.
    #[arg(long, default_value_t = 3939)]
    pub port: u16,
    /// Share of requests that re-register a tagent the client registered
    /// before (with its tagentId) rather than a new one.
    #[arg(long, default_value_t = 0.0)]
    pub reregister_fraction: f64,
    /// Open a new connection for every request (a real tagent does), rather
    /// than keep one per client.
    #[arg(long)]
    pub connection_per_request: bool,
}

/// Shared by every client of the run.
struct Ctx {
    target: Arc<Target>,
    path_and_query: String,
    tenant: String,
    port: String,
    first_ip: u32,
    reregister_fraction: f64,
    connection_per_request: bool,
    count: u64,
    deadline: Instant,
    timeout: Duration,
    /// Requests handed out so far (the run stops at `count`).
    issued: AtomicU64,
    /// Simulated tagents made so far.
    tagents: AtomicU64,
    live: Arc<Live>,
}

/// A tagent this client registered, and the id it was given.
struct Sim {
    n: u64,
    id: u64,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "Data")]
    data: Option<ReplyData>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplyData {
    tagent_id: u64,
}

/// The kind of a refusal, from the start of the hub's message
/// (`RegisterError`'s texts).
fn message_kind(message: &str) -> &'static str {
    const KINDS: [(&str, &str); 9] = [
        ("invalid registration", "invalid"),
        (
            "the current primary IP is included in multiple tagents",
            "multiple_tagents",
        ),
        ("IP conflict", "ip_conflict"),
        ("no runner group", "no_runner_group"),
        (
            "ipString contains the primary IP of other tagents",
            "contains_other_primary",
        ),
        ("primary ip ", "primary_taken"),
        ("tagent ids are exhausted", "ids_exhausted"),
        ("registration not stored", "store_error"),
        ("the hub is shutting down", "shutting_down"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map_or("other_error", |(_, kind)| kind)
}

impl Ctx {
    fn ips(&self, n: u64) -> (Ipv4Addr, Ipv4Addr) {
        let ip = self.first_ip.wrapping_add(n as u32);
        (Ipv4Addr::from(ip), Ipv4Addr::from(ip.wrapping_add(1 << 24)))
    }

    /// The body the Perl tagent sends (`TagentManager.pm`, `register`).
    fn body(&self, n: u64, id: Option<u64>) -> Bytes {
        let (mgmt, nic) = self.ips(n);
        let body = serde_json::json!({
            "tenant": self.tenant,
            "tagentId": id.map_or(String::new(), |id| id.to_string()),
            "user": "root",
            "port": self.port,
            "ipString": format!("{mgmt},{nic}"),
            "mgmtIp": mgmt.to_string(),
            "name": format!("sim-{n}"),
            "version": "1.5.4",
            "osType": "linux",
            "osVersion": "CentOS Linux 7.9.2009_3.10.0-1160.el7.x86_64",
            "osbit": "x86_64",
            "credential": format!("{{ENCRYPTED}}{:032x}", mix(n)),
        });
        Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
    }
}

/// A fixed scramble of `n`: the simulated tagent's password.
fn mix(n: u64) -> u128 {
    let a = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef_cafe_f00d;
    let b = a.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((a as u128) << 64) | b as u128
}

/// Per-client randomness for the re-register choice; no need for more.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn client(ctx: Arc<Ctx>, no: u64) -> Outcomes {
    let mut out = Outcomes::default();
    let mut conn = Conn::new(ctx.target.clone());
    let mut mine: Vec<Sim> = Vec::new();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ (no + 1).wrapping_mul(0x9e37_79b9));
    loop {
        if ctx.issued.fetch_add(1, Ordering::Relaxed) >= ctx.count || Instant::now() >= ctx.deadline
        {
            break;
        }
        let again = (!mine.is_empty() && rng.unit() < ctx.reregister_fraction)
            .then(|| (rng.next() % mine.len() as u64) as usize);
        let (n, id) = match again {
            Some(i) => (mine[i].n, Some(mine[i].id)),
            None => (ctx.tagents.fetch_add(1, Ordering::Relaxed), None),
        };
        let body = ctx.body(n, id);
        let started = Instant::now();
        let sent = tokio::time::timeout(
            ctx.timeout,
            conn.send(Method::POST, &ctx.path_and_query, Some(body)),
        )
        .await;
        let latency = started.elapsed();
        if ctx.connection_per_request {
            conn.reset();
        }
        let (status, body) = match sent {
            Err(_) => {
                conn.reset();
                out.error("timeout", &ctx.live);
                continue;
            }
            Ok(Err(e)) => {
                out.error(e.kind(), &ctx.live);
                if e.kind().starts_with("connect") {
                    // The server is gone or full: do not spin through the count.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
            Ok(Ok(answer)) => answer,
        };
        let reply: Option<Reply> = serde_json::from_slice(&body).ok();
        match reply {
            Some(Reply {
                status: Some(s),
                data: Some(d),
                ..
            }) if s == "OK" => {
                out.ok(latency, &ctx.live);
                match again {
                    Some(i) => {
                        out.count("ok_reregistered");
                        if mine[i].id != d.tagent_id {
                            out.count("reregistered_id_changed");
                            mine[i].id = d.tagent_id;
                        }
                    }
                    None => {
                        out.count("ok_new");
                        mine.push(Sim { n, id: d.tagent_id });
                    }
                }
            }
            Some(Reply {
                message: Some(m), ..
            }) => out.error(message_kind(&m), &ctx.live),
            _ if !status.is_success() => out.error("http_status", &ctx.live),
            _ => out.error("bad_reply", &ctx.live),
        }
    }
    out
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let run = &args.run;
    if !(0.0..=1.0).contains(&args.reregister_fraction) {
        bail!("--reregister-fraction must be between 0 and 1");
    }
    if args.tenant.is_empty()
        || !args
            .tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        bail!("--tenant must be letters, digits, '_', '-' or '.'");
    }
    if !args.path.starts_with('/') {
        bail!("--path must start with '/'");
    }
    let target = Arc::new(Target::parse(&args.url)?);
    let live = Arc::new(Live::default());
    let ctx = Arc::new(Ctx {
        target: target.clone(),
        path_and_query: format!("{}?tenant={}", args.path, args.tenant),
        tenant: args.tenant.clone(),
        port: args.port.to_string(),
        first_ip: u32::from(args.first_ip),
        reregister_fraction: args.reregister_fraction,
        connection_per_request: args.connection_per_request,
        count: run.count,
        deadline: Instant::now() + run.duration_max(),
        timeout: run.timeout(),
        issued: AtomicU64::new(0),
        tagents: AtomicU64::new(0),
        live: live.clone(),
    });

    let before = Scrape::read(&target).await;
    let watcher = Watcher::start(run.server_pid, live, run.quiet)?;
    let started = Instant::now();
    let clients: Vec<_> = (0..run.clients as u64)
        .map(|no| tokio::spawn(client(ctx.clone(), no)))
        .collect();
    let mut outcomes = Outcomes::default();
    for c in clients {
        outcomes.merge(c.await?);
    }
    let elapsed_secs = started.elapsed().as_secs_f64();
    let (server, generator) = watcher.finish();
    let after = Scrape::read(&target).await;
    let server_view = match (before, after) {
        (Some(b), Some(a)) => Some(b.delta(&a, elapsed_secs)),
        _ => None,
    };

    let (last_mgmt, _) = ctx.ips(ctx.tagents.load(Ordering::Relaxed).saturating_sub(1));
    Ok(Report {
        scenario: "register",
        params: vec![
            ("url", format!("{}{}", args.url, ctx.path_and_query)),
            ("clients", run.clients.to_string()),
            ("count", run.count.to_string()),
            ("duration_max_s", run.duration_max.to_string()),
            ("reregister", args.reregister_fraction.to_string()),
            (
                "connections",
                if args.connection_per_request {
                    "one per request".into()
                } else {
                    "keep-alive, one per client".into()
                },
            ),
            ("mgmt_ips", format!("{} .. {last_mgmt}", args.first_ip)),
        ],
        elapsed_secs,
        outcomes,
        server,
        server_view,
        generator,
        generator_threads: run.threads,
        generator_busiest: None,
    })
}
