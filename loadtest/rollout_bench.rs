//! `rollout-bench`: an upgrade rollout of `--count` fake tagents at
//! `--concurrency`, timed from the rollout's start to its end, with the
//! hub's CPU and memory over it.
//!
//! Each fake answers the upgrade's prepare and unpack commands with exit 0
//! (SPEC §5.5), takes the upload and the reload, and is registered again
//! with the new version after its reload, as a real tagent does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::json;

use crate::fake_tagent::Setup;
use crate::fleet::Fleet;
use crate::hub_api::{Hub, tar_of};
use crate::hub_usage::HubUsage;

const FROM: &str = "1.5.0";
const TO: &str = "1.6.0";
/// The longest a rollout may run before the bench gives up on it.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(30 * 60);
const POLL: Duration = Duration::from_millis(500);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The hub's HTTP base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8084")]
    pub hub: String,
    /// An admin token of the hub.
    #[arg(long, env = "TAGENT_HUB_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Fake tagents to start and upgrade.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// The rollout's concurrency (the hub accepts 1..=500).
    #[arg(long, default_value_t = 50)]
    pub concurrency: u32,
    /// Their tenant (the rollout's filter).
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// The hub's pid: its CPU seconds and RSS over the rollout.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Worker threads of this process's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    crate::run_ops_bench(args.count, args.threads, run(args))
}

/// The commands of an upgrade to a package with this SHA-256, exit 0.
fn upgrade_commands(sha256: &str) -> BTreeMap<String, (Vec<String>, i32)> {
    let file = format!("tagent-{TO}-{}.tar", &sha256[..12]);
    let mut c = BTreeMap::new();
    c.insert(
        r#"cd "$TAGENT_BASE" && mkdir -p tmp"#.to_owned(),
        (vec![], 0),
    );
    c.insert(
        format!(r#"cd "$TAGENT_BASE" && tar xvf "$TAGENT_BASE/tmp/{file}" bin lib tools mod"#),
        (vec!["bin/tagent".to_owned()], 0),
    );
    c
}

async fn run(args: Args) -> anyhow::Result<()> {
    let hub = Hub::new(&args.hub, &args.token)?;
    let tar = tar_of("bin/tagent", format!("tagent {TO}\n").as_bytes());
    let (sha, uploaded) = hub.ensure_package(TO, tar).await?;
    let how = if uploaded { "uploaded" } else { "kept already" };
    println!("package {TO}: {} ({how})", &sha[..12]);

    let t = Instant::now();
    let setup = Setup {
        commands: upgrade_commands(&sha),
        ..Setup::default()
    };
    let fleet = Fleet::start(args.count, setup, &args.tenant).await?;
    println!(
        "{} fakes listening: {:.2} s",
        args.count,
        t.elapsed().as_secs_f64()
    );
    let mut reg_usage = HubUsage::start(args.hub_pid)?;
    let secs = fleet
        .register_all(&hub, FROM, Duration::from_secs(600))
        .await?;
    println!(
        "{} registered (version {FROM}, {} at once): {secs:.2} s",
        args.count,
        crate::fleet::REGISTER_AT_ONCE
    );
    if let Some(u) = reg_usage.take() {
        println!("{}", u.finish("registration"));
    }

    let watcher = crate::fleet::reregister_after_reload(&fleet, &hub, TO, ROLLOUT_LIMIT);
    let mut usage = HubUsage::start(args.hub_pid)?;
    let started = Instant::now();
    let (s, v) = hub
        .call(
            Method::POST,
            "/api/v1/upgrades",
            Some(&json!({"version":TO,"filter":{"tenant":args.tenant},
                        "concurrency":args.concurrency})),
            None,
        )
        .await?;
    if s != 202 {
        bail!("POST /api/v1/upgrades: {s} {v}");
    }
    let id = v["id"]
        .as_str()
        .context("the rollout has no id")?
        .to_owned();
    println!(
        "rollout {id}: {} targets, concurrency {}",
        v["targets"], args.concurrency
    );
    let deadline = started + ROLLOUT_LIMIT;
    let last = loop {
        tokio::time::sleep(POLL).await;
        if let Some(u) = usage.as_mut() {
            u.tick();
        }
        let (s, v) = hub
            .call(Method::GET, &format!("/api/v1/upgrades/{id}"), None, None)
            .await?;
        if s != 200 {
            bail!("GET /api/v1/upgrades/{id}: {s} {v}");
        }
        if v["state"] != "running" {
            break v;
        }
        if Instant::now() >= deadline {
            bail!(
                "the rollout was still running after {ROLLOUT_LIMIT:?}: {}",
                v["upgraded"]
            );
        }
    };
    let total = started.elapsed().as_secs_f64();
    let hub_secs = match (last["created_ms"].as_u64(), last["ended_ms"].as_u64()) {
        (Some(a), Some(b)) if b >= a => format!("{:.2}", (b - a) as f64 / 1000.0),
        _ => "-".into(),
    };
    println!(
        "rollout {}: total {total:.2} s (POST to the poll that saw it end; hub's own created..ended {hub_secs} s)",
        last["state"].as_str().unwrap_or("?")
    );
    println!(
        "targets {} upgraded {} failed {} skipped {}",
        last["targets"], last["upgraded"], last["failed"], last["skipped"]
    );
    if let Some(u) = usage {
        println!("{}", u.finish("the rollout"));
    }
    // Why any failed: the first few reasons, counted.
    let mut reasons = BTreeMap::<String, usize>::new();
    for t in last["tagents"].as_array().into_iter().flatten() {
        if t["state"] != "upgraded" {
            let why = format!("{} {}", t["state"], t["reason"]);
            *reasons.entry(why).or_default() += 1;
        }
    }
    for (why, n) in reasons.iter().take(10) {
        println!("  {n} x {why}");
    }
    // Every reloaded fake has registered again by now, unless some failed.
    let mut watcher = watcher;
    match tokio::time::timeout(Duration::from_secs(5), &mut watcher).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => println!("{n} re-registrations after a reload failed"),
        _ => {
            watcher.abort();
            println!("some fakes were never reloaded (no re-registration)");
        }
    }
    Ok(())
}
