//! Runner-group membership, for hubs that share a PostgreSQL store (SPEC §4).
//!
//! Each hub holds a lease in the store and renews it every third of its
//! length. Every hub also watches the others' leases: when one lapses (its
//! hub died or lost the database), the tagents connected through that
//! hub's runners are marked `disconnected` (reason: runner-lost) until they
//! reconnect to another runner of the group. A hub that finds its own lease
//! had lapsed reports its live sessions as connected again.
//!
//! Renewal runs on a thread of its own, so a busy blocking pool (admin
//! scans, forwarded commands) cannot make this hub's lease lapse. A lease's
//! epoch grows each time a lapsed lease is renewed; a runner-lost report
//! carries the epoch it saw, and the writer applies it only if the lease is
//! still lapsed at that epoch (see `registry/writer/thread.rs`), so a hub
//! that came back and reasserted its sessions is never overwritten.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::heartbeat::Hub;
use crate::model::now_millis;
use crate::model::{DisconnectReason, Status};
use crate::registry::{Registry, StatusChange};
use crate::shutdown::Shutdown;
use crate::store::{HubInfo, RegistryStore};

/// Renew this hub's lease and watch the others' until shutdown.
pub async fn run(registry: Registry, hub: Hub, me: HubInfo, lease: Duration, shutdown: Shutdown) {
    if let Err(e) = spawn_renewer(
        registry.store().clone(),
        hub,
        me.clone(),
        lease,
        shutdown.clone(),
    ) {
        tracing::error!(error = %e, "cannot start the lease renewal thread");
        return;
    }
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let store = registry.store().clone();
        let hubs = match tokio::task::spawn_blocking(move || store.hubs()).await {
            Ok(Ok(hubs)) => hubs,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the runner group's leases");
                continue;
            }
            Err(_) => return,
        };
        for dead in hubs
            .iter()
            .filter(|h| !h.alive && h.hub.heartbeat != me.heartbeat)
        {
            let lost = lost_tagents(&registry, &dead.hub.heartbeat);
            if lost.is_empty() {
                continue;
            }
            tracing::warn!(
                hub = %dead.hub.heartbeat,
                tagents = lost.len(),
                "a hub's lease lapsed; its tagents are runner-lost"
            );
            let reported = registry
                .report_runner_lost(dead.hub.heartbeat.clone(), dead.epoch, lost)
                .await;
            if !reported {
                return;
            }
        }
    }
}

/// Renew the lease every third of its length, on a thread of its own,
/// until shutdown; reassert this hub's sessions when it had lapsed.
fn spawn_renewer(
    store: Arc<dyn RegistryStore>,
    hub: Hub,
    me: HubInfo,
    lease: Duration,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let every = lease / 3;
    std::thread::Builder::new()
        .name("lease-renewal".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let started = Instant::now();
                match store.renew_lease(&me, lease) {
                    Ok(true) => {
                        tracing::warn!("this hub's lease had lapsed; reporting its sessions again");
                        hub.reassert();
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot renew this hub's lease"),
                }
                // Sleep out the period in short steps, to stop soon after
                // shutdown.
                while !shutdown.is_triggered() && started.elapsed() < every {
                    std::thread::sleep(Duration::from_millis(50).min(every));
                }
            }
        })
        .map(|_| ())
}

/// The tagents the store shows connected through the runners at `heartbeat`.
fn lost_tagents(registry: &Registry, heartbeat: &str) -> Vec<StatusChange> {
    let groups = registry.groups();
    let mut runners: Vec<u32> = groups
        .groups
        .iter()
        .flat_map(|g| &g.runners)
        .filter(|r| r.heartbeat() == heartbeat)
        .map(|r| r.id)
        .collect();
    runners.dedup();
    if runners.is_empty() {
        return Vec::new();
    }
    let at = now_millis();
    let index = registry.index();
    index
        .iter()
        .filter(|t| t.status == Status::Connected)
        .filter_map(|t| {
            let r = t.runner.filter(|r| runners.contains(r))?;
            Some(StatusChange {
                id: t.id,
                status: Status::Disconnected(DisconnectReason::RunnerLost),
                at,
                runner: Some(r),
            })
        })
        .collect()
}
