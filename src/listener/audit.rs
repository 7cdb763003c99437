//! The audit log's writer: one entry per operation over a tagent's
//! listener, appended to the store by a task of its own (never through the
//! registry's writer, the heartbeats' path) once the operation ended.
//! Entries that arrive together are written in one transaction (one sync
//! to disk for a batch of many tagents). A store that refuses them is
//! logged and counted; the operations' results stand.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::OperationError;
use crate::model::{AuditEntry, TagentId, now_millis};
use crate::store::RegistryStore;

/// Entries waiting for the writer at most, and written in one transaction.
const QUEUE: usize = 4096;
const MAX_BATCH: usize = 1024;

/// What an operation was, for its entry.
pub struct Record<'a> {
    pub who: &'a str,
    pub action: &'static str,
    pub tagent: TagentId,
    pub result: &'a str,
    pub detail: Option<String>,
}

/// The result label of a failed operation: its metrics label, or what
/// refused it before any tagent was reached.
pub fn result_of(e: &OperationError) -> &'static str {
    e.label().unwrap_or(match e {
        OperationError::NoTagent(_) => "no_tagent",
        OperationError::BadName(_) => "bad_name",
        OperationError::NoSuchLog { .. } => "no_such_log",
        _ => "bad_config",
    })
}

type Pending = (AuditEntry, oneshot::Sender<()>);

/// The handle operations append through; the writer task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Start the writer (on the current tokio runtime).
    pub fn start(store: Arc<dyn RegistryStore>) -> AuditLog {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(store, rx));
        AuditLog { queue }
    }

    /// Append the entry, and wait until the store has it (or refused it).
    pub async fn append(&self, record: Record<'_>) {
        let entry = AuditEntry {
            seq: 0,
            at_ms: now_millis(),
            who: record.who.to_owned(),
            action: record.action.to_owned(),
            tagent: record.tagent,
            result: record.result.to_owned(),
            detail: record.detail,
        };
        let (done, written) = oneshot::channel();
        if self.queue.send((entry, done)).await.is_err() {
            lost(1, "the audit writer has stopped");
            return;
        }
        // A dropped sender means the writer stopped; it counted the loss.
        let _ = written.await;
    }
}

async fn write_loop(store: Arc<dyn RegistryStore>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (entries, waiters): (Vec<AuditEntry>, Vec<oneshot::Sender<()>>) =
            std::mem::take(&mut batch).into_iter().unzip();
        let n = entries.len();
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.append_audit(&entries)).await {
            Ok(Ok(())) => {
                metrics::counter!("tagent_hub_audit_entries_total", "result" => "written")
                    .increment(n as u64);
            }
            Ok(Err(e)) => lost(n, &e.to_string()),
            Err(_) => lost(n, "writing audit entries panicked"),
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

fn lost(n: usize, why: &str) {
    tracing::warn!(entries = n, error = why, "audit entries were not written");
    metrics::counter!("tagent_hub_audit_entries_total", "result" => "failed").increment(n as u64);
}
