//! What the writer is asked to do: one job per registration, status batch,
//! sync, delete, credential-change window or runner-group change.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::model::{RunnerGroups, TagentId};
use crate::registry::error::ChangeError;
use crate::registry::{
    EnrollJob, EnrollOutcome, RegisterError, RegisterRequest, Registered, StatusChange,
};

pub(in crate::registry) enum Job {
    Register {
        req: Box<RegisterRequest>,
        reply: oneshot::Sender<Result<Registered, RegisterError>>,
    },
    Status(Vec<StatusChange>),
    /// The tagents of the hub at `hub`, whose lease lapsed at `epoch`:
    /// runner-lost, if the lease is still lapsed at that epoch when the
    /// batch's transaction reads it (lease fencing).
    RunnerLost {
        hub: String,
        epoch: u64,
        changes: Vec<StatusChange>,
    },
    /// Another hub committed: bring the index up to date (and say when).
    Sync(Option<oneshot::Sender<()>>),

    /// Delete a tagent that has no live session.
    Delete {
        id: TagentId,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    /// Let the tagent's next registrations bring a new credential until
    /// `until` (Unix ms): the hub sent it `resetcred`, or an operator
    /// allowed a reinstall.
    OpenCredentialChange {
        id: TagentId,
        until: u64,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    /// An operator's change to enrollment tokens or pending registrations.
    Enroll {
        job: EnrollJob,
        reply: oneshot::Sender<Result<EnrollOutcome, ChangeError>>,
    },
    /// Change the runner groups: the edit sees the current ones.
    Groups {
        edit: GroupEdit,
        reply: oneshot::Sender<Result<Arc<RunnerGroups>, ChangeError>>,
    },
    Stop,
}

pub(in crate::registry) type GroupEdit =
    Box<dyn FnOnce(&RunnerGroups) -> Result<RunnerGroups, ChangeError> + Send>;
