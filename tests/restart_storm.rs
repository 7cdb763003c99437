//! Restart storm: thousands of held sessions lose the hub at once, and all
//! reconnect together to the restarted one while a few live sessions keep
//! heartbeating through the storm.
//!
//! Checked for correctness only (no timing assertion; the time it took is
//! printed): right after the restart every tagent is disconnected with
//! reason `restart`; after the storm every tagent is `connected`, every
//! reconnect got `{"Status":"OK"}`, and every heartbeat of the live sessions
//! during the storm was answered OK.
//!
//! `STORM_SESSIONS` (default 3,000, at most 8,000: the test process and the
//! hub each hold one descriptor a session, under a 20,000-file limit shared
//! with the other tests) sets the size.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Server, Tagent, WAIT};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Tagents that heartbeat through the storm.
const LIVE: usize = 16;

fn ip(n: usize) -> String {
    format!("127.3.{}.{}", n / 250, n % 250 + 1)
}

fn monitor(id: u64, n: usize, group: &str) -> Value {
    json!({"type":"monitor","tenant":"storm","agentId":id,"port":3939,"ipString":ip(n),
           "mgmtIp":ip(n),"proxyGroup":group,"pcpu":0.1,"mem":12,"status":"working"})
}

/// Connect and send the first heartbeat; the reply must be OK.
async fn connect(hub: std::net::SocketAddr, id: u64, n: usize, group: &str) -> Tagent {
    let mut t = Tagent::connect_from(hub, &ip(n)).await;
    let reply = t.send(&monitor(id, n, group)).await;
    assert_eq!(reply, json!({"Status":"OK"}), "tagent {n}");
    t
}

async fn statuses(hub: &Server, ids: &[u64]) -> Vec<(String, String)> {
    futures_util::stream::iter(ids)
        .map(|id| async move {
            let t = common::tagent_json(hub, *id).await;
            (
                t["status"].as_str().unwrap_or_default().to_owned(),
                t["disconnect_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .buffered(32)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_comes_back_after_a_restart_and_live_ones_are_not_stalled() {
    let n: usize = std::env::var("STORM_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
        .clamp(LIVE + 1, 8000);
    let mut hub = Server::start_with(
        Options::default().config("[heartbeat]\nstatus_flush_ms = 10\nreload_rate_per_sec = 1\n"),
    );

    // Register every tagent (64 at a time) and hold a session for each.
    let registered: Vec<(u64, String)> = futures_util::stream::iter(0..n)
        .map(|k| {
            let hub = &hub;
            async move { hub.register_tagent("storm", &ip(k), "c").await }
        })
        .buffered(64)
        .collect()
        .await;
    let ids: Vec<u64> = registered.iter().map(|(id, _)| *id).collect();
    let group = registered[0].1.clone();
    let addr = hub.heartbeat_addr();
    let held: Vec<Tagent> = futures_util::stream::iter(0..n)
        .map(|k| {
            let group = &group;
            let id = ids[k];
            async move { connect(addr, id, k, group).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    assert_eq!(held.len(), n);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_sessions{protocol=\"compat\"}"),
        n as f64,
        "{}",
        m.text
    );

    // The hub restarts: every session is cut.
    hub.restart();
    let addr = hub.heartbeat_addr();
    // The hub is the group's only runner, now on a new port: the tagents
    // send the list they would have been told to update to.
    let group = hub.advertise().to_owned();
    let sample: Vec<u64> = ids.iter().step_by(n / 100 + 1).copied().collect();
    for (status, reason) in statuses(&hub, &sample).await {
        assert_eq!(status, "disconnected");
        assert!(
            reason == "restart" || reason == "shutdown",
            "reason {reason} after a restart"
        );
    }
    drop(held);

    // A few tagents come back first and heartbeat back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let answered: Arc<Vec<AtomicU64>> = Arc::new((0..LIVE).map(|_| AtomicU64::new(0)).collect());
    let mut live = Vec::new();
    for k in 0..LIVE {
        let mut t = connect(addr, ids[k], k, &group).await;
        let (stop, answered) = (stop.clone(), answered.clone());
        let (id, group) = (ids[k], group.clone());
        live.push(tokio::spawn(async move {
            let mut beats = 0u64;
            // Bounded: the storm ends (or the test fails) well before this.
            while !stop.load(Ordering::Relaxed) && beats < 1_000_000 {
                let reply = t.send(&monitor(id, k, &group)).await;
                assert_eq!(reply["Status"], "OK", "live tagent {k}: {reply}");
                beats += 1;
                answered[k].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (beats, t)
        }));
    }

    // Everyone else reconnects at once.
    let storm = Instant::now();
    let total = |a: &[AtomicU64]| a.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
    let before = total(&answered);
    let back: Vec<Tagent> = futures_util::stream::iter(LIVE..n)
        .map(|k| {
            let group = &group;
            let id = ids[k];
            async move { connect(addr, id, k, group).await }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    let all_answered = storm.elapsed();
    let during = total(&answered) - before;
    // Every tagent shows connected.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = hub.metrics().await;
        if m.value("tagent_hub_sessions{protocol=\"compat\"}") == n as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "sessions missing:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_shown = storm.elapsed();
    // The live sessions are still answered after the storm (not stalled).
    let after: Vec<u64> = answered.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let deadline = Instant::now() + WAIT;
    while answered
        .iter()
        .zip(&after)
        .any(|(c, a)| c.load(Ordering::Relaxed) <= *a)
    {
        assert!(
            Instant::now() < deadline,
            "a live session stalled after the storm"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut live_beats = Vec::new();
    let mut still_held = Vec::new();
    for t in live {
        let (beats, t) = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        live_beats.push(beats);
        still_held.push(t);
    }
    assert_eq!(back.len(), n - LIVE);
    let all = statuses(&hub, &ids).await;
    let not_connected: Vec<_> = all
        .iter()
        .zip(&ids)
        .filter(|((s, _), _)| s != "connected")
        .collect();
    assert!(
        not_connected.is_empty(),
        "{} of {n} not connected, e.g. {:?}",
        not_connected.len(),
        &not_connected[..not_connected.len().min(5)]
    );
    let m = hub.metrics().await;
    assert!(
        !m.has("tagent_hub_connection_errors_total"),
        "no connection refused or cut: {}",
        m.text
    );
    eprintln!(
        "restart storm: {n} sessions ({LIVE} live); all {} reconnects answered in {all_answered:?}, \
         all shown connected after {all_shown:?}; {during} live heartbeats answered during the storm, {} in all",
        n - LIVE,
        live_beats.iter().sum::<u64>()
    );
    drop((back, still_held));
}
