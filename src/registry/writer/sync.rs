//! Other hubs' commits (a shared store): read and applied to the index
//! between batches when another hub says it committed, and at the start of
//! every batch under the registry's lock, so that no decision is made
//! against an index older than the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::Job;
use crate::model::TagentId;
use crate::registry::index::IndexView;
use crate::registry::{Registry, apply_changes};
use crate::store::{Changes, StoredGroup};

/// Take the batch's `Sync` jobs out of `jobs`: `None` when it held none,
/// else those waiting to be told the index is up to date.
pub(super) fn take_syncs(jobs: &mut Vec<Job>) -> Option<Vec<oneshot::Sender<()>>> {
    let mut synced = Vec::new();
    let before = jobs.len();
    jobs.retain_mut(|j| match j {
        Job::Sync(reply) => {
            synced.extend(reply.take());
            false
        }
        _ => true,
    });
    (jobs.len() < before).then_some(synced)
}

/// Read other hubs' commits and apply them (between batches).
pub(super) fn sync(registry: &Registry) {
    match registry.shared.store.changes() {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => apply(registry, changes),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read other hubs' changes; the next batch will")
        }
    }
}

/// Apply other hubs' commits to the index, so sessions resolve tagents
/// registered elsewhere and status views show every hub's sessions. New
/// runner groups change which runners are this hub's, hence the registry.
pub(super) fn apply(registry: &Registry, mut changes: Changes) {
    let shared = &registry.shared;
    if let Some(stored) = changes.groups.take() {
        match StoredGroup::resolve(&stored, &shared.advertised) {
            Ok(groups) => {
                tracing::info!("runner groups changed on another hub");
                registry.set_groups(Arc::new(groups));
            }
            Err(e) => {
                tracing::error!(error = %e, "another hub stored runner groups this hub cannot read")
            }
        }
    }
    {
        let ids: Vec<TagentId> = changes.tagents.iter().map(|(id, _)| *id).collect();
        let mine = registry.mine();
        let mut index = shared.index.write();
        apply_changes(&mut index, &shared.interner, changes);
        for id in ids {
            shared.sessions.track(&mine, id, index.get(id));
        }
        metrics::gauge!("tagent_hub_tagents").set(index.len() as f64);
    }
    shared.generation.fetch_add(1, Ordering::AcqRel);
}

/// Tells waiting [`Registry::refresh`] callers when dropped.
pub(super) struct Answer(pub Vec<oneshot::Sender<()>>);

impl Drop for Answer {
    fn drop(&mut self) {
        for w in self.0.drain(..) {
            let _ = w.send(());
        }
    }
}
