//! Stage 4: tell each job how it ended: after a durable commit, or with the
//! store's error when the batch could not be made durable. Status changes
//! have no one to tell: those of a failed batch are handed back, to go
//! again with the next batch.

use super::Job;
use super::decide::{Accepted, Decided, Deleted, EnrollReply, RegisterReply};
use tokio::sync::oneshot;

/// The reply of an opened credential-change window.
type Opened = oneshot::Sender<Result<(), ChangeError>>;
use crate::model::RunnerGroups;
use crate::registry::error::ChangeError;
use crate::registry::{EnrollOutcome, RegisterError, Registered, StatusChange};
use crate::store::StoreError;

/// Answer a batch whose commit is durable.
pub(super) fn committed(
    accepted: Vec<Accepted>,
    deleted: Vec<Deleted>,
    opened: Vec<Opened>,
    refused: Vec<(RegisterReply, RegisterError)>,
    enrolled: Vec<(EnrollReply, EnrollOutcome)>,
    groups: &RunnerGroups,
) {
    for (reply, e) in refused {
        let _ = reply.send(Err(e));
    }
    for (reply, outcome) in enrolled {
        let _ = reply.send(Ok(outcome));
    }
    for d in deleted {
        let _ = d.reply.send(Ok(()));
    }
    for reply in opened {
        let _ = reply.send(Ok(()));
    }
    for a in accepted {
        let group = groups
            .get(a.decision.tagent.runner_group)
            .cloned()
            .expect("a decision names a configured group");
        let _ = a.reply.send(Ok(Registered {
            id: a.decision.tagent.id,
            created: a.decision.created,
            group,
        }));
    }
}

/// Answer a decided batch whose commit failed: nothing of it was applied.
/// Returns its status changes, to go again with the next batch.
pub(super) fn commit_failed(d: Decided, e: &StoreError) -> Vec<StatusChange> {
    metrics::counter!("tagent_hub_store_errors_total").increment(1);
    tracing::error!(error = %e, registrations = d.accepted.len(), "store commit failed; batch not applied");
    for a in d.accepted {
        let _ = a.reply.send(Err(RegisterError::Store(e.clone())));
    }
    for x in d.deleted {
        let _ = x.reply.send(Err(ChangeError::Store(e.clone())));
    }
    for reply in d.opened {
        let _ = reply.send(Err(ChangeError::Store(e.clone())));
    }
    for (reply, _) in d.refused {
        let _ = reply.send(Err(RegisterError::Store(e.clone())));
    }
    for (reply, _) in d.enrolled {
        let _ = reply.send(Err(ChangeError::Store(e.clone())));
    }
    // Registrations were refused (their tagents retry); status changes
    // have no one to retry them.
    d.status_seen
}

/// Answer a batch that could not reach the store (before any decision):
/// its registrations get the error (their tagents retry), its status
/// changes are handed back.
pub(super) fn unreachable(jobs: Vec<Job>, e: &StoreError) -> Vec<StatusChange> {
    metrics::counter!("tagent_hub_store_errors_total").increment(1);
    tracing::error!(error = %e, "the store cannot be written; batch not applied");
    let mut retry = Vec::new();
    for job in jobs {
        match job {
            Job::Register { reply, .. } => {
                let _ = reply.send(Err(RegisterError::Store(e.clone())));
            }
            Job::Status(changes) => retry.extend(changes),
            Job::Delete { reply, .. } | Job::OpenCredentialChange { reply, .. } => {
                let _ = reply.send(Err(ChangeError::Store(e.clone())));
            }
            Job::Groups { reply, .. } => {
                let _ = reply.send(Err(ChangeError::Store(e.clone())));
            }
            Job::Enroll { reply, .. } => {
                let _ = reply.send(Err(ChangeError::Store(e.clone())));
            }
            // The group watcher reports a lapsed hub again at its next
            // look, checked afresh against the lease then.
            Job::RunnerLost { .. } | Job::Sync(_) | Job::Stop => {}
        }
    }
    retry
}
