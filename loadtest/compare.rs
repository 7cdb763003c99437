//! `tagent-load compare`: tagent-hub side by side with what an operator
//! would otherwise run for agent liveness, an MQTT broker with keepalive
//! (mosquitto) and NATS (nats-server), on this machine, in one run.
//!
//! Beside them runs the *floor* of each of tagent-hub's protocols
//! ([`crate::floor`]: one thread, epoll, no logic, the reply bytes for the
//! heartbeat bytes), so every figure has the physical floor beside it.
//!
//! It installs the two peers from Debian's packages if they are missing,
//! then for each target in turn starts the server on loopback (config in a
//! temporary directory), runs the same two `sessions` runs against it, and
//! stops it:
//!
//! 1. `storm`: `--sessions` sessions connect at once and are held idle:
//!    connect-storm time and server bytes per idle session;
//! 2. `saturate`: `--saturate-sessions` sessions heartbeat back to back for
//!    `--saturate-secs`: maximum heartbeat rate, p99 reply latency, server
//!    CPU per heartbeat, and the generator's own CPU.
//!
//! It prints one table: every target's figures and the ratios
//! tagent-hub / peer (and / its protocol's floor), then the goals of the
//! connect-storm issue, each met or missed by how much.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::report::machine_cores;
use crate::server::{Kind, Server, find_program};
use crate::session_args::{self, Mode, Proto};
use crate::sessions::{self, Figures};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sessions held idle (memory per session, connect storm).
    #[arg(long, default_value_t = 19_000)]
    pub sessions: usize,
    /// Sessions heartbeating back to back (maximum rate, latency, CPU).
    #[arg(long, default_value_t = 200)]
    pub saturate_sessions: usize,
    #[arg(long, default_value_t = 10.0)]
    pub saturate_secs: f64,
    /// Worker processes of the saturate run.
    #[arg(long, default_value_t = 2)]
    pub saturate_workers: usize,
    /// Seconds the idle sessions are held before the server's RSS is read.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// tagent-hub protocols to run (each compared with both peers).
    #[arg(long, value_delimiter = ',', default_value = "native,compat")]
    pub hub_protocols: Vec<Proto>,
    /// The tagent-hub binary (default: `tagent-hub` beside this program).
    #[arg(long)]
    pub hub_bin: Option<PathBuf>,
    /// Leave the floor targets out.
    #[arg(long)]
    pub no_floor: bool,
    /// Do not install missing peers (fail instead).
    #[arg(long)]
    pub no_install: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub quiet: bool,
}

/// The whole comparison stops by itself past this.
const MAX_RUN: Duration = Duration::from_secs(20 * 60);
/// Files each server keeps for itself beyond one per session.
const FD_RESERVE: u64 = 200;

struct Target {
    label: String,
    kind: Kind,
    protocol: Proto,
}

struct Row {
    label: String,
    kind: Kind,
    protocol: Proto,
    idle: Figures,
    saturate: Figures,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.hub_protocols.iter().any(|p| !p.registers()) {
        bail!("--hub-protocols takes native and/or compat");
    }
    if args.sessions == 0 || args.saturate_sessions == 0 {
        bail!("--sessions and --saturate-sessions must be at least 1");
    }
    if !(args.saturate_secs > 0.0 && args.saturate_secs <= 300.0) {
        bail!("--saturate-secs must be above 0 and at most 300");
    }
    // Each server inherits this process's open-file limit and holds one
    // file per session.
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if args.sessions as u64 + FD_RESERVE > soft {
        bail!(
            "--sessions {} does not fit the open-file limit {soft} (less {FD_RESERVE} for the server itself)",
            args.sessions
        );
    }
    let hub_bin = match &args.hub_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("tagent-hub"),
    };
    if !hub_bin.is_file() {
        bail!(
            "no tagent-hub binary at {} (cargo build --release, or --hub-bin)",
            hub_bin.display()
        );
    }
    let (mosquitto, nats) = peers(args.no_install)?;
    let runtime = crate::runtime(1)?;
    let started = Instant::now();
    let load_before = loadavg();
    let rows = runtime.block_on(async {
        tokio::time::timeout(MAX_RUN, run_all(&args, &hub_bin, &mosquitto, &nats))
            .await
            .map_err(|_| anyhow::anyhow!("the comparison did not finish within {MAX_RUN:?}"))?
    })?;
    let load_after = loadavg();
    let took = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&args, &rows, &load_before, &load_after, took))?
        );
    } else {
        print!("{}", table(&args, &rows, &load_before, &load_after, took));
    }
    Ok(())
}

