//! What the benches and examples build their tagents from: one host's
//! facts, the ip plan, and a runner group that takes every address.
//! Included by path (`#[path = ...] mod fixtures;`): each bench and example
//! is a crate of its own.

#![allow(dead_code)] // each includer uses its part

use std::net::{IpAddr, Ipv4Addr};

use tagent_hub::model::{HostFacts, Runner, RunnerGroup, RunnerGroups};

/// The tagents' port.
pub const PORT: u16 = 3939;

const FIRST_IP: u32 = u32::from_be_bytes([10, 0, 0, 1]);

/// Tagent `i` (from 1) has primary ip `10.0.0.1 + i - 1` and contains that
/// and the same address one /8 up (`11.…`).
pub fn primary(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(FIRST_IP.wrapping_add(i as u32 - 1)))
}

pub fn secondary(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        FIRST_IP.wrapping_add(i as u32 - 1).wrapping_add(1 << 24),
    ))
}

/// A CentOS 7 host with 4 cores' worth of load and 7.6 GB of memory used.
pub fn host() -> HostFacts<String> {
    HostFacts {
        user: "root".into(),
        version: "1.5.4".into(),
        os_type: "linux".into(),
        os_version: "CentOS Linux 7.9.2009_3.10.0-1160.el7.x86_64".into(),
        osbit: "x86_64".into(),
        pcpu: Some(4.0),
        mem: Some(7.6),
    }
}

/// One group, `default`, over `networks`, run by one hub on 127.0.0.1.
pub fn one_group(networks: &[&str]) -> RunnerGroups {
    RunnerGroups {
        groups: vec![RunnerGroup {
            id: 1,
            name: "default".into(),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            runners: vec![Runner {
                id: 1,
                name: "this-hub".into(),
                host: "127.0.0.1".into(),
                port: 8888,
                this_hub: false,
            }],
        }],
    }
}
