//! Stage 5: once a batch is durable and applied, count its status
//! transitions and tell watchers about everything it changed.

use super::decide::{Accepted, Deleted, Transition};
use crate::model::Status;
use crate::registry::events::{Change, Event, EventLog};
use crate::registry::index::{Index, IndexView};

/// Publish a committed batch's events: registrations, then status changes
/// (as the index now holds the tagent), then deletions.
pub(super) fn publish(
    events: &EventLog,
    index: &Index,
    accepted: &[Accepted],
    transitions: &[Transition],
    deleted: &[Deleted],
    now: u64,
) {
    for (_, status, _) in transitions {
        let reason = status.reason().map_or("connected", |r| r.as_str());
        metrics::counter!("tagent_hub_status_transitions_total", "reason" => reason).increment(1);
    }
    let registered = accepted.iter().filter_map(|a| {
        let change = if a.decision.created {
            Change::Created
        } else {
            Change::Reregistered
        };
        Event::of(&a.decision.tagent, change, now)
    });
    let changed = transitions.iter().filter_map(|(id, status, at)| {
        let change = match status {
            Status::Connected => Change::Connected,
            Status::Disconnected(r) => Change::Disconnected(*r),
        };
        Event::of(index.get(*id)?, change, *at)
    });
    let gone = deleted
        .iter()
        .filter_map(|d| Event::of(&d.tagent, Change::Deleted, now));
    events.publish(registered.chain(changed).chain(gone));
}