/// mosquitto and nats-server, installed with apt-get if missing.
fn peers(no_install: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let found = || (find_program("mosquitto"), find_program("nats-server"));
    if let (Some(m), Some(n)) = found() {
        return Ok((m, n));
    }
    if no_install {
        bail!("mosquitto or nats-server is missing (apt-get install mosquitto nats-server)");
    }
    eprintln!("installing mosquitto and nats-server (apt-get)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "mosquitto", "nats-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // A fresh machine may have no package lists yet.
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        install();
    }
    match found() {
        (Some(m), Some(n)) => Ok((m, n)),
        _ => bail!(
            "could not install mosquitto and nats-server; run: apt-get install -y mosquitto nats-server"
        ),
    }
}

async fn run_all(
    args: &Args,
    hub_bin: &Path,
    mosquitto: &Path,
    nats: &Path,
) -> anyhow::Result<Vec<Row>> {
    let mut targets: Vec<Target> = args
        .hub_protocols
        .iter()
        .map(|&p| Target {
            label: format!("tagent-hub {}", p.name()),
            kind: Kind::Hub,
            protocol: p,
        })
        .collect();
    if !args.no_floor {
        targets.extend(args.hub_protocols.iter().map(|&p| Target {
            label: format!("floor {}", p.name()),
            kind: Kind::Floor,
            protocol: p,
        }));
    }
    targets.push(Target {
        label: "mosquitto".into(),
        kind: Kind::Mosquitto,
        protocol: Proto::Mqtt,
    });
    targets.push(Target {
        label: "nats-server".into(),
        kind: Kind::Nats,
        protocol: Proto::Nats,
    });
    let mut rows = Vec::new();
    for t in targets {
        if !args.quiet {
            eprintln!("== {}", t.label);
        }
        let dir = tempfile::Builder::new()
            .prefix("tagent-compare-")
            .tempdir()?;
        let server = match t.kind {
            Kind::Hub => Server::hub(hub_bin, dir.path()),
            Kind::Mosquitto => Server::mosquitto(mosquitto, dir.path()),
            Kind::Nats => Server::nats(nats, dir.path()),
            Kind::Floor => Server::floor(t.protocol, dir.path()),
        }
        .with_context(|| format!("cannot start {}", t.kind.name()))?;
        let idle = session_args::Args {
            url: server
                .url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:1".into()),
            heartbeat: server.addr,
            protocol: t.protocol,
            mode: Mode::Storm,
            sessions: args.sessions,
            interval: 180.0,
            hold: 0.0,
            settle: args.settle,
            churn: 1.0,
            workers: None,
            first: 0,
            tenant: "load".into(),
            reconnect: false,
            failover: Vec::new(),
            spawn_hub: None,
            admin_token: server.admin_token.clone(),
            floor: t.kind == Kind::Floor,
            server_pid: Some(server.pid()),
            json: false,
            quiet: args.quiet,
            worker: None,
        };
        let saturate = session_args::Args {
            mode: Mode::Saturate,
            sessions: args.saturate_sessions,
            hold: args.saturate_secs,
            settle: 1.0,
            workers: Some(args.saturate_workers),
            // New tagents: the storm's are still closing on the hub.
            first: args.sessions,
            ..idle.clone()
        };
        let idle = sessions::run(idle).await?.figures;
        let saturate = sessions::run(saturate).await?.figures;
        drop(server);
        rows.push(Row {
            label: t.label,
            kind: t.kind,
            protocol: t.protocol,
            idle,
            saturate,
        });
    }
    Ok(rows)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

/// The compared figures: name, how to print one, and whether lower is better.
struct Metric {
    name: &'static str,
    value: fn(&Row) -> Option<f64>,
    decimals: usize,
}

const METRICS: [Metric; 5] = [
    Metric {
        name: "server bytes per idle session",
        value: |r| r.idle.bytes_per_session,
        decimals: 0,
    },
    Metric {
        name: "server CPU µs per heartbeat (at max rate)",
        value: |r| r.saturate.cpu_us_per_heartbeat,
        decimals: 2,
    },
    Metric {
        name: "max heartbeats/s",
        value: |r| Some(r.saturate.heartbeats_per_sec),
        decimals: 0,
    },
    Metric {
        name: "p99 reply latency at max rate (ms)",
        value: |r| Some(r.saturate.p99_ms),
        decimals: 2,
    },
    Metric {
        name: "connect-storm time (s)",
        value: |r| Some(r.idle.storm_secs),
        decimals: 2,
    },
];

/// (hub row, peer row) pairs for the ratio columns: each hub protocol
/// against mosquitto, nats-server and its own protocol's floor.
fn pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    let (hubs, peers): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.kind == Kind::Hub);
    hubs.iter()
        .flat_map(|h| {
            peers
                .iter()
                .filter(|p| p.kind != Kind::Floor || p.protocol == h.protocol)
                .map(move |p| (*h, *p))
        })
        .collect()
}

