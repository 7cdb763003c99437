//! `config-bench`: one `POST /api/v1/config` setting a key on `--count`
//! fake tagents (read, change one line, upload, reload each, at most the
//! hub's `[listener] max_operations` at once), timed, with the hub's CPU
//! and memory over it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use reqwest::Method;
use serde_json::json;

use crate::fake_tagent::Setup;
use crate::fleet::Fleet;
use crate::hub_api::Hub;
use crate::hub_usage::HubUsage;

/// The longest the one batch may take.
const BATCH_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The hub's HTTP base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8084")]
    pub hub: String,
    /// An admin token of the hub.
    #[arg(long, env = "TAGENT_HUB_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Fake tagents to start and change.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Their tenant (the batch's filter).
    #[arg(long, default_value = "cfgbench")]
    pub tenant: String,
    /// The key set, KEY=VALUE (a harmless one: the fakes keep nothing).
    #[arg(long, default_value = "proxy.group=127.0.0.1:8888")]
    pub set: String,
    /// The hub's pid: its CPU seconds and RSS over the batch.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Worker threads of this process's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    crate::run_ops_bench(args.count, args.threads, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Some((key, value)) = args.set.split_once('=') else {
        bail!("--set must be KEY=VALUE");
    };
    let hub = Hub::new(&args.hub, &args.token)?;
    let t = Instant::now();
    let fleet = Fleet::start(args.count, Setup::default(), &args.tenant).await?;
    println!(
        "{} fakes listening: {:.2} s",
        args.count,
        t.elapsed().as_secs_f64()
    );
    let mut reg_usage = HubUsage::start(args.hub_pid)?;
    let secs = fleet
        .register_all(&hub, "1.5.0", Duration::from_secs(900))
        .await?;
    println!(
        "{} registered ({} at once): {secs:.2} s",
        args.count,
        crate::fleet::REGISTER_AT_ONCE
    );
    if let Some(u) = reg_usage.take() {
        println!("{}", u.finish("registration"));
    }

    let mut usage = HubUsage::start(args.hub_pid)?;
    let body = json!({"set":{key:value},"filter":{"tenant":args.tenant}});
    let started = Instant::now();
    let call = hub.call(
        Method::POST,
        "/api/v1/config",
        Some(&body),
        Some(BATCH_LIMIT),
    );
    tokio::pin!(call);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let (s, v) = loop {
        tokio::select! {
            r = &mut call => break r?,
            _ = tick.tick() => if let Some(u) = usage.as_mut() { u.tick() },
        }
    };
    let total = started.elapsed().as_secs_f64();
    if s != 200 {
        bail!("POST /api/v1/config after {total:.2} s: {s} {v}");
    }
    println!("config set {key}={value}: total {total:.2} s");
    println!("matched {} summary {}", v["matched"], v["summary"]);
    if let Some(u) = usage {
        println!("{}", u.finish("the batch"));
    }
    let reloads: usize = fleet.fakes.iter().map(|f| f.reloads()).sum();
    println!("reloads the fakes saw: {reloads}");
    let mut reasons = BTreeMap::<String, usize>::new();
    for r in v["results"].as_array().into_iter().flatten() {
        if r["result"] == "failed" {
            let step = r["steps"].as_array().and_then(|s| s.last()).cloned();
            let why = format!("{} {}", r["message"], step.unwrap_or_default());
            *reasons.entry(why).or_default() += 1;
        }
    }
    for (why, n) in reasons.iter().take(10) {
        println!("  failed: {n} x {why}");
    }
    Ok(())
}
