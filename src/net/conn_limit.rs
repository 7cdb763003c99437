//! How many connections a listener holds, in all and from one source.
//!
//! A listener admits a connection by taking a [`ConnPermit`], which gives
//! its place back when dropped (the connection's task ends). A source is an
//! IPv4 address, or an IPv6 /64 (one host usually holds a whole /64, so
//! counting single IPv6 addresses would bound nothing). Sources inside
//! `unlimited` networks (loopback by default, or a NAT the operator trusts)
//! count towards the total only.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::IpNet;
use parking_lot::Mutex;

/// The key a source is counted under: an IPv4 address (an IPv4-mapped IPv6
/// one as plain IPv4), or the /64 of an IPv6 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefused {
    /// The listener holds its most connections.
    Total,
    /// This source holds its most connections.
    PerSource,
}

impl ConnRefused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ConnRefused::Total => "max_connections",
            ConnRefused::PerSource => "max_connections_per_ip",
        }
    }
}

#[derive(Clone)]
pub struct ConnLimit {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    per_source: usize,
    unlimited: Box<[IpNet]>,
    open: AtomicUsize,
    /// Open connections by source key; a source leaves when its last closes,
    /// so the table holds at most `max` entries.
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnPermit {
    inner: Arc<Inner>,
    source: Option<IpAddr>,
}

impl ConnLimit {
    /// At most `max` connections, at most `per_source` from one source
    /// outside `unlimited`.
    pub fn new(max: usize, per_source: usize, unlimited: &[IpNet]) -> ConnLimit {
        ConnLimit {
            inner: Arc::new(Inner {
                max,
                per_source,
                unlimited: unlimited.into(),
                open: AtomicUsize::new(0),
                by_source: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Admit a connection from `peer`, or say why not.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnPermit, ConnRefused> {
        let inner = &self.inner;
        if inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(ConnRefused::Total);
        }
        let mut permit = ConnPermit {
            inner: inner.clone(),
            source: None,
        };
        let peer = peer.to_canonical();
        if inner.unlimited.iter().any(|n| n.contains(&peer)) {
            return Ok(permit);
        }
        let key = source_key(peer);
        let mut by_source = inner.by_source.lock();
        let n = by_source.entry(key).or_insert(0);
        if *n >= inner.per_source {
            // `permit` gives the total back as it drops.
            return Err(ConnRefused::PerSource);
        }
        *n += 1;
        permit.source = Some(key);
        Ok(permit)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(key) = self.source {
            let mut by_source = self.inner.by_source.lock();
            if let Some(n) = by_source.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    by_source.remove(&key);
                }
            }
        }
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bounds_the_total_and_each_source() {
        let limit = ConnLimit::new(3, 2, &[]);
        let a1 = limit.admit(ip("10.0.0.1")).unwrap();
        let _a2 = limit.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limit.admit(ip("10.0.0.1")).err(),
            Some(ConnRefused::PerSource)
        );
        // The refusal gave its place in the total back.
        assert_eq!(limit.open(), 2);
        let _b = limit.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(limit.admit(ip("10.0.0.3")).err(), Some(ConnRefused::Total));
        drop(a1);
        assert_eq!(limit.open(), 2);
        let _a3 = limit.admit(ip("10.0.0.1")).unwrap();
        assert!(limit.inner.by_source.lock().len() <= 2);
    }

    #[test]
    fn a_source_leaves_the_table_with_its_last_connection() {
        let limit = ConnLimit::new(10, 10, &[]);
        let p = limit.admit(ip("10.0.0.1")).unwrap();
        drop(p);
        assert!(limit.inner.by_source.lock().is_empty());
        assert_eq!(limit.open(), 0);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_v4_as_v4() {
        let limit = ConnLimit::new(10, 1, &[]);
        let _p = limit.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            limit.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(ConnRefused::PerSource)
        );
        let _q = limit.admit(ip("2001:db8:1:3::1")).unwrap();
        let _r = limit.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limit.admit(ip("::ffff:10.0.0.1")).err(),
            Some(ConnRefused::PerSource)
        );
    }

    #[test]
    fn unlimited_networks_count_towards_the_total_only() {
        let limit = ConnLimit::new(3, 1, &["127.0.0.0/8".parse().unwrap()]);
        let held: Vec<_> = (0..3)
            .map(|_| limit.admit(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(limit.admit(ip("127.0.0.1")).err(), Some(ConnRefused::Total));
        drop(held);
        assert!(limit.inner.by_source.lock().is_empty());
    }
}
