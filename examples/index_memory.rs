//! Memory and start time of the registry at 1,000,000 tagents (target (b) of
//! BENCHMARKS.md): the index and records, rebuilt from redb by `Registry::open`.
//!
//! `cargo run --release --example index_memory -- --dir /tmp/idx-1m`
//!
//! 1. Unless `DIR/registry.redb` already holds `--tagents` tagents, build it
//!    directly through `RedbStore::commit` in large batches: tagent `i` has primary
//!    ip `10.0.0.1 + i - 1` and contains that and the same address one /8 up,
//!    with an account (sealed credential) for each of the two.
//! 2. Re-run itself (`open`) so the measurement starts in a fresh process:
//!    RSS after `RedbStore::open`, then `Registry::open` timed, RSS after it, and
//!    the peak RSS. Prints a table, or JSON with `--json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tagent_hub::config::Config;
use tagent_hub::model::{DisconnectReason, Status};
use tagent_hub::registry::Registry;
use tagent_hub::store::{
    AccountOp, AccountPut, CredentialCipher, RedbStore, StoredTagent, WriteBatch,
};

#[path = "../benches/common/fixtures.rs"]
mod fixtures;
/// A fixed key: the store is a throwaway.
#[path = "../loadtest/proc_status.rs"]
mod proc_status;
use fixtures::{PORT, host, primary, secondary};

const KEY: &str = "6b6579206f6620746865206d656173757265206f6620696e646578206d656d21";
const BATCH: u64 = 50_000;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    step: Option<Step>,
    /// Directory of the store (made if missing).
    #[arg(long, global = true, default_value = "/tmp/tagent-hub-index-memory")]
    dir: PathBuf,
    #[arg(long, global = true, default_value_t = 1_000_000)]
    tagents: u64,
    /// redb's page cache (the hub's default: `store_cache_bytes`).
    #[arg(long, global = true)]
    store_cache_mib: Option<usize>,
    /// Print the measurement as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Step {
    /// Only build the store.
    Build,
    /// Only measure (in this process) opening the registry on the store.
    Open,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.step {
        Some(Step::Build) => build(&cli.dir, cli.tagents),
        Some(Step::Open) => measure(&cli.dir, cli.tagents, cli.store_cache_mib, cli.json),
        None => {
            build(&cli.dir, cli.tagents)?;
            let mut child = Command::new(std::env::current_exe()?);
            child.arg("open").arg("--dir").arg(&cli.dir);
            child.arg("--tagents").arg(cli.tagents.to_string());
            if let Some(m) = cli.store_cache_mib {
                child.arg("--store-cache-mib").arg(m.to_string());
            }
            if cli.json {
                child.arg("--json");
            }
            let status = child.status().context("cannot run the measurement")?;
            if !status.success() {
                bail!("the measurement failed: {status}");
            }
            Ok(())
        }
    }
}

fn open_store(dir: &Path, cache_mib: Option<usize>) -> anyhow::Result<RedbStore> {
    let cache = cache_mib.map_or(Config::default().store_cache_bytes, |m| m << 20);
    Ok(RedbStore::open(
        dir,
        CredentialCipher::from_hex(KEY)?,
        cache,
    )?)
}

fn tagent(i: u64, now: u64) -> StoredTagent {
    StoredTagent {
        id: i,
        tenant: "t".into(),
        port: PORT,
        ip: primary(i),
        ips: [primary(i), secondary(i)].into(),
        name: format!("host-{i}").into(),
        host: host(),
        status: Status::Disconnected(DisconnectReason::NeverConnected),
        // A real registration brings a credential: its fingerprint is kept.
        credential: Some(tagent_hub::model::CredentialPrint([7; 16])),
        credential_change_until: 0,
        runner_group: 1,
        runner: None,
        first_registered: now,
        last_registered: now,
        last_status_change: now,
    }
}

/// Fill the store with `n` tagents unless it already holds them.
fn build(dir: &Path, n: u64) -> anyhow::Result<()> {
    let store = open_store(dir, None)?;
    let held = store.scan_tagents()?.len;
    if held == n {
        eprintln!("{} already holds {n} tagents", dir.display());
        return Ok(());
    }
    if held != 0 {
        bail!(
            "{} holds {held} tagents, not {n}: remove it first",
            dir.display()
        );
    }
    let started = Instant::now();
    let now = tagent_hub::model::now_millis();
    let mut from = 1;
    while from <= n {
        let to = (from + BATCH - 1).min(n);
        let tagents: Vec<StoredTagent> = (from..=to).map(|i| tagent(i, now)).collect();
        let credentials: Vec<String> = (from..=to)
            .map(|i| {
                format!(
                    "{{ENCRYPTED}}{:032x}",
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                )
            })
            .collect();
        let accounts = tagents
            .iter()
            .zip(&credentials)
            .flat_map(|(t, c)| {
                t.ips.iter().map(move |ip| {
                    AccountOp::Put(AccountPut {
                        tenant: "t",
                        ip: *ip,
                        port: PORT,
                        credential: Some(c.as_str()),
                    })
                })
            })
            .collect();
        store.commit(&WriteBatch {
            tagents_put: tagents,
            accounts,
            next_id: Some(to + 1),
            ..Default::default()
        })?;
        from = to + 1;
    }
    eprintln!(
        "built {n} tagents in {} in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    Ok(())
}

/// VmRSS and VmHWM of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| proc_status::kib(&status, key);
    (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn measure(dir: &Path, n: u64, cache_mib: Option<usize>, json: bool) -> anyhow::Result<()> {
    let (rss_start, _) = rss();
    let store = Arc::new(open_store(dir, cache_mib)?);
    let (rss_store, _) = rss();
    let groups = Config::default().build_groups(("127.0.0.1".into(), 8888))?;
    let started = Instant::now();
    let registry = Registry::open(store, groups)?;
    let open_secs = started.elapsed().as_secs_f64();
    let (rss_open, hwm) = rss();
    let (len, ip_entries) = {
        let index = registry.index();
        (index.len(), index.ip_entries())
    };
    if len as u64 != n {
        bail!("the registry holds {len} tagents, expected {n}");
    }
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(registry.shutdown());
    let file = std::fs::metadata(dir.join("registry.redb"))?.len();
    let per_tagent = (rss_open - rss_store) as f64 / n as f64;
    if json {
        let v = serde_json::json!({
            "tagents": n,
            "ip_entries": ip_entries,
            "store_file_bytes": file,
            "rss_start_bytes": rss_start,
            "rss_after_store_open_bytes": rss_store,
            "rss_after_registry_open_bytes": rss_open,
            "peak_rss_bytes": hwm,
            "registry_open_secs": open_secs,
            "bytes_per_tagent": per_tagent,
            "total_rss_bytes_per_tagent": rss_open as f64 / n as f64,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("tagents                        {n} ({ip_entries} ip entries)");
        println!("store file                     {:.1} MiB", mib(file));
        println!("RSS at start                   {:.1} MiB", mib(rss_start));
        println!("RSS after RedbStore::open      {:.1} MiB", mib(rss_store));
        println!("Registry::open                 {open_secs:.3} s");
        println!("RSS after Registry::open       {:.1} MiB", mib(rss_open));
        println!("peak RSS (VmHWM)               {:.1} MiB", mib(hwm));
        println!("bytes per tagent (open delta)  {per_tagent:.0}");
        println!(
            "bytes per tagent (whole RSS)   {:.0}",
            rss_open as f64 / n as f64
        );
    }
    Ok(())
}