/// One target of the connect-storm issue, checked on one hub row.
struct Goal {
    name: &'static str,
    /// Against which row (the hub's protocol's floor, or mosquitto).
    against: Kind,
    metric: usize,
    /// The hub's figure over the other's must be at most this (or, for a
    /// rate, at least).
    bound: f64,
    at_least: bool,
}

const GOALS: [Goal; 6] = [
    Goal {
        name: "max rate ≥ 0.95 of the floor",
        against: Kind::Floor,
        metric: 2,
        bound: 0.95,
        at_least: true,
    },
    Goal {
        name: "CPU per heartbeat ≤ 1.15 of the floor",
        against: Kind::Floor,
        metric: 1,
        bound: 1.15,
        at_least: false,
    },
    Goal {
        name: "p99 ≤ 1.1 of the floor",
        against: Kind::Floor,
        metric: 3,
        bound: 1.1,
        at_least: false,
    },
    Goal {
        name: "p99 ≤ mosquitto",
        against: Kind::Mosquitto,
        metric: 3,
        bound: 1.0,
        at_least: false,
    },
    Goal {
        name: "bytes per idle session ≤ 0.8 of mosquitto",
        against: Kind::Mosquitto,
        metric: 0,
        bound: 0.8,
        at_least: false,
    },
    Goal {
        name: "connect storm ≤ mosquitto",
        against: Kind::Mosquitto,
        metric: 4,
        bound: 1.0,
        at_least: false,
    },
];

/// Each goal on each hub row: (goal, hub label, ratio, met); a goal whose
/// other row did not run is left out.
fn goals(rows: &[Row]) -> Vec<(&'static str, &str, f64, bool)> {
    let mut out = Vec::new();
    for g in &GOALS {
        for h in rows.iter().filter(|r| r.kind == Kind::Hub) {
            let other = rows.iter().find(|r| {
                r.kind == g.against && (r.kind != Kind::Floor || r.protocol == h.protocol)
            });
            if let Some(ratio) = other.and_then(|o| ratio(&METRICS[g.metric], h, o)) {
                let met = if g.at_least {
                    ratio >= g.bound
                } else {
                    ratio <= g.bound
                };
                out.push((g.name, h.label.as_str(), ratio, met));
            }
        }
    }
    out
}

fn ratio(m: &Metric, hub: &Row, peer: &Row) -> Option<f64> {
    match ((m.value)(hub), (m.value)(peer)) {
        (Some(h), Some(p)) if p > 0.0 => Some(h / p),
        _ => None,
    }
}

fn short(label: &str) -> &str {
    label
        .strip_prefix("tagent-hub ")
        .unwrap_or(label)
        .trim_end_matches("-server")
}

