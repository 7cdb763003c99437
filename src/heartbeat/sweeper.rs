//! The idle timeout and park requests: one task for all sessions instead
//! of a timer per session.
//!
//! Every 500 ms it closes the sessions silent longer than `idle_timeout`
//! (300 s by default; reason `idle-timeout`) and asks the ones quiet for
//! [`PARK_AFTER_MS`] to park (see `parking.rs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::hub::Inner;
use super::session::Session;
use crate::model::{DisconnectReason, now_millis};

/// A session silent this long gives up its task until its next message.
pub(super) const PARK_AFTER_MS: u64 = 1000;

/// How often the sweep runs.
const TICK: Duration = Duration::from_millis(500);

/// Sweep until the hub is gone.
pub(super) async fn sweeper(hub: Weak<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(inner) = hub.upgrade() else { return };
        let idle = inner.settings.idle_timeout.as_millis() as u64;
        let now = now_millis();
        let mut stale: Vec<Arc<Session>> = Vec::new();
        let mut quiet: Vec<Arc<Session>> = Vec::new();
        for e in inner.by_key.iter() {
            let silent = now.saturating_sub(e.value().last_seen.load(Ordering::Relaxed));
            if silent > idle {
                stale.push(e.value().clone());
            } else if silent > PARK_AFTER_MS && !e.value().is_parked() {
                quiet.push(e.value().clone());
            }
        }
        for s in stale {
            s.close(DisconnectReason::IdleTimeout);
        }
        for s in quiet {
            s.request_park();
        }
        inner.status.prune(&inner.registry);
    }
}
