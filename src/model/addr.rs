//! Addresses as tagents and operators write them.

use std::net::IpAddr;

/// Parse an ip, folding IPv4-mapped IPv6 (`::ffff:a.b.c.d`) into IPv4.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// `host:port`, an IPv6 host bracketed (`[fd00::1]:8888`).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port` or `[v6]:port`, with a port from 1 to 65535.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ',') {
        return Err(format!("'{s}' has no usable host"));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "'{s}' is not host:port (write IPv6 as [addr]:port)"
        ));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{s}' has no port between 1 and 65535"))?;
    Ok((host.to_owned(), port))
}
