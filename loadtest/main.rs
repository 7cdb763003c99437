//! tagent-load: a load driver for tagent-hub, over loopback only.
//!
//! Every scenario runs a fixed number of concurrent clients, stops by itself
//! once it has sent `--count` requests or `--duration-max` seconds have
//! passed, and prints one report (a table, or JSON with `--json`).
//!
//! - [`client`]: a keep-alive HTTP/1 connection (hyper) to a loopback target.
//! - [`outcomes`]: what each client counts: OKs, errors by kind, latencies.
//! - [`procstat`]: CPU seconds and RSS of a process, from `/proc`.
//! - [`report`]: the table and the JSON.
//! - [`scrape`]: the hub's `/metrics` before and after (commits, batch sizes).
//! - [`register`]: the `register` scenario (`POST /register`, SPEC §2).
//! - [`sessions`]: sessions over worker processes ([`worker`]) in tagent-hub's
//!   protocols (SPEC §3) or the peers' keepalive ([`peers`]: MQTT, NATS):
//!   steady, saturate, connect storm, churn, hub restart. Its settings are
//!   [`session_args`]; the parent holds each worker as a [`worker_process`],
//!   and the two speak the messages of [`wire`].
//! - [`server`]: servers it starts itself (tagent-hub, mosquitto, nats-server).
//! - [`compare`]: tagent-hub side by side with mosquitto and nats-server,
//!   and with the [`floor`]: the least any server can do per heartbeat.
//! - [`progress`]: the live progress line (indicatif).
//! - [`rollout_bench`] and [`config_bench`]: operations over tagents'
//!   listeners (an upgrade rollout, a config batch) against a [`fleet`] of
//!   the tests' fake tagents ([`fake_tagent`]) in this process, through the
//!   hub's API ([`hub_api`]), with its CPU and memory ([`hub_usage`]); each
//!   raises the open-file limit first ([`nofile`]).
//!
//! A new scenario (heartbeats, say) is one more module beside `register`
//! with its own `Args` (flattening [`RunArgs`]) and one more [`Scenario`]
//! variant; it returns a [`report::Report`] and gets the rest for free.

mod client;
mod compare;
mod config_bench;
#[path = "../tests/fake_tagent/mod.rs"]
mod fake_tagent;
mod fleet;
mod floor;
mod hub_api;
mod hub_usage;
mod nofile;
mod outcomes;
mod peers;
mod proc_status;
mod procstat;
mod progress;
mod register;
mod report;
mod rollout_bench;
mod scrape;
mod server;
mod session_args;
mod sessions;
mod wire;
mod worker;
mod worker_process;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Drive load at a tagent-hub on this machine (127.0.0.0/8 only).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Simulated tagents registering over HTTP, as a real tagent does at start.
    Register(register::Args),
    /// Simulated tagents holding sessions: tagent-hub's protocols, or MQTT /
    /// NATS keepalive against a peer.
    Sessions(session_args::Args),
    /// tagent-hub, mosquitto and nats-server under the same load, one table.
    Compare(compare::Args),
    /// A minimal responder (one thread, epoll, no logic) answering one of
    /// tagent-hub's protocols: the physical floor `compare` measures against.
    Floor(floor::Args),
    /// An upgrade rollout to fake tagent listeners in this process, timed,
    /// with the hub's CPU and memory.
    RolloutBench(rollout_bench::Args),
    /// One config-set batch over fake tagent listeners in this process,
    /// timed, with the hub's CPU and memory.
    ConfigBench(config_bench::Args),
}

/// What every scenario takes: how much load, for how long, what to watch.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Requests to send in all; the run stops when they are sent and answered.
    #[arg(long)]
    pub count: u64,
    /// Stop sending after this many seconds even if --count is not reached.
    #[arg(long, default_value_t = 60.0)]
    pub duration_max: f64,
    /// Give up on one request after this many seconds (a tagent waits 15).
    #[arg(long, default_value_t = 15.0)]
    pub timeout: f64,
    /// The server's pid: report its CPU seconds and RSS over the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Worker threads of the generator's runtime (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Most clients: each holds a socket, and a process may hold 20,000 files.
const MAX_CLIENTS: usize = 10_000;
/// Longest run accepted, so that no run is unbounded by mistake.
const MAX_DURATION_SECS: f64 = 3600.0;

impl RunArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            bail!("--clients must be between 1 and {MAX_CLIENTS}");
        }
        if self.count == 0 {
            bail!("--count must be at least 1");
        }
        if !(self.duration_max > 0.0 && self.duration_max <= MAX_DURATION_SECS) {
            bail!("--duration-max must be above 0 and at most {MAX_DURATION_SECS} seconds");
        }
        if !(self.timeout > 0.0 && self.timeout <= 120.0) {
            bail!("--timeout must be above 0 and at most 120 seconds");
        }
        if self.threads == 0 || self.threads > 64 {
            bail!("--threads must be between 1 and 64");
        }
        Ok(())
    }

    pub fn duration_max(&self) -> Duration {
        Duration::from_secs_f64(self.duration_max)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

/// A runtime of `threads` worker threads; 1 is a single-threaded runtime.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")
}

/// The operation benches' runtime: multi-threaded (the fakes answer while
/// the bench polls), at most 16 threads.
/// Run an operations bench over `fakes` fake listeners: the open-file
/// limit raised for them, `run` on a runtime of `threads` workers.
fn run_ops_bench(
    fakes: usize,
    threads: usize,
    run: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if threads == 0 || threads > 16 {
        bail!("--threads must be between 1 and 16");
    }
    nofile::raise_for(fakes as u64 + 1000)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let r = runtime.block_on(run);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    r
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let run = match cli.scenario {
        Scenario::Register(ref a) => a.run.clone(),
        Scenario::Sessions(args) => {
            return match args.worker {
                Some(range) => worker::main(args, range),
                None => sessions::main(args),
            };
        }
        Scenario::Compare(args) => return compare::main(args),
        Scenario::Floor(args) => return floor::main(args),
        Scenario::RolloutBench(args) => return rollout_bench::main(args),
        Scenario::ConfigBench(args) => return config_bench::main(args),
    };
    run.validate()?;
    let runtime = runtime(run.threads)?;
    // A hard stop past every bound the scenario keeps itself.
    let hard_stop = run.duration_max() + run.timeout() + Duration::from_secs(10);
    let report = runtime.block_on(async {
        let work = async {
            match cli.scenario {
                Scenario::Register(args) => register::run(args).await,
                Scenario::Sessions(_)
                | Scenario::Compare(_)
                | Scenario::Floor(_)
                | Scenario::RolloutBench(_)
                | Scenario::ConfigBench(_) => {
                    unreachable!("handled above")
                }
            }
        };
        match tokio::time::timeout(hard_stop, work).await {
            Ok(r) => r,
            Err(_) => bail!("the run did not stop within {hard_stop:?}"),
        }
    })?;
    // Clients still blocked on a dead connection are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report.print(run.json)
}
