//! At most one operation at a time per tagent, and a configured number on
//! the hub: an operation holds a [`Pass`] from start to end.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::OperationError;
use crate::model::TagentId;

#[derive(Debug)]
pub struct Gate {
    busy: DashMap<TagentId, ()>,
    permits: Arc<Semaphore>,
    max: usize,
}

/// The right to run one operation on one tagent; released on drop.
#[derive(Debug)]
pub struct Pass {
    claim: Claim,
    _permit: OwnedSemaphorePermit,
}

/// A tagent marked busy, unmarked on drop.
#[derive(Debug)]
struct Claim {
    gate: Arc<Gate>,
    id: TagentId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.gate.busy.remove(&self.id);
    }
}

impl Gate {
    pub fn new(max_operations: usize) -> Arc<Gate> {
        let max = max_operations.max(1);
        Arc::new(Gate {
            busy: DashMap::new(),
            permits: Arc::new(Semaphore::new(max)),
            max,
        })
    }

    /// A pass for `id`: refused at once while another operation runs on it
    /// ([`OperationError::Busy`]); waits up to `wait` for the hub's room
    /// ([`OperationError::HubBusy`]).
    pub async fn enter(
        self: &Arc<Self>,
        id: TagentId,
        wait: Duration,
    ) -> Result<Pass, OperationError> {
        use dashmap::mapref::entry::Entry;
        match self.busy.entry(id) {
            Entry::Occupied(_) => return Err(OperationError::Busy(id)),
            Entry::Vacant(v) => {
                v.insert(());
            }
        }
        let claim = Claim {
            gate: self.clone(),
            id,
        };
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| OperationError::HubBusy(self.max))?
            .expect("the semaphore is never closed");
        Ok(Pass {
            claim,
            _permit: permit,
        })
    }

    /// Operations running now.
    pub fn running(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

impl Pass {
    pub fn tagent(&self) -> TagentId {
        self.claim.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_operation_per_tagent_and_a_bounded_number_per_hub() {
        let gate = Gate::new(2);
        let wait = Duration::from_millis(50);
        let a = gate.enter(1, wait).await.unwrap();
        assert_eq!(a.tagent(), 1);
        assert!(matches!(
            gate.enter(1, wait).await,
            Err(OperationError::Busy(1))
        ));
        let b = gate.enter(2, wait).await.unwrap();
        assert_eq!(gate.running(), 2);
        assert!(matches!(
            gate.enter(3, wait).await,
            Err(OperationError::HubBusy(2))
        ));
        // A refused entry leaves no claim behind.
        drop(a);
        let c = gate.enter(3, wait).await.unwrap();
        assert!(
            gate.enter(1, wait).await.is_err(),
            "no room while 2 and 3 run"
        );
        drop((b, c));
        assert_eq!(gate.running(), 0);
        gate.enter(1, wait).await.unwrap();
    }
}
