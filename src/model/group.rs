//! Runner groups: ordered networks and runners, and rule 4's match (SPEC §2.3, §4).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::addr::host_port;

/// A runner: a heartbeat address tagents are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runner {
    pub id: u32,
    pub name: String,
    /// The heartbeat host (ip or name) and port, as given to tagents.
    pub host: String,
    pub port: u16,
    /// The address is whatever this hub advertises (the built-in default
    /// group's runner): stored without an address, resolved at each start.
    pub this_hub: bool,
}

impl Runner {
    /// `host:port` as a tagent writes it into `proxy.group`.
    /// An IPv6 host is bracketed (`[fd00::1]:8888`).
    pub fn heartbeat(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// A runner group: ordered networks (first match wins) and its runners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerGroup {
    pub id: u32,
    pub name: String,
    pub networks: Vec<IpNet>,
    /// Ordered by runner id.
    pub runners: Vec<Runner>,
}

impl RunnerGroup {
    /// The runner list as the tagent's `proxy.group` holds it: `ip:port,ip:port`, by runner id.
    pub fn proxy_group(&self) -> String {
        self.runners
            .iter()
            .map(Runner::heartbeat)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// All runner groups, in configured order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerGroups {
    pub groups: Vec<RunnerGroup>,
}

impl RunnerGroups {
    /// Rule 4: scan every group's networks in order; the first network that
    /// contains `ip` and whose group has a runner wins.
    pub fn match_ip(&self, ip: IpAddr) -> Option<&RunnerGroup> {
        self.groups
            .iter()
            .flat_map(|g| g.networks.iter().map(move |n| (g, n)))
            .find(|(g, n)| !g.runners.is_empty() && n.contains(&ip))
            .map(|(g, _)| g)
    }

    pub fn get(&self, id: u32) -> Option<&RunnerGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// Each group's runners in id order, as `proxy.group` lists them.
    pub fn sorted_runners(mut self) -> Self {
        for g in &mut self.groups {
            g.runners.sort_by_key(|r| r.id);
        }
        self
    }

    /// Check what the rules rely on: ids unique, a network listed once per
    /// group (overlap between groups is allowed: the first match wins), a
    /// runner listed once per group and one address per runner id.
    pub fn validate(&self) -> Result<(), String> {
        for (i, g) in self.groups.iter().enumerate() {
            if g.id == 0 {
                return Err("runner group ids start at 1".into());
            }
            if g.name.trim().is_empty() {
                return Err(format!("runner group {} has no name", g.id));
            }
            if self.groups[..i].iter().any(|x| x.id == g.id) {
                return Err(format!("runner group id {} is used twice", g.id));
            }
            for (j, n) in g.networks.iter().enumerate() {
                if g.networks[..j].contains(n) {
                    return Err(format!(
                        "runner group {}: network {n} is listed twice",
                        g.id
                    ));
                }
            }
            for (j, r) in g.runners.iter().enumerate() {
                if r.id == 0 {
                    return Err(format!("runner group {}: runner ids start at 1", g.id));
                }
                if g.runners[..j].iter().any(|x| x.id == r.id) {
                    return Err(format!(
                        "runner group {}: runner id {} is listed twice",
                        g.id, r.id
                    ));
                }
                let elsewhere = self.groups[..i]
                    .iter()
                    .flat_map(|x| &x.runners)
                    .any(|x| x.id == r.id && x.heartbeat() != r.heartbeat());
                if elsewhere {
                    return Err(format!("runner id {} names two addresses", r.id));
                }
            }
        }
        Ok(())
    }
}
