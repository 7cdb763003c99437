//! The audit log's writer: one entry per operation over a tagent's
//! listener, appended to the store in a blocking task of its own (never
//! through the registry's writer, the heartbeats' path) once the operation
//! ended. A store that refuses it is logged and counted; the operation's
//! result stands.

use std::sync::Arc;

use super::OperationError;
use crate::model::{AuditEntry, TagentId, now_millis};
use crate::store::RegistryStore;

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

/// Append the entry; wait for the store, never fail.
pub async fn append(store: &Arc<dyn RegistryStore>, record: Record<'_>) {
    let entry = AuditEntry {
        seq: 0,
        at_ms: now_millis(),
        who: record.who.to_owned(),
        action: record.action.to_owned(),
        tagent: record.tagent,
        result: record.result.to_owned(),
        detail: record.detail,
    };
    let store = store.clone();
    let written = tokio::task::spawn_blocking(move || store.append_audit(&entry)).await;
    let outcome = match written {
        Ok(Ok(_)) => "written",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, tagent = record.tagent, action = record.action,
                "an audit entry was not written");
            "failed"
        }
        Err(_) => {
            tracing::warn!(
                tagent = record.tagent,
                action = record.action,
                "writing an audit entry panicked"
            );
            "failed"
        }
    };
    metrics::counter!("tagent_hub_audit_entries_total", "result" => outcome).increment(1);
}
