//! Status transitions (SPEC §3.4), batched to the registry's writer: one
//! transaction per `status_flush`, never a storage write per heartbeat and
//! never on a connection's I/O path.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::{DisconnectReason, Status, TagentId, now_millis};
use crate::registry::{Registry, StatusChange};

enum StatusMsg {
    Change(StatusChange),
    Flush(oneshot::Sender<()>),
}

/// Where sessions report their tagents' transitions.
pub(super) struct StatusReports {
    tx: mpsc::UnboundedSender<StatusMsg>,
}

impl StatusReports {
    /// Start the batcher that hands reports to `registry`'s writer.
    pub(super) fn start(registry: Registry, flush: Duration) -> StatusReports {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(registry, rx, flush));
        StatusReports { tx }
    }

    /// Tagent `id` has a session on this hub now.
    pub(super) fn connected(&self, id: TagentId, runner: Option<u32>) {
        self.send(id, Status::Connected, now_millis(), runner);
    }

    /// Tagent `id`'s session closed with `reason`, if `detach` takes it out
    /// of the live table.
    pub(super) fn disconnected(
        &self,
        id: TagentId,
        reason: DisconnectReason,
        detach: impl FnOnce() -> bool,
    ) {
        if detach() {
            self.send(id, Status::Disconnected(reason), now_millis(), None);
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
