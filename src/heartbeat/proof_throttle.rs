//! Wrong native proofs, limited per source with back-off.
//!
//! Each failed handshake (a wrong proof, or a hello naming no tagent) takes
//! one cell of its source's allowance (governor: a burst of
//! [`BURST`], then one every [`REFILL`]); a source past it is refused at its
//! next hello, before any credential is read, until governor says another
//! attempt would conform. Guessing credentials from one source (an IPv4
//! address or an IPv6 /64, [`source_key`]) then runs at one try every few
//! seconds instead of thousands a second; a real tagent, whose proof is
//! right, never takes a cell.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::net::source_key;

/// Failed handshakes a source may make at once.
pub const BURST: u32 = 10;
/// One more failed handshake allowed per this long.
pub const REFILL: Duration = Duration::from_secs(3);
/// Sources held back at most; beyond, the expired ones are dropped first.
const MOST_HELD: usize = 65_536;

pub struct ProofThrottle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Sources past their allowance, and until when.
    held: DashMap<IpAddr, Instant>,
    clock: DefaultClock,
}

impl Default for ProofThrottle {
    fn default() -> Self {
        let quota = Quota::with_period(REFILL)
            .expect("a period above zero")
            .allow_burst(NonZeroU32::new(BURST).expect("above zero"));
        ProofThrottle {
            failures: DefaultKeyedRateLimiter::keyed(quota),
            held: DashMap::new(),
            clock: DefaultClock::default(),
        }
    }
}

impl ProofThrottle {
    /// Whether a handshake from `peer` may go ahead now.
    pub fn admits(&self, peer: IpAddr) -> bool {
        let key = source_key(peer.to_canonical());
        match self.held.get(&key).map(|until| *until) {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.held.remove(&key);
                true
            }
            None => true,
        }
    }

    /// A handshake from `peer` failed.
    pub fn failed(&self, peer: IpAddr) {
        let key = source_key(peer.to_canonical());
        if let Err(not_until) = self.failures.check_key(&key) {
            let wait = not_until.wait_time_from(self.clock.now());
            if self.held.len() >= MOST_HELD {
                let now = Instant::now();
                self.held.retain(|_, until| *until > now);
                self.failures.retain_recent();
            }
            if self.held.len() < MOST_HELD {
                self.held.insert(key, Instant::now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_past_its_failures_is_held_back_and_others_are_not() {
        let t = ProofThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..BURST {
            assert!(t.admits(a));
            t.failed(a);
        }
        assert!(t.admits(a), "the burst itself is allowed");
        t.failed(a);
        assert!(!t.admits(a), "one past the burst is held back");
        assert!(t.admits("10.0.0.2".parse().unwrap()));
        // The same /64 is the same source.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..=BURST {
            t.failed(v6);
        }
        assert!(!t.admits("2001:db8::ffff".parse().unwrap()));
    }
}
