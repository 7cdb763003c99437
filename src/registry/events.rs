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

use crate::model::intern::{Interner, Sym};
use crate::model::{DisconnectReason, Tagent, TagentId, now_millis};

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

/// One change as the ring keeps it and the channel carries it: 40 bytes,
/// inline, no heap. Every idle session leaves a `connected` event here, so
/// its size counts in the memory per session. Serialised for a watcher
/// through [`Event::json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Unix milliseconds.
    pub at: u64,
    /// Ids are at most [`crate::model::MAX_TAGENT_ID`]: the index addresses
    /// records by `u32` too.
    pub tagent_id: u32,
    /// Resolved only when serialised; the interner never forgets a symbol,
    /// so a deleted tagent's tenant still resolves.
    pub tenant: Sym,
    pub runner_group: u32,
    pub port: u16,
    pub ip: IpAddr,
    pub change: Change,
}

/// What happened, with its detail, in one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Registered: a new tagent.
    Created,
    /// Registered: an update of a known tagent.
    Reregistered,
    Connected,
    Disconnected(DisconnectReason),
    Deleted,
}

impl Change {
    pub fn kind(self) -> EventKind {
        match self {
            Change::Created | Change::Reregistered => EventKind::Registered,
            Change::Connected => EventKind::Connected,
            Change::Disconnected(_) => EventKind::Disconnected,
            Change::Deleted => EventKind::Deleted,
        }
    }
}

impl Event {
    /// `t`'s change at `at`; `None` for an id beyond what the index holds
    /// (the rules never hand one out).
    pub fn of(t: &Tagent, change: Change, at: u64) -> Option<Event> {
        Some(Event {
            at,
            tagent_id: u32::try_from(t.id).ok()?,
            tenant: t.tenant,
            runner_group: t.runner_group,
            port: t.port,
            ip: t.ip,
            change,
        })
    }

    /// The event as a watcher receives it.
    pub fn json(&self, interner: &Interner) -> EventJson {
        let (reason, created) = match self.change {
            Change::Created => (None, Some(true)),
            Change::Reregistered => (None, Some(false)),
            Change::Disconnected(r) => (Some(r), None),
            Change::Connected | Change::Deleted => (None, None),
        };
        EventJson {
            at: self.at,
            kind: self.change.kind(),
            tagent_id: self.tagent_id.into(),
            tenant: interner.resolve(self.tenant),
            ip: self.ip,
            port: self.port,
            runner_group: self.runner_group,
            reason,
            created,
        }
    }
}

/// One change, as a watcher receives it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventJson {
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

/// An event with its position in this process's stream (see
/// [`EventLog::event_id`]). The ring keeps no `seq`: it follows from an
/// event's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    pub seq: u64,
    pub event: Event,
}

/// What a watcher gets when it subscribes.
pub struct Backlog {
    /// Events after the one it named, oldest first.
    pub events: Vec<Numbered>,
    /// The named event could not be found: events may have been missed.
    pub gap: bool,
    /// Everything published after `events`.
    pub live: broadcast::Receiver<Numbered>,
}

pub struct EventLog {
    /// Distinguishes this process's ids from a previous run's.
    boot: u64,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Numbered>,
}

/// The last [`RING`] events; the newest has `next_seq - 1`. Grows as
/// events come (no memory touched before it is used), then stays full.
struct Ring {
    events: VecDeque<Event>,
    next_seq: u64,
}

impl Ring {
    /// The seq of `events[0]` (`next_seq` when empty).
    fn oldest(&self) -> u64 {
        self.next_seq - self.events.len() as u64
    }
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
        for event in events {
            let seq = ring.next_seq;
            ring.next_seq += 1;
            if ring.events.len() == RING {
                ring.events.pop_front();
            }
            ring.events.push_back(event);
            // No receiver is not an error: nobody is watching.
            let _ = self.tx.send(Numbered { seq, event });
        }
    }

    /// The id a watcher sees: `<boot>-<seq>`.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}-{}", self.boot, seq)
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
    pub fn since(&self, seq: u64) -> (Vec<Numbered>, bool) {
        replay(&self.ring.lock(), Some(seq))
    }
}

