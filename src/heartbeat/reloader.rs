//! Rate-limited reloads of unregistered tagents (SPEC §3.1): a session
//! whose heartbeat matches no registered tagent is sent `reload`, at most
//! `reload_rate` per second, so an estate coming back to an empty store
//! re-registers as a stream, not a storm.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;

use super::proto::CommandKind;
use super::session::Session;

/// Send `reload` to the sessions queued on `rx`, at most `rate` per second,
/// skipping those that registered or closed meanwhile.
pub(super) async fn reloader(mut rx: mpsc::Receiver<Weak<Session>>, rate: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while let Some(weak) = rx.recv().await {
        let Some(session) = weak.upgrade() else {
            continue;
        };
        {
            let st = session.state.lock();
            if st.tagent.is_some() || st.close.is_some() {
                continue;
            }
        }
        tick.tick().await;
        session.push_command(CommandKind::Reload, None);
    }
}
