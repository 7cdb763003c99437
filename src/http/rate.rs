//! Registration rate limits: per source and overall (governor's GCRA).
//!
//! A registration costs a durable commit and, for a new tagent, a permanent
//! record and one sealed account per ip: unbounded, one connection fills a
//! disk (finding 4 of issue 13). A source is counted as [`source_key`] says
//! (an IPv4 address, an IPv6 /64), after `trusted_proxies` named the
//! client; sources inside `unlimited_networks` are not limited. A real
//! tagent that is refused retries every few seconds (SPEC §2.2), so a
//! burst of restarts behind one NAT gets in over the next seconds.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use crate::config::HttpConfig;
use crate::net::source_key;

/// Why a registration was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// This source registers too fast.
    Source,
    /// The hub as a whole takes registrations too fast.
    Overall,
}

impl Limited {
    /// The `outcome` label of `tagent_hub_registrations_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            Limited::Source => "rate_limited_source",
            Limited::Overall => "rate_limited",
        }
    }
}

#[derive(Clone)]
pub struct RegisterRate {
    per_source: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    overall: Option<Arc<DefaultDirectRateLimiter>>,
    unlimited: Arc<[IpNet]>,
    /// Refusals logged at INFO: a few a second.
    refusal_log: Arc<DefaultDirectRateLimiter>,
}

const REFUSAL_LOGS_PER_SEC: u32 = 5;

fn quota(per_sec: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl RegisterRate {
    /// A rate of 0 turns that limit off.
    pub fn from_config(c: &HttpConfig) -> RegisterRate {
        RegisterRate {
            per_source: quota(c.register_rate_per_ip, c.register_burst_per_ip)
                .map(|q| Arc::new(DefaultKeyedRateLimiter::keyed(q))),
            overall: quota(c.register_rate, c.register_burst)
                .map(|q| Arc::new(DefaultDirectRateLimiter::direct(q))),
            unlimited: c.unlimited_networks.clone().into(),
            refusal_log: Arc::new(DefaultDirectRateLimiter::direct(
                quota(REFUSAL_LOGS_PER_SEC, REFUSAL_LOGS_PER_SEC * 4).expect("not zero"),
            )),
        }
    }

    /// Take one registration from `client`, or say which limit refuses it.
    /// A source refused uses none of the overall allowance, so one noisy
    /// source cannot starve the others.
    pub fn check(&self, client: IpAddr) -> Result<(), Limited> {
        let client = client.to_canonical();
        if self.unlimited.iter().any(|n| n.contains(&client)) {
            return Ok(());
        }
        if let Some(l) = &self.per_source {
            l.check_key(&source_key(client))
                .map_err(|_| Limited::Source)?;
        }
        if let Some(l) = &self.overall {
            l.check().map_err(|_| Limited::Overall)?;
        }
        Ok(())
    }

    /// Forget sources whose allowance is whole again, so the table holds
    /// only the sources of the last moments (called every few seconds).
    pub fn tidy(&self) {
        if let Some(l) = &self.per_source {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Whether a refused registration may be logged at INFO now.
    pub fn may_log_refusal(&self) -> bool {
        self.refusal_log.check().is_ok()
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.per_source.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_ip: u32, burst_ip: u32, all: u32, burst_all: u32) -> HttpConfig {
        HttpConfig {
            register_rate_per_ip: per_ip,
            register_burst_per_ip: burst_ip,
            register_rate: all,
            register_burst: burst_all,
            unlimited_networks: vec!["127.0.0.0/8".parse().unwrap()],
            ..HttpConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_is_refused() {
        let rate = RegisterRate::from_config(&config(1, 3, 0, 0));
        for _ in 0..3 {
            rate.check(ip("10.0.0.1")).unwrap();
        }
        assert_eq!(rate.check(ip("10.0.0.1")), Err(Limited::Source));
        // Another source is not affected, nor one in an unlimited network.
        rate.check(ip("10.0.0.2")).unwrap();
        for _ in 0..10 {
            rate.check(ip("127.0.0.5")).unwrap();
        }
    }

    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let rate = RegisterRate::from_config(&config(1, 1, 0, 0));
        rate.check(ip("2001:db8::1")).unwrap();
        assert_eq!(rate.check(ip("2001:db8::2")), Err(Limited::Source));
        rate.check(ip("2001:db8:0:1::1")).unwrap();
    }

    #[test]
    fn the_overall_limit_spares_what_a_source_limit_refused() {
        let rate = RegisterRate::from_config(&config(1, 1, 1, 2));
        rate.check(ip("10.0.0.1")).unwrap();
        for _ in 0..5 {
            assert_eq!(rate.check(ip("10.0.0.1")), Err(Limited::Source));
        }
        rate.check(ip("10.0.0.2")).unwrap();
        assert_eq!(rate.check(ip("10.0.0.3")), Err(Limited::Overall));
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let rate = RegisterRate::from_config(&config(0, 0, 0, 0));
        for _ in 0..1000 {
            rate.check(ip("10.0.0.1")).unwrap();
        }
        assert_eq!(rate.sources(), 0);
    }
}
