//! The stream of registry changes operators watch: registrations, status
//! transitions and deletions, each published once it is durable.
//!
//! The writer thread publishes; any number of watchers subscribe. The last
//! [`RING`] events are kept so a watcher that reconnects resumes where it left
//! off (by event id) instead of missing what happened in between. An id from
//! before this process started, or older than the ring, cannot be resumed:
//! the watcher is told so ([`Backlog::gap`]) and should reload its view.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use super::model::{DisconnectReason, TagentId, now_millis};

/// Events kept for resuming watchers.
pub const RING: usize = 65_536;
/// Events a live watcher may fall behind before it must resume from the ring.
const CHANNEL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Registered,
    Connected,
    Disconnected,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Deleted => "deleted",
        }
    }
}

/// One change, as a watcher receives it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in this process's stream (see [`EventLog::event_id`]).
    #[serde(skip)]
    pub seq: u64,
    /// Unix milliseconds.
    pub at: u64,
    pub kind: EventKind,
    pub tagent_id: TagentId,
    #[schema(value_type = String)]
    pub tenant: Arc<str>,
    #[schema(value_type = String)]
    pub ip: IpAddr,
    pub port: u16,
    pub runner_group: u32,
    /// Why it disconnected (`disconnected` only).
    pub reason: Option<DisconnectReason>,
    /// A new tagent rather than an update (`registered` only).
    pub created: Option<bool>,
}

/// What a watcher gets when it subscribes.
pub struct Backlog {
    /// Events after the one it named, oldest first.
    pub events: Vec<Arc<Event>>,
    /// The named event could not be found: events may have been missed.
    pub gap: bool,
    /// Everything published after `events`.
    pub live: broadcast::Receiver<Arc<Event>>,
}

pub struct EventLog {
    /// Distinguishes this process's ids from a previous run's.
    boot: u64,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    next_seq: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            boot: now_millis(),
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next_seq: 1,
            }),
            tx: broadcast::channel(CHANNEL).0,
        }
    }
}

impl EventLog {
    /// Publish events in order, numbering them.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut ring = self.ring.lock();
        for mut e in events {
            e.seq = ring.next_seq;
            ring.next_seq += 1;
            let e = Arc::new(e);
            if ring.events.len() == RING {
                ring.events.pop_front();
            }
            ring.events.push_back(e.clone());
            // No receiver is not an error: nobody is watching.
            let _ = self.tx.send(e);
        }
    }

    /// The id a watcher sees: `<boot>-<seq>`.
    pub fn event_id(&self, e: &Event) -> String {
        format!("{}-{}", self.boot, e.seq)
    }

    /// Parse an id given back by a watcher into the sequence number, if it
    /// belongs to this process.
    fn seq_of(&self, id: &str) -> Option<u64> {
        let (boot, seq) = id.split_once('-')?;
        (boot.parse::<u64>().ok()? == self.boot)
            .then(|| seq.parse().ok())
            .flatten()
    }

    /// Subscribe; with `after`, first replay what followed that event.
    pub fn subscribe(&self, after: Option<&str>) -> Backlog {
        let ring = self.ring.lock();
        let live = self.tx.subscribe();
        let Some(after) = after else {
            return Backlog {
                events: Vec::new(),
                gap: false,
                live,
            };
        };
        let (events, gap) = replay(&ring, self.seq_of(after));
        Backlog { events, gap, live }
    }

    /// The events after `seq` still in the ring (for a watcher that fell
    /// behind the live channel), and whether some were lost.
    pub fn since(&self, seq: u64) -> (Vec<Arc<Event>>, bool) {
        replay(&self.ring.lock(), Some(seq))
    }
}

fn replay(ring: &Ring, after: Option<u64>) -> (Vec<Arc<Event>>, bool) {
    let Some(after) = after.filter(|s| *s < ring.next_seq) else {
        return (Vec::new(), true);
    };
    let oldest = ring.events.front().map_or(ring.next_seq, |e| e.seq);
    // `after` itself must still be known (or be the very last before the
    // oldest kept) for nothing to have been missed.
    let gap = after + 1 < oldest;
    let events = ring
        .events
        .iter()
        .filter(|e| e.seq > after)
        .cloned()
        .collect();
    (events, gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: TagentId) -> Event {
        Event {
            seq: 0,
            at: 0,
            kind: EventKind::Registered,
            tagent_id: id,
            tenant: "t".into(),
            ip: "10.0.0.1".parse().unwrap(),
            port: 3939,
            runner_group: 1,
            reason: None,
            created: Some(true),
        }
    }

    #[test]
    fn resumes_after_a_known_id_and_reports_unknown_ones_as_gaps() {
        let log = EventLog::default();
        log.publish((1..=3).map(event));
        let first = {
            let ring = log.ring.lock();
            log.event_id(&ring.events[0])
        };
        let b = log.subscribe(Some(&first));
        assert!(!b.gap);
        let ids: Vec<_> = b.events.iter().map(|e| e.tagent_id).collect();
        assert_eq!(ids, [2, 3]);

        let b = log.subscribe(Some("1-1"));
        assert!(b.gap, "an id from another run is a gap");
        assert!(b.events.is_empty());
        let b = log.subscribe(Some("garbage"));
        assert!(b.gap);
    }

    #[test]
    fn an_id_older_than_the_ring_is_a_gap() {
        let log = EventLog::default();
        log.publish((1..=(RING as u64 + 10)).map(event));
        // Seqs 11..=RING+10 are kept: after 10 nothing was missed.
        let (events, gap) = log.since(10);
        assert!(!gap);
        assert_eq!(events.len(), RING);
        let (events, gap) = log.since(9);
        assert!(gap);
        assert_eq!(events.len(), RING);
    }
}