fn replay(ring: &Ring, after: Option<u64>) -> (Vec<Numbered>, bool) {
    let Some(after) = after.filter(|s| *s < ring.next_seq) else {
        return (Vec::new(), true);
    };
    let oldest = ring.oldest();
    // `after` itself must still be known (or be the very last before the
    // oldest kept) for nothing to have been missed.
    let gap = after + 1 < oldest;
    let skip = ((after + 1).saturating_sub(oldest) as usize).min(ring.events.len());
    let events = ring
        .events
        .range(skip..)
        .zip(oldest + skip as u64..)
        .map(|(event, seq)| Numbered { seq, event: *event })
        .collect();
    (events, gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u32) -> Event {
        Event {
            at: 0,
            tagent_id: id,
            tenant: Sym(0),
            runner_group: 1,
            port: 3939,
            ip: "10.0.0.1".parse().unwrap(),
            change: Change::Created,
        }
    }

    fn ids(events: &[Numbered]) -> Vec<u32> {
        events.iter().map(|n| n.event.tagent_id).collect()
    }

    #[test]
    fn an_event_is_small_and_inline() {
        // Was 72 bytes in an `Arc` (a 96-byte allocation) plus the ring's
        // 8-byte pointer.
        assert!(std::mem::size_of::<Event>() <= 40);
        assert!(std::mem::size_of::<Numbered>() <= 48);
    }

    #[test]
    fn resumes_after_a_known_id_and_reports_unknown_ones_as_gaps() {
        let log = EventLog::default();
        log.publish((1..=3).map(event));
        let b = log.subscribe(Some(&log.event_id(1)));
        assert!(!b.gap);
        assert_eq!(ids(&b.events), [2, 3]);
        assert_eq!(b.events[0].seq, 2);

        let b = log.subscribe(Some(&log.event_id(3)));
        assert!(!b.gap, "the newest: nothing missed");
        assert!(b.events.is_empty());
        let b = log.subscribe(Some(&log.event_id(4)));
        assert!(b.gap, "an id not handed out yet");
        let b = log.subscribe(Some(&log.event_id(u64::MAX)));
        assert!(b.gap);
        let b = log.subscribe(Some(&log.event_id(0)));
        assert!(!b.gap, "before the first: nothing missed");
        assert_eq!(ids(&b.events), [1, 2, 3]);

        let b = log.subscribe(Some("1-1"));
        assert!(b.gap, "an id from another run is a gap");
        assert!(b.events.is_empty());
        for id in ["garbage", "", "-", "1-", &format!("{}-x", log.boot)] {
            assert!(log.subscribe(Some(id)).gap, "{id:?}");
        }
    }

    #[test]
    fn live_events_carry_their_ids() {
        let log = EventLog::default();
        log.publish((1..=2).map(event));
        let mut b = log.subscribe(None);
        log.publish((3..=4).map(event));
        let n = b.live.try_recv().unwrap();
        assert_eq!((n.seq, n.event.tagent_id), (3, 3));
        let n = b.live.try_recv().unwrap();
        assert_eq!((n.seq, n.event), (4, event(4)));
    }

    #[test]
    fn an_id_older_than_the_ring_is_a_gap() {
        let log = EventLog::default();
        let last = RING as u32 + 10;
        log.publish((1..=last).map(event));
        // Seqs 11..=RING+10 are kept: after 10 nothing was missed.
        let (events, gap) = log.since(10);
        assert!(!gap);
        assert_eq!(events.len(), RING);
        // Each event (tagent id = its seq here) keeps its id across the wrap.
        assert!(events.iter().all(|n| u64::from(n.event.tagent_id) == n.seq));
        assert_eq!((events[0].seq, events[RING - 1].seq), (11, last.into()));
        let (events, gap) = log.since(9);
        assert!(gap);
        assert_eq!(events.len(), RING);
        assert_eq!(events[0].seq, 11);
        let (events, gap) = log.since(u64::from(last) - 2);
        assert!(!gap);
        assert_eq!(ids(&events), [last - 1, last]);
        assert_eq!(log.ring.lock().events.len(), RING, "bounded");
    }

    #[test]
    fn serialises_as_before_with_the_tenant_by_name() {
        let interner = Interner::default();
        let e = Event {
            at: 1_700_000_000_123,
            tagent_id: 42,
            tenant: interner.intern("acme"),
            runner_group: 2,
            port: 3939,
            ip: "10.0.0.1".parse().unwrap(),
            change: Change::Created,
        };
        let json = |e: &Event| serde_json::to_string(&e.json(&interner)).unwrap();
        // Captured from the event as it was serialised before it was compacted.
        assert_eq!(
            json(&e),
            r#"{"at":1700000000123,"kind":"registered","tagent_id":42,"tenant":"acme","ip":"10.0.0.1","port":3939,"runner_group":2,"reason":null,"created":true}"#
        );
        let e = Event {
            tenant: interner.intern("t\"x"),
            ip: "2001:db8::1".parse().unwrap(),
            change: Change::Disconnected(DisconnectReason::IdleTimeout),
            ..e
        };
        assert_eq!(
            json(&e),
            r#"{"at":1700000000123,"kind":"disconnected","tagent_id":42,"tenant":"t\"x","ip":"2001:db8::1","port":3939,"runner_group":2,"reason":"idle-timeout","created":null}"#
        );
        let e = Event {
            change: Change::Reregistered,
            ..e
        };
        assert_eq!(
            json(&e),
            r#"{"at":1700000000123,"kind":"registered","tagent_id":42,"tenant":"t\"x","ip":"2001:db8::1","port":3939,"runner_group":2,"reason":null,"created":false}"#
        );
        for (change, kind) in [
            (Change::Connected, "connected"),
            (Change::Deleted, "deleted"),
        ] {
            let v = serde_json::to_value(Event { change, ..e }.json(&interner)).unwrap();
            assert_eq!(v["kind"], kind);
            assert!(v["reason"].is_null() && v["created"].is_null());
        }
    }
}