fn table(args: &Args, rows: &[Row], before: &str, after: &str, took: f64) -> String {
    let mut s = String::new();
    let pairs = pairs(rows);
    let _ = write!(s, "| |");
    for r in rows {
        let _ = write!(s, " {} |", r.label);
    }
    for (h, p) in &pairs {
        let _ = write!(s, " {}/{} |", short(&h.label), short(&p.label));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(rows.len() + pairs.len()));
    for m in &METRICS {
        let _ = write!(s, "| {} |", m.name);
        for r in rows {
            match (m.value)(r) {
                Some(v) => {
                    let _ = write!(s, " {} |", thousands(v, m.decimals));
                }
                None => s.push_str(" — |"),
            }
        }
        for (h, p) in &pairs {
            match ratio(m, h, p) {
                Some(v) => {
                    let _ = write!(s, " **{v:.2}** |");
                }
                None => s.push_str(" — |"),
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "\nRatios are tagent-hub / peer: below 1 is better for tagent-hub on every row but max heartbeats/s."
    );
    let goals = goals(rows);
    if !goals.is_empty() {
        let _ = writeln!(s, "\n| goal | target | ratio | met? |\n|---|---|---|---|");
        for (goal, label, ratio, met) in &goals {
            let _ = writeln!(
                s,
                "| {goal} | {label} | {ratio:.2} | {} |",
                if *met { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(
            s,
            "Every session held: {}.\n",
            if rows
                .iter()
                .filter(|r| r.kind == Kind::Hub)
                .all(|r| r.idle.established == args.sessions)
            {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    let _ = writeln!(
        s,
        "Idle: {} sessions, storm then {} s held idle. Max rate: {} sessions back to back for {} s, {} worker processes.",
        args.sessions,
        args.settle,
        args.saturate_sessions,
        args.saturate_secs,
        args.saturate_workers
    );
    for r in rows {
        let sat = &r.saturate;
        let _ = writeln!(
            s,
            "{}: held {}/{}, errors {} [{}] + {} [{}]; at max rate server {:.2} cores, generator {:.2} cores{}{}; storm generator busiest worker {:.2} of a core{}",
            r.label,
            r.idle.established,
            args.sessions,
            r.idle.errors,
            r.idle.error_kinds,
            sat.errors,
            sat.error_kinds,
            sat.server_cores.unwrap_or(0.0),
            sat.generator_cores,
            if sat.generator_saturated {
                " (GENERATOR SATURATED a core)"
            } else {
                ""
            },
            if sat.machine_saturated {
                " (machine saturated)"
            } else {
                ""
            },
            r.idle.storm_generator_busiest,
            if r.idle.storm_generator_busiest >= 0.9 {
                " (SATURATED)"
            } else {
                ""
            },
        );
    }
    let _ = writeln!(
        s,
        "Machine: {} cores, {:.1} GiB; load average before {before}, after {after}; the comparison took {took:.0} s.",
        machine_cores(),
        mem_total_gib()
    );
    s
}

fn figures_json(f: &Figures) -> Value {
    json!({
        "established": f.established,
        "storm_secs": f.storm_secs,
        "storm_generator_busiest_worker_cores": f.storm_generator_busiest,
        "bytes_per_session": f.bytes_per_session,
        "heartbeats_per_sec": f.heartbeats_per_sec,
        "p99_ms": f.p99_ms,
        "cpu_us_per_heartbeat": f.cpu_us_per_heartbeat,
        "server_cores": f.server_cores,
        "generator_cores": f.generator_cores,
        "generator_saturated": f.generator_saturated,
        "machine_saturated": f.machine_saturated,
        "errors": f.errors,
        "error_kinds": f.error_kinds,
    })
}

fn to_json(args: &Args, rows: &[Row], before: &str, after: &str, took: f64) -> Value {
    let targets: Vec<Value> = rows
        .iter()
        .map(|r| json!({"target": r.label, "idle": figures_json(&r.idle), "saturate": figures_json(&r.saturate)}))
        .collect();
    let ratios: Vec<Value> = pairs(rows)
        .iter()
        .map(|(h, p)| {
            let by: serde_json::Map<String, Value> = METRICS
                .iter()
                .map(|m| (m.name.to_owned(), json!(ratio(m, h, p))))
                .collect();
            json!({"hub": h.label, "peer": p.label, "ratios": by})
        })
        .collect();
    let goals: Vec<Value> = goals(rows)
        .into_iter()
        .map(|(goal, target, ratio, met)| json!({"goal": goal, "target": target, "ratio": ratio, "met": met}))
        .collect();
    json!({
        "goals": goals,
        "sessions": args.sessions,
        "saturate_sessions": args.saturate_sessions,
        "saturate_secs": args.saturate_secs,
        "targets": targets,
        "ratios_hub_over_peer": ratios,
        "machine": {"cores": machine_cores(), "mem_gib": mem_total_gib(),
                    "loadavg_before": before, "loadavg_after": after},
        "took_secs": took,
    })
}

/// 12345.6 -> "12,346" (with `decimals` kept).
fn thousands(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_owned(), format!(".{f}")),
        None => (text.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", int.as_str()),
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}{frac}")
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1234567.0, 0), "1,234,567");
        assert_eq!(thousands(999.0, 0), "999");
        assert_eq!(thousands(12.345, 2), "12.35");
        assert_eq!(thousands(-4321.5, 1), "-4,321.5");
    }
}
