//! Stage 2: write what a batch decided in its one store transaction. The
//! batch borrows the decisions' strings; nothing per job is copied but the
//! stored form of each changed record.

use std::time::Instant;

use super::decide::Decided;
use crate::model::Interner;
use crate::registry::to_stored;
use crate::store::{AccountOp, AccountPut, StoreError, WriteBatch, WriteTxn};

/// Everything `d` writes: the changed records, the accounts of each
/// registration and deletion in order, and the next id if it moved.
pub(super) fn batch<'a>(d: &'a Decided, interner: &Interner) -> WriteBatch<'a> {
    let mut batch = WriteBatch {
        next_id: d.next_id_changed.then_some(d.next_id),
        ..Default::default()
    };
    for (id, t) in &d.changes {
        match t {
            Some(t) => batch.tagents_put.push(to_stored(t, interner)),
            None => batch.tagents_delete.push(*id),
        }
    }
    for a in &d.accepted {
        let d = &a.decision;
        for ip in &d.accounts_delete {
            batch.accounts.push(AccountOp::Delete {
                tenant: &a.req.tenant,
                ip: *ip,
                port: d.tagent.port,
            });
        }
        for ip in &d.accounts_put {
            batch.accounts.push(AccountOp::Put(AccountPut {
                tenant: &a.req.tenant,
                ip: *ip,
                port: d.tagent.port,
                credential: a.req.credential.as_ref().map(|c| c.0.as_str()),
            }));
        }
    }
    batch.tokens_put = d.enroll.tokens_put.iter().collect();
    batch.pending_put = d.enroll.pending_put.iter().collect();
    batch.pending_delete = d.enroll.pending_delete.iter().map(String::as_str).collect();
    for d in &d.deleted {
        for ip in &d.accounts {
            batch.accounts.push(AccountOp::Delete {
                tenant: &d.tenant,
                ip: *ip,
                port: d.tagent.port,
            });
        }
    }
    batch
}

/// Commit `batch`; returns once it is durable.
pub(super) fn commit(
    txn: Box<dyn WriteTxn + '_>,
    batch: &WriteBatch<'_>,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let result = txn.commit(batch);
    metrics::histogram!("tagent_hub_store_commit_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    result
}
