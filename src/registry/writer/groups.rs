//! A change of the runner groups: applied alone, between two batches, so
//! that every registration is decided against one version of the groups.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{GroupEdit, sync};
use crate::model::RunnerGroups;
use crate::registry::Registry;
use crate::registry::error::ChangeError;
use crate::store::{StoreError, StoredGroup, WriteBatch};

/// Apply an edit to the runner groups, store the result and make it
/// current. A group that registered tagents still belong to cannot go away.
pub(super) fn change_groups(
    registry: &Registry,
    edit: GroupEdit,
) -> Result<Arc<RunnerGroups>, ChangeError> {
    let shared = &registry.shared;
    let store_error = |e: StoreError| {
        metrics::counter!("tagent_hub_store_errors_total").increment(1);
        ChangeError::Store(e)
    };
    // With a shared store: under the registry's lock, and against the
    // groups and tagents other hubs committed.
    let mut txn = shared.store.begin().map_err(store_error)?;
    let changes = txn.changes().map_err(store_error)?;
    if !changes.is_empty() {
        sync::apply(registry, changes);
    }
    let current = registry.groups();
    let groups = edit(&current)?.sorted_runners();
    groups.validate().map_err(ChangeError::Invalid)?;
    if shared.store.shared()
        && groups
            .groups
            .iter()
            .flat_map(|g| &g.runners)
            .any(|r| r.this_hub)
    {
        return Err(ChangeError::Invalid(
            "hubs sharing a store are each a runner with its own heartbeat address: \
             give every runner its heartbeat"
                .into(),
        ));
    }
    {
        let index = shared.index.read();
        for gone in current.groups.iter().filter(|g| groups.get(g.id).is_none()) {
            let tagents = index.iter().filter(|t| t.runner_group == gone.id).count();
            if tagents > 0 {
                return Err(ChangeError::GroupInUse {
                    group: gone.id,
                    tagents,
                });
            }
        }
    }
    let batch = WriteBatch {
        groups: Some(StoredGroup::from_groups(&groups)),
        ..Default::default()
    };
    txn.commit(&batch).map_err(store_error)?;
    let groups = Arc::new(groups);
    registry.set_groups(groups.clone());
    shared.generation.fetch_add(1, Ordering::AcqRel);
    tracing::info!("runner groups changed");
    Ok(groups)
}
