//! Who a request comes from, through trusted proxies.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address: the TCP peer, or — only when the peer is a trusted
/// proxy — the nearest untrusted hop of `X-Forwarded-For`, else `X-Real-IP`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(crate::model::parse_ip)
        .collect();
    if let Some(ip) = hops.iter().rev().find(|ip| !is_trusted(ip)) {
        return *ip;
    }
    if let Some(first) = hops.first() {
        return *first;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::model::parse_ip)
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &[]), peer);
    }

    #[test]
    fn forwarded_for_from_a_trusted_proxy_gives_the_nearest_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 10.0.0.25, 192.0.2.7")]);
        let ip = client_ip("192.0.2.1".parse().unwrap(), &h, &trusted);
        assert_eq!(ip, "10.0.0.25".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-real-ip", "10.0.0.26")]);
        let ip = client_ip("192.0.2.1".parse().unwrap(), &h, &trusted);
        assert_eq!(ip, "10.0.0.26".parse::<IpAddr>().unwrap());
    }
}
