//! Status transitions (SPEC §3.4), batched to the registry's writer: one
//! transaction per `status_flush`, never a storage write per heartbeat and
//! never on a connection's I/O path.
//!
//! Until a disconnect is committed the index still holds the tagent's
//! previous status, so the hub keeps the reason of each just-closed session
//! (one entry per tagent at most, dropped once the index has caught up) and
//! the admin API shows it the moment it shows the tagent disconnected.

use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use crate::model::{DisconnectReason, Status, TagentId, now_millis};
use crate::registry::{IndexView, Registry, StatusChange};

enum StatusMsg {
    Change(StatusChange),
    Flush(oneshot::Sender<()>),
}

/// Where sessions report their tagents' transitions.
pub(super) struct StatusReports {
    tx: mpsc::UnboundedSender<StatusMsg>,
    /// Why each tagent's session on this hub closed, with the time of the
    /// report, while the index may not show it yet.
    closed: DashMap<TagentId, (DisconnectReason, u64)>,
}

impl StatusReports {
    /// Start the batcher that hands reports to `registry`'s writer.
    pub(super) fn start(registry: Registry, flush: Duration) -> StatusReports {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(registry, rx, flush));
        StatusReports {
            tx,
            closed: DashMap::new(),
        }
    }

    /// Tagent `id` has a session on this hub now.
    pub(super) fn connected(&self, id: TagentId, runner: Option<u32>) {
        self.closed.remove(&id);
        self.send(id, Status::Connected, now_millis(), runner);
    }

    /// Tagent `id`'s session closed with `reason`, if `detach` takes it out
    /// of the live table. The reason is kept first, so no reader sees the
    /// tagent neither live nor with its reason.
    pub(super) fn disconnected(
        &self,
        id: TagentId,
        reason: DisconnectReason,
        detach: impl FnOnce() -> bool,
    ) {
        let at = now_millis();
        let mine = (reason, at);
        let previous = self.closed.insert(id, mine);
        if detach() {
            self.send(id, Status::Disconnected(reason), at, None);
            return;
        }
        // Not this session's to report: put back what was there.
        match previous {
            Some(p) => {
                if let Some(mut e) = self.closed.get_mut(&id)
                    && *e == mine
                {
                    *e = p;
                }
            }
            None => {
                self.closed.remove_if(&id, |_, v| *v == mine);
            }
        }
    }

    fn send(&self, id: TagentId, status: Status, at: u64, runner: Option<u32>) {
        let change = StatusChange {
            id,
            status,
            at,
            runner,
        };
        let _ = self.tx.send(StatusMsg::Change(change));
    }

    /// Why tagent `id`'s session on this hub closed, if the index may not
    /// show it yet.
    pub(super) fn closed(&self, id: TagentId) -> Option<DisconnectReason> {
        self.closed.get(&id).map(|e| e.0)
    }

    /// Forget the reasons the index shows now (or that a later change, or
    /// a deletion, made moot). Called by the sweeper; takes no two locks at once.
    pub(super) fn prune(&self, registry: &Registry) {
        if self.closed.is_empty() {
            return;
        }
        let pending: Vec<(TagentId, (DisconnectReason, u64))> =
            self.closed.iter().map(|e| (*e.key(), *e.value())).collect();
        let caught_up: Vec<(TagentId, (DisconnectReason, u64))> = {
            let index = registry.index();
            pending
                .into_iter()
                .filter(|(id, (reason, at))| {
                    index.get(*id).is_none_or(|t| {
                        t.status == Status::Disconnected(*reason) || t.last_status_change > *at
                    })
                })
                .collect()
        };
        for (id, seen) in caught_up {
            self.closed.remove_if(&id, |_, v| *v == seen);
        }
    }

    /// Wait until every status change reported so far is queued for the store.
    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(StatusMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Group-commit status transitions: collect for `flush`, then hand the batch
/// to the registry writer (one transaction for all of them).
async fn batcher(registry: Registry, mut rx: mpsc::UnboundedReceiver<StatusMsg>, flush: Duration) {
    let mut batch: Vec<StatusChange> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let take = |m: StatusMsg, batch: &mut Vec<StatusChange>, waiters: &mut Vec<_>| match m {
            StatusMsg::Change(c) => batch.push(c),
            StatusMsg::Flush(w) => waiters.push(w),
        };
        take(first, &mut batch, &mut waiters);
        if waiters.is_empty() {
            tokio::time::sleep(flush).await;
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut batch, &mut waiters);
        }
        if !batch.is_empty() {
            registry
                .report_status_async(std::mem::take(&mut batch))
                .await;
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}
